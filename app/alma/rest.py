"""Alma's REST API (DESIGN §2.3): the borrowing request calls the workflows need.

One client per institution, over the process's shared HTTP client (`app.upstream.call`): the
key travels as `Authorization: apikey <key>`, JSON both ways, and Alma's error envelope is
read for its codes only (never its text, which may name a patron).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from app.upstream import PermanentUpstreamError, UpstreamError, call, status_failure

UPSTREAM = "Alma REST"
# Alma's answer to a read of a request that is not there (a 400, not a 404).
NO_RESULT = "40166450"


@dataclass(frozen=True)
class AlmaConfig:
    institution_code: str
    api_base_url: str  # …/almaws/v1
    api_key: str

    def __repr__(self) -> str:
        return f"AlmaConfig({self.institution_code!r}, {self.api_base_url!r}, <key hidden>)"


def error_codes(response: httpx.Response) -> tuple[str, ...]:
    """The errorCodes of Alma's envelope, where `error` may be a list or one object."""
    try:
        body = response.json()
        errors = body["errorList"]["error"]
    except (ValueError, KeyError, TypeError):
        return ()
    if isinstance(errors, dict):
        errors = [errors]
    if not isinstance(errors, list):
        return ()
    return tuple(str(e.get("errorCode")) for e in errors if isinstance(e, dict))


def not_found(exc: UpstreamError) -> bool:
    return isinstance(exc, PermanentUpstreamError) and (
        exc.status_code == 404 or NO_RESULT in exc.codes
    )


class AlmaClient:
    def __init__(self, http: httpx.AsyncClient, config: AlmaConfig) -> None:
        self._http = http
        self._config = config

    def _url(self, user_id: str, request_id: str) -> str:
        user = quote(user_id, safe="")
        request = quote(request_id, safe="")
        return f"{self._config.api_base_url}/users/{user}/resource-sharing-requests/{request}"

    async def _call(self, method: str, url: str, params: dict[str, str]) -> httpx.Response:
        response = await call(
            self._http,
            UPSTREAM,
            method,
            url,
            params=params,
            headers={
                "Authorization": f"apikey {self._config.api_key}",
                "Accept": "application/json",
                "Content-Type": "application/json",
            },
        )
        if not response.is_success:
            codes = error_codes(response)
            raise status_failure(
                UPSTREAM, response, codes=codes, detail=", ".join(codes) if codes else ""
            )
        return response

    async def get_request(self, user_id: str, request_id: str, *, external: bool) -> dict[str, Any]:
        """The borrowing request, by Alma's id or (`external`) by its external identifier."""
        params = {"request_id_type": "external"} if external else {}
        response = await self._call("GET", self._url(user_id, request_id), params)
        try:
            body = response.json()
        except ValueError:
            raise PermanentUpstreamError(f"{UPSTREAM}: the answer is not JSON") from None
        if not isinstance(body, dict):
            raise PermanentUpstreamError(f"{UPSTREAM}: the answer is not a request object")
        return body

    async def cancel_request(
        self, user_id: str, request_id: str, *, reason: str, notify_user: bool = False
    ) -> None:
        """Cancel a borrowing request with a RequestCancellationReasons code (204)."""
        params = {"reason": reason, "notify_user": "true" if notify_user else "false"}
        await self._call("DELETE", self._url(user_id, request_id), params)


async def internal_request_id(client: AlmaClient, user_id: str, alma_request_id: str) -> str:
    """Alma's internal id for the id Alma sent over ISO 18626: read as an external identifier
    first, then as Alma's own id."""
    try:
        found = await client.get_request(user_id, alma_request_id, external=True)
    except UpstreamError as exc:
        if not not_found(exc):
            raise
        found = await client.get_request(user_id, alma_request_id, external=False)
    request_id = found.get("request_id")
    if not isinstance(request_id, str | int) or not str(request_id):
        raise PermanentUpstreamError(f"{UPSTREAM}: the request read carries no request_id")
    return str(request_id)
