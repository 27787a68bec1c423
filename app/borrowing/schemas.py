"""API shapes of borrowing requests and their timelines."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, model_validator

from app.borrowing.citation import Citation
from app.borrowing.states import ServiceKind
from app.borrowing.tasks import TaskKind
from app.validation import StrictInput

ALMA_REQUEST_ID_MAX_CHARS = 128
# ASCII only: `\w` would admit the letters and digits of every script.
ALMA_REQUEST_ID_PATTERN = r"^[A-Za-z0-9_\-.:]+$"
REQUESTER_USER_ID_MAX_CHARS = 255


class BorrowingRequestCreate(StrictInput):
    """An unfilled Alma borrowing request, in Alma's own field names."""

    institution: Annotated[str, Field(min_length=1, max_length=64)]
    alma_request_id: Annotated[
        str,
        Field(min_length=1, max_length=ALMA_REQUEST_ID_MAX_CHARS, pattern=ALMA_REQUEST_ID_PATTERN),
    ]
    requester_user_id: (
        Annotated[str, Field(min_length=1, max_length=REQUESTER_USER_ID_MAX_CHARS)] | None
    ) = Field(default=None, description="Kept only to talk to Alma; never sent to WorldShare")
    citation: Citation


class RenewalAnswer(StrictInput):
    """The lender's answer to a renewal, reported by staff or another service."""

    approved: bool
    due_date: date | None = Field(
        default=None, description="The new lender due date; required when approved"
    )

    @model_validator(mode="after")
    def _date_when_approved(self) -> RenewalAnswer:
        if self.approved and self.due_date is None:
            raise ValueError("an approved renewal needs its due_date")
        return self


class ResolveAttention(StrictInput):
    """What staff did; empty to say the flag and every open task of the request are done."""

    task: TaskKind | None = Field(
        default=None, description="Close only this open task of the request"
    )

    worldshare_request_id: Annotated[
        str | None, Field(min_length=1, max_length=64, pattern=r"^[0-9]+$")
    ] = Field(
        default=None,
        description="For an export whose answer was lost: the WorldShare request found with "
        "the Alma request id as its reference",
    )
    export_again: bool = Field(
        default=False,
        description="For an export whose answer was lost: none was found, export once more",
    )

    @model_validator(mode="after")
    def _one_answer(self) -> ResolveAttention:
        answers = [self.task is not None, self.worldshare_request_id is not None, self.export_again]
        if sum(answers) > 1:
            raise ValueError("give one of task, worldshare_request_id or export_again")
        return self


class RequestEventPublic(BaseModel):
    at: datetime
    kind: str
    source: str
    from_state: str | None
    to_state: str | None
    applied: bool
    detail: dict[str, Any]


class BorrowingRequestPublic(BaseModel):
    id: int
    institution: str
    alma_request_id: str
    worldshare_request_id: str | None
    state: str
    origin: str
    service_kind: ServiceKind = Field(description="loan, or copy (an article: not returned)")
    needs_attention: bool
    attention_reason: str | None
    lender_status: str | None
    lender_due_date: date | None
    patron_due_date: date | None
    item_barcode: str | None
    alma_loan_id: str | None = Field(description="The patron's Alma loan of the temporary item")
    alma_internal_request_id: str | None = Field(
        description="Alma's own id of the borrowing request, once resolved (REST API calls)"
    )
    stale_reason: str | None = Field(
        description="Why the request looks stuck: no_lender_progress, never_received, "
        "returned_not_closed, renewal_unanswered, export_dead, export_unresolved"
    )
    stale_since: datetime | None
    citation: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None


class StaffTaskPublic(BaseModel):
    id: int
    kind: TaskKind
    reason: str
    how_to_resolve: str
    opened_at: datetime


class BorrowingRequestDetail(BorrowingRequestPublic):
    tasks: list[StaffTaskPublic] = Field(description="Open staff tasks, oldest first")
    events: list[RequestEventPublic]


class BorrowingRequestPage(BaseModel):
    items: list[BorrowingRequestPublic]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at end")


class CleanupOrder(StrictInput):
    """Clean up an institution's stale requests whose WorldShare side is over."""

    institution: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
    dry_run: bool = Field(
        default=True, description="Plan from cached WorldShare statuses; send nothing anywhere"
    )
    limit: int = Field(default=100, ge=1, le=1000, description="How many stale requests at most")


class CleanupLinePublic(BaseModel):
    request_id: int
    alma_request_id: str
    alma_internal_request_id: str | None
    worldshare_request_id: str | None
    state: str
    action: str = Field(description="iso_notice, alma_rest_cancel or leave")
    why: str
    lender_status: str | None = Field(description="WorldShare's status the plan was made from")
    outcome: str = Field(description="planned (dry run), done, left or failed")
    error: str | None


class CleanupBatchPublic(BaseModel):
    batch_id: int
    institution: str
    dry_run: bool
    status: str = Field(description="queued, running or done")
    requested_by: str
    limit: int
    created_at: datetime
    finished_at: datetime | None
    items: list[CleanupLinePublic]


class ResolveHint(BaseModel):
    method: str
    path: str
    body: dict[str, Any] | None


class TaskPublic(BaseModel):
    kind: str
    institution: str | None
    request_id: int | None
    state: str | None
    alma_request_id: str | None
    alma_internal_request_id: str | None
    worldshare_request_id: str | None
    job_id: int | None
    reason: str
    stale_reason: str | None
    opened_at: datetime
    age_days: int
    how_to_resolve: str
    resolve: ResolveHint | None


class TaskPage(BaseModel):
    items: list[TaskPublic]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at end")
