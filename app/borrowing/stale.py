"""Stale borrowing requests: which open request looks stuck, and why, as one pure function.

The facts come from the request, its timeline (when it last changed state) and the job table
(a dead export); the thresholds from the institution's policy. A periodic job writes the answer
on the request (`stale_reason`, `stale_since`) and opens a staff task; clean-up re-reads
WorldShare before acting on any of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from app.borrowing.states import TERMINAL_STATES, RequestState


class StaleReason(StrEnum):
    NO_LENDER_PROGRESS = "no_lender_progress"  # exported, the lender has done nothing since
    NEVER_RECEIVED = "never_received"  # the lender shipped, Alma never received it
    RETURNED_NOT_CLOSED = "returned_not_closed"  # returned, never closed
    RENEWAL_UNANSWERED = "renewal_unanswered"  # a renewal asked for, no answer
    EXPORT_DEAD = "export_dead"  # the export to WorldShare failed for good
    EXPORT_UNRESOLVED = "export_unresolved"  # a create whose answer was lost: maybe a duplicate


# What staff read beside each reason in the task list.
STALE_EXPLANATIONS: dict[StaleReason, str] = {
    StaleReason.NO_LENDER_PROGRESS: "exported to WorldShare with no lender progress",
    StaleReason.NEVER_RECEIVED: "shipped by the lender but never received in Alma",
    StaleReason.RETURNED_NOT_CLOSED: "returned but never closed",
    StaleReason.RENEWAL_UNANSWERED: "a renewal was asked for and the lender has not answered",
    StaleReason.EXPORT_DEAD: "the export to WorldShare failed and was not retried",
    StaleReason.EXPORT_UNRESOLVED: "a WorldShare create's answer was lost: the request may "
    "exist in WorldShare twice or not at all",
}


@dataclass(frozen=True)
class StalePolicy:
    stale_after_days: int
    renewal_answer_days: int


@dataclass(frozen=True)
class RequestFacts:
    state: RequestState
    # When the request entered its current state (its last applied transition).
    state_since: datetime
    has_worldshare_id: bool
    # A create was sent and its answer lost (the export flagged it for staff), and when.
    export_unknown_since: datetime | None = None
    export_dead: bool = False


@dataclass(frozen=True)
class Staleness:
    reason: StaleReason
    since: datetime  # when the request became stale by this reason


# States that wait on the lender or Alma, and the reason they turn stale for.
_WAITING: dict[RequestState, StaleReason] = {
    RequestState.EXPORTED: StaleReason.NO_LENDER_PROGRESS,
    RequestState.SHIPPED: StaleReason.NEVER_RECEIVED,
    RequestState.RETURNED: StaleReason.RETURNED_NOT_CLOSED,
    RequestState.RENEWAL_REQUESTED: StaleReason.RENEWAL_UNANSWERED,
}


def detect(facts: RequestFacts, policy: StalePolicy, now: datetime) -> Staleness | None:
    """Why the request is stale at `now`, or None. Export problems need no waiting period."""
    if facts.state in TERMINAL_STATES:
        return None
    if facts.state is RequestState.RECEIVED and not facts.has_worldshare_id:
        if facts.export_unknown_since is not None:
            return Staleness(StaleReason.EXPORT_UNRESOLVED, facts.export_unknown_since)
        if facts.export_dead:
            return Staleness(StaleReason.EXPORT_DEAD, facts.state_since)
        return None
    reason = _WAITING.get(facts.state)
    if reason is None:
        return None
    days = (
        policy.renewal_answer_days
        if reason is StaleReason.RENEWAL_UNANSWERED
        else policy.stale_after_days
    )
    since = facts.state_since + timedelta(days=days)
    return Staleness(reason, since) if now >= since else None
