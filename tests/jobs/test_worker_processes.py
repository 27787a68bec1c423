"""Real worker processes (`python -m tests.support.worker_process`) sharing one database:
draining, crash recovery, periodic jobs, SQLite locking and graceful SIGTERM."""

from __future__ import annotations

import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from app.config import Settings
from app.db import read_session, write_session
from app.jobs.models import Job
from tests.support.jobs import enqueue_test_job
from tests.support.processes import WorkerProcess, wait_for, wait_started, worker_env
from tests.support.worker_process import RECORD_FILE_ENV, TICK_SECONDS_ENV

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("processes")]

TEST_WORKER = (sys.executable, "-m", "tests.support.worker_process")
POSTGRES_ONLY = pytest.mark.parametrize(
    "database_url",
    [pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)],
    indirect=True,
)
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def record_file(tmp_path: Path) -> Path:
    return tmp_path / "records.txt"


@pytest.fixture
def spawn(settings: Settings, record_file: Path, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start worker processes on the test's database; every one is killed at the end."""
    started: list[WorkerProcess] = []
    base = worker_env(
        settings,
        ILLBRIDGE_WORKER_POLL_SECONDS="0.05",
        ILLBRIDGE_PERIODIC_TICK_SECONDS="0.1",
        **{RECORD_FILE_ENV: str(record_file)},
    )

    def start(count: int = 1, **env: str) -> list[WorkerProcess]:
        new = [
            WorkerProcess(TEST_WORKER, base | env, tmp_path / f"worker-{len(started) + n}.log")
            for n in range(count)
        ]
        started.extend(new)
        wait_started(new)
        return new

    try:
        yield start
    finally:
        for process in started:
            process.close()


def stop_all(workers: list[WorkerProcess], sig: signal.Signals = signal.SIGTERM) -> None:
    """Signal every worker and require each to exit with code 0."""
    for worker in workers:
        worker.popen.send_signal(sig)
    codes = [worker.popen.wait(timeout=20) for worker in workers]
    logs = "\n".join(f"pid {w.pid}:\n{w.stderr_tail()}" for w in workers)
    assert codes == [0] * len(workers), logs


def records(record_file: Path) -> list[list[str]]:
    if not record_file.exists():
        return []
    return [line.split() for line in record_file.read_text().splitlines()]


def enqueue_many(engine: Engine, kind: str, count: int, payload: dict[str, Any]) -> list[int]:
    with write_session(engine) as session:
        for _ in range(count):
            enqueue_test_job(session, kind, payload)
        session.commit()
    with read_session(engine) as session:
        return sorted(session.scalars(select(Job.id).where(Job.kind == kind)))  # type: ignore[arg-type]


def count_status(engine: Engine, status: str) -> int:
    with read_session(engine) as session:
        return int(
            session.scalar(select(func.count()).where(Job.status == status))  # type: ignore[arg-type]
            or 0
        )


def job(engine: Engine, job_id: int) -> Job:
    with read_session(engine) as session:
        found = session.get(Job, job_id)
    assert found is not None
    return found


def assert_drained_once(engine: Engine, record_file: Path, job_ids: list[int]) -> Counter[str]:
    """Every job succeeded and was recorded exactly once; returns the jobs done per pid."""
    assert count_status(engine, "succeeded") == len(job_ids)
    lines = records(record_file)
    recorded = Counter(int(line[0]) for line in lines)
    assert [job_id for job_id, n in recorded.items() if n > 1] == [], "a job ran twice"
    assert sorted(recorded) == job_ids, "a job is missing from the records"
    return Counter(line[1] for line in lines)


@POSTGRES_ONLY
def test_two_processes_drain_a_thousand_jobs_once_each(
    spawn: Callable[..., list[WorkerProcess]], engine: Engine, record_file: Path
) -> None:
    workers = spawn(2)
    started = time.monotonic()
    job_ids = enqueue_many(engine, "test.record", 1000, {})
    wait_for(lambda: count_status(engine, "succeeded") == 1000, 60, "1,000 jobs", workers)
    drained = time.monotonic() - started
    print(f"\n1,000 jobs drained by 2 worker processes in {drained:.2f} s")

    stop_all(workers)
    by_pid = assert_drained_once(engine, record_file, job_ids)
    assert set(by_pid) == {str(w.pid) for w in workers}, f"not both did work: {by_pid}"
    assert [w.problems() for w in workers] == [[], []]


@SQLITE_ONLY
def test_two_processes_share_sqlite_without_locking_errors(
    spawn: Callable[..., list[WorkerProcess]], engine: Engine, record_file: Path
) -> None:
    workers = spawn(2)
    job_ids = enqueue_many(engine, "test.record", 300, {})
    wait_for(lambda: count_status(engine, "succeeded") == 300, 60, "300 jobs", workers)

    stop_all(workers)
    assert_drained_once(engine, record_file, job_ids)
    for worker in workers:
        assert "database is locked" not in worker.stderr_path.read_text()
        assert worker.problems() == []


def test_a_killed_workers_job_is_finished_by_another_after_its_lease(
    spawn: Callable[..., list[WorkerProcess]], engine: Engine, record_file: Path
) -> None:
    workers = spawn(2, ILLBRIDGE_JOB_LEASE_SECONDS="1.5", ILLBRIDGE_JOB_DEADLINE_SECONDS="1.4")
    [job_id] = enqueue_many(engine, "test.sleep", 1, {"seconds": 1.0})
    wait_for(lambda: any(w.logged("test_sleep_started") for w in workers), 20, "start", workers)
    [crashed] = [w for w in workers if w.logged("test_sleep_started")]
    [survivor] = [w for w in workers if w is not crashed]
    crashed.popen.send_signal(signal.SIGKILL)
    assert crashed.popen.wait(timeout=10) == -signal.SIGKILL

    wait_for(lambda: job(engine, job_id).status == "succeeded", 30, "succeeded", workers)
    finished = job(engine, job_id)
    assert (finished.attempts, finished.last_error) == (2, None)
    assert records(record_file) == [[str(job_id), str(survivor.pid)]]
    stop_all([survivor])


def test_periodic_job_runs_once_per_period_across_three_processes(
    spawn: Callable[..., list[WorkerProcess]], engine: Engine, record_file: Path
) -> None:
    workers = spawn(3, **{TICK_SECONDS_ENV: "1"})
    time.sleep(4.0)  # the observation window: about four periods with all three running
    stop_all(workers)

    periods = [int(line[2]) for line in records(record_file)]
    assert len(periods) == len(set(periods)), f"a period ran twice: {sorted(periods)}"
    assert len(periods) >= 3
    assert sorted(periods) == list(range(min(periods), max(periods) + 1))
    with read_session(engine) as session:
        ticks = list(session.scalars(select(Job).where(Job.kind == "test.tick")))  # type: ignore[arg-type]
    succeeded = sorted(t.id for t in ticks if t.status == "succeeded")
    assert succeeded == sorted(int(line[0]) for line in records(record_file))
    assert {t.status for t in ticks} <= {"succeeded", "queued"}
    assert [w.problems() for w in workers] == [[], [], []]


def test_sigterm_lets_the_running_job_finish_and_exits_cleanly(
    spawn: Callable[..., list[WorkerProcess]], engine: Engine, record_file: Path
) -> None:
    [worker] = spawn(1)
    [job_id] = enqueue_many(engine, "test.sleep", 1, {"seconds": 1.0})
    wait_for(lambda: worker.logged("test_sleep_started"), 20, "job started", [worker])

    stop_all([worker], signal.SIGTERM)
    assert job(engine, job_id).status == "succeeded"
    assert records(record_file) == [[str(job_id), str(worker.pid)]]
    assert worker.logged("worker_stopped")
    assert worker.problems() == []


def test_sigterm_gives_back_a_job_still_running_when_the_drain_ends(
    spawn: Callable[..., list[WorkerProcess]], engine: Engine, record_file: Path
) -> None:
    # A lease far longer than the test: only a give-back lets another worker start the job.
    long_lease = {"ILLBRIDGE_JOB_LEASE_SECONDS": "120", "ILLBRIDGE_JOB_DEADLINE_SECONDS": "100"}
    [first] = spawn(1, ILLBRIDGE_WORKER_DRAIN_SECONDS="1", **long_lease)
    [job_id] = enqueue_many(engine, "test.sleep", 1, {"seconds": 90})
    wait_for(lambda: first.logged("test_sleep_started"), 20, "job started", [first])

    signalled = time.monotonic()
    stop_all([first], signal.SIGTERM)
    assert time.monotonic() - signalled < 1 + 3.0, "the drain was not bounded"
    given_back = job(engine, job_id)
    assert (given_back.status, given_back.lease_token, given_back.lease_expires_at) == (
        "queued",
        None,
        None,
    )
    assert (given_back.attempts, given_back.last_error) == (0, None)
    assert first.logged("job_given_back")

    [second] = spawn(1, ILLBRIDGE_WORKER_DRAIN_SECONDS="0", **long_lease)
    wait_for(lambda: second.logged("test_sleep_started"), 10, "taken by another", [second])
    assert job(engine, job_id).attempts == 1
    stop_all([second], signal.SIGTERM)
    assert records(record_file) == []
