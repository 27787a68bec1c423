"""The worker loop in-process, on SQLite and PostgreSQL, with test handlers."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from app.config import Settings
from app.db import create_db_engine, write_session
from app.jobs import queue
from app.jobs.models import Job, JobStatus
from app.jobs.queue import ClaimedJob
from app.jobs.registry import PermanentJobError, Registry
from app.jobs.worker import Worker
from app.observability import Metrics
from app.runtime import Runtime, open_runtime
from app.timeutil import utcnow
from app.upstream import PermanentUpstreamError, TransientUpstreamError
from tests.support.jobs import (
    AnyPayload,
    add_job,
    all_jobs,
    enqueue_test_job,
    job_kind,
    job_row,
    registry_for_tests,
    worker_for,
)
from tests.support.servers import trickling_http_server

pytestmark = pytest.mark.anyio
FINISHED = {JobStatus.SUCCEEDED.value, JobStatus.DEAD.value}
PATRON = "Ada Lovelace"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def running(settings: Settings, registry: Registry) -> AsyncIterator[Worker]:
    """A worker running in this event loop; stopped (and drained) on exit."""
    async with open_runtime(settings, Metrics()) as context:
        worker = worker_for(context, registry)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            yield worker
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=15)


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s")
        await asyncio.sleep(0.02)


async def all_finished(engine: Engine, count: int, timeout: float = 10.0) -> list[Job]:
    await until(
        lambda: sum(job.status in FINISHED for job in all_jobs(engine)) == count, timeout=timeout
    )
    return all_jobs(engine)


def registry_with(kind: str, run: Any, **kwargs: Any) -> Registry:
    registry = registry_for_tests()
    registry.add(job_kind(kind), run, **kwargs)
    return registry


async def test_jobs_run_once_each_and_succeed(settings: Settings, engine: Engine) -> None:
    seen: list[int] = []

    async def record(_ctx: Runtime, job: ClaimedJob, _payload: AnyPayload) -> None:
        seen.append(job.payload["n"])

    for n in range(20):
        add_job(engine, "test.record", {"n": n})
    async with running(settings, registry_with("test.record", record)):
        finished = await all_finished(engine, 20)
    assert sorted(seen) == list(range(20))
    assert {(job.status, job.attempts, job.last_error) for job in finished} == {
        ("succeeded", 1, None)
    }
    assert all(job.finished_at is not None and job.lease_token is None for job in finished)


async def test_never_more_than_the_configured_handlers_at_once(
    settings: Settings, engine: Engine
) -> None:
    active = 0
    peak = 0

    async def busy(_ctx: Runtime, _job: ClaimedJob, _payload: AnyPayload) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1

    for _ in range(15):
        add_job(engine, "test.busy")
    bounded = settings.model_copy(update={"worker_concurrency": 3})
    async with running(bounded, registry_with("test.busy", busy)):
        finished = await all_finished(engine, 15)
    assert {job.status for job in finished} == {"succeeded"}
    assert peak == 3


def _write_job_row_elsewhere(database_url: str, job_id: int) -> None:
    """Write the job's own row from another connection that refuses to wait on a lock."""
    if database_url.startswith("sqlite"):
        connection = sqlite3.connect(make_url(database_url).database or "", timeout=1.0)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("UPDATE job SET updated_at = updated_at WHERE id = ?", (job_id,))
            connection.commit()
        finally:
            connection.close()
        return
    other = create_db_engine(database_url)
    try:
        with other.begin() as connection:
            connection.execute(text("SET LOCAL lock_timeout = '1s'"))
            connection.execute(
                text("UPDATE job SET updated_at = updated_at WHERE id = :id"), {"id": job_id}
            )
    finally:
        other.dispose()


