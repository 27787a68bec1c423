"""Outbound calls and their failures, in one place for every upstream client.

`call` makes one HTTP request the same way for every upstream; job handlers let its failures
propagate: the worker retries `TransientUpstreamError` (honouring `retry_after`) and
dead-letters `PermanentUpstreamError`. Messages never carry secrets, tokens, bodies or patron
data, only status codes and the upstream's own failure codes.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from weakref import WeakKeyDictionary

import httpx

# Failures raised before a byte of the request could have left: retrying cannot duplicate it.
_NOTHING_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

# (upstream, outcome, seconds): the outcome is the HTTP status, "timeout" or "connection_error".
CallObserver = Callable[[str, str, float], None]
_observers: WeakKeyDictionary[httpx.AsyncClient, CallObserver] = WeakKeyDictionary()


def observe_calls(http: httpx.AsyncClient, observer: CallObserver) -> None:
    """Report every `call` made through `http` to `observer` (the process's metrics)."""
    _observers[http] = observer


def _observed(http: httpx.AsyncClient, upstream: str, outcome: str, started: float) -> None:
    observer = _observers.get(http)
    if observer is not None:
        observer(upstream, outcome, time.perf_counter() - started)


class UpstreamError(Exception):
    """An outbound call did not succeed."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class TransientUpstreamError(UpstreamError):
    """Worth retrying later: timeouts, connection errors, 429, 5xx.

    ``may_have_been_sent`` is False only when the request surely never reached the upstream
    (connection refused, connect or pool timeout): retrying a create then cannot duplicate it.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
        may_have_been_sent: bool = True,
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after
        self.may_have_been_sent = may_have_been_sent


class PermanentUpstreamError(UpstreamError):
    """Retrying the same call cannot help: validation errors and other 4xx."""

    def __init__(
        self, message: str, *, status_code: int | None = None, codes: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.codes = codes


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def is_transient_status(status_code: int) -> bool:
    return status_code == 429 or status_code >= 500


def transport_failure(upstream: str, exc: httpx.TransportError) -> TransientUpstreamError:
    """A timeout or connection failure, named by its type only (no URL, no body)."""
    kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection error"
    return TransientUpstreamError(
        f"{upstream}: {kind} ({type(exc).__name__})",
        may_have_been_sent=not isinstance(exc, _NOTHING_SENT),
    )


def status_failure(
    upstream: str, response: httpx.Response, *, codes: tuple[str, ...] = (), detail: str = ""
) -> UpstreamError:
    """Classify a non-success response; `detail` must already be free of secrets and PII."""
    status = response.status_code
    text = f"{upstream}: HTTP {status}" + (f" ({detail})" if detail else "")
    if is_transient_status(status):
        return TransientUpstreamError(
            text,
            status_code=status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    return PermanentUpstreamError(text, status_code=status, codes=codes)


async def call(
    http: httpx.AsyncClient, upstream: str, method: str, url: str, **kwargs: Any
) -> httpx.Response:
    """One request through the shared client, its whole body read, redirects never followed.

    httpx's timeouts bound each read, so an upstream trickling bytes could hold a call for
    ever; the client's read timeout (``settings.outbound_timeout_seconds``) also bounds the
    whole call: connect, send and the entire body. Transport failures and an overrun raise
    `TransientUpstreamError`, a redirect `PermanentUpstreamError`; any other response is the
    caller's to judge.
    """
    started = time.perf_counter()
    try:
        async with asyncio.timeout(http.timeout.read):
            response = await http.request(method, url, follow_redirects=False, **kwargs)
    except httpx.TransportError as exc:
        timed_out = isinstance(exc, httpx.TimeoutException)
        _observed(http, upstream, "timeout" if timed_out else "connection_error", started)
        raise transport_failure(upstream, exc) from None
    except TimeoutError:
        _observed(http, upstream, "timeout", started)
        # Past the deadline the request may well have been sent (the default says so).
        raise TransientUpstreamError(
            f"{upstream}: timeout (whole call over its deadline)"
        ) from None
    _observed(http, upstream, str(response.status_code), started)
    if response.is_redirect:
        raise status_failure(upstream, response, detail="redirect not followed")
    return response
