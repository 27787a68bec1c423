"""The patron's loan of the temporary item: Alma's LOAN webhooks, and due dates that follow
approved renewals.

Handlers are idempotent: each reads the request, does only what is still missing and puts what
it did on the timeline. The patron's id is read from the request when Alma must be called and
never written to the timeline, a log line or an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

from sqlmodel import Session

from app.alma.rest import AlmaClient, AlmaLoan
from app.alma.webhooks import LoanEventKind
from app.borrowing import service
from app.borrowing.models import BorrowingRequest
from app.borrowing.states import HELD_STATES, RequestState, Trigger
from app.borrowing.tasks import TaskKind, open_task
from app.institutions.models import Institution
from app.jobs.queue import ClaimedJob
from app.jobs.registry import Finish, PermanentJobError
from app.runtime import Runtime
from app.workflows.alma_calls import NOT_CONFIGURED, alma_client
from app.workflows.common import load_request
from app.workflows.kinds import LoanEventPayload, UpdateLoanPayload
from app.workflows.transitions import advance, answer_renewal

SOURCE = "alma_webhook"
WORKER = "worker"

log = logging.getLogger("illbridge.loans")

# Requests whose item is with the patron or the library: loan events about them are applied.
_LOAN_EVENT_STATES = frozenset(
    {
        RequestState.SHIPPED,
        RequestState.IN_LIBRARY,
        RequestState.ON_LOAN,
        RequestState.RENEWAL_REQUESTED,
        RequestState.RETURNED,
    }
)


def _iso(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def check_due_dates(
    session: Session, request: BorrowingRequest, patron_due: date | None, source: str
) -> bool:
    """Open a drift task when the patron's due date is later than the lender's; True if so."""
    lender_due = request.lender_due_date
    if patron_due is None or lender_due is None or patron_due <= lender_due:
        return False
    service.record_event(
        session,
        request,
        "due_date_drift",
        source,
        applied=False,
        detail={"patron_due_date": _iso(patron_due), "lender_due_date": _iso(lender_due)},
    )
    open_task(
        session,
        request,
        TaskKind.DUE_DATE_DRIFT,
        f"The patron's loan is due {patron_due}, after the lender's due date {lender_due}",
        source=source,
    )
    return True


def apply_loan_event(session: Session, job: ClaimedJob, event: LoanEventPayload) -> None:
    request, _institution = load_request(session, job)
    detail = {
        "event": event.event.value,
        "event_id": event.event_id,
        "loan_id": event.loan_id,
        "patron_due_date": _iso(event.due_date),
    }
    service.record_event(session, request, "alma_loan_event", SOURCE, detail=detail)
    if request.state not in _LOAN_EVENT_STATES and event.event is not LoanEventKind.LOAN_RETURNED:
        return
    match event.event:
        case LoanEventKind.LOAN_CREATED:
            _loan_created(session, request, event)
        case LoanEventKind.LOAN_RENEWED | LoanEventKind.LOAN_DUE_DATE:
            if event.due_date is not None and event.due_date != request.patron_due_date:
                request.patron_due_date = event.due_date
                session.add(request)
            check_due_dates(session, request, event.due_date, SOURCE)
        case LoanEventKind.LOAN_LOST:
            open_task(
                session,
                request,
                TaskKind.LOST,
                f"Alma declared the patron's loan lost: settle it with the lender of WorldShare "
                f"request {request.worldshare_request_id}",
                source=SOURCE,
            )
        case LoanEventKind.LOAN_CLAIMED_RETURNED:
            open_task(
                session,
                request,
                TaskKind.CLAIMED_RETURNED,
                "The patron claims to have returned the item: search for it",
                source=SOURCE,
            )
        case LoanEventKind.LOAN_RETURNED:
            _loan_returned(session, request)


def _loan_created(session: Session, request: BorrowingRequest, event: LoanEventPayload) -> None:
    request.alma_loan_id = event.loan_id
    if event.item_id:
        request.alma_item_id = event.item_id
    if event.due_date is not None:
        request.patron_due_date = event.due_date
    session.add(request)
    if request.state is not RequestState.ON_LOAN:  # on loan already: a repeat
        advance(session, request, Trigger.PATRON_LOANED, SOURCE, detail={"loan_id": event.loan_id})
    check_due_dates(session, request, event.due_date, SOURCE)


def _loan_returned(session: Session, request: BorrowingRequest) -> None:
    """The return scan: `returned`; Alma is told LoanCompleted when the institution closes on the
    patron's return (`advance` reads `policy.close_on`); staff ship it back."""
    if request.state is not RequestState.ON_LOAN:
        return  # already returned or closed: this is a repeat
    advance(session, request, Trigger.PATRON_RETURNED, SOURCE)
    open_task(
        session,
        request,
        TaskKind.MARK_RETURNED_IN_WORLDSHARE,
        f"The patron returned the item: ship it back and mark WorldShare request "
        f"{request.worldshare_request_id} returned",
        source=SOURCE,
    )


