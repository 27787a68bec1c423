"""Retention removes exactly the patron-linked fields of requests past their institution's
window, and nothing else: the timeline, states, dates and counts stay."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlmodel import select

from app.borrowing import service
from app.borrowing.models import BorrowingRequest, RequestEvent
from app.borrowing.states import RequestState
from app.db import read_session, write_session
from app.timeutil import utcnow
from app.workflows.retention import purge_patron_data
from tests.support.cli import illbridge, no_traceback
from tests.support.factories import make_institution

DAY = timedelta(days=1)


def add_request(
    engine: Any,
    institution_id: int,
    alma_request_id: str,
    state: RequestState,
    ended_days_ago: int | None,
) -> int:
    now = utcnow()
    with write_session(engine) as session:
        request = BorrowingRequest(
            institution_id=institution_id,
            alma_request_id=alma_request_id,
            requester_user_id=f"patron-{alma_request_id}",
            citation={"title": "The Book of Tea"},
            state=state,
            worldshare_request_id=f"WS-{alma_request_id}",
            item_barcode=f"ILL-{alma_request_id}",
            created_at=now - 200 * DAY,
            updated_at=now - 200 * DAY if ended_days_ago is None else now - ended_days_ago * DAY,
            closed_at=None if ended_days_ago is None else now - ended_days_ago * DAY,
        )
        session.add(request)
        session.flush()
        service.record_event(session, request, "exported", "test", to_state="exported")
        session.commit()
        assert request.id is not None
        return request.id


def rows(engine: Any) -> dict[str, dict[str, Any]]:
    with engine.connect() as connection:
        found = connection.execute(text("SELECT * FROM borrowing_request")).mappings().all()
    return {row["alma_request_id"]: dict(row) for row in found}


def events(engine: Any) -> list[tuple[int, str, str]]:
    with read_session(engine) as session:
        found = session.exec(select(RequestEvent).order_by(RequestEvent.id)).all()
        return [(e.request_id, e.kind, json.dumps(e.detail)) for e in found]


def seed(engine: Any, settings: Any) -> dict[str, int]:
    short = make_institution(engine, settings, "SHORT", policy={"retention_days": 30})
    long = make_institution(engine, settings, "LONG", policy={"retention_days": 365})
    assert short.id is not None and long.id is not None
    return {
        "closed-old": add_request(engine, short.id, "closed-old", RequestState.CLOSED, 40),
        "cancelled-old": add_request(engine, short.id, "cancelled-old", RequestState.CANCELLED, 31),
        "unfilled-old": add_request(engine, short.id, "unfilled-old", RequestState.UNFILLED, 90),
        "closed-recent": add_request(engine, short.id, "closed-recent", RequestState.CLOSED, 10),
        # Open for 200 days: no window runs while a request is open.
        "on-loan": add_request(engine, short.id, "on-loan", RequestState.ON_LOAN, None),
        # The other institution keeps a year.
        "closed-long": add_request(engine, long.id, "closed-long", RequestState.CLOSED, 40),
    }


PAST_WINDOW = {"closed-old", "cancelled-old", "unfilled-old"}


def test_exactly_the_patron_fields_of_requests_past_the_window_go(engine, settings):
    ids = seed(engine, settings)
    before, events_before = rows(engine), events(engine)

    with write_session(engine) as session:
        purged = purge_patron_data(session)
        session.commit()

    assert {p.request_id for p in purged} == {ids[name] for name in PAST_WINDOW}
    after = rows(engine)
    for name, row in after.items():
        expected = dict(before[name])
        if name in PAST_WINDOW:
            expected["requester_user_id"] = None
        assert row == expected, name
    # The timeline is kept and says what went (field names only, never values).
    added = events(engine)[len(events_before) :]
    assert events(engine)[: len(events_before)] == events_before
    assert sorted(added) == sorted(
        (ids[name], "retention_purged", json.dumps({"fields": ["requester_user_id"]}))
        for name in PAST_WINDOW
    )
    assert not any("patron-" in detail for _, _, detail in events(engine))

    # A second run has nothing left to do.
    with write_session(engine) as session:
        assert purge_patron_data(session) == []


def test_the_purge_command_dry_run_shows_and_changes_nothing(database_url, engine, settings):
    ids = seed(engine, settings)
    before = rows(engine)

    dry = illbridge(database_url, "purge", "--dry-run", "--institution", "SHORT")
    no_traceback(dry)
    assert dry.returncode == 0, dry.stderr
    shown = [json.loads(line) for line in dry.stdout.splitlines()]
    assert {item["request_id"] for item in shown} == {ids[name] for name in PAST_WINDOW}
    assert {tuple(item["fields"]) for item in shown} == {("requester_user_id",)}
    assert "patron-" not in dry.stdout
    assert "would purge the patron links of 3 request(s)" in dry.stderr
    assert rows(engine) == before

    other = illbridge(database_url, "purge", "--institution", "LONG")
    assert other.returncode == 0, other.stderr
    assert rows(engine) == before

    real = illbridge(database_url, "purge")
    assert real.returncode == 0, real.stderr
    assert [json.loads(line)["request_id"] for line in real.stdout.splitlines()] == [
        item["request_id"] for item in shown
    ]
    purged = {name for name, row in rows(engine).items() if row["requester_user_id"] is None}
    assert purged == PAST_WINDOW

    unknown = illbridge(database_url, "purge", "--dry-run", "--institution", "NOPE")
    assert unknown.returncode != 0
    no_traceback(unknown)


def test_the_worker_purges_on_a_schedule(settings):
    from app.workflows.kinds import PURGE_PATRON_DATA
    from app.workflows.registry import build_registry

    registry = build_registry(settings)
    assert PURGE_PATRON_DATA.name in registry.handlers
    assert [p.every_seconds for p in registry.periodic if p.kind == PURGE_PATRON_DATA] == [3600.0]