async def test_handlers_run_with_no_transaction_open(settings: Settings, engine: Engine) -> None:
    observed: dict[str, Any] = {}

    async def probe(ctx: Runtime, job: ClaimedJob, _payload: AnyPayload) -> None:
        observed["connections_in_use"] = ctx.engine.pool.checkedout()  # type: ignore[attr-defined]
        await asyncio.to_thread(_write_job_row_elsewhere, settings.database_url, job.id)
        observed["wrote"] = True

    add_job(engine, "test.probe")
    single = settings.model_copy(update={"worker_concurrency": 1, "worker_prefetch": 0})
    async with running(single, registry_with("test.probe", probe)):
        [job] = await all_finished(engine, 1)
    assert observed == {"connections_in_use": 0, "wrote": True}
    assert job.status == JobStatus.SUCCEEDED


async def test_transient_failures_are_retried_until_the_job_succeeds(
    settings: Settings, engine: Engine
) -> None:
    attempts: list[int] = []

    async def flaky(_ctx: Runtime, job: ClaimedJob, _payload: AnyPayload) -> None:
        attempts.append(job.attempts)
        if job.attempts < 3:
            raise TransientUpstreamError("alma: HTTP 503", status_code=503)

    job_id = add_job(engine, "test.flaky")
    async with running(settings, registry_with("test.flaky", flaky, max_attempts=5)):
        await all_finished(engine, 1)
    job = job_row(engine, job_id)
    assert attempts == [1, 2, 3]
    assert (job.status, job.attempts, job.last_error) == ("succeeded", 3, None)


async def test_retry_after_postpones_the_next_attempt(settings: Settings, engine: Engine) -> None:
    failed_at: list[datetime] = []

    async def throttled(_ctx: Runtime, _job: ClaimedJob, _payload: AnyPayload) -> None:
        failed_at.append(utcnow())
        raise TransientUpstreamError("worldshare: HTTP 429", status_code=429, retry_after=30.0)

    job_id = add_job(engine, "test.throttled")
    async with running(settings, registry_with("test.throttled", throttled)):
        await until(lambda: job_row(engine, job_id).status == JobStatus.QUEUED and bool(failed_at))
    job = job_row(engine, job_id)
    assert (job.attempts, job.last_error) == (1, "worldshare: HTTP 429")
    # The settings cap backoff at 0.5 s; only Retry-After can push the job this far out.
    assert job.run_at >= failed_at[0] + timedelta(seconds=30)
    assert len(failed_at) == 1