async def handle_loan_event(_ctx: Runtime, job: ClaimedJob, payload: LoanEventPayload) -> Finish:
    return lambda session: apply_loan_event(session, job, payload)


# --- due dates that follow approved renewals ------------------------------------------------


def report_renewal(
    session: Session,
    request: BorrowingRequest,
    institution: Institution,
    *,
    approved: bool,
    due_date: date | None,
    source: str,
) -> bool:
    """Apply a lender's renewal answer once; False when it was already applied (a repeat).

    An approval sends RenewResponse Y and moves the patron's loan; a refusal sends
    RenewResponse N and changes no date. An unasked approval (the lender extended the loan)
    counts once per new due date, as polling counts it.
    """
    asked = request.state is RequestState.RENEWAL_REQUESTED
    if not approved:
        return asked and answer_renewal(session, request, Trigger.RENEWAL_REFUSED, source)
    renewable = request.state in HELD_STATES or request.state is RequestState.SHIPPED
    if not asked and not (renewable and due_date != request.lender_due_date):
        return False
    service.set_lender_due_date(
        request, due_date, patron_offset_days=institution.patron_due_date_offset_days
    )
    session.add(request)
    return answer_renewal(
        session, request, Trigger.RENEWAL_APPROVED, source, lender_due_date=_iso(due_date)
    )


@dataclass(frozen=True)
class LoanUpdate:
    client: AlmaClient
    user_id: str
    loan_id: str


def _alma_client(ctx: Runtime, institution: Institution) -> AlmaClient:
    client = alma_client(ctx, institution)
    if client is None:
        raise PermanentJobError(f"institution {institution.code}: {NOT_CONFIGURED}")
    return client


def plan_loan_update(session: Session, job: ClaimedJob, ctx: Runtime) -> LoanUpdate | None:
    request, institution = load_request(session, job)
    if request.alma_loan_id is None or request.state is not RequestState.ON_LOAN:
        return None
    if request.requester_user_id is None:
        raise PermanentJobError("the request has no Alma user id to update the patron's loan")
    return LoanUpdate(
        client=_alma_client(ctx, institution),
        user_id=request.requester_user_id,
        loan_id=request.alma_loan_id,
    )


def record_loan_update(
    session: Session, job: ClaimedJob, wanted: date, loan: AlmaLoan | None
) -> None:
    request, _institution = load_request(session, job)
    if loan is None:
        service.record_event(
            session,
            request,
            "patron_loan_update_skipped",
            WORKER,
            applied=False,
            detail={"patron_due_date": _iso(wanted), "why": "no patron loan on the request"},
        )
        return
    detail = {"patron_due_date": _iso(wanted), "read_back": _iso(loan.due_date)}
    service.record_event(session, request, "patron_loan_updated", WORKER, detail=detail)
    request.patron_due_date = loan.due_date
    session.add(request)
    if loan.due_date != wanted:
        service.record_event(
            session, request, "due_date_drift", WORKER, applied=False, detail=detail
        )
        open_task(
            session,
            request,
            TaskKind.DUE_DATE_DRIFT,
            f"Alma's loan reads due {loan.due_date} after it was set to {wanted}",
            source=WORKER,
        )


async def update_alma_loan(ctx: Runtime, job: ClaimedJob, payload: UpdateLoanPayload) -> Finish:
    plan = await ctx.read(lambda session: plan_loan_update(session, job, ctx))
    loan: AlmaLoan | None = None
    if plan is not None:
        await plan.client.update_loan_due_date(plan.user_id, plan.loan_id, payload.due_date)
        loan = await plan.client.get_loan(plan.user_id, plan.loan_id)
    return lambda session: record_loan_update(session, job, payload.due_date, loan)
