"""The composition root of the worker: every job kind and its handler, and the periodic schedule."""

from __future__ import annotations

from app.config import Settings
from app.jobs import kinds
from app.jobs.handlers import alma_notice, export, housekeeping, polling
from app.jobs.handlers.common import flag_on_dead
from app.jobs.registry import Registry


def build_registry(settings: Settings) -> Registry:
    registry = Registry()
    registry.add(
        kinds.EXPORT_TO_WORLDSHARE,
        export.export_citation,
        on_dead=flag_on_dead("Export to WorldShare"),
    )
    registry.add(
        kinds.POLL_WORLDSHARE,
        polling.poll_request,
        on_dead=flag_on_dead("WorldShare status poll"),
    )
    registry.add(
        kinds.NOTIFY_ALMA,
        alma_notice.notify_alma,
        on_dead=flag_on_dead("Telling Alma"),
    )
    registry.add(kinds.DISPATCH_POLLS, polling.dispatch_polls)
    registry.add(kinds.PURGE_FINISHED_JOBS, housekeeping.purge_finished_jobs)
    registry.every(settings.poll_dispatch_seconds, kinds.DISPATCH_POLLS)
    registry.every(3600, kinds.PURGE_FINISHED_JOBS)
    return registry
