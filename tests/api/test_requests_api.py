"""Borrowing requests over REST: filters, cursor pages, the timeline, idempotent creates."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select, update

from app.borrowing import service
from app.borrowing.models import BorrowingRequest
from app.borrowing.states import Trigger
from app.db import write_session
from app.main import create_app
from tests.support.api_checks import assert_envelope, citation_body, row_counts
from tests.support.factories import bearer, make_institution, make_token


@pytest.fixture
def admin(engine, settings) -> dict[str, str]:
    make_institution(engine, settings, "A")
    make_institution(engine, settings, "B")
    return bearer(make_token(engine, ["admin"]))


@pytest.fixture
def client(settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def _create(client, admin, institution: str, alma_id: str) -> int:
    response = client.post(
        "/api/v1/requests", json=citation_body(institution, alma_id), headers=admin
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _set(engine, request_id: int, **values) -> None:
    with Session(engine) as session:
        session.exec(
            update(BorrowingRequest).where(col(BorrowingRequest.id) == request_id).values(**values)
        )
        session.commit()


def _ids(client, admin, query: str = "") -> list[int]:
    response = client.get(f"/api/v1/requests?{query}", headers=admin)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def test_list_filters(client, admin, engine):
    a1 = _create(client, admin, "A", "A-1")
    a2 = _create(client, admin, "A", "A-2")
    b1 = _create(client, admin, "B", "B-1")
    _set(engine, a2, state="exported", worldshare_request_id="166917929")
    _set(engine, b1, needs_attention=True, attention_reason="lender silent")
    _set(engine, a1, updated_at=datetime(2020, 1, 1, 12, tzinfo=UTC))

    assert _ids(client, admin) == [b1, a2, a1]
    assert _ids(client, admin, "institution=A") == [a2, a1]
    assert _ids(client, admin, "state=exported") == [a2]
    assert _ids(client, admin, "state=received&institution=A") == [a1]
    assert _ids(client, admin, "alma_request_id=B-1") == [b1]
    assert _ids(client, admin, "alma_request_id=B-1&institution=A") == []
    assert _ids(client, admin, "worldshare_request_id=166917929") == [a2]
    assert _ids(client, admin, "needs_attention=true") == [b1]
    assert _ids(client, admin, "needs_attention=false") == [a2, a1]
    assert _ids(client, admin, "updated_since=2021-01-01T00:00:00Z") == [b1, a2]
    # Without an offset the time is UTC; a date alone is its midnight.
    assert _ids(client, admin, "updated_since=2020-01-01T11:59:00") == [b1, a2, a1]
    assert _ids(client, admin, "updated_since=2020-01-01T12:30:00") == [b1, a2]
    assert _ids(client, admin, "updated_since=2020-01-01") == [b1, a2, a1]
    assert _ids(client, admin, "updated_since=2020-01-01T13:00:00%2B02:00") == [b1, a2, a1]

    detail = client.get("/api/v1/requests?needs_attention=true", headers=admin).json()["items"][0]
    assert (detail["needs_attention"], detail["attention_reason"]) == (True, "lender silent")


def test_cursor_pages_cover_everything_once(client, admin):
    created = [_create(client, admin, "A" if i % 3 else "B", f"R-{i}") for i in range(8)]
    for query, expected in [
        ("", sorted(created, reverse=True)),
        ("institution=A&", sorted((r for i, r in enumerate(created) if i % 3), reverse=True)),
    ]:
        seen: list[int] = []
        cursor = None
        pages = 0
        while True:
            suffix = f"&cursor={cursor}" if cursor else ""
            page = client.get(f"/api/v1/requests?{query}limit=3{suffix}", headers=admin).json()
            assert len(page["items"]) <= 3
            seen += [item["id"] for item in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == expected  # newest first, no duplicate, no gap
        assert pages == -(-len(expected) // 3)


def test_jobs_paginate_the_same_way(client, admin):
    for i in range(5):
        _create(client, admin, "A", f"R-{i}")
    first = client.get("/api/v1/jobs?limit=2", headers=admin).json()
    second = client.get(f"/api/v1/jobs?limit=2&cursor={first['next_cursor']}", headers=admin)
    third = client.get(f"/api/v1/jobs?limit=2&cursor={second.json()['next_cursor']}", headers=admin)
    ids = [j["id"] for page in (first, second.json(), third.json()) for j in page["items"]]
    assert ids == sorted(set(ids), reverse=True) and len(ids) == 5
    assert third.json()["next_cursor"] is None


def test_single_read_has_the_timeline_applied_and_refused(client, admin, engine):
    request_id = _create(client, admin, "A", "A-1")
    with write_session(engine) as session:
        request = session.get(BorrowingRequest, request_id)
        assert request is not None
        assert service.apply_trigger(session, request, Trigger.EXPORTED, "worldshare")
        assert not service.apply_trigger(session, request, Trigger.PATRON_LOANED, "alma")
        session.commit()

    response = client.get(f"/api/v1/requests/{request_id}", headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["institution"], body["alma_request_id"], body["state"]) == ("A", "A-1", "exported")
    assert body["citation"] == {"title": "Title of A-1"}
    assert body["needs_attention"] is True
    timeline = [
        (e["kind"], e["source"], e["from_state"], e["to_state"], e["applied"])
        for e in body["events"]
    ]
    assert timeline == [
        ("received", "api", None, "received", True),
        ("exported", "worldshare", "received", "exported", True),
        ("patron_loaned", "alma", "exported", None, False),
        ("flagged", "alma", None, None, True),
    ]
    assert_envelope(client.get(f"/api/v1/requests/{request_id + 1}", headers=admin), 404)


def test_create_is_idempotent_by_alma_request_id(client, admin, engine):
    body = citation_body("A", "A-1", requester_user_id="patron-7")
    first = client.post("/api/v1/requests", json=body, headers=admin)
    again = client.post("/api/v1/requests", json=body, headers=admin)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert "patron-7" not in first.text  # the requester stays inside the bridge
    # The same Alma id at another institution is another request.
    other = client.post("/api/v1/requests", json={**body, "institution": "B"}, headers=admin)
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    counts = row_counts(engine)
    assert (counts["BorrowingRequest"], counts["Job"]) == (2, 2)
    assert counts["InboundMessage"] == 2  # each create in the inbox once; the repeat is not


def test_create_is_idempotent_by_idempotency_key(client, admin, engine):
    key = {"Idempotency-Key": "3f9e5a52-7c1d-4a8e-9b7e-1c2d3e4f5a6b"}
    first = client.post("/api/v1/requests", json=citation_body("A", "A-1"), headers=admin | key)
    retried = client.post("/api/v1/requests", json=citation_body("A", "A-1"), headers=admin | key)
    assert (first.status_code, retried.status_code) == (201, 200)
    assert retried.json()["id"] == first.json()["id"]
    # The same key for another Alma request is a client's mistake, not a silent match.
    reused = client.post("/api/v1/requests", json=citation_body("A", "A-1b"), headers=admin | key)
    assert assert_envelope(reused, 409)["error"] == "conflict"
    fresh = client.post(
        "/api/v1/requests",
        json=citation_body("A", "A-2"),
        headers=admin | {"Idempotency-Key": "k2"},
    )
    assert fresh.status_code == 201
    with Session(engine) as session:
        stored = session.exec(select(BorrowingRequest.alma_request_id)).all()
    assert sorted(stored) == ["A-1", "A-2"]


def test_validation_errors_use_the_envelope(client, admin, engine):
    missing = client.post(
        "/api/v1/requests", json={"institution": "A", "alma_request_id": "A-1"}, headers=admin
    )
    body = assert_envelope(missing, 422)
    assert body["error"] == "validation_error"
    assert "citation" in body["detail"]
    spaced = client.post("/api/v1/requests", json=citation_body("A", "has space"), headers=admin)
    assert "alma_request_id" in assert_envelope(spaced, 422)["detail"]
    unknown = client.post("/api/v1/requests", json=citation_body("NOPE", "A-1"), headers=admin)
    assert assert_envelope(unknown, 404)["error"] == "not_found"
    assert row_counts(engine)["BorrowingRequest"] == 0
