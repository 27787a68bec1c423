"""The staff task list: everything a human must do, with the ids and how to resolve it."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from app.api.deps import Reader, ReadSession, institution_in_view
from app.api.pagination import MAX_ID, json_answer
from app.api.routing import AuthFirstRoute
from app.borrowing.schemas import ResolveHint, TaskPage, TaskPublic
from app.errors import ERROR_RESPONSES, AppError
from app.timeutil import utcnow
from app.workflows.task_list import LIST_KINDS, Position, TaskEntry, TaskFilter, list_tasks

router = APIRouter(
    prefix="/api/v1/tasks", tags=["tasks"], responses=ERROR_RESPONSES, route_class=AuthFirstRoute
)

TaskListKind = Literal[LIST_KINDS]  # type: ignore[valid-type]


def encode_position(position: Position) -> str:
    raw = {"t": position.opened_at.isoformat(), "r": position.rank, "i": position.id}
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode()


def decode_position(cursor: str | None) -> Position | None:
    if cursor is None:
        return None
    invalid = AppError("cursor is not one this API issued", code="invalid_cursor")
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        opened_at = datetime.fromisoformat(raw["t"])
        rank, row_id = raw["r"], raw["i"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeError):
        raise invalid from None
    numbers_ok = (
        all(isinstance(n, int) and not isinstance(n, bool) for n in (rank, row_id))
        and 0 <= rank <= 3
        and 1 <= row_id <= MAX_ID
    )
    if not numbers_ok or opened_at.tzinfo is None:
        raise invalid
    return Position(opened_at, rank, row_id)


def _public(entry: TaskEntry, now: datetime) -> TaskPublic:
    request = entry.request
    resolve = None
    if entry.job_id is not None:
        resolve = ResolveHint(method="POST", path=f"/api/v1/jobs/{entry.job_id}/retry", body=None)
    elif request is not None and entry.resolve_with is not None:
        resolve = ResolveHint(
            method="POST", path=f"/api/v1/requests/{request.id}/resolve", body=entry.resolve_with
        )
    return TaskPublic(
        kind=entry.kind,
        institution=entry.institution,
        request_id=request.id if request else None,
        state=request.state.value if request else None,
        alma_request_id=request.alma_request_id if request else None,
        alma_internal_request_id=request.alma_internal_request_id if request else None,
        worldshare_request_id=request.worldshare_request_id if request else None,
        job_id=entry.job_id,
        reason=entry.reason,
        stale_reason=request.stale_reason if request else None,
        opened_at=entry.opened_at,
        age_days=max(0, (now - entry.opened_at).days),
        how_to_resolve=entry.how_to_resolve,
        resolve=resolve,
    )


@router.get("", response_model=TaskPage)
def get_tasks(
    token: Reader,
    session: ReadSession,
    institution: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")] = None,
    kind: TaskListKind | None = None,
    older_than_days: Annotated[
        int | None, Query(ge=0, le=36500, description="Only what has waited this many days")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=300)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    """Open staff tasks, requests flagged for review, possible duplicate WorldShare requests
    and dead jobs, oldest first: each with its reason, age, the Alma and WorldShare ids and how
    to resolve it. A token bound to an institution sees only that institution's."""
    institution_id = token.institution_id
    if institution is not None:
        institution_id = institution_in_view(session, token, institution)
    now = utcnow()
    where = TaskFilter(institution_id=institution_id, kind=kind, older_than_days=older_than_days)
    entries = list_tasks(session, where, after=decode_position(cursor), limit=limit + 1, now=now)
    page = entries[:limit]
    more = len(entries) > limit
    return json_answer(
        TaskPage(
            items=[_public(entry, now) for entry in page],
            next_cursor=encode_position(page[-1].position) if more and page else None,
        )
    )
