"""Keep the job table small: succeeded jobs are deleted after the retention period."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete
from sqlmodel import Session, col

from app.jobs.context import JobContext
from app.jobs.models import Job, JobStatus
from app.jobs.queue import ClaimedJob
from app.timeutil import utcnow


def purge_succeeded_jobs(session: Session, older_than_days: int) -> int:
    cutoff = utcnow() - timedelta(days=older_than_days)
    result = session.execute(
        delete(Job).where(
            col(Job.status) == JobStatus.SUCCEEDED.value, col(Job.finished_at) < cutoff
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def purge_finished_jobs(ctx: JobContext, _job: ClaimedJob) -> None:
    days = ctx.settings.finished_job_retention_days
    await ctx.in_transaction(lambda session: purge_succeeded_jobs(session, days))
