"""Failures of outbound calls, classified in one place for every upstream client.

Job handlers let these propagate: the worker retries `TransientUpstreamError` (honouring
`retry_after`) and dead-letters `PermanentUpstreamError`. Messages never carry secrets,
tokens, bodies or patron data, only status codes and the upstream's own failure codes.
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime

import httpx


class UpstreamError(Exception):
    """An outbound call did not succeed."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class TransientUpstreamError(UpstreamError):
    """Worth retrying later: timeouts, connection errors, 429, 5xx.

    `may_have_been_sent` is False only when the request surely never reached the upstream.
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
        may_have_been_sent=not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout),
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
