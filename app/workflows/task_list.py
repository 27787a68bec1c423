"""The staff task list, read side: everything a human must do, oldest first, in one listing.

Four sources, each a keyset query: open staff tasks (renew, cancel or mark returned in
WorldShare, unmatched loan, lost, claimed returned, due-date drift, stale request), requests
flagged for review, exports whose answer was lost (a possible duplicate WorldShare request), and
dead jobs. The REST API and an operators' dashboard share `list_tasks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, and_, or_, select
from sqlmodel import Session, col

from app.borrowing.models import BorrowingRequest
from app.borrowing.stale import STALE_EXPLANATIONS, StaleReason
from app.borrowing.states import TERMINAL_STATES, RequestState
from app.borrowing.tasks import HOW_TO_RESOLVE, StaffTask, TaskKind
from app.jobs.models import Job, JobStatus
from app.workflows.export import UNKNOWN_CREATE

REVIEW = "review"
DEAD_JOB = "dead_job"
POSSIBLE_DUPLICATE = TaskKind.POSSIBLE_DUPLICATE.value
LIST_KINDS = (*(kind.value for kind in TaskKind), REVIEW, DEAD_JOB)

# Each source's rank breaks ties between rows opened at the same instant.
_TASK, _REVIEW, _DUPLICATE, _JOB = 0, 1, 2, 3


@dataclass(frozen=True)
class TaskFilter:
    institution_id: int | None = None
    kind: str | None = None
    older_than_days: int | None = None  # opened at least this many days ago


@dataclass(frozen=True)
class Position:
    """Where a page ended: the last entry's opening time, source rank and id."""

    opened_at: datetime
    rank: int
    id: int


@dataclass(frozen=True)
class TaskRequest:
    """What an entry shows of its request."""

    id: int
    state: RequestState
    alma_request_id: str
    alma_internal_request_id: str | None
    worldshare_request_id: str | None
    stale_reason: str | None


# Read as columns, not ORM objects: a page loads up to four sources of `limit` rows each.
_REQUEST_COLUMNS = (
    col(BorrowingRequest.id),
    col(BorrowingRequest.state),
    col(BorrowingRequest.alma_request_id),
    col(BorrowingRequest.alma_internal_request_id),
    col(BorrowingRequest.worldshare_request_id),
    col(BorrowingRequest.stale_reason),
)


def _task_request(row: Any) -> TaskRequest | None:
    """The request of a row that selected `_REQUEST_COLUMNS` (outer joined: maybe none)."""
    if row.id is None:
        return None
    return TaskRequest(
        row.id,
        row.state,
        row.alma_request_id,
        row.alma_internal_request_id,
        row.worldshare_request_id,
        row.stale_reason,
    )


@dataclass(frozen=True)
class TaskEntry:
    position: Position
    kind: str
    institution_id: int | None
    request: TaskRequest | None
    reason: str
    how_to_resolve: str
    resolve_with: dict[str, Any] | None  # the body of POST /api/v1/requests/{id}/resolve
    job_id: int | None = None

    @property
    def opened_at(self) -> datetime:
        return self.position.opened_at


def _after(opened: Any, row_id: Any, rank: int, after: Position | None) -> ColumnElement[bool]:
    if after is None:
        return and_(True)
    if rank > after.rank:
        return col(opened) >= after.opened_at
    if rank < after.rank:
        return col(opened) > after.opened_at
    return or_(
        col(opened) > after.opened_at,
        and_(col(opened) == after.opened_at, col(row_id) > after.id),
    )


def _wanted(where: TaskFilter, *kinds: str) -> bool:
    return where.kind is None or where.kind in kinds


