"""Keep the job table small: succeeded jobs, and dead periodic ones (the next period runs
anyway), are deleted after the retention period. Dead jobs of requests stay for operators.
WorldShare call counts older than two budget windows go too."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, delete, or_
from sqlmodel import Session, col

from app.jobs.kinds import Payload
from app.jobs.models import Job, JobStatus
from app.jobs.queue import ClaimedJob
from app.jobs.registry import PERIODIC_KEY_PREFIX, Finish
from app.runtime import Runtime
from app.timeutil import utcnow
from app.worldshare import budget


def purge_old_jobs(session: Session, older_than_days: int) -> int:
    cutoff = utcnow() - timedelta(days=older_than_days)
    finished = or_(
        col(Job.status) == JobStatus.SUCCEEDED.value,
        and_(
            col(Job.status) == JobStatus.DEAD.value,
            col(Job.dedupe_key).startswith(PERIODIC_KEY_PREFIX),
        ),
    )
    result = session.execute(delete(Job).where(finished, col(Job.finished_at) < cutoff))
    budget.forget_old_counts(session, utcnow())
    return int(result.rowcount)  # type: ignore[attr-defined]


async def purge_finished_jobs(ctx: Runtime, _job: ClaimedJob, _payload: Payload) -> Finish:
    days = ctx.settings.finished_job_retention_days
    return lambda session: purge_old_jobs(session, days)
