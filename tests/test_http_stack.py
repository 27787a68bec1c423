"""The HTTP stack (issue 10, point 6): `illbridge serve` runs on uvloop and httptools, and a
request costs no thread hop it does not need."""

from __future__ import annotations

from collections.abc import Iterator

import anyio.to_thread
import pytest
import uvicorn
from fastapi.testclient import TestClient
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.main import create_app
from tests.support.factories import bearer, make_institution, make_token


def test_serve_defaults_pick_uvloop_and_httptools():
    """`illbridge serve` leaves uvicorn's loop and http at "auto": with uvicorn[standard]
    installed they resolve to uvloop and httptools, not asyncio and h11."""
    config = uvicorn.Config(app=lambda *_: None)
    factory = config.get_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()
    assert AutoHTTPProtocol is HttpToolsProtocol


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Names of the functions sent to the thread pool."""
    sent: list[str] = []
    real = anyio.to_thread.run_sync

    async def counted(func, *args, **kwargs):  # type: ignore[no-untyped-def]
        sent.append(getattr(func, "__name__", repr(func)))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    yield sent


def test_liveness_and_the_lists_hop_threads_only_for_database_work(settings, engine, hops):
    make_institution(engine, settings, "A")
    admin = bearer(make_token(engine, ["admin"]))
    with TestClient(create_app(settings)) as client:
        client.get("/api/v1/requests", headers=admin)  # the token's first use is recorded
        hops.clear()
        assert client.get("/healthz").status_code == 200
        assert hops == []
        assert client.get("/api/v1/requests", headers=admin).status_code == 200
    # The session (open, close), the token check and the route: each touches the database.
    assert len(hops) <= 4, hops


def test_request_ids_survive_the_leaner_middleware(settings):
    with TestClient(create_app(settings)) as client:
        given = client.get("/healthz", headers={"X-Request-Id": "abcdef12-3456"})
        refused = client.get("/healthz", headers={"X-Request-Id": "bad id; drop table"})
        fresh = client.get("/healthz")
    assert given.headers["x-request-id"] == "abcdef12-3456"
    assert refused.headers["x-request-id"] != "bad id; drop table"
    assert len(fresh.headers["x-request-id"]) == 32
