"""Bearer tokens: who gets in, with which scopes, and what a token bound to one institution sees."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select, update

from app.institutions.models import ApiToken
from app.jobs.models import Job, JobStatus
from app.main import create_app
from app.timeutil import utcnow
from tests.support.api_checks import TwoTenants, assert_envelope, citation_body, two_tenants
from tests.support.factories import bearer, make_token

PROTECTED = [
    ("GET", "/api/v1/requests"),
    ("POST", "/api/v1/requests"),
    ("GET", "/api/v1/requests/1"),
    ("GET", "/api/v1/jobs"),
    ("POST", "/api/v1/jobs/1/retry"),
    ("GET", "/api/v1/stats"),
    ("GET", "/api/v1/institutions"),
    ("POST", "/api/v1/institutions"),
    ("GET", "/api/v1/institutions/A"),
    ("PATCH", "/api/v1/institutions/A"),
]


@pytest.fixture
def client(settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def tenants(engine, settings) -> TwoTenants:
    return two_tenants(engine, settings)


def _create(client: TestClient, headers: dict[str, str], institution: str, alma_id: str) -> int:
    response = client.post(
        "/api/v1/requests", json=citation_body(institution, alma_id), headers=headers
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _kill_jobs(engine, request_id: int) -> int:
    """Mark the request's export job dead, as the worker would after its last attempt."""
    with Session(engine) as session:
        session.exec(
            update(Job).where(col(Job.request_id) == request_id).values(status=JobStatus.DEAD)
        )
        session.commit()
        job_id = session.exec(select(Job.id).where(Job.request_id == request_id)).one()
    assert job_id is not None
    return job_id


