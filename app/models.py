"""Every table, imported in one place so Alembic and the tests see the whole schema."""

from app.borrowing.cleanup import CleanupBatch, CleanupItem
from app.borrowing.models import BorrowingRequest, InboundMessage, RequestEvent
from app.borrowing.tasks import StaffTask
from app.db import metadata
from app.institutions.models import ApiToken, Institution, InstitutionAudit
from app.jobs.models import Job
from app.worldshare.budget import WorldShareCallCount, WorldShareKeyPause

__all__ = [
    "ApiToken",
    "BorrowingRequest",
    "CleanupBatch",
    "CleanupItem",
    "InboundMessage",
    "Institution",
    "InstitutionAudit",
    "Job",
    "RequestEvent",
    "StaffTask",
    "WorldShareCallCount",
    "WorldShareKeyPause",
    "metadata",
]
