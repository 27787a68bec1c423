"""Clean-up over real HTTP: the bridge, the strict simulated Alma (ISO 18626 and REST) and the
WorldShare sandbox, on SQLite and PostgreSQL.

Stale requests of every kind are set up for real (exported, lender statuses polled); only their
age is made up, by moving their timeline back, since 30 days cannot pass in a test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
from sqlmodel import Session, select

from app.borrowing import service
from app.borrowing.models import BorrowingRequest, RequestEvent
from app.borrowing.states import Trigger
from app.sandbox.alma_requester import send_action, send_request
from app.sandbox.alma_vocabulary import Action
from tests.support.api_checks import citation_body
from tests.support.bridge import (
    ALMA_AGENCY,
    BRIDGE_AGENCY,
    SECURITY_CODE,
    System,
    running_system,
    wait_for,
)

CITATION = {"title": "Outwitting Squirrels", "author": "Bill Adler"}
PATRON = {"patron_id": "P-1", "surname": "Quimby", "given_name": "Ramona", "email": None}
REASON = "NOT_SUPPLIED_BY_PARTNER"


def alma_sends(system: System, alma_request_id: str, action: Action | None = None) -> None:
    sender = {
        "bridge_url": system.iso_url,
        "request_id": alma_request_id,
        "requesting_agency": ALMA_AGENCY,
        "supplying_agency": BRIDGE_AGENCY,
        "security_code": SECURITY_CODE,
    }

    async def send() -> Any:
        async with httpx.AsyncClient(timeout=10.0) as http:
            if action is None:
                return await send_request(
                    http, system.alma_url, citation=CITATION, patron=PATRON, **sender
                )
            return await send_action(http, system.alma_url, action=action, **sender)

    asyncio.run(send())


def register_over_rest(system: System, alma_id: str, user_id: str, internal_id: str, **seed):
    """A request Alma's REST side knows (seeded in the simulated Alma), registered over REST."""
    seeded = system.http.post(
        f"{system.alma_url}/_sandbox/rs-requests",
        json={"user_id": user_id, "request_id": internal_id, **seed},
    )
    assert seeded.status_code == 201, seeded.text
    created = system.api(
        "POST", "/api/v1/requests", json=citation_body("UNIV", alma_id, requester_user_id=user_id)
    )
    assert created.status_code == 201, created.text


def polled(system: System, alma_id: str, status: str | None = None) -> dict[str, Any] | None:
    found = system.find(alma_id)
    if found is None or found["lender_status"] is None:
        return None
    return found if status is None or found["lender_status"] == status else None


def exported(system: System, alma_id: str) -> str:
    found = wait_for(
        lambda: (r := system.find(alma_id)) and r["worldshare_request_id"] and r,
        what=f"export of {alma_id}",
    )
    return str(found["worldshare_request_id"])


def outward(system: System) -> tuple[int, int, int]:
    """What has gone out so far: WorldShare calls, Alma REST calls, ISO messages to Alma."""
    ws = len(system.http.get(f"{system.worldshare_url}/_sandbox/calls").json())
    rest = len(system.http.get(f"{system.alma_url}/_sandbox/rest-calls").json())
    iso = len(system.http.get(f"{system.alma_url}/_sandbox/messages").json())
    return ws, rest, iso


def age_everything(engine, days: int) -> None:
    """Move every timeline back `days`: as if the requests had waited that long."""
    with patient_session(engine) as session:
        for event in session.exec(select(RequestEvent)).all():
            event.at = event.at - timedelta(days=days)
            session.add(event)
        for request in session.exec(select(BorrowingRequest)).all():
            request.created_at = request.created_at - timedelta(days=days)
            session.add(request)
        session.commit()


@contextmanager
def patient_session(engine) -> Iterator[Session]:
    """A writing session of the test's own beside the running workers. On SQLite it takes the
    write lock at its first statement, as the service's own writes do: a read that later writes
    is refused at once ("database is locked") when a worker wrote in between."""
    with Session(engine.execution_options(sqlite_begin="IMMEDIATE")) as session:
        yield session


def put_on_loan(engine, alma_id: str) -> None:
    """The patron's loan (a LOAN_CREATED webhook in production), applied as the service does."""
    with patient_session(engine) as session:
        request = session.exec(
            select(BorrowingRequest).where(BorrowingRequest.alma_request_id == alma_id)
        ).one()
        assert service.apply_trigger(session, request, Trigger.PATRON_LOANED, "test")
        session.commit()


def plan_of(batch: dict[str, Any]) -> list[tuple[int, str, str, str | None]]:
    return [(i["request_id"], i["action"], i["why"], i["lender_status"]) for i in batch["items"]]


