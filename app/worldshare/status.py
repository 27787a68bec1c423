"""Pure mapping from a lender's raw WorldShare status to the outcome our state machine knows.

Unknown statuses map to None: the caller flags the request for staff instead of guessing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from app.borrowing.states import LenderOutcome
from app.worldshare.network import LenderStatus

# Keys: `SUBMITTING` from OCLC's Request API samples; the rest are OCLC's documented WorldShare
# ILL / Tipasa request statuses ("ILL statuses" help page) and the ISO 10161 current states
# OCLC ILL grew from, written as normalised by `normalise_status`. Recalled, Lost and
# Not Received are left out on purpose: each needs a librarian, so they surface as unknown.
DEFAULT_STATUS_MAP: dict[str, LenderOutcome] = {
    "SUBMITTING": LenderOutcome.pending,
    "CREATED": LenderOutcome.pending,
    "NOT_REVIEWED": LenderOutcome.pending,
    "REVIEWED": LenderOutcome.pending,
    "SUBMITTED": LenderOutcome.pending,
    "PENDING": LenderOutcome.pending,
    "PRODUCED": LenderOutcome.pending,
    "IN_PROCESS": LenderOutcome.pending,
    "FORWARD": LenderOutcome.pending,
    "CONSIDERING": LenderOutcome.pending,
    "CONDITIONAL": LenderOutcome.pending,
    "IN_TRANSIT": LenderOutcome.shipped,
    "SHIPPED": LenderOutcome.shipped,
    "RECEIVED": LenderOutcome.shipped,
    "RECEIVED_IN_USE": LenderOutcome.shipped,
    "RENEW_PENDING": LenderOutcome.shipped,
    "OVERDUE": LenderOutcome.shipped,
    "UNFILLED": LenderOutcome.unfilled,
    "NOT_SUPPLIED": LenderOutcome.unfilled,
    "EXPIRED": LenderOutcome.unfilled,
    "CLOSED_UNFILLED": LenderOutcome.unfilled,
    "CLOSED_EXPIRED": LenderOutcome.unfilled,
    "CANCELLED": LenderOutcome.cancelled,
    "CLOSED_CANCELLED": LenderOutcome.cancelled,
    "RETURNED": LenderOutcome.returned,
    "RETURNED_COMPLETE": LenderOutcome.returned,
    "COMPLETE": LenderOutcome.closed,
    "CHECKED_IN": LenderOutcome.closed,
    "CHECKED_IN_COMPLETE": LenderOutcome.closed,
    "CLOSED": LenderOutcome.closed,
}

# The lender's answer to a renewal, as carried in `RenewalInfo.status`.
_RENEWAL_ANSWERS: dict[str, LenderOutcome] = {
    "APPROVED": LenderOutcome.renewal_approved,
    "DENIED": LenderOutcome.renewal_refused,
}

_SEPARATORS = re.compile(r"[^A-Z0-9]+")
# WorldShare request ids are integers; only such a value read back is repeated in a flag.
_SHOWABLE_ID = re.compile(r"[0-9]{1,20}")


def normalise_status(status: str) -> str:
    """Upper case with runs of other characters as `_`, so "Received/In Use" is RECEIVED_IN_USE."""
    return _SEPARATORS.sub("_", status.upper()).strip("_")


def map_status(status: str, overrides: Mapping[str, str] | None = None) -> LenderOutcome | None:
    """The outcome for a raw status; an institution's overrides win over the defaults."""
    key = normalise_status(status)
    for raw, outcome in (overrides or {}).items():
        if normalise_status(raw) == key:
            return _outcome_named(outcome)
    return DEFAULT_STATUS_MAP.get(key)


def lender_outcome(
    current: LenderStatus, overrides: Mapping[str, str] | None = None
) -> LenderOutcome | None:
    """The outcome of a polled request, reading a renewal answer while the item is on loan.

    WorldShare keeps the status of a lent item unchanged through a renewal; the answer shows
    in the renewal status, and an approval also as a new due date with a raised renewal count.
    """
    outcome = map_status(current.status, overrides)
    renewal = current.renewal
    if outcome is not LenderOutcome.shipped or renewal is None:
        return outcome
    answer = _RENEWAL_ANSWERS.get(normalise_status(renewal.status or ""))
    if answer is not None:
        return answer
    if renewal.status is None and renewal.renewals > 0 and renewal.new_due_date is not None:
        return LenderOutcome.renewal_approved
    return outcome


def answer_mismatch(current: LenderStatus, *, asked: str, alma_request_id: str) -> str | None:
    """Why a poll's answer is not about the request polled, or None when it is.

    Only ids known to be ours are named: a referenceId read back is free text WorldShare staff
    can edit, so it is never repeated.
    """
    polled = f"the poll of WorldShare request {asked} was answered"
    read = current.request_id
    if read is None:
        return f"requestId mismatch: {polled} without a requestId"
    if not _same_id(read, asked):
        shown = f"request {read}" if _SHOWABLE_ID.fullmatch(read) else "another requestId"
        return f"requestId mismatch: {polled} for {shown}"
    if current.reference is not None and current.reference != alma_request_id:
        return (
            f"referenceId mismatch: WorldShare request {asked} does not carry this request's "
            f"Alma id {alma_request_id} as its referenceId"
        )
    return None


def _same_id(read: str, asked: str) -> bool:
    if _SHOWABLE_ID.fullmatch(read) and _SHOWABLE_ID.fullmatch(asked):
        return int(read) == int(asked)
    return read == asked


def _outcome_named(name: str) -> LenderOutcome:
    try:
        return LenderOutcome(name.strip().lower())
    except ValueError:
        raise ValueError(f"status override names no lender outcome: {name!r}") from None
