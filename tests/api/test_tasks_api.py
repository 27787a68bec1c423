"""The staff task list and the periodic stale check, through the REST API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select, update

from app.borrowing import service, tasks
from app.borrowing.citation import Citation
from app.borrowing.models import BorrowingRequest, RequestOrigin
from app.borrowing.states import Trigger
from app.db import write_session
from app.institutions.models import Institution
from app.jobs.models import Job, JobStatus
from app.jobs.queue import enqueue
from app.main import create_app
from app.timeutil import utcnow
from app.workflows.export import UNKNOWN_CREATE
from app.workflows.kinds import EXPORT_TO_WORLDSHARE
from app.workflows.stale_check import mark_stale
from tests.support.factories import bearer, make_institution, make_token

LATER = timedelta(days=61)  # past the default stale_after_days (60)


@pytest.fixture
def client(settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def _request(session: Session, institution: Institution, alma_id: str) -> BorrowingRequest:
    assert institution.id is not None
    request, _ = service.register_request(
        session,
        institution.id,
        alma_request_id=alma_id,
        citation=Citation(title=f"Title {alma_id}"),
        requester_user_id="patron-1",
        origin=RequestOrigin.ISO18626,
    )
    return request


def _exported(session: Session, request: BorrowingRequest, ws_id: str) -> None:
    request.worldshare_request_id = ws_id
    assert service.apply_trigger(session, request, Trigger.EXPORTED, "test")


@pytest.fixture
def world(engine, settings) -> dict[str, Any]:
    a = make_institution(engine, settings, "A")
    b = make_institution(engine, settings, "B")
    with write_session(engine) as session:
        stale = _request(session, a, "A-STALE")
        _exported(session, stale, "1001")
        renew = _request(session, a, "A-RENEW")
        _exported(session, renew, "1002")
        tasks.open_task(
            session, renew, tasks.TaskKind.RENEW_IN_WORLDSHARE, "ask the lender", source="test"
        )
        flagged = _request(session, a, "A-FLAGGED")
        _exported(session, flagged, "1003")
        service.flag(session, flagged, "WorldShare status 'Recalled' is not mapped", source="t")
        lost = _request(session, a, "A-LOST")
        lost.export_attempted_at = utcnow()
        service.flag(session, lost, f"{UNKNOWN_CREATE} A-LOST (timeout)", source="test")
        dead = _request(session, a, "A-DEAD")
        enqueue(
            session,
            EXPORT_TO_WORLDSHARE,
            institution_id=a.id,
            request_id=dead.id,
        )
        session.exec(
            update(Job)
            .where(col(Job.request_id) == dead.id)
            .values(status=JobStatus.DEAD.value, last_error="OCLC refused: 30000 Missing")
        )
        other = _request(session, b, "B-FLAGGED")
        service.flag(session, other, "look at this", source="test")
        session.commit()
        ids = {r.alma_request_id: r.id for r in (stale, renew, flagged, lost, dead, other)}
    with write_session(engine) as session:
        mark_stale(session, utcnow() + LATER)
        session.commit()
    return {"ids": ids, "a": a, "b": b}


def _tasks(client, headers, query: str = "") -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/tasks?{query}", headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def _kinds(items) -> list[tuple[str, str | None]]:
    """Each task once: sorted, so a task listed twice would show."""
    return sorted((item["kind"], item["alma_request_id"]) for item in items)


def test_every_kind_of_task_with_ids_and_how_to_resolve(client, engine, world):
    admin = bearer(make_token(engine, ["admin"]))
    items = _tasks(client, admin, "limit=200")
    assert _kinds(items) == sorted(
        [
            ("stale_request", "A-STALE"),
            ("stale_request", "A-RENEW"),  # exported 61 days ago too
            ("stale_request", "A-FLAGGED"),
            ("renew_in_worldshare", "A-RENEW"),
            ("review", "A-FLAGGED"),
            ("review", "B-FLAGGED"),
            ("possible_duplicate", "A-LOST"),  # not also a review, nor a stale task
            ("dead_job", "A-DEAD"),  # its request is stale (export_dead), listed once
        ]
    )
    stale = next(
        i for i in items if i["kind"] == "stale_request" and i["alma_request_id"] == "A-STALE"
    )
    assert stale["stale_reason"] == "no_lender_progress"
    assert stale["worldshare_request_id"] == "1001"
    assert stale["institution"] == "A"
    assert stale["resolve"] == {
        "method": "POST",
        "path": f"/api/v1/requests/{world['ids']['A-STALE']}/resolve",
        "body": {"task": "stale_request"},
    }
    dead = next(i for i in items if i["kind"] == "dead_job")
    assert "30000 Missing" in dead["reason"]
    assert dead["resolve"]["path"] == f"/api/v1/jobs/{dead['job_id']}/retry"
    assert next(i for i in items if i["kind"] == "possible_duplicate")["stale_reason"] == (
        "export_unresolved"
    )
    dead_request = client.get(f"/api/v1/requests/{world['ids']['A-DEAD']}", headers=admin)
    assert dead_request.json()["stale_reason"] == "export_dead"
    # The reason code is on the request itself too.
    detail = client.get(f"/api/v1/requests/{world['ids']['A-STALE']}", headers=admin).json()
    assert detail["stale_reason"] == "no_lender_progress"
    assert [e["detail"]["reason"] for e in detail["events"] if e["kind"] == "stale"] == [
        "no_lender_progress"
    ]


def test_filters_and_a_token_bound_to_one_institution(client, engine, world):
    admin = bearer(make_token(engine, ["admin"]))
    assert _kinds(_tasks(client, admin, "kind=review")) == [
        ("review", "A-FLAGGED"),
        ("review", "B-FLAGGED"),
    ]
    assert {i["institution"] for i in _tasks(client, admin, "institution=B")} == {"B"}
    only_b = bearer(make_token(engine, ["requests:read"], world["b"], name="b-staff"))
    assert _kinds(_tasks(client, only_b)) == [("review", "B-FLAGGED")]
    refused = client.get("/api/v1/tasks?institution=A", headers=only_b)
    assert refused.status_code == 404
    assert _tasks(client, admin, "kind=dead_job&institution=B") == []

    # Age: only what has waited long enough.
    with Session(engine) as session:
        session.exec(
            update(tasks.StaffTask)
            .where(col(tasks.StaffTask.kind) == tasks.TaskKind.RENEW_IN_WORLDSHARE)
            .values(opened_at=utcnow() - timedelta(days=10))
        )
        session.commit()
    assert _kinds(_tasks(client, admin, "older_than_days=5")) == [
        ("renew_in_worldshare", "A-RENEW")
    ]


def test_pages_walk_every_task_once(client, engine, world):
    admin = bearer(make_token(engine, ["admin"]))
    whole = _tasks(client, admin, "limit=200")
    walked: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(f"/api/v1/tasks?{query}", headers=admin).json()
        walked += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert walked == whole
    bad = client.get("/api/v1/tasks?cursor=bm90LWEtY3Vyc29y", headers=admin)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_cursor"


def test_resolving_a_stale_task_is_not_undone_by_the_next_check(client, engine, world):
    admin = bearer(make_token(engine, ["admin"]))
    request_id = world["ids"]["A-STALE"]
    resolved = client.post(
        f"/api/v1/requests/{request_id}/resolve", json={"task": "stale_request"}, headers=admin
    )
    assert resolved.status_code == 200, resolved.text
    with write_session(engine) as session:
        mark_stale(session, utcnow() + LATER)
        session.commit()
    assert ("stale_request", "A-STALE") not in _kinds(_tasks(client, admin, "limit=200"))

    # The lender ships: no longer "no lender progress"; the reason goes with the task.
    with write_session(engine) as session:
        request = session.exec(
            select(BorrowingRequest).where(BorrowingRequest.id == request_id)
        ).one()
        assert service.apply_trigger(session, request, Trigger.LENDER_SHIPPED, "test")
        mark_stale(session, utcnow())
        session.commit()
    detail = client.get(f"/api/v1/requests/{request_id}", headers=admin).json()
    assert detail["stale_reason"] is None
