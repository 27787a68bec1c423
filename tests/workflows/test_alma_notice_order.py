"""One request's Alma notices go out one at a time, in the order they were queued: a notice
waiting for a retry holds back the ones after it, and other requests' notices are not held."""

from __future__ import annotations

from app.borrowing import service
from app.borrowing.citation import Citation
from app.borrowing.models import BorrowingRequest, RequestOrigin
from app.borrowing.states import AlmaNotice
from app.db import write_session
from app.jobs import queue
from app.workflows.kinds import NOTIFY_ALMA
from app.workflows.transitions import queue_notice
from tests.support.factories import make_institution


def _iso_request(session, institution_id: int, alma_id: str) -> BorrowingRequest:
    request, _ = service.register_request(
        session,
        institution_id,
        alma_request_id=alma_id,
        citation=Citation(title="Middlemarch"),
        requester_user_id=None,
        origin=RequestOrigin.ISO18626,
    )
    return request


def test_a_retried_will_supply_is_never_overtaken_by_loaned(engine, settings):
    institution = make_institution(engine, settings)
    assert institution.id is not None
    with write_session(engine) as session:
        first = _iso_request(session, institution.id, "ALMA-ORDER-1")
        other = _iso_request(session, institution.id, "ALMA-ORDER-2")
        queue_notice(session, first, AlmaNotice.WILL_SUPPLY, key="1")
        queue_notice(session, first, AlmaNotice.LOANED, key="2")
        queue_notice(session, other, AlmaNotice.WILL_SUPPLY, key="3")
        session.commit()
        first_id, other_id = first.id, other.id

    claimed = queue.claim(engine, 10, 30.0)
    assert all(job.kind == NOTIFY_ALMA.name for job in claimed)
    # WillSupply of the first request and the other request's notice; Loaned waits its turn.
    assert sorted((job.request_id, job.payload["notice"]) for job in claimed) == sorted(
        [(first_id, "will_supply"), (other_id, "will_supply")]
    )
    will_supply = next(job for job in claimed if job.request_id == first_id)
    with write_session(engine) as session:
        assert queue.mark_retry(session, will_supply, delay=0.0, error="Alma: HTTP 503")
        session.commit()
    # The retry is taken before Loaned, however often it has to be tried.
    [again] = queue.claim(engine, 10, 30.0)
    assert (again.request_id, again.payload["notice"]) == (first_id, "will_supply")
    with write_session(engine) as session:
        assert queue.mark_succeeded(session, again)
        session.commit()
    [loaned] = queue.claim(engine, 10, 30.0)
    assert (loaned.request_id, loaned.payload["notice"]) == (first_id, "loaned")
