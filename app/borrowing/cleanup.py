"""Clean-up of stale requests: the pure plan for one request, and the batches that record runs.

`plan_step` decides from what WorldShare shows (cached for a dry run, read afresh for a real
run): the same function for both, so a dry run shows exactly what a real run does with the same
answers. Only a request whose item never reached the library, and whose WorldShare side is
closed, cancelled, unfilled or expired, is cancelled in Alma.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, Index
from sqlmodel import Field, SQLModel

from app.borrowing.models import RequestOrigin
from app.borrowing.states import AlmaNotice, LenderOutcome, RequestState
from app.db import StrEnumType
from app.timeutil import UTCDateTime, utcnow


class CleanupAction(StrEnum):
    ISO_NOTICE = "iso_notice"  # tell Alma Unfilled/Cancelled over ISO 18626
    ALMA_REST_CANCEL = "alma_rest_cancel"  # DELETE the borrowing request through Alma's REST API
    LEAVE = "leave"  # touch nothing


class BatchStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


class ItemOutcome(StrEnum):
    PLANNED = "planned"  # a dry run's line
    DONE = "done"
    LEFT = "left"
    FAILED = "failed"


# Where the item never reached the library: the only states clean-up may cancel.
CLEANABLE_STATES = frozenset({RequestState.EXPORTED, RequestState.SHIPPED})
# WorldShare outcomes that say the lender's side is over ("expired" maps to unfilled).
ENDED_OUTCOMES: dict[LenderOutcome, AlmaNotice] = {
    LenderOutcome.unfilled: AlmaNotice.UNFILLED,
    LenderOutcome.cancelled: AlmaNotice.CANCELLED,
    LenderOutcome.closed: AlmaNotice.CANCELLED,
}


@dataclass(frozen=True)
class Candidate:
    request_id: int
    state: RequestState
    origin: RequestOrigin
    has_worldshare_id: bool
    stale_reason: str | None


@dataclass(frozen=True)
class PlannedStep:
    action: CleanupAction
    why: str
    notice: AlmaNotice | None = None


def plan_step(
    candidate: Candidate, lender_status: str | None, outcome: LenderOutcome | None
) -> PlannedStep:
    """What clean-up does with one request, given WorldShare's status and its mapped outcome."""
    if candidate.state not in CLEANABLE_STATES:
        return PlannedStep(CleanupAction.LEAVE, f"the request is {candidate.state.value}")
    if not candidate.has_worldshare_id:
        return PlannedStep(CleanupAction.LEAVE, "no WorldShare request to confirm")
    if lender_status is None:
        return PlannedStep(CleanupAction.LEAVE, "WorldShare's status is not known yet")
    notice = ENDED_OUTCOMES.get(outcome) if outcome is not None else None
    if notice is None:
        return PlannedStep(CleanupAction.LEAVE, f"WorldShare still shows {lender_status}")
    if candidate.origin is RequestOrigin.ISO18626:
        return PlannedStep(
            CleanupAction.ISO_NOTICE, f"WorldShare shows {lender_status}", notice=notice
        )
    return PlannedStep(CleanupAction.ALMA_REST_CANCEL, f"WorldShare shows {lender_status}")


class CleanupBatch(SQLModel, table=True):
    """One clean-up run (or dry run) for an institution; its lines are `CleanupItem` rows."""

    __tablename__ = "cleanup_batch"

    id: int | None = Field(default=None, primary_key=True)
    institution_id: int = Field(foreign_key="institution.id", index=True)
    dry_run: bool
    max_requests: int
    requested_by: str = Field(max_length=255)
    status: BatchStatus = Field(
        default=BatchStatus.QUEUED, sa_column=Column(StrEnumType(BatchStatus, 16), nullable=False)
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    finished_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))


class CleanupItem(SQLModel, table=True):
    """What a batch planned or did for one request. `error` is a classified upstream failure."""

    __tablename__ = "cleanup_item"
    __table_args__ = (Index("ix_cleanup_item_batch_request", "batch_id", "request_id"),)

    id: int | None = Field(default=None, primary_key=True)
    batch_id: int = Field(foreign_key="cleanup_batch.id")
    request_id: int = Field(foreign_key="borrowing_request.id")
    action: CleanupAction = Field(sa_column=Column(StrEnumType(CleanupAction, 32), nullable=False))
    why: str = Field(max_length=500)
    lender_status: str | None = Field(default=None, max_length=64)
    outcome: ItemOutcome = Field(sa_column=Column(StrEnumType(ItemOutcome, 16), nullable=False))
    error: str | None = Field(default=None, max_length=1000)
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
