"""The state machine, exhaustively: every (state, trigger) pair is either allowed or refused."""

from __future__ import annotations

import itertools

import pytest

from app.borrowing.states import (
    HELD_STATES,
    TERMINAL_STATES,
    RequestState,
    TransitionRefused,
    Trigger,
    next_state,
)

S = RequestState
T = Trigger

# The whole table, written out: (state, trigger) → next state. Every other pair is refused.
ALLOWED = {
    (S.RECEIVED, T.EXPORTED): S.EXPORTED,
    (S.RECEIVED, T.UNFILLED): S.UNFILLED,
    (S.RECEIVED, T.CANCELLED): S.CANCELLED,
    (S.EXPORTED, T.LENDER_SHIPPED): S.SHIPPED,
    (S.EXPORTED, T.COPY_DELIVERED): S.CLOSED,
    (S.SHIPPED, T.COPY_DELIVERED): S.CLOSED,
    (S.IN_LIBRARY, T.COPY_DELIVERED): S.CLOSED,
    (S.EXPORTED, T.ITEM_RECEIVED): S.IN_LIBRARY,
    (S.EXPORTED, T.UNFILLED): S.UNFILLED,
    (S.EXPORTED, T.CANCELLED): S.CANCELLED,
    # Clean-up cancels only what never reached the library (never in_library, on_loan…).
    (S.EXPORTED, T.CLEANED_UP): S.CANCELLED,
    (S.SHIPPED, T.CLEANED_UP): S.CANCELLED,
    (S.SHIPPED, T.ITEM_RECEIVED): S.IN_LIBRARY,
    (S.SHIPPED, T.RENEWAL_APPROVED): S.SHIPPED,
    (S.IN_LIBRARY, T.PATRON_LOANED): S.ON_LOAN,
    (S.IN_LIBRARY, T.RENEWAL_REQUESTED): S.RENEWAL_REQUESTED,
    (S.IN_LIBRARY, T.RENEWAL_APPROVED): S.IN_LIBRARY,
    (S.IN_LIBRARY, T.SHIPPED_RETURN): S.RETURNED,
    (S.ON_LOAN, T.RENEWAL_REQUESTED): S.RENEWAL_REQUESTED,
    (S.ON_LOAN, T.RENEWAL_APPROVED): S.ON_LOAN,
    (S.ON_LOAN, T.PATRON_RETURNED): S.RETURNED,
    (S.ON_LOAN, T.SHIPPED_RETURN): S.RETURNED,
    (S.RENEWAL_REQUESTED, T.SHIPPED_RETURN): S.RETURNED,
    (S.RETURNED, T.SHIPPED_RETURN): S.RETURNED,
    (S.RETURNED, T.LOAN_COMPLETED): S.CLOSED,
}
RENEWAL_ANSWERS = (T.RENEWAL_APPROVED, T.RENEWAL_REFUSED)
# Renewal answers in renewal_requested resume a state of their own: tested separately below.
ALL_PAIRS = [
    (state, trigger)
    for state, trigger in itertools.product(RequestState, Trigger)
    if not (state is S.RENEWAL_REQUESTED and trigger in RENEWAL_ANSWERS)
]


@pytest.mark.parametrize(("state", "trigger"), ALL_PAIRS, ids=lambda v: v.value)
def test_every_pair_is_allowed_or_refused_as_the_table_says(state, trigger):
    if (state, trigger) in ALLOWED:
        assert next_state(state, trigger) is ALLOWED[(state, trigger)]
    else:
        with pytest.raises(TransitionRefused) as refused:
            next_state(state, trigger)
        assert refused.value.state is state and refused.value.trigger is trigger
        assert trigger.value in str(refused.value) and state.value in str(refused.value)


@pytest.mark.parametrize("held", sorted(HELD_STATES))
@pytest.mark.parametrize("answer", RENEWAL_ANSWERS)
def test_a_renewal_answer_returns_to_where_the_renewal_was_asked(held, answer):
    asked = next_state(held, T.RENEWAL_REQUESTED)
    assert asked is S.RENEWAL_REQUESTED
    assert next_state(asked, answer, resume_state=held) is held


@pytest.mark.parametrize("answer", RENEWAL_ANSWERS)
@pytest.mark.parametrize("resume", [None, S.EXPORTED, S.CLOSED, S.RENEWAL_REQUESTED])
def test_a_renewal_answer_without_a_held_state_to_resume_is_refused(answer, resume):
    with pytest.raises(TransitionRefused):
        next_state(S.RENEWAL_REQUESTED, answer, resume_state=resume)


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES))
def test_terminal_states_accept_nothing(state):
    for trigger in Trigger:
        with pytest.raises(TransitionRefused):
            next_state(state, trigger, resume_state=S.ON_LOAN)


def test_the_whole_loan_life_cycle_is_a_path():
    path = [
        (T.EXPORTED, S.EXPORTED),
        (T.LENDER_SHIPPED, S.SHIPPED),
        (T.ITEM_RECEIVED, S.IN_LIBRARY),
        (T.PATRON_LOANED, S.ON_LOAN),
        (T.RENEWAL_REQUESTED, S.RENEWAL_REQUESTED),
        (T.RENEWAL_APPROVED, S.ON_LOAN),
        (T.PATRON_RETURNED, S.RETURNED),
        (T.SHIPPED_RETURN, S.RETURNED),
        (T.LOAN_COMPLETED, S.CLOSED),
    ]
    state, resume = S.RECEIVED, None
    for trigger, expected in path:
        if trigger is T.RENEWAL_REQUESTED:
            resume = state
        state = next_state(state, trigger, resume_state=resume)
        assert state is expected


def test_every_state_but_the_terminal_ones_can_move():
    movable = {state for state, _trigger in ALLOWED} | {S.RENEWAL_REQUESTED}
    assert movable == set(RequestState) - TERMINAL_STATES
