"""Status polling: WorldShare sends no callbacks, so open exported requests are read on a cycle.

A periodic dispatcher queues one poll per due request (never a second while one is in flight);
each poll reads the WorldShare request and applies the steps `app.borrowing.lender.decide` gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import exists, func, or_
from sqlmodel import Session, col, select

from app.borrowing import service
from app.borrowing.lender import (
    Advance,
    AnswerCancel,
    AnswerRenewal,
    AssignTemporaryBarcode,
    Facts,
    FlagUnknownStatus,
    LenderNews,
    RenewalAsk,
    SetLenderDueDate,
    TellAlmaLoaned,
    decide,
)
from app.borrowing.models import BorrowingRequest
from app.borrowing.states import (
    POLLED_STATES,
    TERMINAL_STATES,
    AlmaNotice,
    LenderOutcome,
    RequestState,
    ServiceKind,
)
from app.borrowing.tasks import StaffTask, TaskKind
from app.institutions.models import Institution
from app.institutions.secrets import SecretBox
from app.jobs.kinds import Payload
from app.jobs.models import Job, JobStatus
from app.jobs.queue import ClaimedJob, enqueue
from app.jobs.registry import Finish, PermanentJobError
from app.runtime import Runtime
from app.timeutil import utcnow
from app.upstream import UpstreamError
from app.workflows.common import load_request
from app.workflows.kinds import POLL_WORLDSHARE
from app.workflows.transitions import (
    advance,
    answer_cancel,
    answer_renewal,
    lender_has_it_back,
    queue_notice,
)
from app.workflows.worldshare_calls import key_paused, second_look, worldshare_client
from app.worldshare import budget
from app.worldshare.cadence import (
    DuePoll,
    PollSubject,
    choose_polls,
    hourly_allowance,
    next_poll_delay,
)
from app.worldshare.client import WorldShareConfig
from app.worldshare.config import NotConfigured, worldshare_config
from app.worldshare.network import LenderStatus
from app.worldshare.status import answer_mismatch, lender_outcome

# Due reads considered per key and dispatch, the longest overdue first.
DISPATCH_BATCH = 5000
SOURCE = "worldshare"
# The cadence's delays are written for an hourly base; `poll_interval_seconds` scales them.
CADENCE_BASE_SECONDS = 3600


@dataclass(frozen=True)
class KeyGroup:
    """Institutions that call WorldShare with one WSKey, and the budget they share."""

    key: str
    institution_ids: tuple[int, ...]
    daily_call_budget: int


def key_groups(session: Session, box: SecretBox) -> list[KeyGroup]:
    """Institutions grouped by WSKey (a consortium may share one); the smallest budget wins."""
    groups: dict[str, list[Institution]] = {}
    institutions = session.exec(
        select(Institution).where(col(Institution.worldshare_key_encrypted).is_not(None))
    ).all()
    for institution in institutions:
        assert institution.worldshare_key_encrypted is not None
        key = budget.key_id(box.decrypt(institution.worldshare_key_encrypted))
        groups.setdefault(key, []).append(institution)
    return [
        KeyGroup(
            key=key,
            institution_ids=tuple(i.id for i in members if i.id is not None),
            daily_call_budget=min(i.worldshare_daily_call_budget for i in members),
        )
        for key, members in groups.items()
    ]


def dispatch_due_polls(session: Session, box: SecretBox, now: datetime | None = None) -> int:
    """Queue the reads whose turn has come, within each key's budget; returns how many."""
    now = now or utcnow()
    return sum(_dispatch_for_key(session, group, now) for group in key_groups(session, box))


def _polled(institution_ids: tuple[int, ...]) -> Any:
    return (
        col(BorrowingRequest.institution_id).in_(institution_ids),
        col(BorrowingRequest.state).in_(POLLED_STATES),
        col(BorrowingRequest.worldshare_request_id).is_not(None),
    )


def _cadence_rows(session: Session, where: Any, limit: int | None = None) -> list[Any]:
    cancel_pending = exists().where(
        col(StaffTask.request_id) == col(BorrowingRequest.id),
        col(StaffTask.kind) == TaskKind.CANCEL_IN_WORLDSHARE,
        col(StaffTask.closed_at).is_(None),
    )
    query = (
        select(BorrowingRequest, Institution.poll_interval_seconds, cancel_pending)
        .join(Institution, col(Institution.id) == col(BorrowingRequest.institution_id))
        .where(*where)
        .order_by(col(BorrowingRequest.next_poll_at))
    )
    return list(session.exec(query.limit(limit) if limit else query).all())