class DeadLetters:
    """An `on_dead` hook that checks it runs inside the transaction marking the job dead."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.calls: list[tuple[int, str, str, str]] = []

    def __call__(self, session: Session, job: ClaimedJob, error: str) -> None:
        own_view = session.execute(
            text("SELECT status FROM job WHERE id = :id"), {"id": job.id}
        ).scalar_one()
        other = create_db_engine(self.database_url)
        try:
            with other.connect() as connection:
                outside_view = connection.execute(
                    text("SELECT status FROM job WHERE id = :id"), {"id": job.id}
                ).scalar_one()
        finally:
            other.dispose()
        enqueue_test_job(session, "test.flagged", {"job": job.id})
        self.calls.append((job.id, error, own_view, outside_view))


async def test_exhausted_retries_go_dead_and_on_dead_commits_with_them(
    settings: Settings, engine: Engine
) -> None:
    async def down(_ctx: Runtime, _job: ClaimedJob, _payload: AnyPayload) -> None:
        raise TransientUpstreamError("alma: HTTP 503", status_code=503)

    on_dead = DeadLetters(settings.database_url)
    job_id = add_job(engine, "test.down")
    registry = registry_with("test.down", down, on_dead=on_dead, max_attempts=3)
    async with running(settings, registry):
        await until(lambda: job_row(engine, job_id).status == JobStatus.DEAD)
    job = job_row(engine, job_id)
    assert (job.attempts, job.last_error) == (3, "alma: HTTP 503")
    assert job.finished_at is not None
    # on_dead saw the job dead in its own transaction, still running from outside it.
    assert on_dead.calls == [(job_id, "alma: HTTP 503", "dead", "running")]
    flagged = [row for row in all_jobs(engine) if row.kind == "test.flagged"]
    assert [row.payload for row in flagged] == [{"job": job_id}]


@pytest.mark.parametrize(
    "error",
    [
        PermanentUpstreamError("worldshare: HTTP 400 (invalid ISSN)", status_code=400),
        PermanentJobError("request 7 no longer exists"),
    ],
    ids=["upstream", "job"],
)
async def test_permanent_failures_go_dead_on_the_first_attempt(
    settings: Settings, engine: Engine, error: Exception
) -> None:
    calls = 0

    async def refused(_ctx: Runtime, _job: ClaimedJob, _payload: AnyPayload) -> None:
        nonlocal calls
        calls += 1
        raise error

    on_dead = DeadLetters(settings.database_url)
    job_id = add_job(engine, "test.refused")
    async with running(settings, registry_with("test.refused", refused, on_dead=on_dead)):
        await until(lambda: job_row(engine, job_id).status == JobStatus.DEAD)
    job = job_row(engine, job_id)
    assert (calls, job.attempts, job.last_error) == (1, 1, str(error))
    assert [call[:2] for call in on_dead.calls] == [(job_id, str(error))]


async def test_unexpected_errors_are_recorded_by_type_only(
    settings: Settings, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def leaky(_ctx: Runtime, _job: ClaimedJob, _payload: AnyPayload) -> None:
        raise ValueError(f"cannot parse the loan of patron {PATRON}")

    on_dead = DeadLetters(settings.database_url)
    job_id = add_job(engine, "test.leaky")
    registry = registry_with("test.leaky", leaky, on_dead=on_dead, max_attempts=2)
    async with running(settings, registry):
        await until(lambda: job_row(engine, job_id).status == JobStatus.DEAD)
    job = job_row(engine, job_id)
    assert (job.attempts, job.last_error) == (2, "unexpected ValueError")
    assert [call[1] for call in on_dead.calls] == ["unexpected ValueError"]
    logged = [str(value) for record in caplog.records for value in vars(record).values()]
    assert not [entry for entry in logged if PATRON in entry]


async def test_a_job_of_unknown_kind_goes_dead(settings: Settings, engine: Engine) -> None:
    async def record(_ctx: Runtime, _job: ClaimedJob, _payload: AnyPayload) -> None:
        return None

    job_id = add_job(engine, "test.nobody")
    async with running(settings, registry_with("test.record", record)):
        await until(lambda: job_row(engine, job_id).status == JobStatus.DEAD)
    assert job_row(engine, job_id).last_error == "no handler for job kind 'test.nobody'"


async def test_the_lease_is_renewed_while_a_handler_runs(
    settings: Settings, engine: Engine
) -> None:
    running_handler = asyncio.Event()
    done = asyncio.Event()

    async def slow(_ctx: Runtime, _job: ClaimedJob, _payload: AnyPayload) -> None:
        running_handler.set()
        await done.wait()

    job_id = add_job(engine, "test.slow")
    short_lease = settings.model_copy(update={"job_lease_seconds": 0.3})
    stolen: list[ClaimedJob] = []
    async with running(short_lease, registry_with("test.slow", slow)):
        await asyncio.wait_for(running_handler.wait(), timeout=10)
        deadline = time.monotonic() + 1.2  # four lease lengths
        while time.monotonic() < deadline:
            stolen += await asyncio.to_thread(queue.claim, engine, 1, 30.0)
            await asyncio.sleep(0.05)
        done.set()
        await all_finished(engine, 1)
    assert stolen == []
    job = job_row(engine, job_id)
    assert (job.status, job.attempts) == ("succeeded", 1)


def _take_over(engine: Engine, job_id: int) -> None:
    """Another worker takes the job after this worker's lease ran out, and finishes it."""
    with write_session(engine) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)  # type: ignore[arg-type]
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    [newer] = queue.claim(engine, 1, 30.0)
    with write_session(engine) as session:
        assert queue.mark_succeeded(session, newer)
        session.commit()


