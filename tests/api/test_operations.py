"""Health, readiness, metrics and the served documentation."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError
from sqlalchemy import event
from sqlalchemy.engine import Engine

from app.config import Settings
from app.main import create_app
from tests.conftest import SECRET_KEY
from tests.support.api_checks import assert_envelope, citation_body
from tests.support.factories import bearer, make_institution, make_token


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_healthz_and_readyz(settings):
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"status": "ready"}


def test_an_unreachable_database_is_503_not_500():
    nowhere = f"postgresql+psycopg://illbridge@127.0.0.1:{_unused_port()}/illbridge"
    settings = Settings(database_url=nowhere, secret_key=SECRET_KEY)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert assert_envelope(ready, 503)["error"] == "not_ready"
        # A database outage on any other route is a retryable 503 too.
        assert_envelope(client.get("/api/v1/requests", headers=bearer("ilb_x")), 503)
        assert_envelope(client.get("/metrics"), 503)


def test_metrics_expose_gauges_and_route_templates(settings, engine):
    make_institution(engine, settings)
    token = bearer(make_token(engine, ["admin"]))
    with TestClient(create_app(settings)) as client:
        created = client.post("/api/v1/requests", json=citation_body("UNIV", "A-1"), headers=token)
        request_id = created.json()["id"]
        assert client.get(f"/api/v1/requests/{request_id}", headers=token).status_code == 200
        assert client.get("/api/v1/requests/777777", headers=token).status_code == 404
        assert client.get("/no/such/page").status_code == 404
        assert client.request("BREW", "/healthz").status_code == 405
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'illbridge_requests{state="received"} 1.0' in text
    assert "illbridge_requests_needing_attention 0.0" in text
    assert 'illbridge_jobs{status="queued"} 1.0' in text
    assert "illbridge_queue_depth 1.0" in text
    assert "illbridge_oldest_queued_job_age_seconds " in text

    series = re.findall(r"^illbridge_http_request_duration_seconds_count\{(.*)\} ", text, re.M)
    labels = [dict(re.findall(r'(\w+)="([^"]*)"', s)) for s in series]
    routes = {label["route"] for label in labels}
    assert "/api/v1/requests/{request_id}" in routes
    assert {"route": "/api/v1/requests/{request_id}", "method": "GET", "status": "404"} in labels
    assert {"route": "/api/v1/requests", "method": "POST", "status": "201"} in labels
    raw_paths = {f"/api/v1/requests/{request_id}", "/api/v1/requests/777777", "/no/such/page"}
    assert not routes & raw_paths
    assert "unmatched" in routes
    assert {label["method"] for label in labels} <= {"GET", "POST", "other"}


@contextmanager
def counted_statements() -> Iterator[list[str]]:
    """The SQL statements any engine of this process runs while the block is open."""
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(Engine, "before_cursor_execute", count)


def _gauges(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(DATABASE_GAUGES)]


DATABASE_GAUGES = (
    "illbridge_requests",
    "illbridge_jobs{",
    "illbridge_queue_depth",
    "illbridge_oldest_queued_job_age_seconds",
)


def test_two_scrapes_within_the_window_read_the_database_once(settings, engine):
    make_institution(engine, settings)
    token = bearer(make_token(engine, ["admin"]))
    with TestClient(create_app(settings)) as client:
        client.post("/api/v1/requests", json=citation_body("UNIV", "A-1"), headers=token)
        with counted_statements() as statements:
            first = client.get("/metrics")
            read_by_first = len(statements)
            client.post("/api/v1/requests", json=citation_body("UNIV", "A-2"), headers=token)
            statements.clear()
            second = client.get("/metrics")
    assert first.status_code == second.status_code == 200
    assert read_by_first >= 4  # requests by state, flagged, jobs by status, queue depth
    assert statements == []
    # The second scrape shows the first one's figures, not A-2.
    assert _gauges(second.text) == _gauges(first.text)
    assert 'illbridge_requests{state="received"} 1.0' in second.text


def test_with_no_cache_window_every_scrape_reads_the_database(settings, engine):
    make_institution(engine, settings)
    token = bearer(make_token(engine, ["admin"]))
    uncached = settings.model_copy(update={"metrics_cache_seconds": 0})
    with TestClient(create_app(uncached)) as client:
        client.get("/metrics")
        client.post("/api/v1/requests", json=citation_body("UNIV", "A-1"), headers=token)
        with counted_statements() as statements:
            second = client.get("/metrics")
    assert statements
    assert 'illbridge_requests{state="received"} 1.0' in second.text


METRICS_TOKEN = "scrape-7d0c2e9a41"


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", f"Bearer {METRICS_TOKEN}x", f"Basic {METRICS_TOKEN}", METRICS_TOKEN],
    ids=["missing", "wrong", "longer", "basic", "no-scheme"],
)
def test_metrics_with_a_token_configured_refuse_other_callers(settings, authorization):
    guarded = settings.model_copy(update={"metrics_token": SecretStr(METRICS_TOKEN)})
    headers = {"Authorization": authorization} if authorization else {}
    with TestClient(create_app(guarded)) as client:
        response = client.get("/metrics", headers=headers)
    assert assert_envelope(response, 401)["error"] == "unauthorized"
    assert METRICS_TOKEN not in response.text


def test_metrics_with_a_token_configured_admit_its_bearer(settings):
    guarded = settings.model_copy(update={"metrics_token": SecretStr(METRICS_TOKEN)})
    with TestClient(create_app(guarded)) as client:
        response = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200
    assert "illbridge_queue_depth" in response.text


def test_documentation_is_served(settings):
    with TestClient(create_app(settings)) as client:
        for path in ("/docs", "/redoc"):
            page = client.get(path)
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
        document = client.get("/openapi.json")
    assert document.status_code == 200
    assert {"/api/v1/requests", "/api/v1/institutions", "/readyz"} <= set(document.json()["paths"])


def test_every_declared_error_uses_the_envelope(settings):
    with TestClient(create_app(settings)) as client:
        document = client.get("/openapi.json").json()
    envelope = document["components"]["schemas"]["ErrorEnvelope"]
    assert sorted(envelope["required"]) == ["detail", "error"]
    declared = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith("2"):
                    continue
                declared += 1
                content = response.get("content", {})
                if path.startswith("/iso18626/") and "application/json" not in content:
                    # ISO 18626 answers its partner in the protocol's own XML.
                    assert set(content) == {"application/xml"}, (method, path, status)
                    continue
                schema = content.get("application/json", {}).get("schema")
                assert schema == {"$ref": "#/components/schemas/ErrorEnvelope"}, (
                    method,
                    path,
                    status,
                )
            if path.startswith("/api/v1/"):
                assert {"401", "403", "422"} <= set(operation["responses"]), (method, path)
    assert declared > 0
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_an_empty_metrics_token_is_refused_not_taken_as_no_token():
    with pytest.raises(ValidationError):
        Settings(metrics_token="")