def poll_delay(
    request: BorrowingRequest, interval_seconds: int, cancel_pending: bool, now: datetime
) -> timedelta:
    subject = PollSubject(
        state=request.state,
        exported_at=request.created_at,
        lender_due_date=request.lender_due_date,
        cancel_pending=cancel_pending,
    )
    return next_poll_delay(subject, now) * (interval_seconds / CADENCE_BASE_SECONDS)


def _dispatch_for_key(session: Session, group: KeyGroup, now: datetime) -> int:
    polled = _polled(group.institution_ids)
    # A request changed since its read was scheduled (a renewal asked, a state reached) may
    # want reading sooner: its cadence is worked out again from the change.
    changed = _cadence_rows(
        session,
        (
            *polled,
            or_(
                col(BorrowingRequest.poll_scheduled_at).is_(None),
                col(BorrowingRequest.updated_at) > col(BorrowingRequest.poll_scheduled_at),
            ),
        ),
    )
    for request, interval, cancel_pending in changed:
        soonest = request.updated_at + poll_delay(request, interval, cancel_pending, now)
        if request.next_poll_at is None or soonest < request.next_poll_at:
            request.next_poll_at = soonest
        request.poll_scheduled_at = now
        session.add(request)
    session.flush()
    in_flight = exists().where(
        col(Job.request_id) == col(BorrowingRequest.id),
        col(Job.kind) == POLL_WORLDSHARE.name,
        col(Job.status).in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
    )
    waiting = session.exec(
        select(func.count())
        .select_from(Job)
        .where(
            col(Job.kind) == POLL_WORLDSHARE.name,
            col(Job.institution_id).in_(group.institution_ids),
            col(Job.status).in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
        )
    ).one()
    if budget.paused_until(session, group.key, now) is not None:
        return 0
    in_hour, in_window = budget.calls_spent(session, group.key, now)
    # Reads queued but not yet made are spent already.
    allowance = hourly_allowance(group.daily_call_budget, in_hour + waiting, in_window + waiting)
    if allowance <= 0:
        return 0
    due_rows = _cadence_rows(
        session,
        (*polled, col(BorrowingRequest.next_poll_at) <= now, ~in_flight),
        limit=DISPATCH_BATCH,
    )
    by_id = {}
    due = []
    for request, interval, cancel_pending in due_rows:
        assert request.id is not None and request.next_poll_at is not None
        delay = poll_delay(request, interval, cancel_pending, now)
        by_id[request.id] = (request, delay)
        due.append(DuePoll(request_id=request.id, due_at=request.next_poll_at, delay=delay))
    chosen = choose_polls(due, now, allowance)
    for poll in chosen:
        request, delay = by_id[poll.request_id]
        request.next_poll_at = now + delay
        request.poll_scheduled_at = now
        session.add(request)
        enqueue(
            session,
            POLL_WORLDSHARE,
            institution_id=request.institution_id,
            request_id=request.id,
        )
    return len(chosen)


async def dispatch_polls(ctx: Runtime, _job: ClaimedJob, _payload: Payload) -> Finish:
    box = ctx.secrets
    return lambda session: dispatch_due_polls(session, box)


@dataclass(frozen=True)
class PollPlan:
    config: WorldShareConfig
    worldshare_request_id: str


def plan_poll(session: Session, job: ClaimedJob, ctx: Runtime) -> PollPlan | None:
    request, institution = load_request(session, job)
    if request.state not in POLLED_STATES or not request.worldshare_request_id:
        return None
    try:
        config = worldshare_config(institution, ctx.secrets)
    except NotConfigured as exc:
        raise PermanentJobError(str(exc)) from None
    key_paused(session, config, whole_window=False)
    return PollPlan(config=config, worldshare_request_id=request.worldshare_request_id)


