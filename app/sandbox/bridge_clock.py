"""Sandbox mode only: make a request look older than it is, as the demo's stale request needs.

A stale request has waited `stale_after_days` (a day at least) with no progress; a demo cannot
wait a day. This moves one request's timeline back, the way the clean-up tests do, and is
mounted only when `ILLBRIDGE_SANDBOX` is on (never in the OpenAPI document of a real service).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query
from sqlmodel import select

from app.api.deps import Admin, AppRuntime
from app.api.pagination import MAX_ID
from app.api.routing import AuthFirstRoute
from app.borrowing.models import BorrowingRequest, RequestEvent
from app.db import write_session
from app.errors import ERROR_RESPONSES, NotFound

BRIDGE_CLOCK_PREFIX = "/sandbox/bridge"

router = APIRouter(
    prefix=BRIDGE_CLOCK_PREFIX,
    tags=["sandbox"],
    responses=ERROR_RESPONSES,
    route_class=AuthFirstRoute,
    include_in_schema=False,
)


@router.post("/requests/{request_id}/age")
def age_request(
    request_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    days: Annotated[int, Query(ge=1, le=3650)],
    token: Admin,
    runtime: AppRuntime,
) -> dict[str, int]:
    """Move the request's creation and every timeline entry back `days` days."""
    with write_session(runtime.engine) as session:
        request = session.get(BorrowingRequest, request_id)
        if request is None:
            raise NotFound(f"no request {request_id}")
        shift = timedelta(days=days)
        events = session.exec(select(RequestEvent).where(RequestEvent.request_id == request_id))
        for event in events.all():
            event.at = event.at - shift
            session.add(event)
        request.created_at = request.created_at - shift
        session.add(request)
        session.commit()
    return {"request_id": request_id, "days": days}
