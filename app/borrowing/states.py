"""The borrowing request's state machine (DESIGN §3.1), as pure data and one function.

    received → exported → shipped → in_library → on_loan → returned → closed
    side states: renewal_requested (back where it came from), unfilled, cancelled

A trigger that does not fit the current state raises `TransitionRefused`; callers record it
on the timeline and flag the request instead of applying it.
"""

from __future__ import annotations

from enum import StrEnum


class RequestState(StrEnum):
    RECEIVED = "received"
    EXPORTED = "exported"
    SHIPPED = "shipped"
    IN_LIBRARY = "in_library"
    ON_LOAN = "on_loan"
    RENEWAL_REQUESTED = "renewal_requested"
    RETURNED = "returned"
    CLOSED = "closed"
    UNFILLED = "unfilled"
    CANCELLED = "cancelled"


class ServiceKind(StrEnum):
    """What the patron gets: a loan goes back to the lender, a copy (an article) is kept."""

    LOAN = "loan"
    COPY = "copy"


class CloseOn(StrEnum):
    """When Alma is told LoanCompleted (which closes its borrowing request): an institution policy.

    Each value names the trigger after which the notice goes out (`CLOSING_TRIGGERS`).
    """

    PATRON_RETURN = "patron_return"  # the patron's loan is scanned back in (the default)
    SHIPPED_RETURN = "shipped_return"  # Alma's staff shipped the item back
    LENDER_CHECKIN = "lender_checkin"  # WorldShare shows the lender has it back, or closed


class Trigger(StrEnum):
    EXPORTED = "exported"  # WorldShare request created
    LENDER_SHIPPED = "lender_shipped"
    COPY_DELIVERED = "copy_delivered"  # the lender sent a copy: nothing comes back, it ends
    ITEM_RECEIVED = "item_received"  # Alma: staff received it, temporary item exists
    PATRON_LOANED = "patron_loaned"
    RENEWAL_REQUESTED = "renewal_requested"
    RENEWAL_APPROVED = "renewal_approved"
    RENEWAL_REFUSED = "renewal_refused"
    PATRON_RETURNED = "patron_returned"  # scanned back in at the borrowing library
    SHIPPED_RETURN = "shipped_return"  # Alma: staff shipped it back to the lender
    LOAN_COMPLETED = "loan_completed"
    UNFILLED = "unfilled"
    CANCELLED = "cancelled"
    # Clean-up: WorldShare shows the request ended while the item never reached the library.
    CLEANED_UP = "cleaned_up"


class LenderOutcome(StrEnum):
    """What the lender's side says happened, as read from the lending network."""

    pending = "pending"
    shipped = "shipped"
    renewal_approved = "renewal_approved"
    renewal_refused = "renewal_refused"
    unfilled = "unfilled"
    cancelled = "cancelled"
    returned = "returned"
    closed = "closed"


class AlmaNotice(StrEnum):
    """What the bridge tells Alma about a borrowing request (one ISO 18626 supplier message)."""

    EXPECT_TO_SUPPLY = "expect_to_supply"
    WILL_SUPPLY = "will_supply"
    LOANED = "loaned"
    COPY_COMPLETED = "copy_completed"
    RENEW_YES = "renew_yes"
    RENEW_NO = "renew_no"
    LOAN_COMPLETED = "loan_completed"
    UNFILLED = "unfilled"
    CANCELLED = "cancelled"
    CANCEL_YES = "cancel_yes"
    CANCEL_NO = "cancel_no"
    STATUS_ANSWER = "status_answer"


TERMINAL_STATES = frozenset({RequestState.CLOSED, RequestState.UNFILLED, RequestState.CANCELLED})
# Where the item is with the borrowing library and a renewal can be asked for.
HELD_STATES = frozenset({RequestState.IN_LIBRARY, RequestState.ON_LOAN})
# Open and known to WorldShare: the states the status poller watches.
POLLED_STATES = frozenset(
    {
        RequestState.EXPORTED,
        RequestState.SHIPPED,
        RequestState.IN_LIBRARY,
        RequestState.ON_LOAN,
        RequestState.RENEWAL_REQUESTED,
        RequestState.RETURNED,
    }
)

