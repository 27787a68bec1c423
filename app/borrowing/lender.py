"""What the bridge does when the lender's side changes: one pure decision with a table test.

Polling reads the lender's status, due date and renewal count, maps them to a `LenderOutcome`,
and applies the steps `decide` returns; it decides nothing itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from app.borrowing.states import (
    TERMINAL_STATES,
    LenderOutcome,
    RequestState,
    Trigger,
)


@dataclass(frozen=True)
class LenderNews:
    """One reading of the lender's side, reduced to what the decision needs."""

    outcome: LenderOutcome | None  # None: a status the institution's map does not know
    status_changed: bool  # the raw status differs from the one last seen
    due_date: date | None  # the lender due date now (after any renewal)
    renewals: int = 0  # how often the lender has renewed the loan
    renewal_status: str | None = None  # the lender's answer to the latest renewal, raw


@dataclass(frozen=True)
class RenewalAsk:
    """The lender's side as it stood when Alma asked for the renewal now pending."""

    renewals: int
    due_date: date | None
    renewal_status: str | None


@dataclass(frozen=True)
class Facts:
    """What the bridge knows of the request beyond its state."""

    known_due_date: date | None = None
    copy: bool = False  # a copy (article) is delivered, not lent
    renewal_ask: RenewalAsk | None = None
    cancel_asked: bool = False


@dataclass(frozen=True)
class SetLenderDueDate:
    due_date: date


@dataclass(frozen=True)
class AssignTemporaryBarcode:
    """The item is on its way: give it the barcode Alma's temporary item will carry."""


@dataclass(frozen=True)
class Advance:
    trigger: Trigger


@dataclass(frozen=True)
class AnswerRenewal:
    """The lender answered the renewal asked for: apply it and withdraw the staff task."""

    trigger: Trigger


@dataclass(frozen=True)
class TellAlmaLoaned:
    """Alma does not know the current lender due date: StatusChange + Loaned with it."""


@dataclass(frozen=True)
class AnswerCancel:
    """Alma's held Cancel is settled by the lender's side: Y (cancelled) or N (it shipped)."""

    cancelled: bool


@dataclass(frozen=True)
class FlagUnknownStatus:
    """A status nobody mapped: record it and ask staff, never guess."""


Step = (
    SetLenderDueDate
    | AssignTemporaryBarcode
    | Advance
    | AnswerRenewal
    | TellAlmaLoaned
    | AnswerCancel
    | FlagUnknownStatus
)

# Lender outcomes that end or close the request once, when the status first shows them.
_ENDINGS: dict[LenderOutcome, Trigger] = {
    LenderOutcome.unfilled: Trigger.UNFILLED,
    LenderOutcome.cancelled: Trigger.CANCELLED,
    LenderOutcome.returned: Trigger.LOAN_COMPLETED,
    LenderOutcome.closed: Trigger.LOAN_COMPLETED,
}
# The lender has sent the item (a renewal answer implies it is out on loan).
_LENT = frozenset(
    {LenderOutcome.shipped, LenderOutcome.renewal_approved, LenderOutcome.renewal_refused}
)
# A copy is delivered once: a shipment, or WorldShare already showing the request done.
_COPY_DELIVERED = _LENT | {LenderOutcome.returned, LenderOutcome.closed}
_COPY_OPEN = frozenset({RequestState.EXPORTED, RequestState.SHIPPED, RequestState.IN_LIBRARY})
# Where the item is out on loan from the lender and Alma holds the lender due date.
_OUT_ON_LOAN = frozenset(
    {
        RequestState.SHIPPED,
        RequestState.IN_LIBRARY,
        RequestState.ON_LOAN,
        RequestState.RENEWAL_REQUESTED,
    }
)


def decide(state: RequestState, news: LenderNews, facts: Facts = Facts()) -> list[Step]:
    """The steps that bring a request in `state` in line with what the lender says."""
    if state in TERMINAL_STATES:
        return []
    outcome = news.outcome
    if outcome is None:
        return [FlagUnknownStatus()] if news.status_changed else []
    if outcome is LenderOutcome.pending:
        return []
    if facts.cancel_asked and state is RequestState.EXPORTED:
        if outcome in (LenderOutcome.unfilled, LenderOutcome.cancelled):
            return [AnswerCancel(cancelled=True)]
        if outcome in _LENT or (facts.copy and outcome in _COPY_DELIVERED):
            return [*_delivered(state, news, facts), AnswerCancel(cancelled=False)]
    if facts.copy and outcome in _COPY_DELIVERED and state in _COPY_OPEN:
        return _delivered(state, news, facts)
    if outcome in _LENT:
        return _on_loan(state, news, facts)
    back = outcome in (LenderOutcome.returned, LenderOutcome.closed)
    if not news.status_changed and not (back and state is RequestState.RETURNED):
        return []
    return [Advance(_ENDINGS[outcome])]


def _delivered(state: RequestState, news: LenderNews, facts: Facts) -> list[Step]:
    if facts.copy:
        return [Advance(Trigger.COPY_DELIVERED)]
    due = [SetLenderDueDate(news.due_date)] if news.due_date else []
    return [*due, AssignTemporaryBarcode(), Advance(Trigger.LENDER_SHIPPED)]


def _on_loan(state: RequestState, news: LenderNews, facts: Facts) -> list[Step]:
    """The lender has the item out: shipped, renewed or not, asked or not."""
    if state is RequestState.EXPORTED:
        # Shipped (and perhaps renewed) since the last poll: Loaned with the due date now.
        return _delivered(state, news, facts)
    if state not in _OUT_ON_LOAN or news.due_date is None:
        return []
    known = facts.known_due_date
    if known is None:
        # Alma received the item before a poll saw it ship: it still needs the due date.
        return [SetLenderDueDate(news.due_date), AssignTemporaryBarcode(), TellAlmaLoaned()]
    if state is RequestState.RENEWAL_REQUESTED:
        return _renewal_answer(news, facts.renewal_ask or RenewalAsk(0, known, None))
    if news.due_date > known:
        # Extended unasked: no RenewResponse (Alma asked nothing), a Loaned with the new date.
        return [SetLenderDueDate(news.due_date), TellAlmaLoaned()]
    return []


def _renewal_answer(news: LenderNews, ask: RenewalAsk) -> list[Step]:
    """Only news newer than the ask answers it; the last renewal's leftovers never do."""
    assert news.due_date is not None
    moved = ask.due_date is None or news.due_date > ask.due_date
    if news.renewals > ask.renewals or moved:
        return [SetLenderDueDate(news.due_date), AnswerRenewal(Trigger.RENEWAL_APPROVED)]
    if news.outcome is LenderOutcome.renewal_refused and news.renewal_status != ask.renewal_status:
        return [AnswerRenewal(Trigger.RENEWAL_REFUSED)]
    return []
