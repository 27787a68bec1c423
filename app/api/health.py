"""Liveness, readiness, service statistics and Prometheus metrics."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr
from sqlalchemy import text

from app.api.deps import AppRuntime, Reader, ReadSession
from app.borrowing import queries
from app.db import read_session
from app.errors import ERROR_RESPONSES, ErrorEnvelope, Unauthorized, envelope
from app.jobs import queue
from app.jobs.models import JobStatus
from app.jobs.schemas import Stats
from app.timeutil import utcnow

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"model": ErrorEnvelope, "description": "The database is unreachable"}},
)
def readyz(runtime: AppRuntime) -> JSONResponse:
    """Ready when the database answers."""
    try:
        with runtime.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:
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
    )


@router.get("/api/v1/stats", responses=ERROR_RESPONSES)
def stats(token: Reader, session: ReadSession) -> Stats:
    """Counts by state, queue depth, the oldest waiting job's age and dead jobs."""
    return compute_stats(session, token.institution_id)


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
