"""Jobs (the outbound work queue) for operators: list, inspect failures, replay dead ones."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from app.api.deps import Admin, DbEngine, Reader, ReadSession, WakeWorker
from app.api.pagination import MAX_ID, decode_cursor, encode_cursor, json_answer
from app.api.routing import AuthFirstRoute
from app.db import write_session
from app.errors import ERROR_RESPONSES, Conflict, NotFound
from app.jobs import queue
from app.jobs.models import Job, JobStatus
from app.jobs.schemas import JobPage, JobPublic

router = APIRouter(
    prefix="/api/v1/jobs", tags=["jobs"], responses=ERROR_RESPONSES, route_class=AuthFirstRoute
)


def _public(job: Job) -> JobPublic:
    return JobPublic.model_validate(job, from_attributes=True)


@router.get("", response_model=JobPage)
def list_jobs(
    token: Reader,
    session: ReadSession,
    status: JobStatus | None = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    request_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    jobs = queue.list_jobs(
        session,
        status=status.value if status else None,
        kind=kind,
        request_id=request_id,
        institution_id=token.institution_id,
        before_id=decode_cursor(cursor),
        limit=limit + 1,
    )
    page = jobs[:limit]
    more = len(jobs) > limit
    return json_answer(
        JobPage(items=page, next_cursor=encode_cursor(page[-1].id) if more and page else None)
    )


@router.post("/{job_id}/retry")
def retry_job(
    job_id: Annotated[int, Path(ge=1, le=MAX_ID)], token: Admin, engine: DbEngine, wake: WakeWorker
) -> JobPublic:
    """Replay a dead job from its first attempt."""
    with write_session(engine) as session:
        job = session.get(Job, job_id)
        if job is None or token.institution_id not in (None, job.institution_id):
            raise NotFound(f"no job {job_id}")
        if not queue.requeue_dead(session, job_id):
            raise Conflict(f"job {job_id} is {job.status}; only dead jobs can be retried")
        session.commit()
        session.refresh(job)
    wake()
    return _public(job)
