"""The job kinds of the life cycle, each with its payload."""

from __future__ import annotations

from app.borrowing.states import AlmaNotice
from app.jobs.kinds import JobKind, Payload


class NoticePayload(Payload):
    notice: AlmaNotice


EXPORT_TO_WORLDSHARE = JobKind("worldshare.export", Payload)
POLL_WORLDSHARE = JobKind("worldshare.poll", Payload)
DISPATCH_POLLS = JobKind("worldshare.dispatch_polls", Payload)
NOTIFY_ALMA = JobKind("alma.notify", NoticePayload)
PURGE_FINISHED_JOBS = JobKind("jobs.purge_finished", Payload)
PURGE_PATRON_DATA = JobKind("retention.purge_patron_data", Payload)
