"""The Alma REST client's borrowing-request calls against the strict simulated Alma: ids
resolved, cancels that never notify the patron, and Alma's failures classified."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.alma.rest import AlmaClient, internal_request_id
from app.sandbox.alma_rest import SeedRequest, add_alma_rest_api
from app.upstream import PermanentUpstreamError, TransientUpstreamError

BASE = "http://alma.test/almaws/v1"


def run(step) -> Any:
    async def go() -> Any:
        app = FastAPI()
        state = add_alma_rest_api(app)
        state.requests["9001"] = _seed("U-1", "9001", "EXT-1")
        state.requests["9003"] = _seed("U-3", "9003", None)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://alma.test") as http:
            client = AlmaClient(http, BASE, "l7xx-key", institution="UNIV")
            return await step(client, http, state)

    return asyncio.run(go())


def _seed(user_id: str, request_id: str, external_id: str | None) -> SeedRequest:
    return SeedRequest(user_id=user_id, request_id=request_id, external_id=external_id)


def test_the_internal_id_is_read_by_external_id_then_plain_id():
    async def step(client, _http, state):
        by_external = await internal_request_id(client, "U-1", "EXT-1")
        by_plain = await internal_request_id(client, "U-3", "9003")
        return by_external, by_plain, [(c["request_id"], c["query"]) for c in state.calls]

    by_external, by_plain, calls = run(step)
    assert (by_external, by_plain) == ("9001", "9003")
    assert calls == [
        ("EXT-1", {"request_id_type": "external"}),
        ("9003", {"request_id_type": "external"}),
        ("9003", {}),
    ]


def test_cancel_carries_the_key_the_reason_and_notify_user_false():
    seen: list[httpx.Request] = []

    async def step(client, http, state):
        http.event_hooks["request"].append(lambda request: _keep(seen, request))
        await client.cancel_request("U-1", "9001", reason="NOT_SUPPLIED_BY_PARTNER")
        return state.requests["9001"].status

    assert run(step) == "CANCELED"
    (request,) = seen
    assert request.method == "DELETE"
    assert request.headers["Authorization"] == "apikey l7xx-key"
    assert dict(request.url.params) == {"reason": "NOT_SUPPLIED_BY_PARTNER", "notify_user": "false"}


async def _keep(seen: list[httpx.Request], request: httpx.Request) -> None:
    seen.append(request)


def test_the_simulated_alma_refuses_a_cancel_that_would_notify_or_has_no_reason():
    async def step(client, http, state):
        with pytest.raises(PermanentUpstreamError) as notify:
            await client.cancel_request("U-1", "9001", reason="X", notify_user=True)
        bare = await http.delete(
            f"{BASE}/users/U-1/resource-sharing-requests/9001",
            params={"notify_user": "false"},
            headers={"Authorization": "apikey k", "Accept": "application/json"},
        )
        keyless = await http.get(
            f"{BASE}/users/U-1/resource-sharing-requests/9001",
            headers={"Accept": "application/json"},
        )
        return notify.value, bare, keyless, state.requests["9001"].status

    notify, bare, keyless, status = run(step)
    assert notify.status_code == 400 and "40166422" in notify.codes
    assert bare.status_code == 400
    assert keyless.status_code == 401
    assert status != "CANCELED"


def test_failures_are_classified():
    async def step(client, http, state):
        state.failing["9001"] = 503
        with pytest.raises(TransientUpstreamError) as busy:
            await client.cancel_request("U-1", "9001", reason="X")
        with pytest.raises(PermanentUpstreamError) as missing:
            await client.get_request("U-1", "nope", external=False)
        return busy.value, missing.value

    busy, missing = run(step)
    assert busy.status_code == 503
    assert missing.codes == ("40166450",)
    assert "U-1" not in busy.message + missing.message  # no patron id in errors
