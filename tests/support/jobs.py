"""Reading and writing job rows directly, for the queue and worker tests."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict
from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from app.db import read_session, write_session
from app.jobs import queue
from app.jobs.kinds import JobKind, Payload
from app.jobs.models import Job
from app.jobs.registry import Registry
from app.jobs.worker import Worker
from app.runtime import Runtime

# Attempts a test job gets unless its registration says otherwise.
TEST_MAX_ATTEMPTS = 8


class AnyPayload(Payload):
    """Test jobs carry whatever the test gives them."""

    model_config = ConfigDict(frozen=True, extra="allow")


def job_kind(name: str) -> JobKind[AnyPayload]:
    return JobKind(name, AnyPayload)


def enqueue_test_job(
    session: Any, kind: str, payload: dict[str, Any] | None = None, **kwargs: Any
) -> bool:
    return queue.enqueue(session, job_kind(kind), AnyPayload(**(payload or {})), **kwargs)


def add_job(
    engine: Engine, kind: str = "test.job", payload: dict[str, Any] | None = None, **kwargs: Any
) -> int:
    """Enqueue one job in a transaction of its own; its id."""
    with write_session(engine) as session:
        assert enqueue_test_job(session, kind, payload, **kwargs)
        session.commit()
        job_id = session.execute(text("SELECT max(id) FROM job")).scalar_one()
    return int(job_id)


def registry_for_tests() -> Registry[Runtime]:
    return Registry(default_max_attempts=TEST_MAX_ATTEMPTS)


def worker_for(runtime: Runtime, registry: Registry[Runtime]) -> Worker[Runtime]:
    return Worker(
        registry,
        runtime,
        engine=runtime.engine,
        settings=runtime.settings,
        metrics=runtime.metrics,
    )


def all_jobs(engine: Engine) -> list[Job]:
    with read_session(engine) as session:
        return list(session.scalars(select(Job).order_by(Job.id)))  # type: ignore[arg-type]


def job_row(engine: Engine, job_id: int) -> Job:
    with read_session(engine) as session:
        job = session.get(Job, job_id)
    assert job is not None
    return job
