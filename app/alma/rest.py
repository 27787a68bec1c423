"""The Alma REST API client (us → Alma): the patron's loan and the borrowing request.

`Authorization: apikey …`, JSON both ways, the shared client's timeouts (`app.upstream.call`,
which also keeps to the outbound host list). At most 25 requests a second per institution per
process, as Alma allows; a 429 `PER_SECOND_THRESHOLD` is retried here with backoff. Every answer's
`X-Exl-Api-Remaining` (the daily budget left) is recorded as a metric. Alma's error list is read
whether `error` is a list or one object; a logical 4xx becomes a `PermanentUpstreamError` naming
Alma's error codes and tracking ids, never the patron's id or the request's body.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import quote

import httpx
from prometheus_client import Gauge

from app.upstream import (
    PermanentUpstreamError,
    TransientUpstreamError,
    UpstreamError,
    call,
    status_failure,
)

UPSTREAM = "Alma"
REQUESTS_PER_SECOND = 25
THROTTLE_RETRIES = 4
THROTTLE_BACKOFF_SECONDS = 0.2
PER_SECOND_THRESHOLD = "PER_SECOND_THRESHOLD"


class RateLimiter:
    """At most `rate` calls a second: each call takes the next free slot, `1/rate` apart."""

    def __init__(self, rate: float, *, clock: Any = time.monotonic) -> None:
        self.interval = 1.0 / rate
        self.clock = clock
        self._next_slot = 0.0

    async def acquire(self) -> None:
        now = self.clock()
        slot = max(now, self._next_slot)
        self._next_slot = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


# One limiter per institution for the life of the process.
_limiters: dict[str, RateLimiter] = {}


def limiter_for(institution: str) -> RateLimiter:
    found = _limiters.get(institution)
    if found is None:
        found = _limiters[institution] = RateLimiter(REQUESTS_PER_SECOND)
    return found


@dataclass(frozen=True)
class AlmaError:
    code: str
    message: str
    tracking_id: str | None


def parse_errors(body: Any) -> list[AlmaError]:
    """Alma's `errorList.error`, which is a list or, with one error, a lone object."""
    if not isinstance(body, dict):
        return []
    listed = (body.get("errorList") or {}).get("error") if body.get("errorList") else None
    if isinstance(listed, dict):
        listed = [listed]
    if not isinstance(listed, list):
        return []
    errors = []
    for entry in listed:
        if isinstance(entry, dict):
            errors.append(
                AlmaError(
                    code=str(entry.get("errorCode", "")),
                    message=str(entry.get("errorMessage", "")),
                    tracking_id=(str(entry["trackingId"]) if entry.get("trackingId") else None),
                )
            )
    return errors


def describe(errors: list[AlmaError]) -> str:
    """Codes and tracking ids only: Alma's messages may repeat a user id."""
    return "; ".join(
        f"code {e.code}" + (f", tracking id {e.tracking_id}" if e.tracking_id else "")
        for e in errors
    )


@dataclass(frozen=True)
class AlmaLoan:
    loan_id: str
    due_date: date | None
    loan_status: str | None


@dataclass(frozen=True)
class AlmaBorrowingRequest:
    request_id: str
    external_id: str | None
    status: str | None


def _day(value: Any) -> date | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).date()
    except ValueError:
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            return None