@pytest.mark.parametrize("late_outcome", ["success", "transient", "permanent"])
async def test_a_late_finisher_does_not_overwrite_the_newer_outcome(
    settings: Settings, engine: Engine, late_outcome: str
) -> None:
    on_dead = DeadLetters(settings.database_url)

    async def overtaken(_ctx: Runtime, job: ClaimedJob, _payload: AnyPayload) -> None:
        await asyncio.to_thread(_take_over, engine, job.id)
        if late_outcome == "transient":
            raise TransientUpstreamError("alma: HTTP 503", status_code=503)
        if late_outcome == "permanent":
            raise PermanentJobError("refused")

    job_id = add_job(engine, "test.overtaken")
    # One slot, so this worker is not itself claiming while its handler runs.
    single = settings.model_copy(update={"worker_concurrency": 1, "worker_prefetch": 0})
    async with running(single, registry_with("test.overtaken", overtaken, on_dead=on_dead)):
        await until(lambda: job_row(engine, job_id).status in FINISHED)
        await asyncio.sleep(0.2)  # let the late finisher try to record its outcome
    job = job_row(engine, job_id)
    assert (job.status, job.attempts, job.last_error) == ("succeeded", 2, None)
    assert on_dead.calls == []


async def test_stopping_lets_running_handlers_finish_and_takes_no_new_work(
    settings: Settings, engine: Engine
) -> None:
    started = asyncio.Event()
    finished: list[int] = []

    async def slow(_ctx: Runtime, job: ClaimedJob, _payload: AnyPayload) -> None:
        started.set()
        await asyncio.sleep(0.5)
        finished.append(job.id)

    first = add_job(engine, "test.slow")
    async with open_runtime(settings, Metrics()) as context:
        worker = worker_for(context, registry_with("test.slow", slow))
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await asyncio.wait_for(started.wait(), timeout=10)
        # Due while the first handler is still running, but after the worker was told to stop.
        later = add_job(engine, "test.slow", run_at=utcnow() + timedelta(seconds=0.2))
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    assert finished == [first]
    assert job_row(engine, first).status == JobStatus.SUCCEEDED
    assert job_row(engine, later).status == JobStatus.QUEUED


async def test_jobs_claimed_ahead_go_back_to_the_queue_on_stop(
    settings: Settings, engine: Engine
) -> None:
    started = asyncio.Event()

    async def slow(_ctx: Runtime, _job: ClaimedJob, _payload: AnyPayload) -> None:
        started.set()
        await asyncio.sleep(0.3)

    ids = [add_job(engine, "test.slow") for _ in range(5)]
    one_slot = settings.model_copy(update={"worker_concurrency": 1, "worker_prefetch": 4})
    async with running(one_slot, registry_with("test.slow", slow)):
        await asyncio.wait_for(started.wait(), timeout=10)
        await until(lambda: all(job_row(engine, i).status == JobStatus.RUNNING for i in ids))
    rows = [job_row(engine, i) for i in ids]
    assert [row.status for row in rows].count(JobStatus.SUCCEEDED) == 1
    released = [row for row in rows if row.status == JobStatus.QUEUED]
    assert len(released) == 4
    # As if never claimed: no lease held, no attempt spent, due now for any worker.
    assert all(row.lease_token is None and row.attempts == 0 for row in released)


async def test_wake_claims_new_work_before_the_next_poll(
    settings: Settings, engine: Engine
) -> None:
    done: list[int] = []

    async def record(_ctx: Runtime, job: ClaimedJob, _payload: AnyPayload) -> None:
        done.append(job.id)

    slow_poll = settings.model_copy(update={"worker_poll_seconds": 30.0})
    async with running(slow_poll, registry_with("test.record", record)) as worker:
        await asyncio.sleep(0.2)  # past its first claim: now idle for 30 s
        job_id = add_job(engine, "test.record")
        worker.wake()
        await until(lambda: job_row(engine, job_id).status == JobStatus.SUCCEEDED, timeout=5)
    assert done == [job_id]


