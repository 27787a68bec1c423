"""The job table's functions on SQLite and PostgreSQL: outbox enqueue, leased claims, guarded
finishes and the operator's replay."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from app.db import read_session, write_session
from app.jobs import queue
from app.jobs.models import JobStatus
from app.jobs.queue import AttemptLimits, ClaimedJob
from app.timeutil import utcnow
from tests.support.jobs import add_job, all_jobs, enqueue_test_job, job_row

POSTGRES_ONLY = pytest.mark.parametrize(
    "database_url",
    [pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)],
    indirect=True,
)
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _claim_one(
    engine: Engine, lease_seconds: float = 30.0, limits: AttemptLimits | None = None
) -> ClaimedJob:
    claimed = queue.claim(engine, 1, lease_seconds, limits)
    assert len(claimed) == 1
    return claimed[0]


def _claim_after_lease_expires(engine: Engine, timeout: float = 5.0) -> ClaimedJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if claimed := queue.claim(engine, 1, 30.0):
            return claimed[0]
        time.sleep(0.02)
    raise AssertionError("the expired lease was never reclaimed")


def _finish(engine: Engine, job: ClaimedJob, outcome: str) -> bool:
    with write_session(engine) as session:
        if outcome == "succeeded":
            done = queue.mark_succeeded(session, job)
        elif outcome == "retry":
            done = queue.mark_retry(session, job, delay=0.0, error="stale: HTTP 503")
        else:
            done = queue.mark_dead(session, job, error="stale: HTTP 400")
        session.commit()
    return done


# enqueue: the outbox joins the caller's transaction


def test_enqueued_job_is_stored_with_the_callers_commit(engine: Engine) -> None:
    before = utcnow()
    with write_session(engine) as session:
        assert enqueue_test_job(session, "test.job", {"request": 7})
        # Not visible to anyone else (a worker) before the caller commits.
        assert all_jobs(engine) == []
        session.commit()
    [job] = all_jobs(engine)
    assert (job.kind, job.payload, job.status) == ("test.job", {"request": 7}, "queued")
    assert (job.attempts, job.lease_token) == (0, None)
    assert before <= job.run_at <= utcnow()


def test_rolled_back_transaction_leaves_no_job(engine: Engine) -> None:
    with pytest.raises(RuntimeError), write_session(engine) as session:
        assert enqueue_test_job(session, "test.job", {"n": 1})
        assert enqueue_test_job(session, "test.job", {"n": 2}, dedupe_key="k")
        raise RuntimeError("the caller's own work failed")
    assert all_jobs(engine) == []
    assert queue.claim(engine, 10, 30.0) == []


def test_second_enqueue_with_a_dedupe_key_is_a_noop(engine: Engine) -> None:
    add_job(engine, payload={"first": True}, dedupe_key="export:42")
    with write_session(engine) as session:
        assert (
            enqueue_test_job(session, "test.job", {"first": False}, dedupe_key="export:42") is False
        )
        # The caller's transaction is intact: it can keep writing and commit.
        assert enqueue_test_job(session, "test.other", {"after": True}) is True
        session.commit()
    jobs = all_jobs(engine)
    assert [(job.kind, job.payload) for job in jobs] == [
        ("test.job", {"first": True}),
        ("test.other", {"after": True}),
    ]


def test_duplicate_in_the_same_transaction_is_a_noop(engine: Engine) -> None:
    with write_session(engine) as session:
        assert enqueue_test_job(session, "test.job", dedupe_key="poll:7:1") is True
        assert enqueue_test_job(session, "test.job", dedupe_key="poll:7:1") is False
        assert enqueue_test_job(session, "test.job", dedupe_key="poll:7:2") is True
        session.commit()
    assert [job.dedupe_key for job in all_jobs(engine)] == ["poll:7:1", "poll:7:2"]


def test_jobs_without_a_dedupe_key_are_never_deduplicated(engine: Engine) -> None:
    for _ in range(3):
        add_job(engine, payload={"same": True})
    assert len(all_jobs(engine)) == 3


# claim: leases


def test_claim_leases_due_jobs_only(engine: Engine) -> None:
    now = utcnow()
    add_job(engine, payload={"n": 1}, run_at=now - timedelta(seconds=5))
    add_job(engine, payload={"n": 2}, run_at=now - timedelta(seconds=10))
    add_job(engine, payload={"n": 3}, run_at=now + timedelta(hours=1))
    claimed = queue.claim(engine, 10, 30.0)
    assert sorted(job.payload["n"] for job in claimed) == [1, 2]
    assert all(job.attempts == 1 for job in claimed)
    for job in claimed:
        row = job_row(engine, job.id)
        assert row.status == JobStatus.RUNNING
        assert row.lease_token == job.lease_token
        assert row.lease_expires_at is not None
        assert timedelta(seconds=29) < row.lease_expires_at - utcnow() <= timedelta(seconds=30)
    # Leased and future jobs are not handed out again.
    assert queue.claim(engine, 10, 30.0) == []


def test_claim_takes_the_longest_waiting_job_first(engine: Engine) -> None:
    now = utcnow()
    for n, age in [(1, 5), (2, 60), (3, 30)]:
        add_job(engine, payload={"n": n}, run_at=now - timedelta(seconds=age))
    assert [_claim_one(engine).payload["n"] for _ in range(3)] == [2, 3, 1]


def test_claim_takes_at_most_the_limit(engine: Engine) -> None:
    for n in range(5):
        add_job(engine, payload={"n": n})
    assert len(queue.claim(engine, 2, 30.0)) == 2
    assert len(queue.claim(engine, 10, 30.0)) == 3
    assert queue.claim(engine, 10, 30.0) == []


def test_concurrent_claimers_never_share_a_job(engine: Engine) -> None:
    with write_session(engine) as session:
        for n in range(300):
            enqueue_test_job(session, "test.job", {"n": n})
        session.commit()
    expected = sorted(job.id for job in all_jobs(engine) if job.id is not None)

    def drain() -> list[int]:
        taken: list[int] = []
        while claimed := queue.claim(engine, 7, 30.0):
            taken.extend(job.id for job in claimed)
        return taken

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = [future.result(timeout=60) for future in [pool.submit(drain) for _ in range(6)]]
    taken = sorted(job_id for result in results for job_id in result)
    assert taken == expected
    assert sum(1 for result in results if result) > 1


@POSTGRES_ONLY
def test_claim_skips_a_job_locked_by_another_transaction(engine: Engine) -> None:
    add_job(engine, payload={"n": 1})
    add_job(engine, payload={"n": 2})
    first_id = all_jobs(engine)[0].id
    with engine.connect() as locker:
        locker.execute(text("SELECT id FROM job WHERE id = :id FOR UPDATE"), {"id": first_id})
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(queue.claim, engine, 10, 30.0)
            try:
                claimed = future.result(timeout=5)
            finally:
                locker.rollback()
    assert [job.payload["n"] for job in claimed] == [2]
    assert [job.payload["n"] for job in queue.claim(engine, 10, 30.0)] == [1]


@SQLITE_ONLY
def test_claim_waits_for_another_writer_instead_of_failing(engine: Engine) -> None:
    add_job(engine)
    released = threading.Event()
    with engine.connect() as writer:
        writer.exec_driver_sql("UPDATE job SET updated_at = updated_at")  # takes the write lock
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(queue.claim, engine, 10, 30.0)
            try:
                time.sleep(0.2)
                # It cannot have claimed anything while the other writer holds the lock.
                assert not future.done()
                writer.commit()
                released.set()
                claimed = future.result(timeout=10)
            finally:
                if not released.is_set():
                    writer.rollback()
    assert len(claimed) == 1


# Expired leases and stale finishers


def test_expired_lease_is_claimed_again_with_a_new_token(engine: Engine) -> None:
    add_job(engine)
    first = _claim_one(engine, lease_seconds=0.05)
    second = _claim_after_lease_expires(engine)
    assert second.id == first.id
    assert second.lease_token != first.lease_token
    assert second.attempts == 2


def test_extended_lease_is_not_claimed_again(engine: Engine) -> None:
    add_job(engine)
    job = _claim_one(engine, lease_seconds=0.1)
    assert queue.extend_lease(engine, job, 30.0)
    time.sleep(0.2)
    assert queue.claim(engine, 10, 30.0) == []


@pytest.mark.parametrize("stale_outcome", ["succeeded", "retry", "dead"])
def test_stale_finisher_cannot_overwrite_the_newer_outcome(
    engine: Engine, stale_outcome: str
) -> None:
    add_job(engine)
    first = _claim_one(engine, lease_seconds=0.05)
    second = _claim_after_lease_expires(engine)
    assert _finish(engine, second, "succeeded")
    finished = job_row(engine, second.id)

    assert _finish(engine, first, stale_outcome) is False
    assert queue.extend_lease(engine, first, 30.0) is False

    job = job_row(engine, first.id)
    assert job.status == JobStatus.SUCCEEDED
    assert (job.attempts, job.last_error, job.run_at) == (2, None, finished.run_at)
    assert job.finished_at == finished.finished_at


@pytest.mark.parametrize("stale_outcome", ["succeeded", "retry", "dead"])
def test_stale_finisher_cannot_take_back_a_running_job(engine: Engine, stale_outcome: str) -> None:
    add_job(engine)
    first = _claim_one(engine, lease_seconds=0.05)
    second = _claim_after_lease_expires(engine)

    assert _finish(engine, first, stale_outcome) is False
    job = job_row(engine, first.id)
    assert (job.status, job.lease_token, job.last_error) == ("running", second.lease_token, None)
    # The current holder still finishes normally.
    assert _finish(engine, second, "dead")
    assert job_row(engine, first.id).status == JobStatus.DEAD


# Outcomes


def test_success_commits_with_the_callers_transaction(engine: Engine) -> None:
    add_job(engine)
    job = _claim_one(engine)
    with write_session(engine) as session:
        assert queue.mark_succeeded(session, job)
        session.rollback()
    assert job_row(engine, job.id).status == JobStatus.RUNNING
    assert _finish(engine, job, "succeeded")
    row = job_row(engine, job.id)
    assert (row.status, row.lease_token, row.lease_expires_at) == ("succeeded", None, None)
    assert row.finished_at is not None
    assert queue.claim(engine, 10, 30.0) == []


def test_retry_waits_until_the_delay_has_passed(engine: Engine) -> None:
    add_job(engine)
    job = _claim_one(engine)
    before = utcnow()
    with write_session(engine) as session:
        assert queue.mark_retry(session, job, delay=120.0, error="alma: HTTP 503")
        session.commit()
    row = job_row(engine, job.id)
    assert (row.status, row.lease_token, row.last_error) == ("queued", None, "alma: HTTP 503")
    assert row.run_at >= before + timedelta(seconds=120)
    assert queue.claim(engine, 10, 30.0) == []


def test_retry_due_now_is_claimed_as_the_next_attempt(engine: Engine) -> None:
    add_job(engine)
    first = _claim_one(engine)
    assert _finish(engine, first, "retry")
    again = _claim_one(engine)
    assert (again.id, again.attempts) == (first.id, 2)


def test_long_errors_are_truncated(engine: Engine) -> None:
    add_job(engine)
    job = _claim_one(engine)
    with write_session(engine) as session:
        assert queue.mark_dead(session, job, error="x" * 5000)
        session.commit()
    assert job_row(engine, job.id).last_error == "x" * queue.ERROR_MAX_CHARS


def test_dead_job_is_finished_and_never_claimed(engine: Engine) -> None:
    add_job(engine)
    job = _claim_one(engine)
    assert _finish(engine, job, "dead")
    row = job_row(engine, job.id)
    assert (row.status, row.last_error, row.lease_token) == ("dead", "stale: HTTP 400", None)
    assert row.finished_at is not None
    assert queue.claim(engine, 10, 30.0) == []


# The operator's replay (POST /api/v1/jobs/{id}/retry)


def test_requeued_dead_job_runs_again_from_its_first_attempt(engine: Engine) -> None:
    add_job(engine)
    job = _claim_one(engine, limits=AttemptLimits({"test.job": 3}, default=8))
    assert _finish(engine, job, "dead")
    with write_session(engine) as session:
        assert queue.requeue_dead(session, job.id)
        session.commit()
    row = job_row(engine, job.id)
    assert (row.status, row.attempts, row.finished_at) == ("queued", 0, None)
    assert row.run_at <= utcnow()
    again = _claim_one(engine, limits=AttemptLimits({"test.job": 3}, default=8))
    assert (again.id, again.attempts, again.max_attempts) == (job.id, 1, 3)


def test_requeue_joins_the_callers_transaction(engine: Engine) -> None:
    add_job(engine)
    job = _claim_one(engine)
    assert _finish(engine, job, "dead")
    with write_session(engine) as session:
        assert queue.requeue_dead(session, job.id)
        session.rollback()
    assert job_row(engine, job.id).status == JobStatus.DEAD


@pytest.mark.parametrize("status", ["queued", "running", "succeeded"])
def test_only_dead_jobs_can_be_requeued(engine: Engine, status: str) -> None:
    add_job(engine)
    [job_id] = [job.id for job in all_jobs(engine)]
    assert job_id is not None
    if status != "queued":
        job = _claim_one(engine)
        if status == "succeeded":
            assert _finish(engine, job, "succeeded")
    before = job_row(engine, job_id)
    with write_session(engine) as session:
        assert queue.requeue_dead(session, job_id) is False
        session.commit()
    after = job_row(engine, job_id)
    assert (after.status, after.attempts, after.lease_token) == (
        status,
        before.attempts,
        before.lease_token,
    )


def test_requeue_of_a_missing_job_is_refused(engine: Engine) -> None:
    with write_session(engine) as session:
        assert queue.requeue_dead(session, 999_999) is False


def test_queue_depth_counts_only_jobs_due_now(engine: Engine) -> None:
    now = utcnow()
    add_job(engine, run_at=now - timedelta(minutes=5))
    add_job(engine, run_at=now - timedelta(minutes=1))
    add_job(engine, run_at=now + timedelta(hours=1))
    with read_session(engine) as session:
        depth, oldest = queue.queue_depth(session, None)
    assert depth == 2
    assert oldest is not None
    assert abs(oldest - (now - timedelta(minutes=5))) < timedelta(seconds=1)


# serial keys: one request's Alma notices go out one at a time, in order


def test_jobs_of_one_serial_key_run_one_at_a_time_in_order(engine: Engine) -> None:
    first = add_job(engine, "notify", serial_key="notify:1")
    second = add_job(engine, "notify", serial_key="notify:1")
    other = add_job(engine, "notify", serial_key="notify:2")

    claimed = queue.claim(engine, 10, 30.0)
    # The second notice of request 1 waits while the first is running; request 2's goes.
    assert sorted(job.id for job in claimed) == [first, other]
    assert queue.claim(engine, 10, 30.0) == []

    # A retry puts the first back in the queue: still ahead of the second, never behind it.
    [running] = [job for job in claimed if job.id == first]
    assert _finish(engine, running, "retry")
    [again] = queue.claim(engine, 10, 30.0)
    assert again.id == first
    assert _finish(engine, again, "succeeded")
    [then] = queue.claim(engine, 10, 30.0)
    assert then.id == second


def test_a_dead_job_does_not_block_its_serial_key_forever(engine: Engine) -> None:
    first = add_job(engine, "notify", serial_key="notify:9")
    second = add_job(engine, "notify", serial_key="notify:9")
    assert _finish(engine, _claim_one(engine), "dead")
    assert _claim_one(engine).id == second
    assert first != second
