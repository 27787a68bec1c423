"""Move a borrowing request along its state machine and queue what Alma must be told.

The domain (`app.borrowing.service.apply_trigger`) checks and records a transition; this module
adds its follow-up, the Alma notice of the transition, in the same transaction.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from app.borrowing import service
from app.borrowing.models import BorrowingRequest, RequestOrigin
from app.borrowing.states import ALMA_NOTICES, AlmaNotice, RequestState, Trigger
from app.borrowing.tasks import TaskKind, close_task, open_task
from app.jobs.queue import enqueue
from app.timeutil import utcnow
from app.workflows.kinds import NOTIFY_ALMA, UPDATE_ALMA_LOAN, NoticePayload, UpdateLoanPayload

CANCELLABLE_STATES = frozenset({RequestState.RECEIVED, RequestState.EXPORTED})


def advance(
    session: Session,
    request: BorrowingRequest,
    trigger: Trigger,
    source: str,
    *,
    detail: dict[str, Any] | None = None,
    notice: AlmaNotice | None = None,
) -> bool:
    """Apply `trigger` and queue Alma's notice of it (`notice` replaces the default one).

    False when the trigger does not fit: recorded and flagged, nothing queued.
    """
    event = service.apply_trigger(session, request, trigger, source, detail=detail)
    if event is None:
        return False
    notice = notice or ALMA_NOTICES.get(trigger)
    if notice is not None:
        queue_notice(session, request, notice, key=str(event.id))
    return True


def queue_notice(
    session: Session, request: BorrowingRequest, notice: AlmaNotice, *, key: str
) -> None:
    """Queue a supplier notice, once per `key`; only a request that came over ISO 18626 gets one."""
    if request.origin is not RequestOrigin.ISO18626:
        return
    enqueue(
        session,
        NOTIFY_ALMA,
        NoticePayload(notice=notice),
        dedupe_key=f"notify:{request.id}:{key}",
        institution_id=request.institution_id,
        request_id=request.id,
    )


def request_renewal(session: Session, request: BorrowingRequest, source: str) -> bool:
    """Alma asks for a renewal. WorldShare's API cannot ask the lender, so staff get a task."""
    if not advance(session, request, Trigger.RENEWAL_REQUESTED, source):
        return False
    open_task(
        session,
        request,
        TaskKind.RENEW_IN_WORLDSHARE,
        f"Alma asked for a renewal: ask the lender to renew WorldShare request "
        f"{request.worldshare_request_id}; the answer is picked up by polling",
        source=source,
    )
    return True


def answer_renewal(
    session: Session, request: BorrowingRequest, trigger: Trigger, source: str, **detail: Any
) -> bool:
    """The lender approved or refused a renewal: apply it and withdraw the staff task.

    An approval also moves the patron's loan in Alma to the new patron due date, once per date.
    """
    if not advance(session, request, trigger, source, detail=detail):
        return False
    if trigger is Trigger.RENEWAL_APPROVED and request.patron_due_date is not None:
        enqueue(
            session,
            UPDATE_ALMA_LOAN,
            UpdateLoanPayload(due_date=request.patron_due_date),
            dedupe_key=f"loan-due:{request.id}:{request.patron_due_date.isoformat()}",
            institution_id=request.institution_id,
            request_id=request.id,
        )
    close_task(
        session,
        request,
        TaskKind.RENEW_IN_WORLDSHARE,
        source=source,
        resolution="the lender answered the renewal",
    )
    return True


def cancel_from_alma(session: Session, request: BorrowingRequest, source: str) -> bool:
    """Alma cancelled; answered with CancelResponse Y, or N once the lender has shipped."""
    if request.state not in CANCELLABLE_STATES:
        service.record_event(
            session,
            request,
            "cancel_refused",
            source,
            from_state=request.state,
            applied=False,
            detail={"reason": f"the request is {request.state}"},
        )
        queue_notice(session, request, AlmaNotice.CANCEL_NO, key=f"cancel:{utcnow().isoformat()}")
        return False
    advance(session, request, Trigger.CANCELLED, source, notice=AlmaNotice.CANCEL_YES)
    if request.worldshare_request_id:
        open_task(
            session,
            request,
            TaskKind.CANCEL_IN_WORLDSHARE,
            f"Cancelled in Alma: cancel WorldShare request {request.worldshare_request_id} "
            "(WorldShare's API cannot cancel)",
            source=source,
        )
    return True
