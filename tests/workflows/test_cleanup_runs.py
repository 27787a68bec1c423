"""Clean-up runs as the worker and the command line carry them out."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from app.borrowing import service
from app.borrowing.citation import Citation
from app.borrowing.cleanup import BatchStatus, CleanupBatch, CleanupItem
from app.borrowing.models import BorrowingRequest, RequestEvent, RequestOrigin
from app.borrowing.states import Trigger
from app.db import write_session
from app.errors import Conflict
from app.institutions.models import Institution
from app.jobs.models import Job
from app.jobs.queue import ClaimedJob
from app.observability import Metrics
from app.runtime import open_runtime
from app.workflows import cleanup
from app.workflows.kinds import RUN_CLEANUP
from tests.support.cli import illbridge, no_traceback
from tests.support.factories import make_institution


def stale_exports(engine, institution: Institution, count: int) -> list[int]:
    """Requests exported 90 days ago, in an institution with no WorldShare settings."""
    ids = []
    with write_session(engine) as session:
        for n in range(count):
            assert institution.id is not None
            request, _ = service.register_request(
                session,
                institution.id,
                alma_request_id=f"OLD-{n}",
                citation=Citation(title="Old"),
                requester_user_id=None,
                origin=RequestOrigin.ISO18626,
            )
            request.worldshare_request_id = str(5000 + n)
            service.apply_trigger(session, request, Trigger.EXPORTED, "test")
            ids.append(request.id)
        for event in session.exec(select(RequestEvent)).all():
            event.at -= timedelta(days=90)
            session.add(event)
        session.commit()
    return ids


def test_automatic_clean_up_is_off_unless_the_policy_asks(engine, settings):
    make_institution(engine, settings, "OFF")
    make_institution(engine, settings, "ON", policy={"auto_cleanup": True})
    with write_session(engine) as session:
        assert cleanup.start_automatic_runs(session) == 1
        # A run still going is not doubled.
        assert cleanup.start_automatic_runs(session) == 0
        session.commit()
        batches = session.exec(select(CleanupBatch)).all()
        jobs = session.exec(select(Job).where(Job.kind == RUN_CLEANUP.name)).all()
    assert [(b.dry_run, b.requested_by) for b in batches] == [(False, "auto_cleanup")]
    assert [job.institution_id for job in jobs] == [batches[0].institution_id]


def test_a_run_goes_on_where_it_stopped_and_a_failure_stops_nothing(engine, settings):
    institution = make_institution(engine, settings)
    ids = stale_exports(engine, institution, 3)
    with write_session(engine) as session:
        fresh = session.get(Institution, institution.id)
        assert fresh is not None
        batch = cleanup.start_run(session, fresh, limit=10, requested_by="test", queue=False)
        session.commit()
        batch_id = batch.id
    assert batch_id is not None

    async def steps() -> list[bool]:
        async with open_runtime(settings, Metrics()) as runtime:
            # A budget of nothing: one request per run, the rest left for the next job.
            return [await cleanup.run_batch(runtime, batch_id, budget_seconds=0) for _ in range(3)]

    assert asyncio.run(steps()) == [False, False, True]
    with Session(engine) as session:
        items = session.exec(select(CleanupItem).order_by(CleanupItem.id)).all()
        done = session.get(CleanupBatch, batch_id)
        states = {r.id: r.state for r in session.exec(select(BorrowingRequest)).all()}
    # WorldShare cannot be read (no settings): each request fails on its own, none twice.
    assert [(i.request_id, i.outcome) for i in items] == [(rid, "failed") for rid in ids]
    assert all("WorldShare" in (i.error or "") for i in items)
    assert done is not None and done.status is BatchStatus.DONE
    assert set(states.values()) == {"exported"}


def test_the_command_line_prints_the_dry_run_plan(engine, settings, database_url):
    institution = make_institution(engine, settings)
    ids = stale_exports(engine, institution, 2)
    result = illbridge(database_url, "cleanup", "--institution", "UNIV", "--dry-run")
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["dry_run"] is True
    assert [(i["request_id"], i["action"]) for i in plan["items"]] == [
        (rid, "leave")
        for rid in ids  # never polled: WorldShare's status is not known yet
    ]
    missing = illbridge(database_url, "cleanup", "--institution", "NOPE", "--dry-run")
    no_traceback(missing)
    assert missing.returncode != 0 and "NOPE" in missing.stderr


def test_a_run_whose_job_died_does_not_block_the_next(engine, settings):
    make_institution(engine, settings)
    with write_session(engine) as session:
        institution = session.exec(select(Institution)).one()
        first = cleanup.start_run(session, institution, limit=5, requested_by="test")
        with pytest.raises(Conflict):
            cleanup.start_run(session, institution, limit=5, requested_by="test")
        job = ClaimedJob(
            id=1,
            kind=RUN_CLEANUP.name,
            payload={"batch_id": first.id},
            attempts=8,
            max_attempts=8,
            lease_token="x",
            institution_id=institution.id,
            request_id=None,
        )
        cleanup.close_dead_run(session, job, "attempts exhausted")
        assert first.status is BatchStatus.DONE
        assert cleanup.start_run(session, institution, limit=5, requested_by="test").id