def _code(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("value")
    return str(value) if value not in (None, "") else None


class AlmaClient:
    """One institution's Alma, through the process's shared HTTP client."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        api_key: str,
        *,
        institution: str,
        remaining: Gauge | None = None,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.institution = institution
        self.remaining = remaining
        self.limiter = limiter_for(institution)

    def _url(self, *parts: str) -> str:
        return "/".join([self.base_url, *(quote(part, safe="") for part in parts)])

    async def _call(
        self, method: str, url: str, *, params: dict[str, str] | None = None, json: Any = None
    ) -> httpx.Response:
        headers = {
            "Authorization": f"apikey {self.api_key}",
            "Accept": "application/json",
        }
        if json is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(THROTTLE_RETRIES + 1):
            await self.limiter.acquire()
            response = await call(
                self.http, UPSTREAM, method, url, headers=headers, params=params, json=json
            )
            self._record_remaining(response)
            if response.is_success:
                return response
            errors = parse_errors(_json_or_none(response))
            throttled = response.status_code == 429 and any(
                e.code == PER_SECOND_THRESHOLD for e in errors
            )
            if throttled and attempt < THROTTLE_RETRIES:
                delay = THROTTLE_BACKOFF_SECONDS * 2**attempt
                await asyncio.sleep(random.uniform(delay / 2, delay))
                continue
            raise status_failure(
                UPSTREAM, response, codes=tuple(e.code for e in errors), detail=describe(errors)
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _record_remaining(self, response: httpx.Response) -> None:
        value = response.headers.get("X-Exl-Api-Remaining")
        if self.remaining is not None and value is not None and value.isdigit():
            self.remaining.labels(self.institution).set(int(value))

    async def get_loan(self, user_id: str, loan_id: str) -> AlmaLoan:
        response = await self._call("GET", self._url("users", user_id, "loans", loan_id))
        return _loan(_json_object(response))

    async def update_loan_due_date(self, user_id: str, loan_id: str, due: date) -> AlmaLoan:
        """PUT the loan with a new due date (end of that day, UTC); the patron is not notified."""
        body = {"loan_id": loan_id, "due_date": f"{due.isoformat()}T23:59:00Z"}
        response = await self._call(
            "PUT",
            self._url("users", user_id, "loans", loan_id),
            params={"notify_user": "false"},
            json=body,
        )
        return _loan(_json_object(response))

    async def get_request(
        self, user_id: str, request_id: str, *, external: bool
    ) -> AlmaBorrowingRequest:
        """A borrowing request by Alma's id, or by its external id (`request_id_type=external`)."""
        params = {"request_id_type": "external"} if external else None
        response = await self._call(
            "GET",
            self._url("users", user_id, "resource-sharing-requests", request_id),
            params=params,
        )
        body = _json_object(response)
        found_id = body.get("request_id")
        if not isinstance(found_id, str | int) or not str(found_id):
            raise PermanentUpstreamError(f"{UPSTREAM}: the request read carries no request_id")
        return AlmaBorrowingRequest(
            request_id=str(found_id),
            external_id=_code(body.get("external_id")),
            status=_code(body.get("status")),
        )

    async def cancel_request(
        self, user_id: str, request_id: str, *, reason: str, notify_user: bool = False
    ) -> None:
        """Cancel a borrowing request; Alma notifies the patron unless told not to."""
        await self._call(
            "DELETE",
            self._url("users", user_id, "resource-sharing-requests", request_id),
            params={"reason": reason, "notify_user": "true" if notify_user else "false"},
        )


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _json_object(response: httpx.Response) -> dict[str, Any]:
    body = _json_or_none(response)
    if not isinstance(body, dict):
        raise TransientUpstreamError(f"{UPSTREAM}: HTTP {response.status_code} without JSON")
    return body


def _loan(body: dict[str, Any]) -> AlmaLoan:
    loan_id = body.get("loan_id")
    if not loan_id:
        raise PermanentUpstreamError(f"{UPSTREAM}: the loan answer has no loan_id")
    return AlmaLoan(
        loan_id=str(loan_id),
        due_date=_day(body.get("due_date")),
        loan_status=_code(body.get("loan_status")),
    )


# Alma's answer to a read of a request that is not there (a 400, not a 404).
NO_RESULT = "40166450"


def not_found(exc: UpstreamError) -> bool:
    return isinstance(exc, PermanentUpstreamError) and (
        exc.status_code == 404 or NO_RESULT in exc.codes
    )


async def internal_request_id(client: AlmaClient, user_id: str, alma_request_id: str) -> str:
    """Alma's internal id for the id Alma sent over ISO 18626: read as an external identifier
    first, then as Alma's own id."""
    try:
        found = await client.get_request(user_id, alma_request_id, external=True)
    except UpstreamError as exc:
        if not not_found(exc):
            raise
        found = await client.get_request(user_id, alma_request_id, external=False)
    return found.request_id
