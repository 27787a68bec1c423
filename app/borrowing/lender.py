"""What the bridge does when the lender's side changes: one pure decision with a table test.

Polling reads the lender's status and due date, maps them to a `LenderOutcome`, and applies the
steps `decide` returns; it decides nothing itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from app.borrowing.states import (
    HELD_STATES,
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
    """The lender answered a renewal: apply it and withdraw the staff task."""

    trigger: Trigger


@dataclass(frozen=True)
class FlagUnknownStatus:
    """A status nobody mapped: record it and ask staff, never guess."""


Step = SetLenderDueDate | AssignTemporaryBarcode | Advance | AnswerRenewal | FlagUnknownStatus

# Lender outcomes that end or close the request once, when the status first shows them.
_ENDINGS: dict[LenderOutcome, Trigger] = {
    LenderOutcome.unfilled: Trigger.UNFILLED,
    LenderOutcome.cancelled: Trigger.CANCELLED,
    LenderOutcome.returned: Trigger.LOAN_COMPLETED,
    LenderOutcome.closed: Trigger.LOAN_COMPLETED,
}


def decide(state: RequestState, known_due_date: date | None, news: LenderNews) -> list[Step]:
    """The steps that bring a request in `state` in line with what the lender says."""
    if state in TERMINAL_STATES:
        return []
    outcome = news.outcome
    if outcome is None:
        return [FlagUnknownStatus()] if news.status_changed else []
    if outcome is LenderOutcome.pending:
        return []
    if outcome is LenderOutcome.shipped:
        if state is RequestState.EXPORTED:
            due = [SetLenderDueDate(news.due_date)] if news.due_date else []
            return [*due, AssignTemporaryBarcode(), Advance(Trigger.LENDER_SHIPPED)]
        if known_due_date is None and news.due_date is not None:
            return [SetLenderDueDate(news.due_date)]
        return []
    if outcome is LenderOutcome.renewal_approved:
        moved = news.due_date is not None and news.due_date != known_due_date
        renewable = state in HELD_STATES or state is RequestState.SHIPPED
        if state is RequestState.RENEWAL_REQUESTED or (moved and renewable):
            due = [SetLenderDueDate(news.due_date)] if news.due_date else []
            return [*due, AnswerRenewal(Trigger.RENEWAL_APPROVED)]
        return []
    if outcome is LenderOutcome.renewal_refused:
        if state is RequestState.RENEWAL_REQUESTED:
            return [AnswerRenewal(Trigger.RENEWAL_REFUSED)]
        return []
    if not news.status_changed:
        return []
    return [Advance(_ENDINGS[outcome])]
