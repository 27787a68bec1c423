"""What the bridge does when Alma, as ISO 18626 requester, acts on a borrowing request.

Refusals that are business answers (a renewal that cannot be granted, a cancel too late) are
confirmed OK and answered by a supplier message; a confirmation says ERROR only for a message
that does not fit the request at all. An action repeated with a new timestamp that would change
nothing is taken as a repeat.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from app.alma.iso18626 import Action
from app.borrowing import service
from app.borrowing.models import BorrowingRequest, InboxOutcome
from app.borrowing.states import AlmaNotice, RequestState, ServiceKind, Trigger
from app.workflows import transitions

SOURCE = "alma_iso18626"
NOTE_MAX_CHARS = 500

HANDLED_ACTIONS = frozenset(
    {
        Action.RECEIVED,
        Action.SHIPPED_RETURN,
        Action.RENEW,
        Action.CANCEL,
        Action.STATUS_REQUEST,
        Action.NOTIFICATION,
    }
)
S = RequestState
# The states in which an action has already had its whole effect: sent again, it is a repeat.
_DONE_IN: dict[Action, frozenset[RequestState]] = {
    Action.RECEIVED: frozenset({S.IN_LIBRARY, S.ON_LOAN, S.RENEWAL_REQUESTED}),
    Action.SHIPPED_RETURN: frozenset({S.RETURNED, S.CLOSED}),
    Action.RENEW: frozenset({S.RENEWAL_REQUESTED}),
}
_EMAIL = re.compile(r"[^\s@]+@[^\s@]+")
_LONG_NUMBER = re.compile(r"\d{5,}")


@dataclass(frozen=True)
class Taken:
    """How an action was taken; `error` (the confirmation's errorValue) when it did not fit."""

    inbox: InboxOutcome
    error: str | None = None


def is_repeat(request: BorrowingRequest, action: Action) -> bool:
    if action is Action.CANCEL:
        return request.cancel_asked_at is not None
    done_in = _DONE_IN.get(action, frozenset())
    if action is Action.RECEIVED and request.service_kind is ServiceKind.COPY:
        done_in = done_in | {S.CLOSED}
    return request.state in done_in


def apply_action(
    session: Session,
    request: BorrowingRequest,
    action: Action,
    sent_at: datetime,
    note: str | None = None,
) -> Taken:
    """Apply one of `HANDLED_ACTIONS`."""
    if is_repeat(request, action):
        service.record_event(
            session, request, "alma_repeat", SOURCE, applied=False, detail={"action": action}
        )
        return Taken(InboxOutcome.DUPLICATE)
    before = request.state
    applied = True
    if action is Action.RECEIVED:
        applied = transitions.advance(session, request, Trigger.ITEM_RECEIVED, SOURCE)
        if applied and request.cancel_asked_at is not None:
            # The item came after all: the held Cancel is answered N now.
            transitions.answer_cancel(session, request, False, SOURCE)
    elif action is Action.SHIPPED_RETURN:
        applied = transitions.shipped_return(session, request, SOURCE)
    elif action is Action.RENEW:
        transitions.request_renewal(session, request, SOURCE)  # a refusal is RenewResponse N
    elif action is Action.CANCEL:
        transitions.cancel_from_alma(session, request, SOURCE)  # answered by CancelResponse
    elif action is Action.STATUS_REQUEST:
        transitions.queue_notice(
            session, request, AlmaNotice.STATUS_ANSWER, key=f"status:{sent_at.isoformat()}"
        )
    elif action is Action.NOTIFICATION:
        take_notification(session, request, note)
    else:
        raise ValueError(f"{action} is not one of the handled actions")
    if applied:
        return Taken(InboxOutcome.ACCEPTED)
    return Taken(InboxOutcome.FLAGGED, f"{action.value} does not apply in state {before}")


def take_notification(session: Session, request: BorrowingRequest, note: str | None) -> None:
    """Alma's staff wrote to the partner: keep the text (patron ids taken out) and flag it."""
    text = redacted_note(note, request.requester_user_id)
    service.record_event(session, request, "alma_notification", SOURCE, detail={"note": text})
    service.flag(
        session, request, f"Alma sent a notification: {text or '(no text)'}", source=SOURCE
    )


def redacted_note(note: str | None, patron_id: str | None) -> str | None:
    """Staff free text without what could identify the patron: their id, e-mail addresses and
    long numbers (barcodes, phone numbers) are replaced; the rest is cut to a bounded length."""
    if not note:
        return None
    text = note
    if patron_id:
        text = text.replace(patron_id, "[patron]")
    text = _LONG_NUMBER.sub("[number]", _EMAIL.sub("[e-mail]", text))
    text = " ".join(text.split())
    return text[:NOTE_MAX_CHARS] or None
