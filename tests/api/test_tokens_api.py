"""API tokens: listed and revoked by admins, expiring, last use recorded cheaply, hashes hidden."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, update
from sqlmodel import Session, select

from app.institutions.models import ApiToken
from app.institutions.secrets import hash_api_token
from app.main import create_app
from app.timeutil import utcnow
from tests.support.api_checks import assert_envelope, two_tenants
from tests.support.factories import bearer, make_token


@pytest.fixture
def client(settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def _token_id(client: TestClient, headers: dict[str, str], name: str) -> int:
    listed = client.get("/api/v1/tokens", headers=headers).json()
    return int(next(t["id"] for t in listed if t["name"] == name))


def test_admins_list_tokens_without_values_or_hashes(client, engine, settings):
    tenants = two_tenants(engine, settings)
    plain = tenants.a_reader["Authorization"].removeprefix("Bearer ")
    listed = client.get("/api/v1/tokens", headers=tenants.admin)
    assert listed.status_code == 200, listed.text
    rows = {t["name"]: t for t in listed.json()}
    assert set(rows) == {"admin", "a-admin", "a-reader", "a-w"}
    assert rows["a-reader"]["institution"] == "A" and rows["admin"]["institution"] is None
    assert rows["a-reader"]["scopes"] == ["requests:read"]
    assert set(rows["admin"]) == {
        "id",
        "name",
        "scopes",
        "institution",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    }
    assert plain not in listed.text and hash_api_token(plain) not in listed.text


def test_a_bound_admin_sees_and_revokes_only_its_institutions_tokens(client, engine, settings):
    tenants = two_tenants(engine, settings)
    b_token = make_token(engine, ["requests:read"], tenants.b, name="b-reader")
    listed = client.get("/api/v1/tokens", headers=tenants.a_admin).json()
    assert {t["name"] for t in listed} == {"a-admin", "a-reader", "a-w"}

    b_id = _token_id(client, tenants.admin, "b-reader")
    admin_id = _token_id(client, tenants.admin, "admin")
    for hidden in (b_id, admin_id, 999_999):
        refused = client.delete(f"/api/v1/tokens/{hidden}", headers=tenants.a_admin)
        assert assert_envelope(refused, 404)["detail"] == f"no token {hidden}"
    assert client.get("/api/v1/requests", headers=bearer(b_token)).status_code == 200
    assert_envelope(client.get("/api/v1/tokens", headers=tenants.a_reader), 403)


def test_a_revoked_token_is_refused_at_once(client, engine, settings):
    tenants = two_tenants(engine, settings)
    assert client.get("/api/v1/requests", headers=tenants.a_reader).status_code == 200
    reader_id = _token_id(client, tenants.a_admin, "a-reader")

    revoked = client.delete(f"/api/v1/tokens/{reader_id}", headers=tenants.a_admin)
    assert revoked.status_code == 204 and revoked.content == b""
    refused = client.get("/api/v1/requests", headers=tenants.a_reader)
    assert assert_envelope(refused, 401)["error"] == "unauthorized"
    again = client.delete(f"/api/v1/tokens/{reader_id}", headers=tenants.a_admin)
    assert again.status_code == 204
    listed = client.get("/api/v1/tokens", headers=tenants.admin).json()
    shown = next(t for t in listed if t["id"] == reader_id)
    assert shown["revoked_at"] is not None


def test_an_expired_token_is_refused(client, engine):
    expired = bearer(make_token(engine, ["admin"], expires_at=utcnow() - timedelta(seconds=1)))
    current = bearer(make_token(engine, ["admin"], expires_at=utcnow() + timedelta(days=1)))
    refused = client.get("/api/v1/tokens", headers=expired)
    assert assert_envelope(refused, 401) == {"error": "unauthorized", "detail": "token expired"}
    listed = client.get("/api/v1/tokens", headers=current)
    assert listed.status_code == 200
    assert all(t["expires_at"] is not None for t in listed.json())


def test_last_use_is_recorded_at_most_once_a_minute(client, engine):
    token = bearer(make_token(engine, ["requests:read"], name="reader"))
    app_engine = client.app.state.services.runtime.engine
    stamps: list[str] = []

    @event.listens_for(app_engine, "before_cursor_execute")
    def count(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("UPDATE API_TOKEN"):
            stamps.append(statement)

    def last_used() -> datetime | None:
        with Session(engine) as session:
            return session.exec(select(ApiToken.last_used_at)).one()

    assert last_used() is None
    for _ in range(5):
        assert client.get("/api/v1/requests", headers=token).status_code == 200
    first = last_used()
    assert first is not None and len(stamps) == 1

    # A minute later the next use is recorded again.
    with Session(engine) as session:
        session.execute(update(ApiToken).values(last_used_at=first - timedelta(minutes=2)))
        session.commit()
    assert client.get("/api/v1/requests", headers=token).status_code == 200
    assert len(stamps) == 2
    latest = last_used()
    assert latest is not None and latest >= first
