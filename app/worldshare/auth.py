"""OAuth 2.0 client-credentials tokens for WorldShare, cached per (institution, scope).

One `TokenCache` lives for the whole process. Concurrent callers for the same key share one
token request; a token rejected with 401 is dropped only if it is still the cached one.
Tokens, keys and secrets never appear in exceptions, reprs or logs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from app.upstream import UpstreamError, call, status_failure

logger = logging.getLogger("illbridge.worldshare")

AUTH_UPSTREAM = "WorldShare token endpoint"
EXPIRES_AT_FORMAT = "%Y-%m-%d %H:%M:%SZ"

TokenKey = tuple[str, str]


@dataclass(frozen=True)
class ClientCredentials:
    """A WSKey and its secret for one institution and scope."""

    institution_code: str
    token_url: str
    scope: str
    key: str = field(repr=False)
    secret: str = field(repr=False)

    @property
    def cache_key(self) -> TokenKey:
        return (self.institution_code, self.scope)


@dataclass(frozen=True)
class _CachedToken:
    value: str = field(repr=False)
    refresh_at: float


class TokenCache:
    def __init__(
        self, *, safety_margin: float = 60.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._safety_margin = safety_margin
        self._clock = clock
        self._tokens: dict[TokenKey, _CachedToken] = {}
        self._locks: dict[TokenKey, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"TokenCache(keys={len(self._tokens)})"

    async def token(self, http: httpx.AsyncClient, credentials: ClientCredentials) -> str:
        """A valid access token, fetched at most once at a time per (institution, scope)."""
        key = credentials.cache_key
        cached = self._fresh(key)
        if cached is not None:
            return cached
        async with self._locks.setdefault(key, asyncio.Lock()):
            cached = self._fresh(key)
            if cached is not None:
                return cached
            token = await self._fetch(http, credentials)
            self._tokens[key] = token
            return token.value

    def invalidate(self, key: TokenKey, token: str) -> None:
        """Drop `token` after a 401, unless a newer token has already replaced it."""
        cached = self._tokens.get(key)
        if cached is not None and cached.value == token:
            del self._tokens[key]

    def _fresh(self, key: TokenKey) -> str | None:
        cached = self._tokens.get(key)
        if cached is None or self._clock() >= cached.refresh_at:
            return None
        return cached.value

    async def _fetch(self, http: httpx.AsyncClient, credentials: ClientCredentials) -> _CachedToken:
        response = await call(
            http,
            AUTH_UPSTREAM,
            "POST",
            credentials.token_url,
            data={"grant_type": "client_credentials", "scope": credentials.scope},
            auth=httpx.BasicAuth(credentials.key, credentials.secret),
            headers={"Accept": "application/json"},
        )
        if response.status_code in (400, 401):
            raise status_failure(AUTH_UPSTREAM, response, detail="WorldShare credentials rejected")
        if not response.is_success:
            raise status_failure(AUTH_UPSTREAM, response)
        token = self._parse(response)
        logger.info(
            "worldshare.token_fetched",
            extra={"institution": credentials.institution_code, "scope": credentials.scope},
        )
        return token

    def _parse(self, response: httpx.Response) -> _CachedToken:
        now = self._clock()
        try:
            body = response.json()
            value = body["access_token"]
            lifetimes = [float(body["expires_in"])] if body.get("expires_in") else []
            if body.get("expires_at"):
                expires_at = datetime.strptime(body["expires_at"], EXPIRES_AT_FORMAT)
                lifetimes.append(expires_at.replace(tzinfo=UTC).timestamp() - now)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise _unreadable(response) from None
        if not isinstance(value, str) or not value or not lifetimes:
            raise _unreadable(response)
        # expires_in is relative, so immune to clock skew between us and OCLC: it wins when given.
        lifetime = lifetimes[0]
        # Short-lived tokens still get used: the margin never eats more than half the lifetime.
        margin = min(self._safety_margin, max(lifetime, 0.0) / 2)
        return _CachedToken(value=value, refresh_at=now + lifetime - margin)


def _unreadable(response: httpx.Response) -> UpstreamError:
    # A 2xx is not a transient status, so this classifies as permanent.
    return status_failure(AUTH_UPSTREAM, response, detail="unreadable token response")
