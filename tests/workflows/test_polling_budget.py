"""Budgeted polling: the dispatcher never queues more reads than the key's budget allows, pays
the most urgent first, re-reads a changed request on its new cadence, and stops while OCLC's
429 pause lasts."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text

from app.borrowing.models import BorrowingRequest
from app.borrowing.states import RequestState
from app.db import read_session, write_session
from app.institutions.secrets import load_secret_box
from app.timeutil import utcnow
from app.workflows.polling import dispatch_due_polls
from app.worldshare import budget
from tests.support.factories import make_institution, sandbox_worldshare

H = timedelta(hours=1)
D = timedelta(days=1)
KEY = budget.key_id("sandbox-key")


def institution(engine: Any, settings: Any, daily_call_budget: int) -> int:
    made = make_institution(
        engine,
        settings,
        worldshare={
            **sandbox_worldshare("https://worldshare.example"),
            "daily_call_budget": daily_call_budget,
        },
    )
    assert made.id is not None
    return made.id


def add(
    engine: Any,
    institution_id: int,
    name: str,
    state: RequestState,
    *,
    next_poll_at: datetime,
    due_in_days: int | None = None,
    scheduled_at: datetime | None = None,
    updated_at: datetime | None = None,
    exported_at: datetime | None = None,
) -> int:
    now = utcnow()
    with write_session(engine) as session:
        request = BorrowingRequest(
            institution_id=institution_id,
            alma_request_id=name,
            citation={"title": name},
            state=state,
            worldshare_request_id=f"WS-{name}",
            lender_due_date=(now + due_in_days * D).date() if due_in_days is not None else None,
            next_poll_at=next_poll_at,
            poll_scheduled_at=scheduled_at or now - 10 * D,
            created_at=exported_at or now - 20 * D,
            updated_at=updated_at or now - 20 * D,
        )
        session.add(request)
        session.commit()
        assert request.id is not None
        return request.id


def dispatch(engine: Any, settings: Any, now: datetime) -> int:
    with write_session(engine) as session:
        queued = dispatch_due_polls(session, load_secret_box(settings), now=now)
        session.commit()
    return queued


def polled_ids(engine: Any) -> list[int]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                text("SELECT request_id FROM job WHERE kind = 'worldshare.poll' ORDER BY id")
            ).scalars()
        )


def finish_polls(engine: Any, now: datetime) -> None:
    """The worker made the queued reads: each counted, each job done."""
    with write_session(engine) as session:
        waiting = session.execute(
            text("SELECT count(*) FROM job WHERE kind = 'worldshare.poll' AND status = 'queued'")
        ).scalar_one()
        if waiting:
            budget.count_call(session, KEY, now, calls=waiting)
        session.execute(text("UPDATE job SET status = 'succeeded' WHERE status = 'queued'"))
        session.commit()


def test_the_dispatcher_never_queues_more_than_the_budget_allows(engine, settings):
    # 240 calls a day: 10 an hour, 8 of them for reads.
    inst = institution(engine, settings, daily_call_budget=240)
    now = utcnow().replace(minute=5, second=0, microsecond=0)
    # Just exported, so each wants reading hourly: 1,200 reads a day wanted, 240 paid.
    for n in range(50):
        add(engine, inst, f"R{n}", RequestState.EXPORTED, next_poll_at=now - H, exported_at=now)

    assert dispatch(engine, settings, now) == 8
    # Queued reads are spent already: a second dispatch in the hour adds none.
    assert dispatch(engine, settings, now + timedelta(minutes=1)) == 0
    finish_polls(engine, now)
    assert dispatch(engine, settings, now + timedelta(minutes=2)) == 0

    # Over a whole day, hour by hour, the key never spends more than its budget.
    for hour in range(1, 30):
        moment = now + hour * H
        dispatch(engine, settings, moment)
        finish_polls(engine, moment)
        with read_session(engine) as session:
            in_hour, in_window = budget.calls_spent(session, KEY, moment)
        assert in_hour <= 10
        assert in_window <= 240
    assert len(polled_ids(engine)) == 8 * 30


def test_a_short_budget_pays_the_most_urgent_reads_first(engine, settings):
    # 168 calls a day: 7 an hour, 5 of them for reads, for 10 due reads.
    inst = institution(engine, settings, daily_call_budget=168)
    now = utcnow()
    quiet = [
        add(
            engine, inst, f"LOAN{n}", RequestState.ON_LOAN, next_poll_at=now - 2 * H, due_in_days=60
        )
        for n in range(5)
    ]
    urgent = [
        add(
            engine,
            inst,
            f"RENEW{n}",
            RequestState.RENEWAL_REQUESTED,
            next_poll_at=now - timedelta(minutes=30),
            due_in_days=60,
        )
        for n in range(5)
    ]
    assert dispatch(engine, settings, now) == 5
    assert sorted(polled_ids(engine)) == sorted(urgent)
    # The quiet reads wait: still due, served when the budget allows.
    with read_session(engine) as session:
        waiting = [session.get(BorrowingRequest, i) for i in quiet]
        assert all(r is not None and r.next_poll_at <= now for r in waiting)


def test_a_request_that_changed_is_read_on_its_new_cadence(engine, settings):
    inst = institution(engine, settings, daily_call_budget=40_000)
    now = utcnow()
    # Read a day ago while on loan far from its due date: next read four days after that.
    asked = add(
        engine,
        inst,
        "ASKED",
        RequestState.RENEWAL_REQUESTED,
        next_poll_at=now + 3 * D,
        due_in_days=40,
        scheduled_at=now - D,
        updated_at=now - timedelta(minutes=10),
    )
    assert dispatch(engine, settings, now) == 0
    with read_session(engine) as session:
        request = session.get(BorrowingRequest, asked)
        assert request is not None and request.next_poll_at is not None
        # A renewal asked ten minutes ago is read within the hour of asking.
        assert request.next_poll_at <= now + 50 * timedelta(minutes=1)
    assert dispatch(engine, settings, now + H) == 1
    assert polled_ids(engine) == [asked]


def test_no_read_is_dispatched_while_the_key_is_paused(engine, settings):
    inst = institution(engine, settings, daily_call_budget=40_000)
    now = utcnow()
    add(engine, inst, "P1", RequestState.EXPORTED, next_poll_at=now - H)
    with write_session(engine) as session:
        until = budget.pause_key(session, KEY, now, retry_after=600)
        # Another worker's shorter pause never shortens it.
        assert budget.pause_key(session, KEY, now, retry_after=60) == until
        session.commit()
    assert dispatch(engine, settings, now + timedelta(minutes=9)) == 0
    assert dispatch(engine, settings, now + timedelta(minutes=11)) == 1
