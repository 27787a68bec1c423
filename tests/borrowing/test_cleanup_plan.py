"""What clean-up does with one request, given what WorldShare shows: the pure plan, as a table.

The dry run and the real run both call `plan_step`; only the WorldShare status they give it
differs (cached for a dry run, read afresh for a real one).
"""

from __future__ import annotations

import pytest

from app.borrowing.cleanup import Candidate, CleanupAction, plan_step
from app.borrowing.models import RequestOrigin
from app.borrowing.states import AlmaNotice, LenderOutcome, RequestState

S, LO, A = RequestState, LenderOutcome, CleanupAction
ISO, REST = RequestOrigin.ISO18626, RequestOrigin.API

CASES = [
    # state, origin, WorldShare status, its outcome → action, notice
    (S.EXPORTED, ISO, "Closed", LO.closed, A.ISO_NOTICE, AlmaNotice.CANCELLED),
    (S.EXPORTED, ISO, "Cancelled", LO.cancelled, A.ISO_NOTICE, AlmaNotice.CANCELLED),
    (S.EXPORTED, ISO, "Unfilled", LO.unfilled, A.ISO_NOTICE, AlmaNotice.UNFILLED),
    (S.EXPORTED, ISO, "Expired", LO.unfilled, A.ISO_NOTICE, AlmaNotice.UNFILLED),
    (S.SHIPPED, ISO, "Closed", LO.closed, A.ISO_NOTICE, AlmaNotice.CANCELLED),
    (S.EXPORTED, REST, "Closed", LO.closed, A.ALMA_REST_CANCEL, None),
    (S.SHIPPED, REST, "Unfilled", LO.unfilled, A.ALMA_REST_CANCEL, None),
    # WorldShare still open: left alone.
    (S.EXPORTED, ISO, "Pending", LO.pending, A.LEAVE, None),
    (S.SHIPPED, REST, "Shipped", LO.shipped, A.LEAVE, None),
    (S.EXPORTED, REST, "Recalled", None, A.LEAVE, None),  # unknown status: never guessed
    (S.EXPORTED, REST, None, None, A.LEAVE, None),  # never polled
    # Received in the library, on loan, renewal asked or returned: never cancelled.
    (S.IN_LIBRARY, ISO, "Closed", LO.closed, A.LEAVE, None),
    (S.ON_LOAN, REST, "Closed", LO.closed, A.LEAVE, None),
    (S.ON_LOAN, ISO, "Cancelled", LO.cancelled, A.LEAVE, None),
    (S.RENEWAL_REQUESTED, REST, "Unfilled", LO.unfilled, A.LEAVE, None),
    (S.RETURNED, ISO, "Closed", LO.closed, A.LEAVE, None),
]


@pytest.mark.parametrize(("state", "origin", "status", "outcome", "action", "notice"), CASES)
def test_plan_step(state, origin, status, outcome, action, notice):
    candidate = Candidate(
        request_id=1, state=state, origin=origin, has_worldshare_id=True, stale_reason="x"
    )
    step = plan_step(candidate, status, outcome)
    assert (step.action, step.notice) == (action, notice)
    assert step.why


def test_no_worldshare_request_is_left_alone():
    candidate = Candidate(1, S.EXPORTED, REST, has_worldshare_id=False, stale_reason="x")
    assert plan_step(candidate, None, None).action is A.LEAVE