def list_tasks(
    session: Session, where: TaskFilter, *, after: Position | None, limit: int, now: datetime
) -> list[TaskEntry]:
    """At most `limit` entries after `after`, oldest first."""
    cutoff = now - timedelta(days=where.older_than_days) if where.older_than_days else None
    # Each source reads up to `limit` rows; only the page's rows become entries.
    found: list[tuple[int, Row[Any]]] = []
    if _wanted(where, *(kind.value for kind in TaskKind)):
        found += [(_TASK, row) for row in _staff_tasks(session, where, after, limit, cutoff)]
    if _wanted(where, REVIEW):
        found += [(_REVIEW, row) for row in _flagged(session, where, after, limit, cutoff)]
    if _wanted(where, POSSIBLE_DUPLICATE):
        found += [(_DUPLICATE, row) for row in _lost_exports(session, where, after, limit, cutoff)]
    if _wanted(where, DEAD_JOB):
        found += [(_JOB, row) for row in _dead_jobs(session, where, after, limit, cutoff)]
    found.sort(key=lambda f: (f[1].opened_at, f[0], f[1].entry_id))
    return [_ENTRY_OF[rank](row) for rank, row in found[:limit]]


def _staff_tasks(
    session: Session,
    where: TaskFilter,
    after: Position | None,
    limit: int,
    cutoff: datetime | None,
) -> Sequence[Row[Any]]:
    query: Select[*tuple[Any, ...]] = (
        select(
            col(StaffTask.id).label("entry_id"),
            col(StaffTask.kind),
            col(StaffTask.institution_id),
            col(StaffTask.reason),
            col(StaffTask.opened_at),
            *_REQUEST_COLUMNS,
        )
        .join(
            BorrowingRequest,
            col(BorrowingRequest.id) == col(StaffTask.request_id),
            isouter=True,
        )
        .where(
            col(StaffTask.closed_at).is_(None),
            _after(StaffTask.opened_at, StaffTask.id, _TASK, after),
        )
    )
    if where.institution_id is not None:
        query = query.where(col(StaffTask.institution_id) == where.institution_id)
    if where.kind is not None:
        query = query.where(col(StaffTask.kind) == where.kind)
    if cutoff is not None:
        query = query.where(col(StaffTask.opened_at) <= cutoff)
    return session.execute(
        query.order_by(col(StaffTask.opened_at), col(StaffTask.id)).limit(limit)
    ).all()


def _staff_task_entry(row: Row[Any]) -> TaskEntry:
    request = _task_request(row)
    return TaskEntry(
        position=Position(row.opened_at, _TASK, row.entry_id),
        kind=row.kind.value,
        institution_id=row.institution_id,
        request=request,
        reason=row.reason,
        how_to_resolve=HOW_TO_RESOLVE[row.kind],
        resolve_with={"task": row.kind.value} if request is not None else None,
    )