def test_every_protected_route_wants_a_bearer_token(client, tenants):
    for method, path in PROTECTED:
        response = client.request(method, path, json={})
        body = assert_envelope(response, 401)
        assert body["error"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer", path


UNREADABLE_BODIES = [b'{"institution": "A",', b"\xff\xfe\x00not utf-8", b"\x80"]


@pytest.mark.parametrize("body", UNREADABLE_BODIES, ids=["truncated", "utf-16-ish", "not-utf-8"])
def test_the_token_is_judged_before_the_body(client, tenants, body):
    """A caller without a token learns nothing of the body, not even that it is malformed."""
    json_type = {"Content-Type": "application/json"}
    for method, path in [m for m in PROTECTED if m[0] != "GET"]:
        anonymous = client.request(method, path, content=body, headers=json_type)
        assert assert_envelope(anonymous, 401)["error"] == "unauthorized", path
        reader = client.request(method, path, content=body, headers=json_type | tenants.a_reader)
        assert assert_envelope(reader, 403)["error"] == "forbidden", path
    admin = client.post("/api/v1/requests", content=body, headers=json_type | tenants.admin)
    assert assert_envelope(admin, 422)["detail"] == "body: malformed JSON"


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Token ilb_abcdefghijklmnop",
        "Bearer not-a-token",
        "Bearer ilb_" + "x" * 43,
        "Bearer " + "y" * 5000,
    ],
    ids=["empty", "blank", "basic", "other-scheme", "garbage", "unknown", "huge"],
)
def test_malformed_or_unknown_tokens_are_refused(client, tenants, authorization):
    response = client.get("/api/v1/requests", headers={"Authorization": authorization})
    assert_envelope(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_revoked_token_stops_working(client, engine, tenants):
    plain = make_token(engine, ["admin"], name="soon-revoked")
    assert client.get("/api/v1/requests", headers=bearer(plain)).status_code == 200
    with Session(engine) as session:
        session.exec(
            update(ApiToken).where(col(ApiToken.name) == "soon-revoked").values(revoked_at=utcnow())
        )
        session.commit()
    assert_envelope(client.get("/api/v1/requests", headers=bearer(plain)), 401)


def test_scopes_are_enforced_with_403(client, engine, tenants):
    reader = bearer(make_token(engine, ["requests:read"]))
    writer = bearer(make_token(engine, ["requests:read", "requests:write"]))

    refused = client.post("/api/v1/requests", json=citation_body("A", "R1"), headers=reader)
    assert assert_envelope(refused, 403)["error"] == "forbidden"
    assert client.get("/api/v1/requests", headers=reader).json()["items"] == []

    request_id = _create(client, writer, "A", "R1")
    job_id = _kill_jobs(engine, request_id)
    for method, path in [
        ("GET", "/api/v1/institutions"),
        ("POST", "/api/v1/institutions"),
        ("GET", "/api/v1/institutions/A"),
        ("PATCH", "/api/v1/institutions/A"),
        ("POST", f"/api/v1/jobs/{job_id}/retry"),
    ]:
        assert_envelope(client.request(method, path, json={}, headers=writer), 403)
    # The refusals changed nothing: the job is still dead.
    jobs = client.get("/api/v1/jobs", headers=writer).json()["items"]
    assert [job["status"] for job in jobs] == ["dead"]


def test_admin_implies_read_and_write(client, tenants):
    request_id = _create(client, tenants.admin, "A", "R1")
    assert client.get(f"/api/v1/requests/{request_id}", headers=tenants.admin).status_code == 200
    assert client.get("/api/v1/jobs", headers=tenants.admin).status_code == 200
    assert client.get("/api/v1/stats", headers=tenants.admin).status_code == 200


def test_a_token_bound_to_a_sees_nothing_of_b(client, engine, tenants):
    a_request = _create(client, tenants.admin, "A", "A-1")
    b_request = _create(client, tenants.admin, "B", "B-1")
    _create(client, tenants.admin, "B", "B-2")
    b_job = _kill_jobs(engine, b_request)
    a_job = _kill_jobs(engine, a_request)

    for headers in (tenants.a_reader, tenants.a_admin):
        assert_envelope(client.get(f"/api/v1/requests/{b_request}", headers=headers), 404)
        assert client.get(f"/api/v1/requests/{a_request}", headers=headers).status_code == 200
        listed = client.get("/api/v1/requests", headers=headers).json()["items"]
        assert [r["institution"] for r in listed] == ["A"]
        assert_envelope(client.get("/api/v1/requests?institution=B", headers=headers), 404)
        jobs = client.get("/api/v1/jobs", headers=headers).json()["items"]
        assert [job["request_id"] for job in jobs] == [a_request]
        stats = client.get("/api/v1/stats", headers=headers).json()
        assert stats["requests_by_state"] == {"received": 1}
        assert stats["jobs_by_status"] == {"dead": 1}

    # Unbound, the same reads see both institutions.
    assert client.get("/api/v1/stats", headers=tenants.admin).json()["requests_by_state"] == {
        "received": 3
    }

    # An admin of A can neither replay B's job nor read or change B itself.
    assert_envelope(client.post(f"/api/v1/jobs/{b_job}/retry", headers=tenants.a_admin), 404)
    assert_envelope(client.get("/api/v1/institutions/B", headers=tenants.a_admin), 404)
    patched = client.patch(
        "/api/v1/institutions/B", json={"name": "Taken over"}, headers=tenants.a_admin
    )
    assert_envelope(patched, 404)
    listed = client.get("/api/v1/institutions", headers=tenants.a_admin).json()
    assert [i["code"] for i in listed] == ["A"]
    b = client.get("/api/v1/institutions/B", headers=tenants.admin).json()
    assert b["name"] == "University B"
    b_jobs = client.get(f"/api/v1/jobs?request_id={b_request}", headers=tenants.admin).json()
    assert [job["status"] for job in b_jobs["items"]] == ["dead"]

    # ... while its own job and institution are within reach.
    retried = client.post(f"/api/v1/jobs/{a_job}/retry", headers=tenants.a_admin)
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "queued"


def test_a_bound_writer_cannot_create_for_another_institution(client, engine, tenants):
    refused = client.post(
        "/api/v1/requests", json=citation_body("B", "B-9"), headers=tenants.a_writer
    )
    assert_envelope(refused, 404)
    assert client.get("/api/v1/requests", headers=tenants.admin).json()["items"] == []
    assert client.get("/api/v1/jobs", headers=tenants.admin).json()["items"] == []
    _create(client, tenants.a_writer, "A", "A-9")
