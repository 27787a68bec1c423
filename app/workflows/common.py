"""Shared by the workflows' job handlers: loading what a job is about, flagging on failure."""

from __future__ import annotations

from sqlmodel import Session, col, select

from app.borrowing import service
from app.borrowing.models import BorrowingRequest
from app.institutions.models import Institution
from app.jobs.queue import ClaimedJob
from app.jobs.registry import OnDead, PermanentJobError


def load_request(session: Session, job: ClaimedJob) -> tuple[BorrowingRequest, Institution]:
    """The job's request (locked for update on PostgreSQL) and its institution, in one query."""
    if job.request_id is None:
        raise PermanentJobError(f"{job.kind} job {job.id} names no request")
    row = session.exec(
        select(BorrowingRequest, Institution)
        .join(Institution, col(Institution.id) == col(BorrowingRequest.institution_id))
        .where(BorrowingRequest.id == job.request_id)
        .with_for_update(of=BorrowingRequest)
    ).first()
    if row is None:
        raise PermanentJobError(f"request {job.request_id} no longer exists")
    return row[0], row[1]


def flag_on_dead(what: str) -> OnDead:
    """An `on_dead` hook that flags the job's request: '<what> failed: <error>'."""

    def on_dead(session: Session, job: ClaimedJob, error: str) -> None:
        request = session.get(BorrowingRequest, job.request_id) if job.request_id else None
        if request is not None:
            service.flag(session, request, f"{what} failed: {error}", source="worker")

    return on_dead
