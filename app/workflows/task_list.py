"""The staff task list, read side: everything a human must do, oldest first, in one listing.

Four sources: open staff tasks (renew, cancel or mark returned in WorldShare, unmatched loan,
lost, claimed returned, due-date drift, stale request), requests flagged for review, exports
whose answer was lost (a possible duplicate WorldShare request), and dead jobs. A page is one
query: each source a keyset branch read from its own index, the branches merged by the database.
The REST API and an operators' dashboard share `list_tasks`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Integer,
    Row,
    Select,
    String,
    and_,
    bindparam,
    literal,
    null,
    or_,
    select,
    union_all,
)
from sqlmodel import Session, col

from app.borrowing.models import BorrowingRequest
from app.borrowing.stale import STALE_EXPLANATIONS, StaleReason
from app.borrowing.states import TERMINAL_STATES, RequestState
from app.borrowing.tasks import HOW_TO_RESOLVE, StaffTask, TaskKind
from app.institutions.models import Institution
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
    institution: str | None  # its code
    request: TaskRequest | None
    reason: str
    how_to_resolve: str
    resolve_with: dict[str, Any] | None  # the body of POST /api/v1/requests/{id}/resolve
    job_id: int | None = None

    @property
    def opened_at(self) -> datetime:
        return self.position.opened_at


def _after(opened: Any, row_id: Any, rank: int, after_rank: int | None) -> ColumnElement[bool]:
    """Past the position `after_opened_at`, `after_rank`, `after_id` of the previous page."""
    if after_rank is None:
        return and_(True)
    since: BindParameter[Any] = bindparam("after_opened_at")
    if rank > after_rank:
        return col(opened) >= since
    if rank < after_rank:
        return col(opened) > since
    return or_(col(opened) > since, and_(col(opened) == since, col(row_id) > bindparam("after_id")))


def list_tasks(
    session: Session, where: TaskFilter, *, after: Position | None, limit: int, now: datetime
) -> list[TaskEntry]:
    """At most `limit` entries after `after`, oldest first."""
    shape = _Shape(
        sources=tuple(
            rank
            for rank, kinds in _SOURCE_KINDS.items()
            if where.kind is None or where.kind in kinds
        ),
        after_rank=after.rank if after is not None else None,
        by_institution=where.institution_id is not None,
        by_kind=where.kind is not None,
        by_age=where.older_than_days is not None,
        limit=limit,
    )
    if not shape.sources:
        return []
    values: dict[str, Any] = {
        "institution_id": where.institution_id,
        "kind": where.kind,
        "cutoff": now - timedelta(days=where.older_than_days or 0),
    }
    if after is not None:
        values |= {"after_opened_at": after.opened_at, "after_id": after.id}
    rows = session.execute(_page(shape), values).all()
    return [_ENTRY_OF[row.rank](row) for row in rows]


@dataclass(frozen=True)
class _Shape:
    """What decides a page's SQL; the values are bound. A few dozen shapes exist in all."""

    sources: tuple[int, ...]
    after_rank: int | None
    by_institution: bool
    by_kind: bool
    by_age: bool
    limit: int


@lru_cache(maxsize=256)
def _page(shape: _Shape) -> Select[*tuple[Any, ...]]:
    """One query, built once per shape: each source reads up to a page from its own index, and
    the database merges them."""
    sources = [_SOURCE[rank](shape) for rank in shape.sources]
    merged = union_all(*(select(source.subquery()) for source in sources)).subquery("entries")
    return (
        select(merged, col(Institution.code).label("institution"))
        .outerjoin(Institution, col(Institution.id) == merged.c.institution_id)
        .order_by(merged.c.opened_at, merged.c.rank, merged.c.entry_id)
        .limit(shape.limit)
    )


def _columns(
    rank: int,
    entry_id: Any,
    opened_at: Any,
    institution_id: Any,
    *,
    task_kind: Any = None,
    text: Any = None,
    job_kind: Any = None,
) -> tuple[Any, ...]:
    """The columns every source selects, in the same order, for the union."""
    return (
        literal(rank, Integer).label("rank"),
        entry_id.label("entry_id"),
        opened_at.label("opened_at"),
        institution_id.label("institution_id"),
        (task_kind if task_kind is not None else null()).cast(String).label("task_kind"),
        (text if text is not None else null()).cast(String).label("text"),
        (job_kind if job_kind is not None else null()).cast(String).label("job_kind"),
        *_REQUEST_COLUMNS,
    )


def _staff_tasks(shape: _Shape) -> Select[*tuple[Any, ...]]:
    query: Select[*tuple[Any, ...]] = (
        select(
            *_columns(
                _TASK,
                col(StaffTask.id),
                col(StaffTask.opened_at),
                col(StaffTask.institution_id),
                task_kind=col(StaffTask.kind),
                text=col(StaffTask.reason),
            )
        )
        .join(
            BorrowingRequest,
            col(BorrowingRequest.id) == col(StaffTask.request_id),
            isouter=True,
        )
        .where(
            col(StaffTask.closed_at).is_(None),
            _after(StaffTask.opened_at, StaffTask.id, _TASK, shape.after_rank),
        )
    )
    if shape.by_institution:
        query = query.where(col(StaffTask.institution_id) == bindparam("institution_id"))
    if shape.by_kind:
        query = query.where(col(StaffTask.kind) == bindparam("kind"))
    if shape.by_age:
        query = query.where(col(StaffTask.opened_at) <= bindparam("cutoff"))
    return query.order_by(col(StaffTask.opened_at), col(StaffTask.id)).limit(shape.limit)


