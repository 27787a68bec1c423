"""`decide`: what the bridge does for every (request state, lender outcome) pair, and for what
it knows beyond the state (a copy, a renewal asked for, a cancel held, a due date Alma lacks)."""

from __future__ import annotations

from datetime import date

import pytest

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
    Step,
    TellAlmaLoaned,
    decide,
)
from app.borrowing.states import LenderOutcome as O
from app.borrowing.states import RequestState as S
from app.borrowing.states import Trigger as T

DUE = date(2026, 12, 20)
RENEWED = date(2027, 1, 20)

SHIP = [SetLenderDueDate(DUE), AssignTemporaryBarcode(), Advance(T.LENDER_SHIPPED)]
SHIP_RENEWED = [SetLenderDueDate(RENEWED), AssignTemporaryBarcode(), Advance(T.LENDER_SHIPPED)]
APPROVE = [SetLenderDueDate(RENEWED), AnswerRenewal(T.RENEWAL_APPROVED)]
REFUSE = [AnswerRenewal(T.RENEWAL_REFUSED)]
EXTENDED = [SetLenderDueDate(RENEWED), TellAlmaLoaned()]
FLAG = [FlagUnknownStatus()]
UNFILL = [Advance(T.UNFILLED)]
CANCEL = [Advance(T.CANCELLED)]
COMPLETE = [Advance(T.LOAN_COMPLETED)]

OPEN = [S.RECEIVED, S.EXPORTED, S.SHIPPED, S.IN_LIBRARY, S.ON_LOAN, S.RENEWAL_REQUESTED, S.RETURNED]
OUTCOMES: list[O | None] = [*O, None]
# What the lender showed when Alma asked for the renewal: nothing renewed yet, due DUE.
ASKED = RenewalAsk(renewals=0, due_date=DUE, renewal_status=None)

# The first reading of a status (it changed), with the lender due date the bridge already knows
# (DUE once shipped): outcome → state → steps; a state not named gets the outcome's default.
EXPECTED: dict[O | None, tuple[list[Step], dict[S, list[Step]]]] = {
    O.pending: ([], {}),
    # Shipped: only an exported request advances; a held one already knows the due date.
    O.shipped: ([], {S.EXPORTED: SHIP}),
    # Approved: the renewal asked for is answered; elsewhere the new date is an unasked
    # extension (Loaned), and an exported request shipped and was renewed between two polls.
    O.renewal_approved: (
        [],
        {
            S.EXPORTED: SHIP_RENEWED,
            S.RENEWAL_REQUESTED: APPROVE,
            S.SHIPPED: EXTENDED,
            S.IN_LIBRARY: EXTENDED,
            S.ON_LOAN: EXTENDED,
        },
    ),
    O.renewal_refused: ([], {S.EXPORTED: SHIP, S.RENEWAL_REQUESTED: REFUSE}),
    # Endings are handed to the state machine, which refuses (and flags) what does not fit.
    O.unfilled: (UNFILL, {}),
    O.cancelled: (CANCEL, {}),
    O.returned: (COMPLETE, {}),
    O.closed: (COMPLETE, {}),
    None: (FLAG, {}),
}


def _facts(state: S, **more: object) -> Facts:
    known = None if state in (S.RECEIVED, S.EXPORTED) else DUE
    ask = ASKED if state is S.RENEWAL_REQUESTED else None
    return Facts(known_due_date=known, renewal_ask=ask, **more)  # type: ignore[arg-type]


def _news(outcome: O | None, *, changed: bool = True) -> LenderNews:
    approved = outcome is O.renewal_approved
    return LenderNews(
        outcome=outcome,
        status_changed=changed,
        due_date=RENEWED if approved else DUE,
        renewals=1 if approved else 0,
        renewal_status={O.renewal_approved: "APPROVED", O.renewal_refused: "DENIED"}.get(
            outcome  # type: ignore[arg-type]
        ),
    )


@pytest.mark.parametrize("outcome", OUTCOMES, ids=lambda o: str(o))
@pytest.mark.parametrize("state", OPEN, ids=str)
def test_every_open_state_and_outcome(state: S, outcome: O | None) -> None:
    default, by_state = EXPECTED[outcome]
    assert decide(state, _news(outcome), _facts(state)) == by_state.get(state, default)


@pytest.mark.parametrize("outcome", OUTCOMES, ids=lambda o: str(o))
@pytest.mark.parametrize("state", [S.CLOSED, S.UNFILLED, S.CANCELLED], ids=str)
def test_a_finished_request_ignores_the_lender(state: S, outcome: O | None) -> None:
    assert decide(state, _news(outcome), Facts(known_due_date=DUE)) == []


@pytest.mark.parametrize("outcome", [O.unfilled, O.cancelled, O.returned, O.closed, None])
def test_an_ending_or_unknown_status_seen_again_does_nothing_more(outcome: O | None) -> None:
    assert decide(S.ON_LOAN, _news(outcome, changed=False), Facts(known_due_date=DUE)) == []


