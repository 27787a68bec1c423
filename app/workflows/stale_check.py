"""The periodic stale check: gather each open request's facts, ask `detect`, record changes.

A request that turns stale gets its reason (`stale_reason`, `stale_since`), a timeline line and
a staff task; one that stops being stale loses them. Nothing changes while the answer holds, so a
task staff resolved is not reopened for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, exists, func, type_coerce
from sqlmodel import Session, col, select

from app.borrowing import service
from app.borrowing.models import BorrowingRequest, RequestEvent
from app.borrowing.stale import (
    STALE_EXPLANATIONS,
    RequestFacts,
    Staleness,
    StalePolicy,
    StaleReason,
    detect,
)
from app.borrowing.states import TERMINAL_STATES
from app.borrowing.tasks import TaskKind, close_task, open_task
from app.institutions.models import Institution
from app.jobs.kinds import Payload
from app.jobs.models import Job, JobStatus
from app.jobs.queue import ClaimedJob
from app.jobs.registry import Finish
from app.runtime import Runtime
from app.timeutil import UTCDateTime, utcnow
from app.workflows.export import UNKNOWN_CREATE
from app.workflows.kinds import EXPORT_TO_WORLDSHARE

SOURCE = "stale_check"


@dataclass(frozen=True)
class Assessed:
    request: BorrowingRequest
    staleness: Staleness | None


def policy_of(institution: Institution) -> StalePolicy:
    return StalePolicy(
        stale_after_days=institution.stale_after_days,
        renewal_answer_days=institution.renewal_answer_days,
    )


def assess_open_requests(
    session: Session, now: datetime, *, institution_id: int | None = None
) -> list[Assessed]:
    """Every open request (of one institution, or all) with its staleness at `now`, by id."""
    last_change = type_coerce(
        select(func.max(RequestEvent.at))
        .where(
            col(RequestEvent.request_id) == col(BorrowingRequest.id),
            col(RequestEvent.to_state).is_not(None),
            col(RequestEvent.applied).is_(True),
        )
        .scalar_subquery(),
        UTCDateTime(),
    )
    export_dead = exists().where(
        and_(
            col(Job.request_id) == col(BorrowingRequest.id),
            col(Job.kind) == EXPORT_TO_WORLDSHARE.name,
            col(Job.status) == JobStatus.DEAD.value,
        )
    )
    query = (
        select(BorrowingRequest, Institution, last_change, export_dead)
        .join(Institution, col(Institution.id) == col(BorrowingRequest.institution_id))
        .where(col(BorrowingRequest.state).not_in(TERMINAL_STATES))
        .order_by(col(BorrowingRequest.id))
    )
    if institution_id is not None:
        query = query.where(BorrowingRequest.institution_id == institution_id)
    assessed = []
    for request, institution, changed_at, dead in session.exec(query).all():
        facts = RequestFacts(
            state=request.state,
            state_since=changed_at or request.created_at,
            has_worldshare_id=request.worldshare_request_id is not None,
            export_unknown_since=request.export_attempted_at if _unknown_create(request) else None,
            export_dead=bool(dead),
        )
        assessed.append(Assessed(request, detect(facts, policy_of(institution), now)))
    return assessed


def _unknown_create(request: BorrowingRequest) -> bool:
    return (
        request.export_attempted_at is not None
        and request.worldshare_request_id is None
        and (request.attention_reason or "").startswith(UNKNOWN_CREATE)
    )


# Export problems are listed already (a dead job, a possible duplicate): no task of their own.
_TASKED = frozenset(
    {
        StaleReason.NO_LENDER_PROGRESS,
        StaleReason.NEVER_RECEIVED,
        StaleReason.RETURNED_NOT_CLOSED,
        StaleReason.RENEWAL_UNANSWERED,
    }
)


def mark_stale(session: Session, now: datetime | None = None) -> int:
    """Record every change of staleness; returns how many requests changed."""
    now = now or utcnow()
    changed = 0
    for item in assess_open_requests(session, now):
        request, staleness = item.request, item.staleness
        reason = staleness.reason if staleness else None
        if (request.stale_reason or None) == (reason.value if reason else None):
            continue
        changed += 1
        if request.stale_reason in _TASKED:
            close_task(
                session,
                request,
                TaskKind.STALE_REQUEST,
                source=SOURCE,
                resolution="no longer stale",
            )
        if staleness is None:
            service.record_event(
                session, request, "stale_cleared", SOURCE, detail={"was": request.stale_reason}
            )
            request.stale_reason = None
            request.stale_since = None
        else:
            assert reason is not None
            request.stale_reason = reason.value
            request.stale_since = staleness.since
            service.record_event(
                session,
                request,
                "stale",
                SOURCE,
                detail={"reason": reason.value, "since": staleness.since.isoformat()},
            )
            if reason not in _TASKED:
                continue
            open_task(
                session,
                request,
                TaskKind.STALE_REQUEST,
                f"Stale ({reason.value}): {STALE_EXPLANATIONS[reason]}",
                source=SOURCE,
            )
        session.add(request)
    session.flush()
    return changed


async def check_stale(_ctx: Runtime, _job: ClaimedJob, _payload: Payload) -> Finish:
    return mark_stale
