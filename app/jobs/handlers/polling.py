"""Status polling: WorldShare sends no callbacks, so open exported requests are read on a cycle.

A periodic dispatcher queues one poll per due request (never a second while one is in flight);
each poll reads the WorldShare request and applies what changed through the state machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import exists
from sqlmodel import Session, col, select

from app.borrowing import service
from app.borrowing.models import BorrowingRequest
from app.borrowing.states import HELD_STATES, POLLED_STATES, TERMINAL_STATES, RequestState, Trigger
from app.institutions.models import Institution
from app.institutions.service import NotConfigured, worldshare_config
from app.jobs import kinds
from app.jobs.context import JobContext
from app.jobs.handlers.common import load_request
from app.jobs.models import Job, JobStatus
from app.jobs.queue import ClaimedJob, enqueue
from app.jobs.registry import Finish, PermanentJobError
from app.timeutil import utcnow
from app.worldshare.client import WorldShareClient, WorldShareConfig
from app.worldshare.network import LenderStatus
from app.worldshare.status import LenderOutcome, lender_outcome

DISPATCH_BATCH = 500
SOURCE = "worldshare"


def dispatch_due_polls(session: Session) -> int:
    """Queue a poll for each request whose turn has come; returns how many were queued."""
    now = utcnow()
    in_flight = exists().where(
        col(Job.request_id) == col(BorrowingRequest.id),
        col(Job.kind) == kinds.POLL_WORLDSHARE,
        col(Job.status).in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
    )
    due = session.exec(
        select(BorrowingRequest, Institution.poll_interval_seconds)
        .join(Institution, col(Institution.id) == col(BorrowingRequest.institution_id))
        .where(
            col(BorrowingRequest.state).in_([s.value for s in POLLED_STATES]),
            col(BorrowingRequest.worldshare_request_id).is_not(None),
            col(BorrowingRequest.next_poll_at) <= now,
            ~in_flight,
        )
        .order_by(col(BorrowingRequest.next_poll_at))
        .limit(DISPATCH_BATCH)
    ).all()
    for request, interval in due:
        request.next_poll_at = now + timedelta(seconds=interval)
        session.add(request)
        enqueue(
            session,
            kinds.POLL_WORLDSHARE,
            institution_id=request.institution_id,
            request_id=request.id,
            max_attempts=3,
        )
    return len(due)


async def dispatch_polls(_ctx: JobContext, _job: ClaimedJob) -> Finish:
    return dispatch_due_polls


@dataclass(frozen=True)
class PollPlan:
    config: WorldShareConfig
    worldshare_request_id: str


def plan_poll(session: Session, job: ClaimedJob, ctx: JobContext) -> PollPlan | None:
    request, institution = load_request(session, job)
    if RequestState(request.state) not in POLLED_STATES or not request.worldshare_request_id:
        return None
    try:
        config = worldshare_config(institution, ctx.secrets)
    except NotConfigured as exc:
        raise PermanentJobError(str(exc)) from None
    return PollPlan(config=config, worldshare_request_id=request.worldshare_request_id)


def apply_lender_status(session: Session, job: ClaimedJob, lender: LenderStatus) -> None:
    """Bring the request in line with what the lender's side says, via the state machine."""
    request, institution = load_request(session, job)
    state = RequestState(request.state)
    if state in TERMINAL_STATES:
        return
    changed = lender.status != request.lender_status
    outcome = lender_outcome(lender, institution.status_map)
    request.lender_status = lender.status
    session.add(request)
    detail = {"lender_status": lender.status}
    offset = institution.patron_due_date_offset_days

    if outcome is None:
        if changed:
            service.record_event(session, request, "lender_status_unknown", SOURCE, detail=detail)
            service.flag(
                session,
                request,
                f"WorldShare status {lender.status!r} is not in the status map; "
                "map it in the institution's policy or act on it by hand",
                source=SOURCE,
            )
        return
    if outcome is LenderOutcome.pending:
        return
    if outcome is LenderOutcome.shipped:
        if state is RequestState.EXPORTED:
            service.set_lender_due_date(request, lender.due_date, patron_offset_days=offset)
            request.item_barcode = service.temporary_item_barcode(request)
            service.apply_trigger(
                session,
                request,
                Trigger.LENDER_SHIPPED,
                SOURCE,
                detail={**detail, "lender_due_date": _iso(lender.due_date)},
            )
        elif request.lender_due_date is None and lender.due_date is not None:
            service.set_lender_due_date(request, lender.due_date, patron_offset_days=offset)
        return
    if outcome is LenderOutcome.renewal_approved:
        new_due = (lender.renewal.new_due_date if lender.renewal else None) or lender.due_date
        moved = new_due is not None and new_due != request.lender_due_date
        if state is RequestState.RENEWAL_REQUESTED or (moved and _renewable(state)):
            service.set_lender_due_date(request, new_due, patron_offset_days=offset)
            service.answer_renewal(
                session,
                request,
                Trigger.RENEWAL_APPROVED,
                SOURCE,
                **detail,
                lender_due_date=_iso(new_due),
            )
        return
    if outcome is LenderOutcome.renewal_refused:
        if state is RequestState.RENEWAL_REQUESTED:
            service.answer_renewal(session, request, Trigger.RENEWAL_REFUSED, SOURCE, **detail)
        return
    if not changed:
        return
    trigger = {
        LenderOutcome.unfilled: Trigger.UNFILLED,
        LenderOutcome.cancelled: Trigger.CANCELLED,
        LenderOutcome.returned: Trigger.LOAN_COMPLETED,
        LenderOutcome.closed: Trigger.LOAN_COMPLETED,
    }[outcome]
    service.apply_trigger(session, request, trigger, SOURCE, detail=detail)


def _renewable(state: RequestState) -> bool:
    return state in HELD_STATES or state is RequestState.SHIPPED


def _iso(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


async def poll_request(ctx: JobContext, job: ClaimedJob) -> Finish | None:
    plan = await ctx.read(lambda session: plan_poll(session, job, ctx))
    if plan is None:
        return None
    client = WorldShareClient(ctx.http, ctx.worldshare_tokens, plan.config)
    lender = await client.get_request(plan.worldshare_request_id)
    return lambda session: apply_lender_status(session, job, lender)