async def test_periodic_jobs_run_once_per_period_across_workers(
    settings: Settings, engine: Engine
) -> None:
    ran: list[str] = []

    async def tick(ctx: Runtime, job: ClaimedJob, _payload: AnyPayload) -> None:
        def key(session: Session) -> str:
            return str(
                session.execute(
                    text("SELECT dedupe_key FROM job WHERE id = :id"), {"id": job.id}
                ).scalar_one()
            )

        ran.append(await ctx.read(key))

    def registry() -> Registry:
        registry = registry_with("test.tick", tick)
        registry.every(0.25, job_kind("test.tick"))
        return registry

    eager = settings.model_copy(update={"periodic_tick_seconds": 0.02})
    async with running(eager, registry()), running(eager, registry()), running(eager, registry()):
        await asyncio.sleep(1.3)
    periods = [int(key.rsplit(":", 1)[1]) for key in ran]
    assert len(periods) == len(set(periods)), "a period ran more than once"
    # About five periods pass; one in which no worker got to tick (a machine stalled for longer
    # than a period) is skipped, not made up, so a loaded machine may see a gap.
    assert len(periods) >= 4
    # A period enqueued as the workers stopped waits, queued, for the next worker.
    assert {job.status for job in all_jobs(engine)} <= {"succeeded", "queued"}


async def test_a_failed_lease_renewal_does_not_lose_the_outcome(
    settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    renew = queue.extend_lease
    failures = 0

    def flaky_renew(*args: Any) -> bool:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise OperationalError("UPDATE job", {}, Exception("connection reset"))
        return renew(*args)

    monkeypatch.setattr(queue, "extend_lease", flaky_renew)
    runs: list[int] = []

    async def slow(_ctx: Runtime, job: ClaimedJob, _payload: AnyPayload) -> None:
        runs.append(job.attempts)
        # Run until the first renewal has failed, then past the lease it was to renew: only the
        # next renewal keeps the job this worker's. (A fixed 0.5 s run let a loop stalled for
        # longer than that end the handler before the heartbeat ever ran.)
        while failures == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.4)

    job_id = add_job(engine, "test.slow")
    short_lease = settings.model_copy(update={"job_lease_seconds": 0.3})
    async with running(short_lease, registry_with("test.slow", slow)):
        await all_finished(engine, 1)
    assert failures == 1
    assert runs == [1]
    assert (job_row(engine, job_id).status, job_row(engine, job_id).attempts) == ("succeeded", 1)


def _follow_up(job_id: int, fail: bool = False) -> Callable[[Session], None]:
    def finish(session: Session) -> None:
        enqueue_test_job(session, "test.follow_up", {"after": job_id})
        if fail:
            raise PermanentJobError("the follow-up cannot be recorded")

    return finish


async def test_a_handlers_finish_commits_with_its_success(
    settings: Settings, engine: Engine
) -> None:
    async def done(
        _ctx: Runtime, job: ClaimedJob, _payload: AnyPayload
    ) -> Callable[[Session], None]:
        return _follow_up(job.id)

    job_id = add_job(engine, "test.done")
    async with running(settings, registry_with("test.done", done)):
        await until(lambda: job_row(engine, job_id).status == JobStatus.SUCCEEDED)
    assert [(row.kind, row.payload) for row in all_jobs(engine) if row.id != job_id] == [
        ("test.follow_up", {"after": job_id})
    ]


async def test_a_failing_finish_rolls_back_and_fails_the_job(
    settings: Settings, engine: Engine
) -> None:
    async def done(
        _ctx: Runtime, job: ClaimedJob, _payload: AnyPayload
    ) -> Callable[[Session], None]:
        return _follow_up(job.id, fail=True)

    job_id = add_job(engine, "test.done")
    async with running(settings, registry_with("test.done", done)):
        await until(lambda: job_row(engine, job_id).status == JobStatus.DEAD)
    assert job_row(engine, job_id).last_error == "the follow-up cannot be recorded"
    assert [row.kind for row in all_jobs(engine)] == ["test.done"]


async def test_a_late_finishers_finish_writes_nothing(settings: Settings, engine: Engine) -> None:
    async def overtaken(
        _ctx: Runtime, job: ClaimedJob, _payload: AnyPayload
    ) -> Callable[[Session], None]:
        await asyncio.to_thread(_take_over, engine, job.id)
        return _follow_up(job.id)

    job_id = add_job(engine, "test.overtaken")
    # No prefetch: this worker must not claim the expired job itself before the other one does.
    single = settings.model_copy(update={"worker_concurrency": 1, "worker_prefetch": 0})
    async with running(single, registry_with("test.overtaken", overtaken)):
        await until(lambda: job_row(engine, job_id).status in FINISHED)
        await asyncio.sleep(0.2)  # let the late finisher try to record its outcome
    assert [(row.kind, row.status, row.attempts) for row in all_jobs(engine)] == [
        ("test.overtaken", "succeeded", 2)
    ]


