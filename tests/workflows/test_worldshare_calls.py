"""A rotated refresh token is stored where it replaces the stored one, a store that fails does
not stop the call, and a refusal of a token another worker has rotated meanwhile is retried
rather than dead-lettered."""

import asyncio
from datetime import UTC, datetime

import httpx
import respx
from sqlalchemy import text

from app.borrowing.citation import Citation
from app.db import write_session
from app.institutions.secrets import load_secret_box
from app.institutions.worldshare_settings import keep_rotated_refresh_token
from app.observability import Metrics
from app.runtime import open_runtime
from app.upstream import PermanentUpstreamError, TransientUpstreamError, UpstreamError
from app.workflows.worldshare_calls import second_look, worldshare_client
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


def test_a_rotation_that_cannot_be_stored_does_not_stop_the_call(settings, tmp_path):
    # No tables at all: every write fails, as while the database is down.
    broken = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'none.db'}"})
    token_answer = {"access_token": "tk_1", "expires_in": "3599", "refresh_token": "rt_2"}
    created = {"response": {"illRequest": {"requestId": 7, "requestStatus": "SUBMITTING"}}}

    async def run() -> str:
        async with open_runtime(broken, Metrics()) as ctx:
            client = worldshare_client(ctx, config("rt_1"))
            return await client.create_request(Citation(title="T"), reference="alma-1")

    with respx.mock() as router:
        router.post("https://oauth.oclc.org/token").mock(
            return_value=httpx.Response(200, json=token_answer)
        )
        router.post("https://128807.share.worldcat.org/ILL/request/data").mock(
            return_value=httpx.Response(200, json=created)
        )
        assert asyncio.run(run()) == "7"
