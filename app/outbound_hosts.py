"""Where the bridge may send requests (ILLBRIDGE_OUTBOUND_ALLOWED_HOSTS).

Checked twice: when an institution's URL is set, and on every outbound request by an httpx
event hook on the shared client, so a URL stored before the list was narrowed is refused too —
before a connection is opened and before any credential leaves.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Awaitable, Callable, Sequence

import httpx

from app.config import Settings
from app.upstream import PermanentUpstreamError

SETTING = "ILLBRIDGE_OUTBOUND_ALLOWED_HOSTS"

log = logging.getLogger("illbridge.outbound")


class OutboundHostRefused(PermanentUpstreamError):
    """A request to a host outside the allowed list; retrying cannot help."""


def allowed_host_patterns(settings: Settings) -> tuple[str, ...]:
    """The configured patterns; in sandbox mode the bridge's own host, where the simulators are."""
    patterns = tuple(
        p.strip().lower() for p in settings.outbound_allowed_hosts.split(",") if p.strip()
    )
    if patterns and settings.sandbox:
        own = url_host(settings.public_url)
        if own is not None:
            patterns += (own,)
    return patterns


def url_host(url: str | httpx.URL) -> str | None:
    """The host name in ASCII (IDNA) form, lower case, without a trailing dot."""
    try:
        raw = httpx.URL(url).raw_host if isinstance(url, str) else url.raw_host
    except httpx.InvalidURL:
        return None
    host = raw.decode("ascii", errors="replace").lower().rstrip(".")
    return host or None


def host_allowed(url: str | httpx.URL, patterns: Sequence[str]) -> bool:
    """Whether `url`'s host matches one of `patterns` (fnmatch-style); no patterns allow any."""
    if not patterns:
        return True
    host = url_host(url)
    return host is not None and any(fnmatch.fnmatchcase(host, p.lower()) for p in patterns)


def refusal(url: str | httpx.URL) -> str:
    return f"host {url_host(url) or '(none)'!r} is not in {SETTING}"


def outbound_host_guard(
    patterns: Sequence[str],
) -> Callable[[httpx.Request], Awaitable[None]]:
    """An httpx request hook that refuses a request to a host outside `patterns`."""
    allowed = tuple(patterns)

    async def guard(request: httpx.Request) -> None:
        if not host_allowed(request.url, allowed):
            log.warning("outbound_host_refused", extra={"host": url_host(request.url)})
            raise OutboundHostRefused(f"outbound call refused: {refusal(request.url)}")

    return guard
