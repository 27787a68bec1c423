"""The worker's composition root: every job kind, its handler, its retry policy and the
periodic schedule."""

from __future__ import annotations

from app.config import Settings
from app.jobs.registry import Registry
from app.jobs.worker import Worker
from app.runtime import Runtime
from app.workflows import (
    alma_notices,
    cleanup,
    export,
    housekeeping,
    kinds,
    loans,
    polling,
    retention,
    stale_check,
)
from app.workflows.common import flag_on_dead

# A poll that keeps failing is dropped; the next dispatch queues a fresh one.
POLL_MAX_ATTEMPTS = 3
PERIODIC_MAX_ATTEMPTS = 3
STALE_CHECK_SECONDS = 900
AUTO_CLEANUP_SECONDS = 3600


def build_registry(settings: Settings) -> Registry[Runtime]:
    registry: Registry[Runtime] = Registry(default_max_attempts=settings.job_max_attempts)
    registry.add(
        kinds.EXPORT_TO_WORLDSHARE,
        export.export_citation,
        on_dead=flag_on_dead(export.EXPORT),
    )
    registry.add(
        kinds.POLL_WORLDSHARE,
        polling.poll_request,
        on_dead=flag_on_dead("WorldShare status poll"),
        max_attempts=POLL_MAX_ATTEMPTS,
    )
    registry.add(
        kinds.NOTIFY_ALMA,
        alma_notices.notify_alma,
        on_dead=flag_on_dead("Telling Alma"),
    )
    registry.add(
        kinds.HANDLE_LOAN_EVENT,
        loans.handle_loan_event,
        on_dead=flag_on_dead("Applying an Alma loan event"),
    )
    registry.add(
        kinds.UPDATE_ALMA_LOAN,
        loans.update_alma_loan,
        on_dead=flag_on_dead("Updating the patron's loan in Alma"),
    )
    registry.add(kinds.DISPATCH_POLLS, polling.dispatch_polls, max_attempts=PERIODIC_MAX_ATTEMPTS)
    registry.add(
        kinds.PURGE_FINISHED_JOBS,
        housekeeping.purge_finished_jobs,
        max_attempts=PERIODIC_MAX_ATTEMPTS,
    )
    registry.add(kinds.CHECK_STALE, stale_check.check_stale, max_attempts=PERIODIC_MAX_ATTEMPTS)
    registry.add(kinds.RUN_CLEANUP, cleanup.run_cleanup, on_dead=cleanup.close_dead_run)
    registry.add(kinds.AUTO_CLEANUP, cleanup.auto_cleanup, max_attempts=PERIODIC_MAX_ATTEMPTS)
    registry.add(
        kinds.PURGE_PATRON_DATA,
        retention.purge_expired_patron_data,
        max_attempts=PERIODIC_MAX_ATTEMPTS,
    )
    registry.every(settings.poll_dispatch_seconds, kinds.DISPATCH_POLLS)
    registry.every(STALE_CHECK_SECONDS, kinds.CHECK_STALE)
    registry.every(AUTO_CLEANUP_SECONDS, kinds.AUTO_CLEANUP)
    registry.every(3600, kinds.PURGE_FINISHED_JOBS)
    registry.every(settings.retention_purge_seconds, kinds.PURGE_PATRON_DATA)
    return registry


def new_worker(runtime: Runtime) -> Worker[Runtime]:
    """A worker that runs the life cycle's jobs with this process's services."""
    return Worker(
        build_registry(runtime.settings),
        runtime,
        engine=runtime.engine,
        settings=runtime.settings,
        metrics=runtime.metrics,
    )
