"""What the bridge does when Alma, as ISO 18626 requester, acts on a borrowing request."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from app.alma.iso18626 import Action
from app.borrowing import service
from app.borrowing.models import BorrowingRequest
from app.borrowing.states import AlmaNotice, Trigger
from app.workflows import transitions

SOURCE = "alma_iso18626"

# Actions that are a plain transition of the state machine.
ACTION_TRIGGERS = {
    Action.RECEIVED: Trigger.ITEM_RECEIVED,
    Action.SHIPPED_RETURN: Trigger.SHIPPED_RETURN,
}
HANDLED_ACTIONS = frozenset(
    {*ACTION_TRIGGERS, Action.RENEW, Action.CANCEL, Action.STATUS_REQUEST, Action.NOTIFICATION}
)


def apply_action(
    session: Session, request: BorrowingRequest, action: Action, sent_at: datetime
) -> str | None:
    """Apply one of `HANDLED_ACTIONS`; a message for the confirmation's errorValue when it did
    not fit the request's state (recorded and flagged, not applied)."""
    before = request.state
    if action in ACTION_TRIGGERS:
        applied = transitions.advance(session, request, ACTION_TRIGGERS[action], SOURCE)
    elif action is Action.RENEW:
        applied = transitions.request_renewal(session, request, SOURCE)
    elif action is Action.CANCEL:
        transitions.cancel_from_alma(session, request, SOURCE)
        applied = True  # a refused cancel is answered by CancelResponse N, not an error
    elif action is Action.STATUS_REQUEST:
        transitions.queue_notice(
            session, request, AlmaNotice.STATUS_ANSWER, key=f"status:{sent_at.isoformat()}"
        )
        applied = True
    elif action is Action.NOTIFICATION:
        # The note is free text from staff and may name the patron: only its arrival is kept.
        service.record_event(session, request, "alma_notification", SOURCE)
        applied = True
    else:
        raise ValueError(f"{action} is not one of the handled actions")
    if applied:
        return None
    return f"{action.value} does not apply in state {before}"
