"""Reading and writing job rows directly, for the queue and worker tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from app.db import read_session, write_session
from app.jobs import queue
from app.jobs.models import Job


def add_job(
    engine: Engine, kind: str = "test.job", payload: dict[str, Any] | None = None, **kwargs: Any
) -> int:
    """Enqueue one job in a transaction of its own; its id."""
    with write_session(engine) as session:
        assert queue.enqueue(session, kind, payload or {}, **kwargs)
        session.commit()
        job_id = session.execute(text("SELECT max(id) FROM job")).scalar_one()
    return int(job_id)


def all_jobs(engine: Engine) -> list[Job]:
    with read_session(engine) as session:
        return list(session.scalars(select(Job).order_by(Job.id)))  # type: ignore[arg-type]


def job_row(engine: Engine, job_id: int) -> Job:
    with read_session(engine) as session:
        job = session.get(Job, job_id)
    assert job is not None
    return job
