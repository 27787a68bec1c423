"""The Alma REST client against Alma's documented answers (respx)."""

from __future__ import annotations

import asyncio
import time
from datetime import date

import httpx
import pytest
import respx
from prometheus_client import CollectorRegistry, Gauge

from app.alma import rest
from app.alma.rest import AlmaClient, RateLimiter, parse_errors
from app.upstream import PermanentUpstreamError, TransientUpstreamError

BASE = "https://api-eu.hosted.exlibrisgroup.com/almaws/v1"
USER = "868256628995@eduid.ch"
LOAN_URL = f"{BASE}/users/868256628995%40eduid.ch/loans/2410068350005506"
RS_URL = f"{BASE}/users/868256628995%40eduid.ch/resource-sharing-requests/R1"


def alma_errors(*errors: dict[str, str], one: bool = False) -> dict[str, object]:
    listed: object = errors[0] if one else list(errors)
    return {"errorsExist": True, "errorList": {"error": listed}, "result": None}


def client(institution: str = "UNIV") -> tuple[AlmaClient, Gauge]:
    gauge = Gauge("alma_remaining", "left", ["institution"], registry=CollectorRegistry())
    http = httpx.AsyncClient(timeout=httpx.Timeout(5.0))
    return AlmaClient(http, BASE, "l8xx-key", institution=institution, remaining=gauge), gauge


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


@respx.mock
def test_loan_is_read_and_put_with_the_api_key_and_json_and_the_budget_recorded():
    loan = {
        "loan_id": "2410068350005506",
        "due_date": "2027-02-08T23:59:00Z",
        "loan_status": "ACTIVE",
    }
    got = respx.get(LOAN_URL).mock(
        return_value=httpx.Response(200, json=loan, headers={"X-Exl-Api-Remaining": "48123"})
    )
    put = respx.put(LOAN_URL).mock(return_value=httpx.Response(200, json=loan))
    alma, gauge = client()
    read = run(alma.get_loan(USER, "2410068350005506"))
    run(alma.update_loan_due_date(USER, "2410068350005506", date(2027, 2, 8)))
    assert read.due_date == date(2027, 2, 8) and read.loan_status == "ACTIVE"
    sent = got.calls[0].request
    assert sent.headers["Authorization"] == "apikey l8xx-key"
    assert sent.headers["Accept"] == "application/json"
    body = put.calls[0].request
    assert body.headers["Content-Type"] == "application/json"
    assert body.url.params["notify_user"] == "false"
    assert b'"due_date":"2027-02-08T23:59:00Z"' in body.content.replace(b" ", b"")
    assert gauge.labels("UNIV")._value.get() == 48123


def test_the_error_list_is_read_as_a_list_or_as_one_object():
    one = {"errorCode": "401861", "errorMessage": "User not found", "trackingId": "E01-1"}
    two = {"errorCode": "60101", "errorMessage": "x", "trackingId": "E01-2"}
    assert [e.code for e in parse_errors(alma_errors(one, one=True))] == ["401861"]
    assert [e.tracking_id for e in parse_errors(alma_errors(one, two))] == ["E01-1", "E01-2"]
    assert parse_errors({"unexpected": True}) == [] and parse_errors(None) == []


@respx.mock
def test_a_logical_4xx_names_code_and_tracking_id_but_never_the_user():
    error = {"errorCode": "401861", "errorMessage": f"User {USER} not found", "trackingId": "E01-9"}
    respx.get(LOAN_URL).mock(return_value=httpx.Response(400, json=alma_errors(error, one=True)))
    alma, _ = client()
    with pytest.raises(PermanentUpstreamError) as raised:
        run(alma.get_loan(USER, "2410068350005506"))
    assert raised.value.codes == ("401861",)
    assert "401861" in str(raised.value) and "E01-9" in str(raised.value)
    assert "868256628995" not in str(raised.value)


@respx.mock
def test_per_second_threshold_is_retried_with_backoff_and_other_429s_are_transient(monkeypatch):
    monkeypatch.setattr(rest, "THROTTLE_BACKOFF_SECONDS", 0.01)
    throttled = httpx.Response(
        429,
        json=alma_errors({"errorCode": "PER_SECOND_THRESHOLD", "errorMessage": "slow down"}),
    )
    ok = httpx.Response(200, json={"loan_id": "2410068350005506", "due_date": None})
    route = respx.get(LOAN_URL).mock(side_effect=[throttled, throttled, ok])
    alma, _ = client("THROTTLED")
    assert run(alma.get_loan(USER, "2410068350005506")).loan_id == "2410068350005506"
    assert route.call_count == 3
    daily = httpx.Response(
        429, json=alma_errors({"errorCode": "DAILY_THRESHOLD", "errorMessage": "budget"})
    )
    respx.get(LOAN_URL).mock(return_value=daily)
    with pytest.raises(TransientUpstreamError):
        run(alma.get_loan(USER, "2410068350005506"))


@respx.mock
def test_borrowing_request_by_external_id_and_a_silent_cancel():
    got = respx.get(RS_URL).mock(
        return_value=httpx.Response(
            200, json={"request_id": "R1", "external_id": "WS-1", "status": {"value": "X"}}
        )
    )
    deleted = respx.delete(RS_URL).mock(return_value=httpx.Response(204))
    alma, _ = client()
    found = run(alma.get_request(USER, "R1", external=True))
    run(alma.cancel_request(USER, "R1", reason="NOT_SUPPLIED_BY_PARTNER"))
    assert (found.external_id, found.status) == ("WS-1", "X")
    assert got.calls[0].request.url.params["request_id_type"] == "external"
    params = deleted.calls[0].request.url.params
    assert (params["reason"], params["notify_user"]) == ("NOT_SUPPLIED_BY_PARTNER", "false")


def test_at_most_25_calls_a_second_per_institution():
    limiter = RateLimiter(25)

    async def fifty() -> float:
        started = time.monotonic()
        for _ in range(50):
            await limiter.acquire()
        return time.monotonic() - started

    # 50 calls at 25/s take at least the 49 intervals between them.
    assert run(fifty()) >= 49 / 25 - 0.05
    assert rest.limiter_for("A") is rest.limiter_for("A")
    assert rest.limiter_for("A") is not rest.limiter_for("B")
