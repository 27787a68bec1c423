"""How often to read a WorldShare request, and which due reads go first when the key's daily
call budget cannot pay for all of them. Pure functions of a request's state and dates.

A read is worth making when the lender's side may have changed and the change matters soon:
just exported (the lender answers within days), a renewal asked, a cancel pending, a due date
near, an item returned and waiting for the lender's check-in. An item on loan weeks from its
due date can change only by a lender's unasked renewal or recall, so it is read rarely — but
never later than the moment its due date comes near.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from app.borrowing.states import RequestState

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# The shortest delay: WorldShare never needs reading more than twice an hour.
FLOOR = timedelta(minutes=30)

# Exported: the lender answers (ships, refuses) mostly within the first days.
JUST_EXPORTED = 2 * DAY
EXPORTED_FRESH = HOUR
EXPORTED_WAITING = 4 * HOUR
EXPORTED_OLD = 12 * HOUR
# Renewal asked or cancel pending in WorldShare: staff act within hours.
ANSWER_AWAITED = HOUR
# Shipped to us: the next change is Alma's receipt; the lender's side is quiet.
IN_TRANSIT = 12 * HOUR
# Returned: the lender checks the item in when it arrives, days later.
RETURN_IN_TRANSIT = 6 * HOUR
# Held by the library (in library, on loan): keyed to the lender due date.
DUE_NEAR = 3 * DAY
DUE_COMING = 14 * DAY
HELD_DUE_NEAR = 2 * HOUR
HELD_DUE_COMING = 12 * HOUR
HELD_FAR = 4 * DAY


@dataclass(frozen=True)
class PollSubject:
    """What the cadence looks at: the request's state and dates, nothing about the patron."""

    state: RequestState
    exported_at: datetime
    lender_due_date: date | None = None
    cancel_pending: bool = False


def next_poll_delay(subject: PollSubject, now: datetime) -> timedelta:
    """How long until the request is worth reading again."""
    if subject.cancel_pending or subject.state is RequestState.RENEWAL_REQUESTED:
        return ANSWER_AWAITED
    if subject.state is RequestState.EXPORTED:
        age = now - subject.exported_at
        if age < JUST_EXPORTED:
            return EXPORTED_FRESH
        return EXPORTED_WAITING if age < 7 * DAY else EXPORTED_OLD
    if subject.state is RequestState.RETURNED:
        return RETURN_IN_TRANSIT
    if subject.state is RequestState.SHIPPED and subject.lender_due_date is None:
        return IN_TRANSIT
    if subject.lender_due_date is None:
        return HELD_DUE_COMING
    due = datetime.combine(subject.lender_due_date, time(0), tzinfo=now.tzinfo)
    until_due = due - now
    if until_due <= DUE_NEAR:
        return HELD_DUE_NEAR
    if subject.state is RequestState.SHIPPED:
        return min(IN_TRANSIT, _until_next_band(until_due))
    if until_due <= DUE_COMING:
        return min(HELD_DUE_COMING, _until_next_band(until_due))
    return min(HELD_FAR, _until_next_band(until_due))


def _until_next_band(until_due: timedelta) -> timedelta:
    """Never sleep past the moment the due date comes near: wake when the next band begins."""
    band = DUE_NEAR if until_due <= DUE_COMING else DUE_COMING
    return max(FLOOR, until_due - band)


@dataclass(frozen=True)
class DuePoll:
    """A request whose read is due: when it became due and the delay its cadence asked for."""

    request_id: int
    due_at: datetime
    delay: timedelta


def lateness(poll: DuePoll, now: datetime) -> float:
    """How late a read is, in units of its own delay: an hourly read an hour late is as late as
    a four-daily read four days late. Reads are paid in this order, so a short budget stretches
    every interval by the same factor and the urgent reads (short delays) come first."""
    return (now - poll.due_at) / poll.delay


def choose_polls(due: Iterable[DuePoll], now: datetime, allowance: int) -> Sequence[DuePoll]:
    """The due reads to make now, most urgent first, no more than `allowance`."""
    if allowance <= 0:
        return []
    ranked = sorted(due, key=lambda poll: (-lateness(poll, now), poll.delay, poll.request_id))
    return ranked[:allowance]


# The share of each hour polls leave to calls the dispatcher does not pace: creates, tokens.
UNPACED_SHARE = 20


def hourly_allowance(budget: int, used_this_hour: int, used_in_window: int) -> int:
    """Reads still allowed this hour: the 24-hour budget spread evenly over its hours (so no
    rolling 24 hours ever holds more than the budget), less a twentieth kept for creates and
    tokens, less what the key already spent."""
    per_hour = budget // 24
    reserve = max(2, per_hour // UNPACED_SHARE)
    return max(0, min(per_hour - reserve - used_this_hour, budget - reserve - used_in_window))