S = RequestState
T = Trigger
TRANSITIONS: dict[tuple[RequestState, Trigger], RequestState] = {
    (S.RECEIVED, T.EXPORTED): S.EXPORTED,
    (S.EXPORTED, T.LENDER_SHIPPED): S.SHIPPED,
    (S.EXPORTED, T.COPY_DELIVERED): S.CLOSED,
    (S.SHIPPED, T.COPY_DELIVERED): S.CLOSED,
    (S.IN_LIBRARY, T.COPY_DELIVERED): S.CLOSED,
    # Alma may receive the item before the next poll has seen the lender ship it.
    (S.EXPORTED, T.ITEM_RECEIVED): S.IN_LIBRARY,
    (S.SHIPPED, T.ITEM_RECEIVED): S.IN_LIBRARY,
    (S.IN_LIBRARY, T.PATRON_LOANED): S.ON_LOAN,
    (S.IN_LIBRARY, T.RENEWAL_REQUESTED): S.RENEWAL_REQUESTED,
    (S.ON_LOAN, T.RENEWAL_REQUESTED): S.RENEWAL_REQUESTED,
    # A lender may extend the loan unasked; the state stays, the due date moves.
    (S.SHIPPED, T.RENEWAL_APPROVED): S.SHIPPED,
    (S.IN_LIBRARY, T.RENEWAL_APPROVED): S.IN_LIBRARY,
    (S.ON_LOAN, T.RENEWAL_APPROVED): S.ON_LOAN,
    (S.ON_LOAN, T.PATRON_RETURNED): S.RETURNED,
    (S.IN_LIBRARY, T.SHIPPED_RETURN): S.RETURNED,
    (S.ON_LOAN, T.SHIPPED_RETURN): S.RETURNED,
    (S.RENEWAL_REQUESTED, T.SHIPPED_RETURN): S.RETURNED,
    (S.RETURNED, T.SHIPPED_RETURN): S.RETURNED,
    (S.RETURNED, T.LOAN_COMPLETED): S.CLOSED,
    (S.RECEIVED, T.UNFILLED): S.UNFILLED,
    (S.EXPORTED, T.UNFILLED): S.UNFILLED,
    (S.RECEIVED, T.CANCELLED): S.CANCELLED,
    (S.EXPORTED, T.CANCELLED): S.CANCELLED,
    (S.EXPORTED, T.CLEANED_UP): S.CANCELLED,
    (S.SHIPPED, T.CLEANED_UP): S.CANCELLED,
}
# Renewal answers return the request to the state it was in when the renewal was asked for.
RESUMING_TRIGGERS = frozenset({T.RENEWAL_APPROVED, T.RENEWAL_REFUSED})


# The notice Alma gets after each transition of a request that came over ISO 18626.
ALMA_NOTICES: dict[Trigger, AlmaNotice] = {
    # Alma ignores ExpectToSupply; the profile says which status the notice carries.
    T.EXPORTED: AlmaNotice.WILL_SUPPLY,
    T.LENDER_SHIPPED: AlmaNotice.LOANED,
    T.COPY_DELIVERED: AlmaNotice.COPY_COMPLETED,
    T.RENEWAL_APPROVED: AlmaNotice.RENEW_YES,
    T.RENEWAL_REFUSED: AlmaNotice.RENEW_NO,
    T.UNFILLED: AlmaNotice.UNFILLED,
    T.CANCELLED: AlmaNotice.CANCELLED,
}
# After which trigger Alma is told LoanCompleted, by the institution's `close_on` policy.
CLOSING_TRIGGERS: dict[CloseOn, Trigger] = {
    CloseOn.PATRON_RETURN: T.PATRON_RETURNED,
    CloseOn.SHIPPED_RETURN: T.SHIPPED_RETURN,
    CloseOn.LENDER_CHECKIN: T.LOAN_COMPLETED,
}


def alma_notice(trigger: Trigger, close_on: CloseOn) -> AlmaNotice | None:
    """What Alma is told after `trigger`, for an institution that closes on `close_on`."""
    if CLOSING_TRIGGERS[close_on] is trigger:
        return AlmaNotice.LOAN_COMPLETED
    return ALMA_NOTICES.get(trigger)


class TransitionRefused(Exception):
    def __init__(self, state: RequestState, trigger: Trigger) -> None:
        super().__init__(f"{trigger.value} does not apply to a request in state {state.value}")
        self.state = state
        self.trigger = trigger


def next_state(
    state: RequestState, trigger: Trigger, *, resume_state: RequestState | None = None
) -> RequestState:
    """The state after `trigger`; `resume_state` is where a renewal answer returns to."""
    if state is S.RENEWAL_REQUESTED and trigger in RESUMING_TRIGGERS:
        if resume_state is None or resume_state not in HELD_STATES:
            raise TransitionRefused(state, trigger)
        return resume_state
    try:
        return TRANSITIONS[(state, trigger)]
    except KeyError:
        raise TransitionRefused(state, trigger) from None
