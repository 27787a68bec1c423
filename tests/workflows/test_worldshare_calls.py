"""A rotated refresh token is stored where it replaces the stored one, and a refusal of a token
another worker has rotated meanwhile is retried rather than dead-lettered."""

import asyncio
from datetime import UTC, datetime

from sqlalchemy import text

from app.db import write_session
from app.institutions.secrets import load_secret_box
from app.institutions.worldshare_settings import keep_rotated_refresh_token
from app.observability import Metrics
from app.runtime import open_runtime
from app.upstream import PermanentUpstreamError, TransientUpstreamError, UpstreamError
from app.workflows.worldshare_calls import second_look
from app.worldshare.auth import RefreshTokenRefused
from app.worldshare.client import Requester, WorldShareConfig
from tests.support.factories import make_institution

EXPIRES = datetime(2026, 12, 8, 12, tzinfo=UTC)


def stored(engine, settings) -> tuple[str, object]:
    with engine.connect() as connection:
        token, expires_at = connection.execute(
            text(
                "SELECT worldshare_refresh_token_encrypted, worldshare_refresh_token_expires_at"
                " FROM institution"
            )
        ).one()
    return load_secret_box(settings).decrypt(token), expires_at


def test_a_rotation_replaces_only_a_token_it_supersedes(engine, settings):
    make_institution(engine, settings, worldshare={"refresh_token": "rt_1"})
    box = load_secret_box(settings)

    with write_session(engine) as session:
        staff_changed_it = keep_rotated_refresh_token(
            session, box, "UNIV", replaces=("rt_0",), refresh_token="rt_x", expires_at=None
        )
        rotated = keep_rotated_refresh_token(
            session,
            box,
            "UNIV",
            replaces=("rt_0", "rt_1"),
            refresh_token="rt_2",
            expires_at=EXPIRES,
        )
        session.commit()

    assert (staff_changed_it, rotated) == (False, True)
    token, expires_at = stored(engine, settings)
    assert token == "rt_2"
    assert expires_at is not None


def config(refresh_token: str | None) -> WorldShareConfig:
    return WorldShareConfig(
        institution_code="UNIV",
        base_url="https://128807.share.worldcat.org/ILL",
        token_url="https://oauth.oclc.org/token",
        scope="WorldShareILL",
        key="k",
        secret="s",
        requester=Requester(institution_id="128807"),
        refresh_token=refresh_token,
    )


def look(settings, refresh_token: str | None, exc: UpstreamError) -> UpstreamError:
    async def run() -> UpstreamError:
        async with open_runtime(settings, Metrics()) as ctx:
            return await second_look(ctx, config(refresh_token), exc)

    return asyncio.run(run())


def test_a_refused_refresh_token_another_worker_rotated_is_retried(engine, settings):
    make_institution(engine, settings, worldshare={"refresh_token": "rt_2"})
    refused = RefreshTokenRefused("WorldShare token endpoint: HTTP 401", status_code=401)

    assert isinstance(look(settings, "rt_1", refused), TransientUpstreamError)
    assert look(settings, "rt_2", refused) is refused
    other = PermanentUpstreamError("WorldShare: HTTP 404", status_code=404)
    assert look(settings, "rt_1", other) is other
