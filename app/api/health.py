"""Liveness, readiness, service statistics and Prometheus metrics."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from app.api.deps import AppRuntime, Reader, ReadSession
from app.api.routing import AuthFirstRoute
from app.borrowing import queries
from app.config import Settings
from app.db import DatabaseTimeouts, create_db_engine, read_session
from app.errors import ERROR_RESPONSES, ErrorEnvelope, Unauthorized, envelope
from app.jobs import queue
from app.jobs.models import JobStatus
from app.jobs.schemas import Stats
from app.timeutil import utcnow
from app.worldshare import budget

router = APIRouter(tags=["operations"], route_class=AuthFirstRoute)

# A readiness answer is due within this, however the database or the rest of the service fares.
READINESS_TIMEOUT_SECONDS = 1.0
_PROBE_TIMEOUTS = DatabaseTimeouts(connect_seconds=2, statement_ms=1000, pool_seconds=1.0)


class ReadinessProbe:
    """`SELECT 1` on a thread and a fresh connection of its own, awaited for a bounded time.

    Requests stuck on a silent database hold the shared thread pool and connection pool; a probe
    queued behind them would hang with them. At most one probe runs at once: callers that arrive
    while it runs wait for the same answer. Its thread is a daemon, so a probe stuck on a hung
    server never holds up the process's exit.
    """

    def __init__(self, settings: Settings) -> None:
        self._engine = create_db_engine(
            settings.database_url, timeouts=_PROBE_TIMEOUTS, poolclass=NullPool
        )
        self._running: Future[bool] | None = None

    def _start(self) -> Future[bool]:
        future: Future[bool] = Future()
        threading.Thread(
            target=lambda: future.set_result(self._select_one()), name="readiness", daemon=True
        ).start()
        return future

    def _select_one(self) -> bool:
        try:
            with self._engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    async def ready(self) -> bool:
        if self._running is None or self._running.done():
            self._running = self._start()
        try:
            return await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(self._running)), READINESS_TIMEOUT_SECONDS
            )
        except TimeoutError:
            return False

    def close(self) -> None:
        self._engine.dispose()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"model": ErrorEnvelope, "description": "The database is unreachable"}},
)
async def readyz(request: Request) -> JSONResponse:
    """Ready when the database answers within a second."""
    probe: ReadinessProbe = request.app.state.services.readiness
    if not await probe.ready():
        return envelope(503, "not_ready", "database unreachable")
    return JSONResponse({"status": "ready"})


def compute_stats(session: ReadSession, institution_id: int | None) -> Stats:
    jobs = queue.counts_by_status(session, institution_id)
    depth, oldest = queue.queue_depth(session, institution_id)
    return Stats(
        requests_by_state=queries.counts_by_state(session, institution_id),
        requests_needing_attention=queries.count_needing_attention(session, institution_id),
        jobs_by_status=jobs,
        queue_depth=depth,
        oldest_queued_job_age_seconds=(utcnow() - oldest).total_seconds() if oldest else None,
        dead_jobs=jobs.get(JobStatus.DEAD.value, 0),
        worldshare_calls_last_24h=(
            budget.calls_by_key(session, utcnow()) if institution_id is None else {}
        ),
        counted_at=utcnow(),
    )


T = TypeVar("T")


@dataclass
class _Entry(Generic[T]):
    lock: threading.Lock
    value: T | None = None
    read_at: float | None = None


class RecentReads(Generic[T]):
    """A value per key, re-read at most once per `max_age` seconds; callers arriving while it
    is re-read wait for that read instead of starting their own.

    The counts of /api/v1/stats aggregate whole tables (a million requests take a PostgreSQL
    core hundreds of milliseconds to count): this bounds them to one aggregate per window, per
    institution and process, however many pages poll them. Counting on write instead would put
    one hot counter row in every state change's transaction, each writer queueing on its lock.
    """

    def __init__(self, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age = max_age
        self._clock = clock
        self._entries: dict[Hashable, _Entry[T]] = {}
        self._guard = threading.Lock()

    def get(self, key: Hashable, read: Callable[[], T]) -> T:
        if self.max_age <= 0:
            return read()
        with self._guard:
            entry = self._entries.setdefault(key, _Entry(threading.Lock()))
        with entry.lock:
            fresh = entry.read_at is not None and self._clock() - entry.read_at < self.max_age
            if not fresh or entry.value is None:
                entry.value = read()
                entry.read_at = self._clock()
            return entry.value


@router.get("/api/v1/stats", responses=ERROR_RESPONSES)
def stats(token: Reader, session: ReadSession, request: Request) -> Stats:
    """Counts by state, queue depth, the oldest waiting job's age and dead jobs.

    Read at most once per ILLBRIDGE_STATS_CACHE_SECONDS per institution (`counted_at` says
    when), so polling it costs no table scan per call.
    """
    recent: RecentReads[Stats] = request.app.state.recent_stats
    return recent.get(token.institution_id, lambda: compute_stats(session, token.institution_id))


_metrics_bearer = HTTPBearer(
    scheme_name="MetricsToken",
    auto_error=False,
    description="ILLBRIDGE_METRICS_TOKEN; needed only when it is set",
)


def _require_metrics_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_metrics_bearer)],
) -> None:
    expected: SecretStr | None = request.app.state.settings.metrics_token
    if expected is None:
        return
    # Digests have one length, so the comparison's time says nothing about the token's.
    if credentials is None or not hmac.compare_digest(
        hashlib.sha256(credentials.credentials.encode()).digest(),
        hashlib.sha256(expected.get_secret_value().encode()).digest(),
    ):
        raise Unauthorized("a valid metrics token is required")


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}},
        401: {"model": ErrorEnvelope, "description": "ILLBRIDGE_METRICS_TOKEN is set and not sent"},
        503: ERROR_RESPONSES[503],
    },
    dependencies=[Depends(_require_metrics_token)],
)
def metrics(request: Request, runtime: AppRuntime) -> Response:
    """Prometheus text format; the database gauges are re-read at most every 15 s (settable)."""

    def read() -> Stats:
        with read_session(runtime.engine) as session:
            return compute_stats(session, None)

    instruments = request.app.state.metrics
    instruments.refresh_stats(read)
    return Response(generate_latest(instruments.registry), media_type=CONTENT_TYPE_LATEST)