def jobs_finished(worker: Worker, kind: str, outcome: str) -> float:
    labels = {"kind": kind, "outcome": outcome}
    registry = worker.context.metrics.registry
    return registry.get_sample_value("illbridge_jobs_finished_total", labels) or 0.0


async def test_a_handler_past_its_deadline_is_retried_not_held(
    settings: Settings, engine: Engine
) -> None:
    """A lender that trickles one byte at a time never trips the read timeout; the deadline
    ends the call, and the job is retried like any transient failure instead of held running."""

    async def fetch(ctx: Runtime, job: ClaimedJob, _payload: AnyPayload) -> None:
        await ctx.http.get(job.payload["url"])

    bounded = settings.model_copy(
        update={
            "job_deadline_seconds": 0.5,
            "job_lease_seconds": 3.0,
            "outbound_timeout_seconds": 2.0,
        }
    )
    with trickling_http_server(interval=0.1) as url:
        job_id = add_job(engine, "test.fetch", {"url": url})
        started = time.monotonic()
        async with running(bounded, registry_with("test.fetch", fetch)) as worker:
            await until(lambda: jobs_finished(worker, "test.fetch", "retried") >= 1, timeout=5)
            took = time.monotonic() - started
    assert took < 0.5 + 1.0
    job = job_row(engine, job_id)
    assert (job.status, job.lease_token) == (JobStatus.QUEUED, None)
    assert job.attempts >= 1
    assert job.last_error == "handler exceeded its deadline of 0.5 s"


async def test_handlers_still_running_when_the_drain_ends_give_their_jobs_back(
    settings: Settings, engine: Engine
) -> None:
    started = asyncio.Event()

    async def forever(_ctx: Runtime, _job: ClaimedJob, _payload: AnyPayload) -> None:
        started.set()
        await asyncio.Event().wait()

    job_id = add_job(engine, "test.forever")
    short_drain = settings.model_copy(update={"worker_drain_seconds": 0.3})
    async with running(short_drain, registry_with("test.forever", forever)) as worker:
        await asyncio.wait_for(started.wait(), timeout=10)
        stopping = time.monotonic()
    took = time.monotonic() - stopping
    assert 0.3 <= took < 1.5
    job = job_row(engine, job_id)
    # As if never claimed: queued, no lease, no attempt spent, no error.
    assert (job.status, job.lease_token, job.lease_expires_at) == (JobStatus.QUEUED, None, None)
    assert (job.attempts, job.last_error) == (0, None)
    assert jobs_finished(worker, "test.forever", "given_back") == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_claim_failures_while_the_database_is_down_are_logged_once_with_a_count(
    settings: Settings,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    claim = queue.claim
    failures = 0
    down = True

    def claim_unless_down(*args: Any) -> list[ClaimedJob]:
        nonlocal failures
        if down:
            failures += 1
            raise OperationalError("UPDATE job", {}, Exception("connection refused"))
        return claim(*args)

    monkeypatch.setattr(queue, "claim", claim_unless_down)
    caplog.set_level(logging.WARNING, logger="illbridge.worker")
    done: list[int] = []

    async def record(_ctx: Runtime, job: ClaimedJob, _payload: AnyPayload) -> None:
        done.append(job.id)

    async with running(settings, registry_with("test.record", record)):
        await until(lambda: failures >= 10)
        down = False
        job_id = add_job(engine, "test.record")
        await until(lambda: job_row(engine, job_id).status == JobStatus.SUCCEEDED)
    lines = [entry for entry in caplog.records if entry.getMessage() == "claim_failed"]
    # The first at once, the rest counted in one line when claims work again.
    assert [line.__dict__["count"] for line in lines] == [1, failures - 1]
    assert lines[-1].__dict__["resolved"] is True
    assert {line.__dict__["error_type"] for line in lines} == {"OperationalError"}
