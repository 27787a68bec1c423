"""Checks and builders shared by the REST API tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from app.borrowing.models import BorrowingRequest, InboundMessage, RequestEvent
from app.config import Settings
from app.institutions.models import Institution
from app.jobs.models import Job
from tests.support.factories import bearer, make_institution, make_token


def assert_envelope(response: httpx.Response, status: int | None = None) -> dict[str, Any]:
    """A non-2xx answer in the one error shape, without a traceback."""
    context = f"{response.request.method} {response.request.url} -> {response.status_code}"
    if status is not None:
        assert response.status_code == status, f"{context}: {response.text[:300]}"
    assert 400 <= response.status_code < 600, context
    assert response.headers["content-type"].startswith("application/json"), context
    body = response.json()
    assert set(body) == {"error", "detail"}, f"{context}: {body}"
    assert isinstance(body["error"], str) and body["error"], context
    assert isinstance(body["detail"], str), context
    assert "Traceback" not in response.text, context
    return body


def citation_body(institution: str, alma_request_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "institution": institution,
        "alma_request_id": alma_request_id,
        "citation": {"title": f"Title of {alma_request_id}"},
        **extra,
    }


def row_counts(engine: Engine) -> dict[str, int]:
    with Session(engine) as session:
        return {
            model.__name__: int(session.exec(select(func.count()).select_from(model)).one())
            for model in (Institution, BorrowingRequest, RequestEvent, InboundMessage, Job)
        }


@dataclass
class TwoTenants:
    """Institutions A and B, with an unbound admin token and tokens bound to A."""

    a: Institution
    b: Institution
    admin: dict[str, str]
    a_admin: dict[str, str]
    a_reader: dict[str, str]
    a_writer: dict[str, str]


def two_tenants(engine: Engine, settings: Settings) -> TwoTenants:
    a = make_institution(engine, settings, "A")
    b = make_institution(engine, settings, "B")
    return TwoTenants(
        a=a,
        b=b,
        admin=bearer(make_token(engine, ["admin"], name="admin")),
        a_admin=bearer(make_token(engine, ["admin"], a, name="a-admin")),
        a_reader=bearer(make_token(engine, ["requests:read"], a, name="a-reader")),
        a_writer=bearer(make_token(engine, ["requests:read", "requests:write"], a, name="a-w")),
    )