def test_dry_run_then_real_run(fast_settings, engine):
    with running_system(fast_settings, engine, policy={"stale_after_days": 30}) as system:
        # Over ISO 18626: one closed in WorldShare, one still open there, two held in the library.
        for alma_id in ("ISO-CLOSED", "ISO-OPEN", "ISO-HELD", "ISO-LOANED"):
            alma_sends(system, alma_id)
        # Over REST: Alma's REST id resolved from the external id, one whose cancel fails, one
        # known to Alma by the plain id only.
        register_over_rest(system, "EXT-1", "U-1", "9001", external_id="EXT-1")
        register_over_rest(system, "EXT-2", "U-2", "9002", external_id="EXT-2")
        register_over_rest(system, "9003", "U-3", "9003")
        system.http.post(f"{system.alma_url}/_sandbox/rest-faults", json={"request_id": "9002"})
        ws = {
            alma_id: exported(system, alma_id)
            for alma_id in (
                "ISO-CLOSED",
                "ISO-OPEN",
                "ISO-HELD",
                "ISO-LOANED",
                "EXT-1",
                "EXT-2",
                "9003",
            )
        }
        for alma_id in ("ISO-HELD", "ISO-LOANED"):
            alma_sends(system, alma_id, Action.RECEIVED)
            wait_for(lambda a=alma_id: (r := system.find(a)) and r["state"] == "in_library")
        put_on_loan(engine, "ISO-LOANED")
        for alma_id in ("ISO-CLOSED", "ISO-HELD", "ISO-LOANED", "EXT-1", "EXT-2", "9003"):
            system.lender(ws[alma_id], "status", status="CLOSED")
        for alma_id in ws:
            status = None if alma_id == "ISO-OPEN" else "CLOSED"
            wait_for(lambda a=alma_id, s=status: polled(system, a, s), what=f"poll of {alma_id}")
        # Polling stops (a week between polls), so what is cached stays what WorldShare says.
        patched = system.api(
            "PATCH", "/api/v1/institutions/UNIV", json={"policy": {"poll_interval_seconds": 604800}}
        )
        assert patched.status_code == 200, patched.text
        time.sleep(2.5)
        age_everything(engine, 40)
        ids = {alma_id: system.find(alma_id)["id"] for alma_id in ws}  # type: ignore[index]

        before = outward(system)
        dry = system.api("POST", "/api/v1/cleanup", json={"institution": "UNIV", "dry_run": True})
        assert dry.status_code == 200, dry.text
        time.sleep(1.0)
        # A dry run sends nothing: no WorldShare read, no Alma call of either kind.
        assert outward(system) == before
        planned = dry.json()
        assert {i["request_id"]: i["action"] for i in planned["items"]} == {
            ids["ISO-CLOSED"]: "iso_notice",
            ids["ISO-OPEN"]: "leave",
            ids["EXT-1"]: "alma_rest_cancel",
            ids["EXT-2"]: "alma_rest_cancel",
            ids["9003"]: "alma_rest_cancel",
        }
        assert all(system.find(a)["state"] != "cancelled" for a in ws)  # type: ignore[index]

        real = system.api("POST", "/api/v1/cleanup", json={"institution": "UNIV", "dry_run": False})
        assert real.status_code == 202, real.text
        batch_id = real.json()["batch_id"]
        done = wait_for(
            lambda: (
                (b := system.api("GET", f"/api/v1/cleanup/{batch_id}").json())
                and b["status"] == "done"
                and b
            ),
            what="the clean-up run",
        )
        # The real run re-read WorldShare, got what was cached, and followed the same plan.
        assert plan_of(done) == plan_of(planned)
        outcomes = {i["request_id"]: (i["outcome"], i["error"]) for i in done["items"]}
        assert outcomes[ids["ISO-CLOSED"]] == ("done", None)
        assert outcomes[ids["ISO-OPEN"]] == ("left", None)
        assert outcomes[ids["EXT-1"]] == ("done", None)
        assert outcomes[ids["9003"]] == ("done", None)
        # One failure leaves the others done.
        assert outcomes[ids["EXT-2"]][0] == "failed"
        assert "HTTP 500" in (outcomes[ids["EXT-2"]][1] or "")

        ws_reads = [
            c
            for c in system.http.get(f"{system.worldshare_url}/_sandbox/calls").json()
            if c["method"] == "GET" and "/request/data/" in c["url"]
        ]
        assert ws_reads, "the real run read WorldShare"

        state = {a: system.find(a)["state"] for a in ws}  # type: ignore[index]
        assert state == {
            "ISO-CLOSED": "cancelled",
            "ISO-OPEN": "exported",  # WorldShare still open: left alone
            "ISO-HELD": "in_library",  # received in the library: never cancelled
            "ISO-LOANED": "on_loan",  # on loan: never cancelled
            "EXT-1": "cancelled",
            "EXT-2": "exported",
            "9003": "cancelled",
        }
        # ISO 18626: Alma is told Cancelled, and nothing about the held requests.
        wait_for(
            lambda: (
                ("StatusChange", "Cancelled")
                in [
                    (m["reasonForMessage"], m["status"]) for m in system.alma_messages("ISO-CLOSED")
                ]
            ),
            what="Cancelled notice",
        )
        for held in ("ISO-HELD", "ISO-LOANED", "ISO-OPEN"):
            assert "Cancelled" not in [m["status"] for m in system.alma_messages(held)]

        # REST: resolved once by external id (fallback plain), cancelled by Alma's own id, every
        # cancel with the reason and notify_user=false.
        calls = system.http.get(f"{system.alma_url}/_sandbox/rest-calls").json()
        deletes = [c for c in calls if c["method"] == "DELETE"]
        assert sorted(c["request_id"] for c in deletes) == ["9001", "9002", "9003"]
        assert all(c["query"] == {"reason": REASON, "notify_user": "false"} for c in deletes)
        reads = [(c["request_id"], c["query"]) for c in calls if c["method"] == "GET"]
        assert ("EXT-1", {"request_id_type": "external"}) in reads
        assert ("9003", {"request_id_type": "external"}) in reads
        assert ("9003", {}) in reads
        ext1 = system.find("EXT-1")
        assert ext1 is not None and ext1["alma_internal_request_id"] == "9001"
        assert system.find("EXT-2")["alma_internal_request_id"] == "9002"  # type: ignore[index]
        cancelled = [e for e in ext1["events"] if e["to_state"] == "cancelled"]
        assert cancelled and cancelled[0]["detail"]["reason"] == REASON
        assert (
            system.http.get(f"{system.alma_url}/_sandbox/rs-requests/9001").json()["status"]
            == "CANCELED"
        )
