"""Liveness, readiness, service statistics and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app.api.deps import AppRuntime, Reader, ReadSession
from app.api.routing import AuthFirstRoute
from app.borrowing import queries
from app.errors import ERROR_RESPONSES, ErrorEnvelope, envelope
from app.jobs import queue
from app.jobs.models import JobStatus
from app.jobs.schemas import Stats
from app.timeutil import utcnow

router = APIRouter(tags=["operations"], route_class=AuthFirstRoute)


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


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}, 503: ERROR_RESPONSES[503]},
)
def metrics(request: Request, session: ReadSession) -> Response:
    """Prometheus text format; the queue and request gauges are read from the database."""
    instruments = request.app.state.metrics
    instruments.observe_stats(compute_stats(session, None))
    return Response(generate_latest(instruments.registry), media_type=CONTENT_TYPE_LATEST)
