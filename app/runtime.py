"""The process's services, built once per process (the API's lifespan or `illbridge worker`):
the database engine, the one shared HTTP client, the secret box, the WorldShare token cache and
the metrics. Routes reach them through `app.api.deps`, job handlers as their context."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import httpx
from anyio import to_thread
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.config import Settings
from app.db import engine_for, read_session, write_session
from app.institutions.secrets import SecretBox, check_stored_secrets, load_secret_box
from app.institutions.service import warn_of_iso18626_opt_outs
from app.observability import Metrics
from app.outbound_hosts import allowed_host_patterns, outbound_host_guard
from app.upstream import observe_calls
from app.worldshare.auth import TokenCache

T = TypeVar("T")


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    http: httpx.AsyncClient
    secrets: SecretBox
    worldshare_tokens: TokenCache
    metrics: Metrics

    async def read(self, step: Callable[[Session], T]) -> T:
        """Run one read-only database step in a thread (no write lock on SQLite)."""

        def run() -> T:
            with read_session(self.engine) as session:
                return step(session)

        return await to_thread.run_sync(run)

    async def write(self, step: Callable[[Session], T]) -> T:
        """Run one database step in a transaction of its own, committed before it returns."""

        def run() -> T:
            with write_session(self.engine) as session:
                result = step(session)
                session.commit()
                return result

        return await to_thread.run_sync(run)


def new_http_client(settings: Settings) -> httpx.AsyncClient:
    """The one outbound client: explicit timeouts, no redirects, a pool sized for the workers."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.outbound_timeout_seconds, connect=5.0),
        follow_redirects=False,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=50),
        headers={"User-Agent": "illbridge/0.1"},
        event_hooks={"request": [outbound_host_guard(allowed_host_patterns(settings))]},
    )


@asynccontextmanager
async def open_runtime(settings: Settings, metrics: Metrics) -> AsyncIterator[Runtime]:
    """The engine and the shared HTTP client for the life of a process."""
    engine = engine_for(settings)
    try:
        secrets = load_secret_box(settings)
        check_stored_secrets(engine, secrets)
        with read_session(engine) as session:
            warn_of_iso18626_opt_outs(session)
        async with new_http_client(settings) as http:
            observe_calls(http, metrics.upstream_call)
            yield Runtime(
                settings=settings,
                engine=engine,
                http=http,
                secrets=secrets,
                worldshare_tokens=TokenCache(on_fetched=metrics.token_fetched),
                metrics=metrics,
            )
    finally:
        engine.dispose()
