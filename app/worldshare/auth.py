"""OAuth 2.0 tokens for WorldShare, cached per (institution, scope, grant).

Client credentials by default; with a staff user's refresh token, the refresh-token grant (a
user context, as OCLC's own sample app has). OCLC may answer a refresh with a new refresh token
and refuse the old one from then on: the cache remembers the rotation and hands it to the
caller's `on_rotated`, whose business it is to store it (this module does no database I/O).

One `TokenCache` lives for the whole process. Concurrent callers for the same key share one
token request; a token rejected with 401 is dropped only if it is still the cached one.
Tokens, keys and secrets never appear in exceptions, reprs or logs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from app.upstream import PermanentUpstreamError, UpstreamError, call, status_failure

logger = logging.getLogger("illbridge.worldshare")

AUTH_UPSTREAM = "WorldShare token endpoint"
EXPIRES_AT_FORMAT = "%Y-%m-%d %H:%M:%SZ"

TokenKey = tuple[str, str, str]


@dataclass(frozen=True)
class ClientCredentials:
    """A WSKey and its secret for one institution and scope, and a staff user's refresh token
    when the institution has one (as stored: the cache may know a newer rotation of it)."""

    institution_code: str
    token_url: str
    scope: str
    key: str = field(repr=False)
    secret: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)

    @property
    def grant_type(self) -> str:
        return "refresh_token" if self.refresh_token else "client_credentials"

    @property
    def cache_key(self) -> TokenKey:
        return (self.institution_code, self.scope, self.grant_type)


@dataclass(frozen=True)
class RotatedRefreshToken:
    """OCLC answered a refresh with a new refresh token: store `value` where one of `replaces`
    is stored (the tokens it supersedes); any other stored token is newer and stays."""

    institution_code: str
    replaces: tuple[str, ...] = field(repr=False)
    value: str = field(repr=False)
    expires_at: datetime | None


# True once the caller's store has dealt with the rotation; False to be handed it again.
OnRotated = Callable[[RotatedRefreshToken], Awaitable[bool]]
# Told before each call leaves for OCLC (its kind: token, create, read), to count it.
OnCall = Callable[[str], Awaitable[None]]


class RefreshTokenRefused(PermanentUpstreamError):
    """OCLC refused the refresh token: expired, revoked, or already rotated away."""


@dataclass(frozen=True)
class _CachedToken:
    value: str = field(repr=False)
    refresh_at: float
    refresh_token: str | None = field(default=None, repr=False)
    refresh_token_expires_at: datetime | None = None


# Rotations remembered while callers' stores lag behind; more would mean a store that never works.
_CHAIN_LIMIT = 8


@dataclass
class _Rotation:
    """The newest refresh token OCLC gave, the ones it supersedes (a caller's store may still
    hold any of them), and whether a caller has reported it stored."""

    superseded: tuple[str, ...] = field(repr=False)
    latest: str = field(repr=False)
    expires_at: datetime | None
    kept: bool = False


# (grant type, outcome): outcome is "ok", "refused" (credentials or refresh token turned down)
# or "failed" (the endpoint could not be reached or answered badly).
OnFetched = Callable[[str, str], None]


class TokenCache:
    def __init__(
        self,
        *,
        safety_margin: float = 60.0,
        clock: Callable[[], float] = time.time,
        on_fetched: OnFetched | None = None,
    ) -> None:
        self._safety_margin = safety_margin
        self._clock = clock
        self._on_fetched = on_fetched
        self._tokens: dict[TokenKey, _CachedToken] = {}
        self._locks: dict[TokenKey, asyncio.Lock] = {}
        self._rotations: dict[TokenKey, _Rotation] = {}

    def __repr__(self) -> str:
        return f"TokenCache(keys={len(self._tokens)})"

    async def token(
        self,
        http: httpx.AsyncClient,
        credentials: ClientCredentials,
        *,
        on_rotated: OnRotated | None = None,
        on_call: OnCall | None = None,
    ) -> str:
        """A valid access token, fetched at most once at a time per (institution, scope, grant).

        A refresh token OCLC rotated is handed to `on_rotated` until one such call says it is
        dealt with: a caller whose store failed leaves it to the next. Meanwhile the newest
        rotation is what is sent.
        """
        key = credentials.cache_key
        cached = self._fresh(key)
        if cached is None:
            async with self._locks.setdefault(key, asyncio.Lock()):
                cached = self._fresh(key)
                if cached is None:
                    sent = self._refresh_token_to_send(credentials)
                    if on_call is not None:
                        await on_call("token")
                    token = await self._fetch_counted(http, credentials, sent)
                    self._tokens[key] = token
                    self._remember_rotation(key, credentials, sent, token)
                    cached = token.value
        rotation = self._rotations.get(key)
        if on_rotated is not None and rotation is not None and not rotation.kept:
            rotation.kept = await on_rotated(
                RotatedRefreshToken(
                    institution_code=credentials.institution_code,
                    replaces=rotation.superseded,
                    value=rotation.latest,
                    expires_at=rotation.expires_at,
                )
            )
        return cached

    def invalidate(self, key: TokenKey, token: str) -> None:
        """Drop `token` after a 401, unless a newer token has already replaced it."""
        cached = self._tokens.get(key)
        if cached is not None and cached.value == token:
            del self._tokens[key]

    def _remember_rotation(
        self, key: TokenKey, credentials: ClientCredentials, sent: str | None, token: _CachedToken
    ) -> None:
        issued = token.refresh_token
        if sent is None or credentials.refresh_token is None or issued in (None, sent):
            return
        assert issued is not None
        previous = self._rotations.get(key)
        chain = previous.superseded if previous is not None and previous.latest == sent else ()
        superseded = tuple(dict.fromkeys((credentials.refresh_token, sent, *chain)))
        self._rotations[key] = _Rotation(
            superseded=superseded[:_CHAIN_LIMIT],
            latest=issued,
            expires_at=token.refresh_token_expires_at,
        )

    def _refresh_token_to_send(self, credentials: ClientCredentials) -> str | None:
        """The caller's refresh token, or its newest rotation while the caller lags behind."""
        rotation = self._rotations.get(credentials.cache_key)
        if rotation is not None and credentials.refresh_token in rotation.superseded:
            return rotation.latest
        return credentials.refresh_token

    def _fresh(self, key: TokenKey) -> str | None:
        cached = self._tokens.get(key)
        if cached is None or self._clock() >= cached.refresh_at:
            return None
        return cached.value

    async def _fetch_counted(
        self, http: httpx.AsyncClient, credentials: ClientCredentials, refresh_token: str | None
    ) -> _CachedToken:
        grant = "refresh_token" if refresh_token else "client_credentials"
        outcome = "failed"
        try:
            token = await self._fetch(http, credentials, refresh_token)
            outcome = "ok"
            return token
        except PermanentUpstreamError as exc:
            if exc.status_code in (400, 401):
                outcome = "refused"
            raise
        finally:
            if self._on_fetched is not None:
                self._on_fetched(grant, outcome)

    async def _fetch(
        self, http: httpx.AsyncClient, credentials: ClientCredentials, refresh_token: str | None
    ) -> _CachedToken:
        form = (
            {"grant_type": "refresh_token", "refresh_token": refresh_token}
            if refresh_token
            else {"grant_type": "client_credentials", "scope": credentials.scope}
        )
        response = await call(
            http,
            AUTH_UPSTREAM,
            "POST",
            credentials.token_url,
            data=form,
            auth=httpx.BasicAuth(credentials.key, credentials.secret),
            headers={"Accept": "application/json"},
        )
        if response.status_code in (400, 401) and refresh_token:
            raise RefreshTokenRefused(
                f"{AUTH_UPSTREAM}: HTTP {response.status_code} (WorldShare refused the refresh "
                "token; set a new worldshare.refresh_token)",
                status_code=response.status_code,
            )
        if response.status_code in (400, 401):
            raise status_failure(AUTH_UPSTREAM, response, detail="WorldShare credentials rejected")
        if not response.is_success:
            raise status_failure(AUTH_UPSTREAM, response)
        token = self._parse(response)
        logger.info(
            "worldshare.token_fetched",
            extra={
                "institution": credentials.institution_code,
                "scope": credentials.scope,
                "grant_type": credentials.grant_type,
                "refresh_token_rotated": token.refresh_token is not None,
            },
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
        refresh_token = body.get("refresh_token")
        return _CachedToken(
            value=value,
            refresh_at=now + lifetime - margin,
            refresh_token=refresh_token
            if isinstance(refresh_token, str) and refresh_token
            else None,
            refresh_token_expires_at=_refresh_token_expiry(body, now),
        )


def _refresh_token_expiry(body: dict[str, object], now: float) -> datetime | None:
    """When OCLC says the new refresh token lapses; None when it does not say or says oddly."""
    expires_at, expires_in = (
        body.get("refresh_token_expires_at"),
        body.get("refresh_token_expires_in"),
    )
    try:
        if isinstance(expires_at, str) and expires_at:
            return datetime.strptime(expires_at, EXPIRES_AT_FORMAT).replace(tzinfo=UTC)
        if isinstance(expires_in, str | int) and not isinstance(expires_in, bool):
            return datetime.fromtimestamp(now + float(expires_in), UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _unreadable(response: httpx.Response) -> UpstreamError:
    # A 2xx is not a transient status, so this classifies as permanent.
    return status_failure(AUTH_UPSTREAM, response, detail="unreadable token response")
