"""The simulated Alma REST API and webhook sender, driven by the bridge's Alma client."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.alma import rest
from app.alma.rest import AlmaClient
from app.sandbox.alma_api import Loan, loan_event_body, signature
from app.sandbox.alma_requester import create_alma_iso_sandbox
from app.upstream import PermanentUpstreamError

USER = "patron@example.edu"
REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "alma-webhooks"
LOAN_CREATED = (REFERENCE / "loan_created.json").read_bytes()


def test_the_client_and_the_simulated_alma_agree_on_loans_and_borrowing_requests(monkeypatch):
    monkeypatch.setattr(rest, "THROTTLE_BACKOFF_SECONDS", 0.01)
    app = create_alma_iso_sandbox()

    async def play() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://alma") as http:
            await http.post(
                "/_sandbox/rs-requests",
                json={"request_id": "R1", "external_id": "WS-1", "user_id": USER},
            )
            alma = AlmaClient(http, "http://alma/almaws/v1", "key", institution="SANDBOXTEST")
            found = await alma.get_request(USER, "WS-1", external=True)
            await alma.cancel_request(USER, "R1", reason="NOT_SUPPLIED_BY_PARTNER")
            cancelled = (await http.get("/_sandbox/rs-requests/R1")).json()
            calls = (await http.get("/_sandbox/rest-calls")).json()
            await http.post("/_sandbox/throttle", params={"times": 2})
            with pytest.raises(PermanentUpstreamError) as missing:
                await alma.get_loan(USER, "no-such-loan")
            keyless = await http.get(f"/almaws/v1/users/{USER}/loans/1")
            return {
                "found": found,
                "cancelled": cancelled,
                "cancel": [c for c in calls if c["method"] == "DELETE"],
                "missing": missing.value,
                "keyless": keyless,
            }

    seen = asyncio.run(play())
    assert seen["found"].request_id == "R1"
    assert seen["cancelled"]["status"] == "CANCELED"
    [cancel] = seen["cancel"]
    assert cancel["query"] == {"reason": "NOT_SUPPLIED_BY_PARTNER", "notify_user": "false"}
    assert seen["missing"].codes == ("401890",)
    assert seen["keyless"].status_code == 401


def test_webhooks_are_written_and_signed_like_alma():
    loan = Loan("L1", USER, "ILL000000001", "I1", "ILL", "2027-01-08T23:59:00Z", None)
    body = loan_event_body("LOAN_CREATED", loan, "01UNIV_INST")
    reference = json.loads(LOAN_CREATED)
    document = json.loads(body)
    # Alma's envelope, key order and compact spacing, as in the reference payload.
    assert list(document) == list(reference)
    assert b'","action":"LOAN","' in body and b", " not in body
    assert set(document["item_loan"]) <= set(reference["item_loan"])
    expected = base64.b64encode(hmac.new(b"s3cret", body, hashlib.sha256).digest()).decode()
    assert signature("s3cret", body) == expected
