"""Enqueue, claim, lease and finish jobs.

`enqueue` joins the caller's transaction (the outbox). Everything else here is a short
transaction of its own, run by the worker with no other transaction open. Finishing is guarded by
the lease token, so a worker whose lease expired cannot overwrite the outcome of the one that took
the job over.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic

from pydantic import TypeAdapter
from sqlalchemy import and_, case, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.db import as_dicts, is_sqlite, write_session
from app.jobs.kinds import JobKind, P
from app.jobs.models import Job, JobStatus
from app.jobs.schemas import JobPublic
from app.timeutil import utcnow

ERROR_MAX_CHARS = 1000
JOBS = Job.metadata.tables["job"]


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    lease_token: str
    institution_id: int | None
    request_id: int | None


@dataclass(frozen=True)
class AttemptLimits:
    """How many attempts each kind gets; written on a job when it is claimed."""

    by_kind: Mapping[str, int]
    default: int


def enqueue(
    session: Session,
    kind: JobKind[P],
    payload: P | None = None,
    *,
    dedupe_key: str | None = None,
    run_at: datetime | None = None,
    institution_id: int | None = None,
    request_id: int | None = None,
    serial_key: str | None = None,
) -> bool:
    """Add a job in the caller's transaction; False when `dedupe_key` already has one.

    Jobs sharing a `serial_key` run one at a time in the order they were queued."""
    now = utcnow()
    job = NewJob(payload or kind.payload(), dedupe_key, institution_id, request_id, serial_key)
    statement = _insert(session).values(**_values(kind, job, run_at or now, now))
    if dedupe_key is not None:
        statement = statement.on_conflict_do_nothing(index_elements=["dedupe_key"])
    # A returned row, not rowcount: with RETURNING, PostgreSQL's rowcount does not tell a
    # skipped conflict from an insert.
    return session.execute(statement.returning(JOBS.c.id)).first() is not None


@dataclass(frozen=True)
class NewJob(Generic[P]):
    payload: P
    dedupe_key: str | None = None
    institution_id: int | None = None
    request_id: int | None = None
    serial_key: str | None = None


def enqueue_many(session: Session, kind: JobKind[P], jobs: Sequence[NewJob[P]]) -> None:
    """Add jobs of one kind, due now, in one statement of the caller's transaction; a job whose
    `dedupe_key` already has one is not added."""
    if not jobs:
        return
    now = utcnow()
    statement = _insert(session).on_conflict_do_nothing(index_elements=["dedupe_key"])
    session.execute(statement, [_values(kind, job, now, now) for job in jobs])


def _insert(session: Session) -> Any:
    return (sqlite.insert if is_sqlite(session.get_bind()) else postgresql.insert)(JOBS)


def _values(kind: JobKind[P], job: NewJob[P], run_at: datetime, now: datetime) -> dict[str, Any]:
    return {
        "kind": kind.name,
        "payload": job.payload.model_dump(mode="json"),
        "status": JobStatus.QUEUED.value,
        "dedupe_key": job.dedupe_key,
        "institution_id": job.institution_id,
        "request_id": job.request_id,
        "serial_key": job.serial_key,
        "attempts": 0,
        "run_at": run_at,
        "created_at": now,
        "updated_at": now,
    }


def _claimable(now: datetime) -> Any:
    queued = and_(JOBS.c.status == JobStatus.QUEUED.value, JOBS.c.run_at <= now)
    orphaned = and_(JOBS.c.status == JobStatus.RUNNING.value, JOBS.c.lease_expires_at < now)
    earlier = JOBS.alias("earlier")
    # An older job of the same serial key not yet finished (or dead) goes first.
    waits = exists().where(
        earlier.c.serial_key == JOBS.c.serial_key,
        earlier.c.id < JOBS.c.id,
        earlier.c.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
    )
    return and_(or_(queued, orphaned), or_(JOBS.c.serial_key.is_(None), ~waits))


def claim(
    engine: Engine, limit: int, lease_seconds: float, limits: AttemptLimits | None = None
) -> list[ClaimedJob]:
    """Lease up to `limit` due jobs (and jobs whose worker's lease ran out).

    With `limits`, each job's `max_attempts` becomes its kind's, as the claiming worker knows it.
    """
    now = utcnow()
    token = uuid.uuid4().hex
    candidates = (
        select(JOBS.c.id)
        .where(_claimable(now))
        .order_by(JOBS.c.run_at, JOBS.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    statement = (
        update(JOBS)
        .where(JOBS.c.id.in_(candidates.scalar_subquery()))
        .values(
            status=JobStatus.RUNNING.value,
            lease_token=token,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=JOBS.c.attempts + 1,
            updated_at=now,
            **_attempt_limit(limits),
        )
        .returning(
            JOBS.c.id,
            JOBS.c.kind,
            JOBS.c.payload,
            JOBS.c.attempts,
            JOBS.c.max_attempts,
            JOBS.c.institution_id,
            JOBS.c.request_id,
        )
    )
    with write_session(engine) as session:
        rows = session.execute(statement).all()
        session.commit()
    return [
        ClaimedJob(
            id=row.id,
            kind=row.kind,
            payload=row.payload,
            attempts=row.attempts,
            max_attempts=row.max_attempts,
            lease_token=token,
            institution_id=row.institution_id,
            request_id=row.request_id,
        )
        for row in rows
    ]


def _attempt_limit(limits: AttemptLimits | None) -> dict[str, Any]:
    if limits is None:
        return {}
    if not limits.by_kind:
        return {"max_attempts": limits.default}
    return {"max_attempts": case(dict(limits.by_kind), value=JOBS.c.kind, else_=limits.default)}


def _guarded(job: ClaimedJob) -> Any:
    return update(JOBS).where(
        JOBS.c.id == job.id,
        JOBS.c.lease_token == job.lease_token,
        JOBS.c.status == JobStatus.RUNNING.value,
    )


def extend_lease(engine: Engine, job: ClaimedJob, lease_seconds: float) -> bool:
    now = utcnow()
    with write_session(engine) as session:
        result = session.execute(
            _guarded(job).values(
                lease_expires_at=now + timedelta(seconds=lease_seconds), updated_at=now
            )
        )
        session.commit()
    return _changed(result)


def release(engine: Engine, jobs: list[ClaimedJob]) -> int:
    """Give back jobs as if the claim had not happened (claimed but never started, or stopped
    by a drain); only those whose lease this worker still holds. How many went back."""
    released = 0
    with write_session(engine) as session:
        for job in jobs:
            result = session.execute(
                _guarded(job).values(
                    status=JobStatus.QUEUED.value,
                    lease_token=None,
                    lease_expires_at=None,
                    attempts=JOBS.c.attempts - 1,
                    updated_at=utcnow(),
                )
            )
            released += _changed(result)
        session.commit()
    return released


def mark_succeeded(session: Session, job: ClaimedJob) -> bool:
    """In the caller's transaction, so a handler's last write and the job's end commit together."""
    now = utcnow()
    result = session.execute(
        _guarded(job).values(
            status=JobStatus.SUCCEEDED.value,
            lease_token=None,
            lease_expires_at=None,
            last_error=None,
            finished_at=now,
            updated_at=now,
        )
    )
    return _changed(result)


def mark_retry(session: Session, job: ClaimedJob, *, delay: float, error: str) -> bool:
    now = utcnow()
    result = session.execute(
        _guarded(job).values(
            status=JobStatus.QUEUED.value,
            lease_token=None,
            lease_expires_at=None,
            run_at=now + timedelta(seconds=delay),
            last_error=error[:ERROR_MAX_CHARS],
            updated_at=now,
        )
    )
    return _changed(result)


def mark_deferred(session: Session, job: ClaimedJob, *, until: datetime, why: str) -> bool:
    """Back to the queue until `until`, as if this attempt had not been made."""
    result = session.execute(
        _guarded(job).values(
            status=JobStatus.QUEUED.value,
            lease_token=None,
            lease_expires_at=None,
            attempts=JOBS.c.attempts - 1,
            run_at=until,
            last_error=why[:ERROR_MAX_CHARS],
            updated_at=utcnow(),
        )
    )
    return _changed(result)


def mark_dead(session: Session, job: ClaimedJob, *, error: str) -> bool:
    now = utcnow()
    result = session.execute(
        _guarded(job).values(
            status=JobStatus.DEAD.value,
            lease_token=None,
            lease_expires_at=None,
            last_error=error[:ERROR_MAX_CHARS],
            finished_at=now,
            updated_at=now,
        )
    )
    return _changed(result)


def requeue_dead(session: Session, job_id: int) -> bool:
    """Replay a dead job from scratch (operator action)."""
    now = utcnow()
    result = session.execute(
        update(JOBS)
        .where(JOBS.c.id == job_id, JOBS.c.status == JobStatus.DEAD.value)
        .values(
            status=JobStatus.QUEUED.value,
            attempts=0,
            run_at=now,
            finished_at=None,
            updated_at=now,
        )
    )
    return _changed(result)


def queue_depth(session: Session, institution_id: int | None) -> tuple[int, datetime | None]:
    """Jobs waiting to run now, and when the oldest of them became due."""
    query = select(func.count(), func.min(JOBS.c.run_at)).where(
        JOBS.c.status == JobStatus.QUEUED.value, JOBS.c.run_at <= utcnow()
    )
    if institution_id is not None:
        query = query.where(JOBS.c.institution_id == institution_id)
    row = session.execute(query).one()
    return int(row[0]), row[1]


# A page of jobs is read as the public fields' columns and validated once: no ORM instance.
_PUBLIC_COLUMNS = [JOBS.c[name] for name in JobPublic.model_fields]
_PUBLIC_ITEMS = TypeAdapter(list[JobPublic])


def list_jobs(
    session: Session,
    *,
    status: str | None,
    kind: str | None,
    request_id: int | None,
    institution_id: int | None,
    before_id: int | None,
    limit: int,
) -> list[JobPublic]:
    query = select(*_PUBLIC_COLUMNS)
    if status is not None:
        query = query.where(JOBS.c.status == status)
    if kind is not None:
        query = query.where(JOBS.c.kind == kind)
    if request_id is not None:
        query = query.where(JOBS.c.request_id == request_id)
    if institution_id is not None:
        query = query.where(JOBS.c.institution_id == institution_id)
    if before_id is not None:
        query = query.where(JOBS.c.id < before_id)
    rows = session.execute(query.order_by(JOBS.c.id.desc()).limit(limit))
    return _PUBLIC_ITEMS.validate_python(as_dicts(rows))


def counts_by_status(session: Session, institution_id: int | None) -> dict[str, int]:
    query = select(JOBS.c.status, func.count()).group_by(JOBS.c.status)
    if institution_id is not None:
        query = query.where(JOBS.c.institution_id == institution_id)
    return {status: int(count) for status, count in session.execute(query)}


def _changed(result: Any) -> bool:
    return bool(result.rowcount)