def apply_lender_status(
    session: Session, job: ClaimedJob, lender: LenderStatus, *, asked: str
) -> None:
    """Bring the request in line with what the lender's side says: read, decide, apply."""
    request, institution = load_request(session, job)
    if request.state in TERMINAL_STATES or request.worldshare_request_id != asked:
        return
    mismatch = answer_mismatch(lender, asked=asked, alma_request_id=request.alma_request_id)
    if mismatch is not None:
        _refuse_answer(session, request, asked, mismatch)
        return
    outcome = lender_outcome(lender, institution.status_map)
    renewed_to = lender.renewal.new_due_date if lender.renewal else None
    news = LenderNews(
        outcome=outcome,
        status_changed=lender.status != request.lender_status,
        due_date=renewed_to or lender.due_date,
        renewals=lender.renewal.renewals if lender.renewal else 0,
        renewal_status=lender.renewal.status if lender.renewal else None,
    )
    steps = decide(request.state, news, request_facts(request))
    request.lender_status = lender.status
    request.lender_renewals = news.renewals
    request.lender_renewal_status = news.renewal_status
    if lender.return_address is not None:
        request.lender_return_address = lender.return_address
    session.add(request)
    detail: dict[str, str | None] = {"lender_status": lender.status}
    for step in steps:
        match step:
            case SetLenderDueDate(due_date=due):
                service.set_lender_due_date(
                    request, due, patron_offset_days=institution.patron_due_date_offset_days
                )
                detail["lender_due_date"] = _iso(due)
            case AssignTemporaryBarcode():
                if request.item_barcode is None:
                    request.item_barcode = service.temporary_item_barcode(
                        request, institution.alma_item_barcode_prefix
                    )
            case Advance(trigger=trigger):
                advance(session, request, trigger, SOURCE, detail=detail)
            case AnswerRenewal(trigger=trigger):
                answer_renewal(session, request, trigger, SOURCE, **detail)
            case TellAlmaLoaned():
                service.record_event(
                    session, request, "lender_due_date_changed", SOURCE, detail=detail
                )
                queue_notice(
                    session, request, AlmaNotice.LOANED, key=f"loaned:{request.lender_due_date}"
                )
            case AnswerCancel(cancelled=cancelled):
                answer_cancel(session, request, cancelled, SOURCE)
            case FlagUnknownStatus():
                service.record_event(
                    session, request, "lender_status_unknown", SOURCE, detail=detail
                )
                service.flag(
                    session,
                    request,
                    f"WorldShare status {lender.status!r} is not in the status map; "
                    "map it in the institution's policy or act on it by hand",
                    source=SOURCE,
                )
    if request.state is RequestState.RENEWAL_REQUESTED and news.renewal_status is not None:
        # A later refusal differs from what was seen since the ask, even if it reads the same.
        request.renewal_asked_status = news.renewal_status
    if outcome in (LenderOutcome.returned, LenderOutcome.closed):
        lender_has_it_back(session, request, SOURCE)


def request_facts(request: BorrowingRequest) -> Facts:
    """What `decide` needs to know of the request besides its state."""
    ask = None
    if request.renewal_asked_at is not None:
        ask = RenewalAsk(
            renewals=request.renewal_asked_renewals or 0,
            due_date=request.renewal_asked_due_date,
            renewal_status=request.renewal_asked_status,
        )
    return Facts(
        known_due_date=request.lender_due_date,
        copy=request.service_kind is ServiceKind.COPY,
        renewal_ask=ask,
        cancel_asked=request.cancel_asked_at is not None,
    )


def _refuse_answer(session: Session, request: BorrowingRequest, asked: str, mismatch: str) -> None:
    """Apply nothing from an answer about another request; flag it once, polling goes on."""
    reason = f"WorldShare poll answer not applied: {mismatch}"
    if request.attention_reason == reason:
        return
    service.record_event(
        session,
        request,
        "lender_answer_mismatch",
        SOURCE,
        applied=False,
        detail={"worldshare_request_id": asked, "mismatch": mismatch.partition(" ")[0]},
    )
    service.flag(session, request, reason, source=SOURCE)


def _iso(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


async def poll_request(ctx: Runtime, job: ClaimedJob, _payload: Payload) -> Finish | None:
    plan = await ctx.read(lambda session: plan_poll(session, job, ctx))
    if plan is None:
        return None
    asked = plan.worldshare_request_id
    try:
        lender = await worldshare_client(ctx, plan.config).get_request(asked)
    except UpstreamError as exc:
        raise await second_look(ctx, plan.config, exc) from None
    return lambda session: apply_lender_status(session, job, lender, asked=asked)
