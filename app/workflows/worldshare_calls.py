"""What every WorldShare call from a workflow shares: a client whose rotated refresh token is
stored in a transaction of its own, and a second look when OCLC refuses a refresh token."""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError

from app.institutions.worldshare_settings import keep_rotated_refresh_token, stored_refresh_token
from app.runtime import Runtime
from app.upstream import TransientUpstreamError, UpstreamError
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

    return WorldShareClient(ctx.http, ctx.worldshare_tokens, config, on_refresh_token_rotated=keep)


async def second_look(ctx: Runtime, config: WorldShareConfig, exc: UpstreamError) -> UpstreamError:
    """The error to raise for `exc`: a refused refresh token that is no longer the stored one
    (another worker stored OCLC's rotation meanwhile) is worth a retry with the new one."""
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