def _open_requests(where: TaskFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [col(BorrowingRequest.state).not_in(TERMINAL_STATES)]
    if where.institution_id is not None:
        conditions.append(col(BorrowingRequest.institution_id) == where.institution_id)
    return conditions


def _flagged(
    session: Session,
    where: TaskFilter,
    after: Position | None,
    limit: int,
    cutoff: datetime | None,
) -> Sequence[Row[Any]]:
    query: Select[*tuple[Any, ...]] = select(
        *_REQUEST_COLUMNS,
        col(BorrowingRequest.id).label("entry_id"),
        col(BorrowingRequest.institution_id),
        col(BorrowingRequest.updated_at).label("opened_at"),
        col(BorrowingRequest.attention_reason),
    ).where(
        col(BorrowingRequest.needs_attention).is_(True),
        or_(
            col(BorrowingRequest.attention_reason).is_(None),
            ~col(BorrowingRequest.attention_reason).startswith(UNKNOWN_CREATE),
        ),
        _after(BorrowingRequest.updated_at, BorrowingRequest.id, _REVIEW, after),
    )
    if where.institution_id is not None:
        query = query.where(col(BorrowingRequest.institution_id) == where.institution_id)
    if cutoff is not None:
        query = query.where(col(BorrowingRequest.updated_at) <= cutoff)
    return session.execute(
        query.order_by(col(BorrowingRequest.updated_at), col(BorrowingRequest.id)).limit(limit)
    ).all()


def _flagged_entry(row: Row[Any]) -> TaskEntry:
    return TaskEntry(
        position=Position(row.opened_at, _REVIEW, row.entry_id),
        kind=REVIEW,
        institution_id=row.institution_id,
        request=_task_request(row),
        reason=row.attention_reason or "flagged for review",
        how_to_resolve="Do what the reason asks, then resolve (an empty body clears the flag "
        "and closes the request's open tasks).",
        resolve_with={},
    )


def _lost_exports(
    session: Session,
    where: TaskFilter,
    after: Position | None,
    limit: int,
    cutoff: datetime | None,
) -> Sequence[Row[Any]]:
    attempted = col(BorrowingRequest.export_attempted_at)
    query: Select[*tuple[Any, ...]] = select(
        *_REQUEST_COLUMNS,
        col(BorrowingRequest.id).label("entry_id"),
        col(BorrowingRequest.institution_id),
        attempted.label("opened_at"),
    ).where(
        *_open_requests(where),
        attempted.is_not(None),
        col(BorrowingRequest.worldshare_request_id).is_(None),
        col(BorrowingRequest.needs_attention).is_(True),
        col(BorrowingRequest.attention_reason).startswith(UNKNOWN_CREATE),
        _after(BorrowingRequest.export_attempted_at, BorrowingRequest.id, _DUPLICATE, after),
    )
    if cutoff is not None:
        query = query.where(attempted <= cutoff)
    return session.execute(query.order_by(attempted, col(BorrowingRequest.id)).limit(limit)).all()


def _lost_export_entry(row: Row[Any]) -> TaskEntry:
    return TaskEntry(
        position=Position(row.opened_at, _DUPLICATE, row.entry_id),
        kind=POSSIBLE_DUPLICATE,
        institution_id=row.institution_id,
        request=_task_request(row),
        reason=STALE_EXPLANATIONS[StaleReason.EXPORT_UNRESOLVED],
        how_to_resolve=HOW_TO_RESOLVE[TaskKind.POSSIBLE_DUPLICATE]
        + ' Resolve with {"worldshare_request_id": "<id>"} or {"export_again": true}.',
        resolve_with={"worldshare_request_id": "<the WorldShare id found>"},
    )


def _dead_jobs(
    session: Session,
    where: TaskFilter,
    after: Position | None,
    limit: int,
    cutoff: datetime | None,
) -> Sequence[Row[Any]]:
    query: Select[*tuple[Any, ...]] = (
        select(
            col(Job.id).label("entry_id"),
            col(Job.kind).label("job_kind"),
            col(Job.institution_id),
            col(Job.updated_at).label("opened_at"),
            col(Job.last_error),
            *_REQUEST_COLUMNS,
        )
        .join(BorrowingRequest, col(BorrowingRequest.id) == col(Job.request_id), isouter=True)
        .where(
            col(Job.status) == JobStatus.DEAD.value,
            _after(Job.updated_at, Job.id, _JOB, after),
        )
    )
    if where.institution_id is not None:
        query = query.where(col(Job.institution_id) == where.institution_id)
    if cutoff is not None:
        query = query.where(col(Job.updated_at) <= cutoff)
    return session.execute(query.order_by(col(Job.updated_at), col(Job.id)).limit(limit)).all()


def _dead_job_entry(row: Row[Any]) -> TaskEntry:
    return TaskEntry(
        position=Position(row.opened_at, _JOB, row.entry_id),
        kind=DEAD_JOB,
        institution_id=row.institution_id,
        request=_task_request(row),
        reason=f"{row.job_kind} failed for good: {row.last_error or 'no error recorded'}",
        how_to_resolve=f"Fix the cause, then replay it: POST /api/v1/jobs/{row.entry_id}/retry.",
        resolve_with=None,
        job_id=row.entry_id,
    )


_ENTRY_OF = {
    _TASK: _staff_task_entry,
    _REVIEW: _flagged_entry,
    _DUPLICATE: _lost_export_entry,
    _JOB: _dead_job_entry,
}
