"""What every WorldShare call from a workflow shares: a client whose rotated refresh token is
stored in a transaction of its own, every call counted against its key's daily budget, a key
OCLC answered 429 paused (the job deferred, not failed), and a second look when OCLC refuses a
refresh token."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from app.institutions.worldshare_settings import keep_rotated_refresh_token, stored_refresh_token
from app.jobs.registry import JobDeferred
from app.runtime import Runtime
from app.timeutil import utcnow
from app.upstream import TransientUpstreamError, UpstreamError
from app.worldshare import budget
from app.worldshare.auth import RefreshTokenRefused, RotatedRefreshToken
from app.worldshare.client import WorldShareClient, WorldShareConfig

log = logging.getLogger("illbridge.workflows")


def worldshare_client(ctx: Runtime, config: WorldShareConfig) -> WorldShareClient:
    async def keep(rotated: RotatedRefreshToken) -> bool:
        institution = rotated.institution_code
        try:
            stored = await ctx.write(
                lambda session: keep_rotated_refresh_token(
                    session,
                    ctx.secrets,
                    institution,
                    replaces=rotated.replaces,
                    refresh_token=rotated.value,
                    expires_at=rotated.expires_at,
                )
            )
        except SQLAlchemyError as exc:
            # The call goes on with its access token (an export must not stop between its
            # attempt mark and the create); the token cache hands the rotation over again.
            log.warning(
                "worldshare_refresh_token_not_stored",
                extra={"institution": institution, "error_type": type(exc).__name__},
            )
            return False
        log.info(
            "worldshare_refresh_token_rotated",
            extra={"institution": institution, "stored": stored},
        )
        return True

    key = budget.key_id(config.key)

    async def count(kind: str) -> None:
        try:
            await ctx.write(lambda session: budget.count_call(session, key, utcnow()))
        except SQLAlchemyError as exc:
            # The call still goes: one uncounted call beats a create cut off after its mark.
            log.warning(
                "worldshare_call_not_counted",
                extra={
                    "institution": config.institution_code,
                    "kind": kind,
                    "error_type": type(exc).__name__,
                },
            )

    return WorldShareClient(
        ctx.http,
        ctx.worldshare_tokens,
        config,
        on_refresh_token_rotated=keep,
        on_call=count,
    )


def key_paused(session: Session, config: WorldShareConfig, *, whole_window: bool) -> None:
    """Raise JobDeferred while the key is paused after a 429 or, with `whole_window`, while its
    24-hour budget is spent (polls are paced by the dispatcher; exports check here)."""
    now = utcnow()
    key = budget.key_id(config.key)
    until = budget.paused_until(session, key, now)
    if until is not None:
        raise JobDeferred(until, "WorldShare key paused after OCLC answered 429")
    if whole_window:
        spent = budget.calls_spent(session, key, now)[1]
        if spent >= config.daily_call_budget:
            raise JobDeferred(
                budget.hour_of(now) + budget.HOUR, "WorldShare key's daily call budget spent"
            )


async def second_look(
    ctx: Runtime, config: WorldShareConfig, exc: UpstreamError
) -> UpstreamError | JobDeferred:
    """The error to raise for `exc`: a 429 pauses the key and defers the job; a refused refresh
    token that is no longer the stored one (another worker stored OCLC's rotation meanwhile) is
    worth a retry with the new one."""
    if exc.status_code == 429:
        retry_after = exc.retry_after if isinstance(exc, TransientUpstreamError) else None
        key = budget.key_id(config.key)
        until: datetime = await ctx.write(
            lambda session: budget.pause_key(session, key, utcnow(), retry_after)
        )
        log.warning(
            "worldshare_key_paused",
            extra={"institution": config.institution_code, "until": until.isoformat()},
        )
        return JobDeferred(until, f"{exc.message}; WorldShare key paused")
    if not isinstance(exc, RefreshTokenRefused):
        return exc
    code = config.institution_code
    stored = await ctx.read(lambda session: stored_refresh_token(session, ctx.secrets, code))
    if stored is None or stored == config.refresh_token:
        return exc
    return TransientUpstreamError(
        f"{exc.message}; a newer refresh token is stored, retrying with it",
        status_code=exc.status_code,
    )
