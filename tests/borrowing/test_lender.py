"""`decide`: what the bridge does for every (request state, lender outcome) pair."""

from __future__ import annotations

from datetime import date

import pytest

from app.borrowing.lender import (
    Advance,
    AnswerRenewal,
    AssignTemporaryBarcode,
    FlagUnknownStatus,
    LenderNews,
    SetLenderDueDate,
    Step,
    decide,
)
from app.borrowing.states import LenderOutcome as O
from app.borrowing.states import RequestState as S
from app.borrowing.states import Trigger as T

DUE = date(2026, 12, 20)
RENEWED = date(2027, 1, 20)

SHIP = [SetLenderDueDate(DUE), AssignTemporaryBarcode(), Advance(T.LENDER_SHIPPED)]
APPROVE = [SetLenderDueDate(RENEWED), AnswerRenewal(T.RENEWAL_APPROVED)]
REFUSE = [AnswerRenewal(T.RENEWAL_REFUSED)]
FLAG = [FlagUnknownStatus()]
UNFILL = [Advance(T.UNFILLED)]
CANCEL = [Advance(T.CANCELLED)]
COMPLETE = [Advance(T.LOAN_COMPLETED)]

OPEN = [S.RECEIVED, S.EXPORTED, S.SHIPPED, S.IN_LIBRARY, S.ON_LOAN, S.RENEWAL_REQUESTED, S.RETURNED]
OUTCOMES: list[O | None] = [*O, None]

# The first reading of a status (it changed), with the lender due date the bridge already knows
# (DUE once shipped): outcome → state → steps; a state not named gets the outcome's default.
EXPECTED: dict[O | None, tuple[list[Step], dict[S, list[Step]]]] = {
    O.pending: ([], {}),
    # Shipped: only an exported request advances; a held one already knows the due date.
    O.shipped: ([], {S.EXPORTED: SHIP, S.RECEIVED: [SetLenderDueDate(DUE)]}),
    # A renewal answer counts where one was asked, or (unasked) where the item is held.
    O.renewal_approved: (
        [],
        {
            S.RENEWAL_REQUESTED: APPROVE,
            S.SHIPPED: APPROVE,
            S.IN_LIBRARY: APPROVE,
            S.ON_LOAN: APPROVE,
        },
    ),
    O.renewal_refused: ([], {S.RENEWAL_REQUESTED: REFUSE}),
    # Endings are handed to the state machine, which refuses (and flags) what does not fit.
    O.unfilled: (UNFILL, {}),
    O.cancelled: (CANCEL, {}),
    O.returned: (COMPLETE, {}),
    O.closed: (COMPLETE, {}),
    None: (FLAG, {}),
}


def _known_due(state: S) -> date | None:
    return None if state in (S.RECEIVED, S.EXPORTED) else DUE


def _news(outcome: O | None, *, changed: bool = True) -> LenderNews:
    due = RENEWED if outcome is O.renewal_approved else DUE
    return LenderNews(outcome=outcome, status_changed=changed, due_date=due)


@pytest.mark.parametrize("outcome", OUTCOMES, ids=lambda o: str(o))
@pytest.mark.parametrize("state", OPEN, ids=str)
def test_every_open_state_and_outcome(state: S, outcome: O | None) -> None:
    default, by_state = EXPECTED[outcome]
    assert decide(state, _known_due(state), _news(outcome)) == by_state.get(state, default)


@pytest.mark.parametrize("outcome", OUTCOMES, ids=lambda o: str(o))
@pytest.mark.parametrize("state", [S.CLOSED, S.UNFILLED, S.CANCELLED], ids=str)
def test_a_finished_request_ignores_the_lender(state: S, outcome: O | None) -> None:
    assert decide(state, DUE, _news(outcome)) == []


@pytest.mark.parametrize("outcome", [O.unfilled, O.cancelled, O.returned, O.closed, None])
def test_an_ending_or_unknown_status_seen_again_does_nothing_more(outcome: O | None) -> None:
    assert decide(S.ON_LOAN, DUE, _news(outcome, changed=False)) == []


def test_an_approval_that_does_not_move_the_due_date_is_no_unasked_renewal() -> None:
    same = LenderNews(outcome=O.renewal_approved, status_changed=False, due_date=DUE)
    assert decide(S.ON_LOAN, DUE, same) == []
    assert decide(S.RENEWAL_REQUESTED, DUE, same) == [
        SetLenderDueDate(DUE),
        AnswerRenewal(T.RENEWAL_APPROVED),
    ]


def test_a_shipment_without_a_due_date_still_advances() -> None:
    news = LenderNews(outcome=O.shipped, status_changed=True, due_date=None)
    assert decide(S.EXPORTED, None, news) == [AssignTemporaryBarcode(), Advance(T.LENDER_SHIPPED)]
