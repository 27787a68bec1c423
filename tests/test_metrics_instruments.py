"""Metrics of issue 12, point 6, as /metrics shows them once the running service made the calls:
outbound calls by upstream and outcome with their latencies, token fetches by outcome, the Alma
API budget and WorldShare calls today; no patron data in any label."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from app.db import write_session
from app.main import create_app
from app.timeutil import utcnow
from app.upstream import TransientUpstreamError, UpstreamError, call
from app.worldshare import budget
from app.worldshare.auth import ClientCredentials
from tests.support.factories import bearer, make_token

PATRON = "PATRON-8841-jane.doe@example.edu"
LOAN_URL = f"https://api-eu.hosted.exlibrisgroup.com/almaws/v1/users/{PATRON}/loans/1"
TOKEN_URL = "https://oauth.oclc.org/token"


@pytest.fixture
def client(settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update={"sandbox": False}))) as client:
        yield client


def _sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def _run(client: TestClient, coroutine_function, *args):
    assert client.portal is not None
    return client.portal.call(coroutine_function, *args)


def test_upstream_calls_are_counted_by_target_and_status_with_latency(client):
    runtime = client.app.state.services.runtime  # type: ignore[attr-defined]
    with respx.mock() as upstream:
        upstream.get(LOAN_URL).mock(
            side_effect=[httpx.Response(200, json={}), httpx.Response(429), httpx.ConnectError("x")]
        )
        _run(client, call, runtime.http, "Alma API", "GET", LOAN_URL)
        _run(client, call, runtime.http, "Alma API", "GET", LOAN_URL)
        with pytest.raises(TransientUpstreamError):
            _run(client, call, runtime.http, "Alma API", "GET", LOAN_URL)
    text = client.get("/metrics").text
    name = "illbridge_upstream_call_duration_seconds"
    assert _sample(text, f"{name}_count", target="alma_api", status="200") == 1
    assert _sample(text, f"{name}_count", target="alma_api", status="429") == 1
    assert _sample(text, f"{name}_count", target="alma_api", status="connection_error") == 1
    assert _sample(text, f"{name}_bucket", target="alma_api", status="200", le="60.0") == 1
    assert PATRON not in text and "jane.doe" not in text


def test_token_fetches_are_counted_by_grant_and_outcome(client):
    runtime = client.app.state.services.runtime  # type: ignore[attr-defined]
    credentials = ClientCredentials(
        institution_code="UNIV", token_url=TOKEN_URL, scope="WorldShareILL", key="k", secret="s"
    )
    refused = ClientCredentials(
        institution_code="OTHER", token_url=TOKEN_URL, scope="WorldShareILL", key="k", secret="x"
    )
    with respx.mock() as oclc:
        oclc.post(TOKEN_URL).mock(
            side_effect=[
                httpx.Response(200, json={"access_token": "tk_1", "expires_in": 1199}),
                httpx.Response(401, json={"message": "bad key"}),
            ]
        )
        _run(client, runtime.worldshare_tokens.token, runtime.http, credentials)
        _run(client, runtime.worldshare_tokens.token, runtime.http, credentials)  # cached
        with pytest.raises(UpstreamError):
            _run(client, runtime.worldshare_tokens.token, runtime.http, refused)
    text = client.get("/metrics").text
    name = "illbridge_token_refreshes_total"
    assert _sample(text, name, grant_type="client_credentials", outcome="ok") == 1
    assert _sample(text, name, grant_type="client_credentials", outcome="refused") == 1
    assert "tk_1" not in text
    target = "worldshare_token_endpoint"
    assert _sample(text, "illbridge_upstream_call_duration_seconds_count", target=target) == 1


def test_budget_gauges_are_exposed(client, engine):
    metrics = client.app.state.metrics  # type: ignore[attr-defined]
    metrics.set_alma_api_remaining("UNIV", 149_250)
    now = utcnow()
    univ, fsu = budget.key_id("univ-wskey"), budget.key_id("fsu-wskey")
    with write_session(engine) as session:
        budget.count_call(session, univ, now, calls=1200)
        budget.count_call(session, univ, now - timedelta(hours=3), calls=3)
        budget.count_call(session, fsu, now - timedelta(hours=30), calls=7)  # a day ago
        session.commit()
    text = client.get("/metrics").text
    assert _sample(text, "illbridge_alma_api_remaining", institution="UNIV") == 149_250
    assert _sample(text, "illbridge_worldshare_calls_today", key=univ[:12]) == 1203
    assert _sample(text, "illbridge_worldshare_calls_today", key=fsu[:12]) is None
    assert "univ-wskey" not in text
    stats = client.get("/api/v1/stats", headers=bearer(make_token(engine, ["admin"]))).json()
    assert stats["worldshare_calls_last_24h"] == {univ[:12]: 1203}
