"""OCLC's 429 through the real worker and the WorldShare sandbox: the key is paused, no call
goes out until the pause ends, the poll is deferred (not failed), and every call the bridge made
is counted in the database."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from sqlalchemy import text

from app.worldshare import budget
from tests.e2e.test_export_pipeline import register, state_of, worldshare
from tests.support.bridge import running_system, wait_for

PAUSE_SECONDS = 3


def pause_row(engine: Any) -> datetime | None:
    with engine.connect() as connection:
        found = connection.execute(
            text("SELECT paused_until FROM worldshare_key_pause WHERE key_id = :key"),
            {"key": budget.key_id("sandbox-key")},
        ).scalar_one_or_none()
    if found is None:
        return None
    if isinstance(found, str):
        found = datetime.fromisoformat(found)
    return found.replace(tzinfo=None)


def calls_counted(engine: Any) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text("SELECT coalesce(sum(calls), 0) FROM worldshare_call_count")
            ).scalar_one()
        )


def reads_sent(system: Any) -> int:
    calls = worldshare(system, "/_sandbox/calls")
    return sum(1 for c in calls if c["method"] == "GET" and "/ILL/request/data/" in c["url"])


def test_a_429_pauses_the_key_until_retry_after_and_the_poll_is_deferred(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        created = register(system, "THROTTLED-1")
        wait_for(lambda: state_of(system, created["id"]) == "exported", timeout=20)
        ws_id = system.request(created["id"])["worldshare_request_id"]
        wait_for(lambda: reads_sent(system) >= 1, timeout=20, what="a first poll")

        worldshare(
            system,
            "/_sandbox/faults",
            "POST",
            fail_next=[{"status": 429, "retry_after": PAUSE_SECONDS, "path": "request"}],
        )
        paused_until = wait_for(lambda: pause_row(engine), timeout=20, what="the key paused")
        refused_at = reads_sent(system)
        system.lender(ws_id, "ship")

        # While paused, the bridge sends WorldShare nothing.
        time.sleep(PAUSE_SECONDS - 1)
        assert reads_sent(system) == refused_at
        assert state_of(system, created["id"]) == "exported"

        # Then it reads again and sees the lender's change.
        wait_for(lambda: state_of(system, created["id"]) == "shipped", timeout=20)
        detail = system.request(created["id"])
        shipped_at = next(e["at"] for e in detail["events"] if e["kind"] == "lender_shipped")
        seen = datetime.fromisoformat(shipped_at).replace(tzinfo=None)
        assert seen >= paused_until

        polls = system.api(
            "GET", "/api/v1/jobs", params={"request_id": created["id"], "kind": "worldshare.poll"}
        ).json()["items"]
        assert polls and all(job["status"] != "dead" for job in polls)
        # A deferral is not a failed attempt.
        assert all(job["attempts"] <= 1 for job in polls)
        assert not system.request(created["id"])["needs_attention"]

        # Every call that left for WorldShare (tokens, the create, reads, the refused one)
        # was counted against the key in the database.
        sent = len(worldshare(system, "/_sandbox/calls"))
        assert calls_counted(engine) == sent
