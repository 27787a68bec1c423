"""Staff tasks: what only a human can do, kept as rows so the task list can show and age them.

A task belongs to an institution and usually to one request (an unmatched loan has none). At most
one task of a kind is open per request: opening it again returns the open one. Opening and
closing are on the request's timeline. A task's `reason` is staff-readable text and never holds
patron data.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index, text
from sqlmodel import Field, Session, SQLModel, col, select

from app.borrowing.models import BorrowingRequest
from app.borrowing.service import record_event
from app.db import StrEnumType
from app.timeutil import UTCDateTime, utcnow

REASON_MAX_CHARS = 1000


class TaskKind(StrEnum):
    RENEW_IN_WORLDSHARE = "renew_in_worldshare"
    CANCEL_IN_WORLDSHARE = "cancel_in_worldshare"
    MARK_RETURNED_IN_WORLDSHARE = "mark_returned_in_worldshare"
    UNMATCHED_LOAN = "unmatched_loan"
    LOST = "lost"
    CLAIMED_RETURNED = "claimed_returned"
    DUE_DATE_DRIFT = "due_date_drift"
    STALE_REQUEST = "stale_request"
    POSSIBLE_DUPLICATE = "possible_duplicate"


# What staff do to resolve each kind, shown beside the task.
HOW_TO_RESOLVE: dict[TaskKind, str] = {
    TaskKind.RENEW_IN_WORLDSHARE: "Ask the lender for a renewal in WorldShare; the answer is "
    "picked up by polling, or report it with POST /api/v1/requests/{id}/renewal.",
    TaskKind.CANCEL_IN_WORLDSHARE: "Cancel the request in WorldShare, then resolve the task.",
    TaskKind.MARK_RETURNED_IN_WORLDSHARE: "Ship the item back and mark it returned in WorldShare, "
    "then resolve the task.",
    TaskKind.UNMATCHED_LOAN: "Find the borrowing request this loan belongs to, or confirm it is "
    "not an interlibrary loan, then resolve the task.",
    TaskKind.LOST: "Settle the lost item with the lender, then resolve the task.",
    TaskKind.CLAIMED_RETURNED: "Search for the item and settle with the lender, then resolve.",
    TaskKind.DUE_DATE_DRIFT: "Set the patron's due date in Alma on or before the lender's.",
    TaskKind.STALE_REQUEST: "Check the request in WorldShare; clean it up or resolve the task.",
    TaskKind.POSSIBLE_DUPLICATE: "Look for the request in WorldShare and resolve with its id, "
    "or export it again.",
}


class StaffTask(SQLModel, table=True):
    __tablename__ = "staff_task"
    __table_args__ = (
        # The task list: open tasks oldest first, per institution and consortium-wide; a page is
        # read in order from the open tasks alone and stops at its limit.
        Index(
            "ix_staff_task_open_institution_id_opened_at_id",
            "institution_id",
            "opened_at",
            "id",
            postgresql_where=text("closed_at IS NULL"),
            sqlite_where=text("closed_at IS NULL"),
        ),
        Index(
            "ix_staff_task_open_opened_at_id",
            "opened_at",
            "id",
            postgresql_where=text("closed_at IS NULL"),
            sqlite_where=text("closed_at IS NULL"),
        ),
        Index("ix_staff_task_request_kind", "request_id", "kind"),
    )

    id: int | None = Field(default=None, primary_key=True)
    institution_id: int = Field(foreign_key="institution.id")
    request_id: int | None = Field(default=None, foreign_key="borrowing_request.id")
    kind: TaskKind = Field(sa_column=Column(StrEnumType(TaskKind, 48), nullable=False))
    reason: str = Field(max_length=REASON_MAX_CHARS)
    # Ids staff need beside the reason (an unmatched loan's item barcode, loan id, library).
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    opened_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    closed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    resolution: str | None = Field(default=None, max_length=REASON_MAX_CHARS)


def open_task(
    session: Session,
    request: BorrowingRequest,
    kind: TaskKind,
    reason: str,
    *,
    source: str,
) -> StaffTask:
    """Open a task for `request` (or return the one of that kind already open)."""
    existing = find_open_task(session, request, kind)
    if existing is not None:
        return existing
    task = StaffTask(
        institution_id=request.institution_id,
        request_id=request.id,
        kind=kind,
        reason=reason[:REASON_MAX_CHARS],
    )
    session.add(task)
    session.flush()
    record_event(
        session, request, "task_opened", source, detail={"task": kind.value, "reason": task.reason}
    )
    return task


def open_institution_task(
    session: Session, institution_id: int, kind: TaskKind, reason: str, detail: dict[str, Any]
) -> StaffTask:
    """A task that belongs to no request yet (an unmatched loan)."""
    task = StaffTask(
        institution_id=institution_id,
        kind=kind,
        reason=reason[:REASON_MAX_CHARS],
        detail=detail,
    )
    session.add(task)
    session.flush()
    return task


def find_open_task(session: Session, request: BorrowingRequest, kind: TaskKind) -> StaffTask | None:
    return session.exec(
        select(StaffTask).where(
            StaffTask.request_id == request.id,
            StaffTask.kind == kind,
            col(StaffTask.closed_at).is_(None),
        )
    ).first()


def open_tasks(session: Session, request: BorrowingRequest) -> list[StaffTask]:
    return list(
        session.exec(
            select(StaffTask)
            .where(StaffTask.request_id == request.id, col(StaffTask.closed_at).is_(None))
            .order_by(col(StaffTask.id))
        ).all()
    )


def close_task(
    session: Session,
    request: BorrowingRequest,
    kind: TaskKind,
    *,
    source: str,
    resolution: str,
) -> bool:
    """Close the open task of `kind` on `request`; False when none was open."""
    task = find_open_task(session, request, kind)
    if task is None:
        return False
    task.closed_at = utcnow()
    task.resolution = resolution[:REASON_MAX_CHARS]
    session.add(task)
    record_event(
        session,
        request,
        "task_closed",
        source,
        detail={"task": kind.value, "resolution": task.resolution},
    )
    return True
