"""Move a borrowing request along its state machine and queue what Alma must be told.

The domain (`app.borrowing.service.apply_trigger`) checks and records a transition; this module
adds its follow-up, the Alma notice of the transition, in the same transaction.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from app.borrowing import service
from app.borrowing.models import BorrowingRequest, RequestOrigin
from app.borrowing.states import (
    HELD_STATES,
    TERMINAL_STATES,
    AlmaNotice,
    CloseOn,
    RequestState,
    ServiceKind,
    Trigger,
    alma_notice,
)
from app.borrowing.tasks import TaskKind, close_task, open_task
from app.institutions.models import Institution
from app.jobs.queue import enqueue
from app.timeutil import utcnow
from app.workflows.kinds import NOTIFY_ALMA, UPDATE_ALMA_LOAN, NoticePayload, UpdateLoanPayload


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
    notice = notice or alma_notice(trigger, _close_on(session, request))
    if notice is not None:
        queue_notice(session, request, notice, key=str(event.id))
    return True


def _close_on(session: Session, request: BorrowingRequest) -> CloseOn:
    institution = session.get(Institution, request.institution_id)
    return institution.close_on if institution is not None else CloseOn.PATRON_RETURN


def queue_notice(
    session: Session, request: BorrowingRequest, notice: AlmaNotice, *, key: str
) -> None:
    """Queue a supplier notice, once per `key`; only a request that came over ISO 18626 gets one.

    One request's notices go out one at a time in the order queued (a serial key), so a retried
    WillSupply can never reach Alma after the Loaned that followed it.
    """
    if request.origin is not RequestOrigin.ISO18626:
        return
    enqueue(
        session,
        NOTIFY_ALMA,
        NoticePayload(notice=notice),
        dedupe_key=f"notify:{request.id}:{key}",
        institution_id=request.institution_id,
        request_id=request.id,
        serial_key=f"notify:{request.id}",
    )


def request_renewal(session: Session, request: BorrowingRequest, source: str) -> bool:
    """Alma asks for a renewal; the answer is OK, then a RenewResponse.

    A renewal that cannot be asked for (a copy, an item not held) is answered N at once.
    WorldShare's API cannot ask the lender, so staff get a task; the lender's side is noted as it
    stands, so only a later change answers this renewal.
    """
    if request.service_kind is ServiceKind.COPY or request.state not in HELD_STATES:
        why = "a copy is not lent" if request.service_kind is ServiceKind.COPY else request.state
        service.record_event(
            session,
            request,
            Trigger.RENEWAL_REFUSED.value,
            source,
            from_state=request.state,
            applied=False,
            detail={"reason": f"renewal not possible: {why}"},
        )
        queue_notice(session, request, AlmaNotice.RENEW_NO, key=f"renew:{utcnow().isoformat()}")
        return False
    if not advance(session, request, Trigger.RENEWAL_REQUESTED, source):
        return False
    request.renewal_asked_at = utcnow()
    request.renewal_asked_renewals = request.lender_renewals or 0
    request.renewal_asked_due_date = request.lender_due_date
    request.renewal_asked_status = request.lender_renewal_status
    session.add(request)
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
    """The lender approved or refused the renewal asked for: apply it, withdraw the task.

    An approval also moves the patron's loan in Alma to the new patron due date, once per date.
    """
    if not advance(session, request, trigger, source, detail=detail):
        return False
    request.renewal_asked_at = None
    request.renewal_asked_renewals = None
    request.renewal_asked_due_date = None
    request.renewal_asked_status = None
    session.add(request)
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


def cancel_from_alma(session: Session, request: BorrowingRequest, source: str) -> None:
    """Alma cancelled. Not yet exported: cancelled at once (CancelResponse Y). Exported: held
    until WorldShare shows what happened (`answer_cancel`). Otherwise: N with today's status."""
    if request.state is RequestState.RECEIVED and request.worldshare_request_id is None:
        advance(session, request, Trigger.CANCELLED, source, notice=AlmaNotice.CANCEL_YES)
        return
    if request.state is RequestState.EXPORTED:
        request.cancel_asked_at = utcnow()
        session.add(request)
        service.record_event(session, request, "cancel_held", source, from_state=request.state)
        open_task(
            session,
            request,
            TaskKind.CANCEL_IN_WORLDSHARE,
            f"Cancelled in Alma: cancel WorldShare request {request.worldshare_request_id} "
            "(WorldShare's API cannot cancel); Alma is answered when polling sees it cancelled",
            source=source,
        )
        return
    service.record_event(
        session,
        request,
        "cancel_refused",
        source,
        from_state=request.state,
        applied=False,
        detail={"reason": f"the request is {request.state}"},
    )
    answer = AlmaNotice.CANCEL_YES if request.state is RequestState.CANCELLED else None
    queue_notice(
        session,
        request,
        answer or AlmaNotice.CANCEL_NO,
        key=f"cancel:{utcnow().isoformat()}",
    )


def answer_cancel(
    session: Session, request: BorrowingRequest, cancelled: bool, source: str
) -> None:
    """WorldShare settled Alma's held Cancel: Y and cancelled, or N (the lender shipped)."""
    request.cancel_asked_at = None
    session.add(request)
    if cancelled:
        advance(session, request, Trigger.CANCELLED, source, notice=AlmaNotice.CANCEL_YES)
        resolution = "WorldShare shows the request cancelled or unfilled"
    else:
        service.record_event(
            session,
            request,
            "cancel_refused",
            source,
            applied=False,
            detail={"reason": "the lender shipped before the cancel"},
        )
        queue_notice(session, request, AlmaNotice.CANCEL_NO, key="cancel:lender-shipped")
        resolution = "the lender shipped before the request could be cancelled"
    close_task(
        session, request, TaskKind.CANCEL_IN_WORLDSHARE, source=source, resolution=resolution
    )


def shipped_return(session: Session, request: BorrowingRequest, source: str) -> bool:
    """Alma's staff shipped the item back. WorldShare's API cannot mark it returned: a task."""
    if not advance(session, request, Trigger.SHIPPED_RETURN, source):
        return False
    close_task(
        session,
        request,
        TaskKind.RENEW_IN_WORLDSHARE,
        source=source,
        resolution="the item was shipped back before the lender answered the renewal",
    )
    open_task(
        session,
        request,
        TaskKind.MARK_RETURNED_IN_WORLDSHARE,
        f"Shipped back in Alma: mark WorldShare request {request.worldshare_request_id} "
        "returned; withdrawn when polling sees the lender has it back",
        source=source,
    )
    return True


def lender_has_it_back(session: Session, request: BorrowingRequest, source: str) -> None:
    """WorldShare shows the item returned or the request closed: the return task is done."""
    if request.state in TERMINAL_STATES or request.state is RequestState.RETURNED:
        close_task(
            session,
            request,
            TaskKind.MARK_RETURNED_IN_WORLDSHARE,
            source=source,
            resolution="WorldShare shows the lender has the item back",
        )
