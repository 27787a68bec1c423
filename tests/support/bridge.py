"""The whole system on loopback: the bridge (API + worker), the WorldShare and Alma sandboxes.

Everything talks over real HTTP; tests drive Alma with the sandbox requester's client and the
lender with the WorldShare sandbox's control endpoints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from sqlalchemy.engine import Engine

from app.config import Settings
from app.main import create_app
from app.sandbox.alma_requester import create_alma_iso_sandbox
from app.sandbox.worldshare import WorldShareSandboxSettings, create_worldshare_sandbox
from tests.support.factories import bearer, make_institution, make_token, sandbox_worldshare
from tests.support.servers import run_asgi_in_thread

ALMA_AGENCY = ("ISIL", "US-UNIV")
BRIDGE_AGENCY = ("ISIL", "US-ILLBRIDGE")
SECURITY_CODE = "alma-shared-code"
ALMA_API_KEY = "alma-sandbox-api-key"
# The library's own ILL office: OCLC refuses a create without a billing address.
T = TypeVar("T")


@dataclass
class System:
    bridge_url: str
    worldshare_url: str
    alma_url: str
    token: str
    http: httpx.Client

    @property
    def iso_url(self) -> str:
        return f"{self.bridge_url}/iso18626/UNIV"

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(
            method, f"{self.bridge_url}{path}", headers=bearer(self.token), **kwargs
        )

    def request(self, request_id: int) -> dict[str, Any]:
        response = self.api("GET", f"/api/v1/requests/{request_id}")
        response.raise_for_status()
        return dict(response.json())

    def find(self, alma_request_id: str) -> dict[str, Any] | None:
        items = self.api("GET", "/api/v1/requests", params={"alma_request_id": alma_request_id})
        found = items.json()["items"]
        return self.request(found[0]["id"]) if found else None

    def alma_messages(self, alma_request_id: str) -> list[dict[str, Any]]:
        response = self.http.get(
            f"{self.alma_url}/_sandbox/messages", params={"request_id": alma_request_id}
        )
        return list(response.json())

    def alma_refusals(self, alma_request_id: str | None = None) -> list[dict[str, Any]]:
        """What the simulated Alma refused of what the bridge told it."""
        params = {} if alma_request_id is None else {"request_id": alma_request_id}
        return list(self.http.get(f"{self.alma_url}/_sandbox/refusals", params=params).json())

    def alma_request(self, alma_request_id: str) -> dict[str, Any]:
        """What the simulated Alma knows of one of its requests (status, due date, renewals)."""
        response = self.http.get(f"{self.alma_url}/_sandbox/requests/{alma_request_id}")
        response.raise_for_status()
        return dict(response.json())

    def lender(self, worldshare_request_id: str, action: str, **body: Any) -> None:
        response = self.http.post(
            f"{self.worldshare_url}/_sandbox/requests/{worldshare_request_id}/{action}", json=body
        )
        response.raise_for_status()


def wait_for(check: Callable[[], T | None], *, timeout: float = 15.0, what: str = "") -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.05)


@contextmanager
def running_system(
    settings: Settings,
    engine: Engine,
    *,
    worldshare: WorldShareSandboxSettings | None = None,
    worldshare_url: str | None = None,
    policy: dict[str, Any] | None = None,
    library: dict[str, Any] | None = None,
) -> Iterator[System]:
    """`library` overrides the `worldshare` group's library settings (addresses, lenders…);
    `worldshare_url` names a WorldShare sandbox the test serves itself."""
    with ExitStack() as stack:
        if worldshare_url is None:
            worldshare_url = stack.enter_context(
                run_asgi_in_thread(create_worldshare_sandbox(worldshare))
            )
        alma_url = stack.enter_context(run_asgi_in_thread(create_alma_iso_sandbox()))
        make_institution(
            engine,
            settings,
            alma={
                "iso18626_url": f"{alma_url}/iso18626",
                "api_base_url": f"{alma_url}/almaws/v1",
                "api_key": ALMA_API_KEY,
                "iso18626_security_code": SECURITY_CODE,
                "agency_id": {"type": ALMA_AGENCY[0], "value": ALMA_AGENCY[1]},
                "bridge_agency_id": {"type": BRIDGE_AGENCY[0], "value": BRIDGE_AGENCY[1]},
            },
            worldshare={**sandbox_worldshare(worldshare_url), **(library or {})},
            policy={"poll_interval_seconds": 1, **(policy or {})},
        )
        token = make_token(engine, ["admin"])
        bridge_url = stack.enter_context(run_asgi_in_thread(create_app(settings, run_worker=True)))
        http = stack.enter_context(httpx.Client(timeout=10.0))
        system = System(bridge_url, worldshare_url, alma_url, token, http)
        yield system
        # Whatever a test checks, the bridge told the strict simulated Alma nothing it refuses.
        assert system.alma_refusals() == []
