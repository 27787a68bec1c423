"""Which open request is stale, and why: the pure detection, one row per case."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.borrowing.stale import RequestFacts, StalePolicy, StaleReason, detect
from app.borrowing.states import RequestState as S

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
POLICY = StalePolicy(stale_after_days=30, renewal_answer_days=7)
R = StaleReason


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


CASES = [
    # state, days in that state, has WorldShare id, extra facts → reason (None: not stale)
    (S.EXPORTED, 29, True, {}, None),
    (S.EXPORTED, 30, True, {}, R.NO_LENDER_PROGRESS),
    (S.SHIPPED, 31, True, {}, R.NEVER_RECEIVED),
    (S.SHIPPED, 2, True, {}, None),
    (S.RETURNED, 30, True, {}, R.RETURNED_NOT_CLOSED),
    (S.RENEWAL_REQUESTED, 6, True, {}, None),
    (S.RENEWAL_REQUESTED, 7, True, {}, R.RENEWAL_UNANSWERED),
    # Held by the library: waiting on the patron, never stale by age.
    (S.IN_LIBRARY, 400, True, {}, None),
    (S.ON_LOAN, 400, True, {}, None),
    # Ended: never stale.
    (S.CLOSED, 400, True, {}, None),
    (S.CANCELLED, 400, True, {}, None),
    (S.UNFILLED, 400, True, {}, None),
    # Export problems need no waiting period.
    (S.RECEIVED, 0, False, {"export_dead": True}, R.EXPORT_DEAD),
    (S.RECEIVED, 0, False, {"export_unknown_since": days_ago(1)}, R.EXPORT_UNRESOLVED),
    (S.RECEIVED, 90, False, {}, None),  # still being exported (retrying)
]


@pytest.mark.parametrize(("state", "days", "has_ws", "extra", "expected"), CASES)
def test_detect(state, days, has_ws, extra, expected):
    facts = RequestFacts(state=state, state_since=days_ago(days), has_worldshare_id=has_ws, **extra)
    found = detect(facts, POLICY, NOW)
    assert (found.reason if found else None) is expected


def test_stale_since_is_when_the_threshold_was_crossed():
    facts = RequestFacts(state=S.EXPORTED, state_since=days_ago(45), has_worldshare_id=True)
    found = detect(facts, POLICY, NOW)
    assert found is not None and found.since == days_ago(15)


def test_unresolved_export_is_stale_since_the_attempt():
    facts = RequestFacts(
        state=S.RECEIVED,
        state_since=days_ago(3),
        has_worldshare_id=False,
        export_unknown_since=days_ago(2),
    )
    found = detect(facts, POLICY, NOW)
    assert found is not None and found.since == days_ago(2)
