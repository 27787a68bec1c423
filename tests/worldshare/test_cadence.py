"""The polling cadence: often when the lender's side may change soon, rarely when it cannot for
weeks; a short budget pays the latest reads first, in units of their own delay."""

from datetime import UTC, date, datetime, timedelta

import pytest

from app.borrowing.states import RequestState as S
from app.worldshare.cadence import (
    DuePoll,
    PollSubject,
    choose_polls,
    hourly_allowance,
    next_poll_delay,
)

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)


def ago(delta: timedelta) -> datetime:
    return NOW - delta


def due_in(days: int) -> date:
    return (NOW + timedelta(days=days)).date()


CASES = [
    # state, exported, lender due date, cancel pending, expected delay
    ("just exported", S.EXPORTED, ago(3 * H), None, False, H),
    ("exported, waiting days", S.EXPORTED, ago(4 * D), None, False, 4 * H),
    ("exported weeks ago", S.EXPORTED, ago(20 * D), None, False, 12 * H),
    ("cancel pending in WorldShare", S.EXPORTED, ago(20 * D), None, True, H),
    ("renewal asked", S.RENEWAL_REQUESTED, ago(40 * D), due_in(2), False, H),
    ("shipped, no due date yet", S.SHIPPED, ago(5 * D), None, False, 12 * H),
    ("shipped, due in 28 days", S.SHIPPED, ago(5 * D), due_in(28), False, 12 * H),
    ("on loan, due in 28 days", S.ON_LOAN, ago(9 * D), due_in(28), False, 4 * D),
    # Not past the start of the 14-day band: woken when it begins.
    # Due at midnight starting Dec 17: 15.5 days away, the band begins in 1.5 days.
    ("on loan, due in 16 days", S.ON_LOAN, ago(9 * D), due_in(16), False, D + 12 * H),
    ("in library, due in 10 days", S.IN_LIBRARY, ago(9 * D), due_in(10), False, 12 * H),
    # Not past the start of the 3-day band.
    ("on loan, due in 3.5 days", S.ON_LOAN, ago(9 * D), due_in(4), False, 12 * H),
    ("on loan, due in 2 days", S.ON_LOAN, ago(9 * D), due_in(2), False, 2 * H),
    ("on loan, overdue", S.ON_LOAN, ago(40 * D), due_in(-3), False, 2 * H),
    ("returned, awaiting check-in", S.RETURNED, ago(40 * D), due_in(-1), False, 6 * H),
]


@pytest.mark.parametrize(
    ("state", "exported_at", "due", "cancel_pending", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_cadence_table(state, exported_at, due, cancel_pending, expected):
    subject = PollSubject(
        state=state, exported_at=exported_at, lender_due_date=due, cancel_pending=cancel_pending
    )
    assert next_poll_delay(subject, NOW) == expected


def test_a_loan_far_from_its_due_date_is_read_at_most_daily_fraction_of_a_fresh_export():
    fresh = next_poll_delay(PollSubject(S.EXPORTED, ago(H)), NOW)
    far = next_poll_delay(PollSubject(S.ON_LOAN, ago(9 * D), due_in(60)), NOW)
    assert far / fresh == 96


def test_a_short_budget_pays_the_latest_reads_first_relative_to_their_delay():
    polls = [
        DuePoll(request_id=1, due_at=NOW - 2 * H, delay=4 * D),  # 2 h late of 4 days
        DuePoll(request_id=2, due_at=NOW - 30 * 60 * timedelta(seconds=1), delay=H),  # 1/2
        DuePoll(request_id=3, due_at=NOW - 3 * D, delay=4 * D),  # 3/4 late
        DuePoll(request_id=4, due_at=NOW - H, delay=H),  # a whole delay late
    ]
    assert [p.request_id for p in choose_polls(polls, NOW, 3)] == [4, 3, 2]
    assert choose_polls(polls, NOW, 0) == []


def test_the_hourly_allowance_spreads_the_budget_and_stops_at_it():
    # 40,000 a day is 1,666 an hour, of which 83 are kept for creates and tokens.
    assert hourly_allowance(40_000, used_this_hour=0, used_in_window=0) == 1583
    assert hourly_allowance(40_000, used_this_hour=1500, used_in_window=20_000) == 83
    assert hourly_allowance(40_000, used_this_hour=0, used_in_window=39_900) == 17
    assert hourly_allowance(40_000, used_this_hour=1700, used_in_window=1700) == 0
