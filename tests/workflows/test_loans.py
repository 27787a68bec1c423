"""Loan event handlers: idempotent, every step on the timeline, tasks instead of flag text."""

from __future__ import annotations

from datetime import date

import pytest
from sqlmodel import Session, select

from app.alma.webhooks import LoanEventKind
from app.borrowing.models import BorrowingRequest, RequestEvent, RequestOrigin
from app.borrowing.states import RequestState
from app.borrowing.tasks import StaffTask, TaskKind
from app.db import write_session
from app.jobs.models import Job
from app.jobs.queue import ClaimedJob
from app.workflows.kinds import LoanEventPayload
from app.workflows.loans import apply_loan_event
from tests.support.factories import make_institution


def request_in(engine, state: RequestState) -> int:  # type: ignore[no-untyped-def]
    with write_session(engine) as session:
        request = BorrowingRequest(
            institution_id=1,
            alma_request_id="ALMA-9",
            citation={"title": "T"},
            origin=RequestOrigin.ISO18626,
            state=state,
            item_barcode="ILL000000001",
            worldshare_request_id="555",
            lender_due_date=date(2027, 1, 15),
            patron_due_date=date(2027, 1, 8),
        )
        session.add(request)
        session.commit()
        assert request.id is not None
        return request.id


def deliver(engine, request_id: int, event: LoanEventKind, **fields: object) -> None:  # type: ignore[no-untyped-def]
    job = ClaimedJob(
        id=0,
        kind="alma.loan_event",
        payload={},
        attempts=1,
        max_attempts=8,
        lease_token="t",
        institution_id=1,
        request_id=request_id,
    )
    payload = LoanEventPayload(event_id="e", event=event, loan_id="L1", **fields)  # type: ignore[arg-type]
    with write_session(engine) as session:
        apply_loan_event(session, job, payload)
        session.commit()


def look(engine, request_id: int) -> tuple[BorrowingRequest, list[str], list[TaskKind], list[str]]:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        request = session.get(BorrowingRequest, request_id)
        assert request is not None
        events = session.exec(
            select(RequestEvent.kind).where(RequestEvent.request_id == request_id)
        ).all()
        tasks = session.exec(select(StaffTask.kind).where(StaffTask.request_id == request_id)).all()
        notices = [j.payload.get("notice") for j in session.exec(select(Job)).all()]
        return request, list(events), list(tasks), notices


def test_loan_created_twice_puts_the_request_on_loan_once(settings, engine):
    make_institution(engine, settings)
    rid = request_in(engine, RequestState.IN_LIBRARY)
    for _ in range(2):
        deliver(engine, rid, LoanEventKind.LOAN_CREATED, due_date=date(2027, 1, 8), item_id="I1")
    request, events, tasks, _ = look(engine, rid)
    assert (request.state, request.alma_loan_id, request.alma_item_id) == ("on_loan", "L1", "I1")
    assert events.count("patron_loaned") == 1 and events.count("alma_loan_event") == 2
    assert tasks == [] and not request.needs_attention


def test_a_patron_due_date_past_the_lenders_opens_one_drift_task(settings, engine):
    make_institution(engine, settings)
    rid = request_in(engine, RequestState.ON_LOAN)
    deliver(engine, rid, LoanEventKind.LOAN_RENEWED, due_date=date(2027, 1, 14))
    assert look(engine, rid)[2] == []
    for _ in range(2):
        deliver(engine, rid, LoanEventKind.LOAN_DUE_DATE, due_date=date(2027, 1, 20))
    request, events, tasks, _ = look(engine, rid)
    assert request.patron_due_date == date(2027, 1, 20)
    assert tasks == [TaskKind.DUE_DATE_DRIFT] and "due_date_drift" in events


@pytest.mark.parametrize(
    ("event", "task"),
    [
        (LoanEventKind.LOAN_LOST, TaskKind.LOST),
        (LoanEventKind.LOAN_CLAIMED_RETURNED, TaskKind.CLAIMED_RETURNED),
    ],
)
def test_lost_and_claimed_returned_are_staff_tasks(settings, engine, event, task):
    make_institution(engine, settings)
    rid = request_in(engine, RequestState.ON_LOAN)
    deliver(engine, rid, event)
    deliver(engine, rid, event)
    assert look(engine, rid)[2] == [task]


@pytest.mark.parametrize(
    ("close_on", "notices"),
    [("patron_return", ["loan_completed"]), ("shipped_return", [])],
)
def test_the_return_scan_closes_in_alma_only_under_close_on_patron_return(
    settings, engine, close_on, notices
):
    make_institution(engine, settings, policy={"close_on": close_on})
    rid = request_in(engine, RequestState.ON_LOAN)
    deliver(engine, rid, LoanEventKind.LOAN_RETURNED)
    deliver(engine, rid, LoanEventKind.LOAN_RETURNED)
    request, events, tasks, queued = look(engine, rid)
    assert request.state == "returned" and events.count("patron_returned") == 1
    assert tasks == [TaskKind.MARK_RETURNED_IN_WORLDSHARE]
    assert queued == notices
