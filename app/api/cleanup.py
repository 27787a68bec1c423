"""Clean-up of stale requests: plan (dry run) or start a run, and read a run's outcome later.

The API never calls out: a dry run plans from what is stored; a real run is stored and carried
out by a worker, whose per-request outcomes `GET /api/v1/cleanup/{batch_id}` shows.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from sqlmodel import Session

from app.api.deps import AppRuntime, Reader, ReadSession, WakeWorker, Writer, ensure_visible
from app.api.pagination import MAX_ID
from app.api.routing import AuthFirstRoute
from app.borrowing.cleanup import CleanupBatch
from app.borrowing.schemas import CleanupBatchPublic, CleanupLinePublic, CleanupOrder
from app.db import write_session
from app.errors import ERROR_RESPONSES, NotFound
from app.institutions.models import Institution
from app.institutions.service import Caller, get_by_code
from app.workflows import cleanup

router = APIRouter(
    prefix="/api/v1/cleanup",
    tags=["cleanup"],
    responses=ERROR_RESPONSES,
    route_class=AuthFirstRoute,
)


def batch_public(
    session: Session, batch: CleanupBatch, institution_code: str
) -> CleanupBatchPublic:
    assert batch.id is not None
    return CleanupBatchPublic(
        batch_id=batch.id,
        institution=institution_code,
        dry_run=batch.dry_run,
        status=batch.status.value,
        requested_by=batch.requested_by,
        limit=batch.max_requests,
        created_at=batch.created_at,
        finished_at=batch.finished_at,
        items=[
            CleanupLinePublic(
                request_id=item.request_id,
                alma_request_id=request.alma_request_id,
                alma_internal_request_id=request.alma_internal_request_id,
                worldshare_request_id=request.worldshare_request_id,
                state=request.state.value,
                action=item.action.value,
                why=item.why,
                lender_status=item.lender_status,
                outcome=item.outcome.value,
                error=item.error,
            )
            for item, request in cleanup.batch_lines(session, batch.id)
        ],
    )


@router.post(
    "",
    responses={
        200: {"description": "A dry run: the plan, stored"},
        202: {"description": "A real run, queued: read its outcome at /api/v1/cleanup/{batch_id}"},
    },
)
def start_cleanup(
    order: CleanupOrder, token: Writer, runtime: AppRuntime, response: Response, wake: WakeWorker
) -> CleanupBatchPublic:
    """Dry run (default): what a run would do with the WorldShare statuses last polled, sending
    nothing. Real run: each stale request's WorldShare side is read afresh; only one shown
    closed, cancelled, unfilled or expired has its Alma side closed (ISO 18626 notice, or the
    Alma REST cancel with the policy's reason and notify_user=false). Requests received in the
    library, on loan, or open in WorldShare are left alone."""
    with write_session(runtime.engine) as session:
        institution = get_by_code(session, order.institution)
        ensure_visible(token, institution)
        actor = f"token:{token.name}"
        if order.dry_run:
            batch = cleanup.dry_run(session, institution, limit=order.limit, requested_by=actor)
        else:
            batch = cleanup.start_run(session, institution, limit=order.limit, requested_by=actor)
        session.commit()
        public = batch_public(session, batch, institution.code)
    if not order.dry_run:
        wake()
        response.status_code = status.HTTP_202_ACCEPTED
    return public


def _visible_batch(session: Session, token: Caller, batch_id: int) -> tuple[CleanupBatch, str]:
    batch = session.get(CleanupBatch, batch_id)
    if batch is None or token.institution_id not in (None, batch.institution_id):
        raise NotFound(f"no clean-up batch {batch_id}")
    institution = session.get(Institution, batch.institution_id)
    assert institution is not None
    return batch, institution.code


@router.get("/{batch_id}")
def get_cleanup(
    batch_id: Annotated[int, Path(ge=1, le=MAX_ID)], token: Reader, session: ReadSession
) -> CleanupBatchPublic:
    """A clean-up run (or dry run) and what it did or planned for each request."""
    batch, code = _visible_batch(session, token, batch_id)
    return batch_public(session, batch, code)