def test_a_returned_item_closes_when_the_lender_has_it_back_even_if_seen_before() -> None:
    news = _news(O.closed, changed=False)
    assert decide(S.RETURNED, news, Facts(known_due_date=DUE)) == COMPLETE


def test_a_shipment_without_a_due_date_still_advances() -> None:
    news = LenderNews(outcome=O.shipped, status_changed=True, due_date=None)
    assert decide(S.EXPORTED, news) == [AssignTemporaryBarcode(), Advance(T.LENDER_SHIPPED)]


# 8: a copy is delivered, not lent


@pytest.mark.parametrize("outcome", [O.shipped, O.renewal_approved, O.returned, O.closed])
@pytest.mark.parametrize("state", [S.EXPORTED, S.SHIPPED, S.IN_LIBRARY], ids=str)
def test_a_copy_delivered_or_completed_in_worldshare_ends_the_request(state: S, outcome: O) -> None:
    facts = Facts(copy=True, known_due_date=None)
    assert decide(state, _news(outcome), facts) == [Advance(T.COPY_DELIVERED)]


def test_a_copy_still_ends_unfilled_or_cancelled() -> None:
    assert decide(S.EXPORTED, _news(O.unfilled), Facts(copy=True)) == UNFILL


# 9: renewal answers are about the renewal asked for


def test_the_first_renewals_leftovers_never_approve_the_second() -> None:
    # Renewed once before (count 1, due RENEWED, APPROVED): the second ask sees the same.
    ask = RenewalAsk(renewals=1, due_date=RENEWED, renewal_status="APPROVED")
    leftovers = LenderNews(O.renewal_approved, False, RENEWED, 1, "APPROVED")
    assert decide(S.RENEWAL_REQUESTED, leftovers, Facts(RENEWED, renewal_ask=ask)) == []
    later = date(2027, 2, 20)
    granted = LenderNews(O.renewal_approved, False, later, 2, "APPROVED")
    assert decide(S.RENEWAL_REQUESTED, granted, Facts(RENEWED, renewal_ask=ask)) == [
        SetLenderDueDate(later),
        AnswerRenewal(T.RENEWAL_APPROVED),
    ]


def test_a_due_date_moved_later_is_an_approval_even_without_a_count() -> None:
    news = LenderNews(O.shipped, False, RENEWED, 0, None)
    assert decide(S.RENEWAL_REQUESTED, news, Facts(DUE, renewal_ask=ASKED)) == APPROVE


def test_only_a_refusal_newer_than_the_ask_refuses() -> None:
    ask = RenewalAsk(renewals=0, due_date=DUE, renewal_status="DENIED")
    old_refusal = LenderNews(O.renewal_refused, False, DUE, 0, "DENIED")
    assert decide(S.RENEWAL_REQUESTED, old_refusal, Facts(DUE, renewal_ask=ask)) == []
    fresh = RenewalAsk(renewals=0, due_date=DUE, renewal_status="PENDING")
    assert decide(S.RENEWAL_REQUESTED, old_refusal, Facts(DUE, renewal_ask=fresh)) == REFUSE


def test_an_unasked_extension_is_a_loaned_with_the_new_date_not_a_renew_response() -> None:
    news = LenderNews(O.shipped, False, RENEWED)
    assert decide(S.ON_LOAN, news, Facts(DUE)) == EXTENDED
    assert decide(S.ON_LOAN, LenderNews(O.shipped, False, DUE), Facts(DUE)) == []


# 10: Alma always learns the lender due date


@pytest.mark.parametrize("state", [S.IN_LIBRARY, S.ON_LOAN, S.SHIPPED], ids=str)
def test_received_before_a_poll_saw_the_shipment_still_tells_alma_loaned(state: S) -> None:
    news = LenderNews(O.shipped, True, DUE)
    assert decide(state, news, Facts(known_due_date=None)) == [
        SetLenderDueDate(DUE),
        AssignTemporaryBarcode(),
        TellAlmaLoaned(),
    ]


# 11: a held cancel is answered from the lender's truth


@pytest.mark.parametrize("outcome", [O.cancelled, O.unfilled])
def test_a_held_cancel_is_granted_when_worldshare_shows_it_cancelled(outcome: O) -> None:
    assert decide(S.EXPORTED, _news(outcome), Facts(cancel_asked=True)) == [AnswerCancel(True)]


def test_a_held_cancel_is_refused_when_the_lender_shipped() -> None:
    assert decide(S.EXPORTED, _news(O.shipped), Facts(cancel_asked=True)) == [
        *SHIP,
        AnswerCancel(False),
    ]
    assert decide(S.EXPORTED, _news(O.pending), Facts(cancel_asked=True)) == []