def _staff_task_entry(row: Row[Any]) -> TaskEntry:
    request = _task_request(row)
    kind = TaskKind(row.task_kind)
    return TaskEntry(
        position=Position(row.opened_at, _TASK, row.entry_id),
        kind=kind.value,
        institution=row.institution,
        request=request,
        reason=row.text,
        how_to_resolve=HOW_TO_RESOLVE[kind],
        resolve_with={"task": kind.value} if request is not None else None,
    )


def _open_requests(shape: _Shape) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [col(BorrowingRequest.state).not_in(TERMINAL_STATES)]
    if shape.by_institution:
        conditions.append(col(BorrowingRequest.institution_id) == bindparam("institution_id"))
    return conditions


def _flagged(shape: _Shape) -> Select[*tuple[Any, ...]]:
    updated = col(BorrowingRequest.updated_at)
    query: Select[*tuple[Any, ...]] = select(
        *_columns(
            _REVIEW,
            col(BorrowingRequest.id),
            updated,
            col(BorrowingRequest.institution_id),
            text=col(BorrowingRequest.attention_reason),
        )
    ).where(
        col(BorrowingRequest.needs_attention).is_(True),
        or_(
            col(BorrowingRequest.attention_reason).is_(None),
            ~col(BorrowingRequest.attention_reason).startswith(UNKNOWN_CREATE),
        ),
        _after(BorrowingRequest.updated_at, BorrowingRequest.id, _REVIEW, shape.after_rank),
    )
    if shape.by_institution:
        query = query.where(col(BorrowingRequest.institution_id) == bindparam("institution_id"))
    if shape.by_age:
        query = query.where(updated <= bindparam("cutoff"))
    return query.order_by(updated, col(BorrowingRequest.id)).limit(shape.limit)


def _flagged_entry(row: Row[Any]) -> TaskEntry:
    return TaskEntry(
        position=Position(row.opened_at, _REVIEW, row.entry_id),
        kind=REVIEW,
        institution=row.institution,
        request=_task_request(row),
        reason=row.text or "flagged for review",
        how_to_resolve="Do what the reason asks, then resolve (an empty body clears the flag "
        "and closes the request's open tasks).",
        resolve_with={},
    )


def _lost_exports(shape: _Shape) -> Select[*tuple[Any, ...]]:
    attempted = col(BorrowingRequest.export_attempted_at)
    query: Select[*tuple[Any, ...]] = select(
        *_columns(
            _DUPLICATE, col(BorrowingRequest.id), attempted, col(BorrowingRequest.institution_id)
        )
    ).where(
        *_open_requests(shape),
        attempted.is_not(None),
        col(BorrowingRequest.worldshare_request_id).is_(None),
        col(BorrowingRequest.needs_attention).is_(True),
        col(BorrowingRequest.attention_reason).startswith(UNKNOWN_CREATE),
        _after(
            BorrowingRequest.export_attempted_at, BorrowingRequest.id, _DUPLICATE, shape.after_rank
        ),
    )
    if shape.by_age:
        query = query.where(attempted <= bindparam("cutoff"))
    return query.order_by(attempted, col(BorrowingRequest.id)).limit(shape.limit)


def _lost_export_entry(row: Row[Any]) -> TaskEntry:
    return TaskEntry(
        position=Position(row.opened_at, _DUPLICATE, row.entry_id),
        kind=POSSIBLE_DUPLICATE,
        institution=row.institution,
        request=_task_request(row),
        reason=STALE_EXPLANATIONS[StaleReason.EXPORT_UNRESOLVED],
        how_to_resolve=HOW_TO_RESOLVE[TaskKind.POSSIBLE_DUPLICATE]
        + ' Resolve with {"worldshare_request_id": "<id>"} or {"export_again": true}.',
        resolve_with={"worldshare_request_id": "<the WorldShare id found>"},
    )


def _dead_jobs(shape: _Shape) -> Select[*tuple[Any, ...]]:
    query: Select[*tuple[Any, ...]] = (
        select(
            *_columns(
                _JOB,
                col(Job.id),
                col(Job.updated_at),
                col(Job.institution_id),
                text=col(Job.last_error),
                job_kind=col(Job.kind),
            )
        )
        .join(BorrowingRequest, col(BorrowingRequest.id) == col(Job.request_id), isouter=True)
        .where(
            col(Job.status) == JobStatus.DEAD.value,
            _after(Job.updated_at, Job.id, _JOB, shape.after_rank),
        )
    )
    if shape.by_institution:
        query = query.where(col(Job.institution_id) == bindparam("institution_id"))
    if shape.by_age:
        query = query.where(col(Job.updated_at) <= bindparam("cutoff"))
    return query.order_by(col(Job.updated_at), col(Job.id)).limit(shape.limit)


def _dead_job_entry(row: Row[Any]) -> TaskEntry:
    return TaskEntry(
        position=Position(row.opened_at, _JOB, row.entry_id),
        kind=DEAD_JOB,
        institution=row.institution,
        request=_task_request(row),
        reason=f"{row.job_kind} failed for good: {row.text or 'no error recorded'}",
        how_to_resolve=f"Fix the cause, then replay it: POST /api/v1/jobs/{row.entry_id}/retry.",
        resolve_with=None,
        job_id=row.entry_id,
    )


_SOURCE = {_TASK: _staff_tasks, _REVIEW: _flagged, _DUPLICATE: _lost_exports, _JOB: _dead_jobs}
_SOURCE_KINDS = {
    _TASK: tuple(kind.value for kind in TaskKind),
    _REVIEW: (REVIEW,),
    _DUPLICATE: (POSSIBLE_DUPLICATE,),
    _JOB: (DEAD_JOB,),
}
_ENTRY_OF = {
    _TASK: _staff_task_entry,
    _REVIEW: _flagged_entry,
    _DUPLICATE: _lost_export_entry,
    _JOB: _dead_job_entry,
}
