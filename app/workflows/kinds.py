"""The job kinds of the life cycle, each with its payload."""

from __future__ import annotations

from datetime import date

from app.alma.webhooks import LoanEventKind
from app.borrowing.states import AlmaNotice
from app.jobs.kinds import JobKind, Payload


class NoticePayload(Payload):
    notice: AlmaNotice


class LoanEventPayload(Payload):
    """What a LOAN webhook said about the patron's loan; never the patron's id."""

    event_id: str
    event: LoanEventKind
    loan_id: str
    item_barcode: str | None = None
    item_id: str | None = None
    due_date: date | None = None


class UpdateLoanPayload(Payload):
    """Set the patron's loan to this due date (the lender's, less the institution's offset)."""

    due_date: date


EXPORT_TO_WORLDSHARE = JobKind("worldshare.export", Payload)
POLL_WORLDSHARE = JobKind("worldshare.poll", Payload)
DISPATCH_POLLS = JobKind("worldshare.dispatch_polls", Payload)
NOTIFY_ALMA = JobKind("alma.notify", NoticePayload)
PURGE_FINISHED_JOBS = JobKind("jobs.purge_finished", Payload)
HANDLE_LOAN_EVENT = JobKind("alma.loan_event", LoanEventPayload)
UPDATE_ALMA_LOAN = JobKind("alma.update_loan", UpdateLoanPayload)


class CleanupPayload(Payload):
    batch_id: int


CHECK_STALE = JobKind("cleanup.check_stale", Payload)
RUN_CLEANUP = JobKind("cleanup.run", CleanupPayload)
AUTO_CLEANUP = JobKind("cleanup.auto", Payload)
PURGE_PATRON_DATA = JobKind("retention.purge_patron_data", Payload)
