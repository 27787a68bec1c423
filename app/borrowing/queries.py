"""Read-side queries over borrowing requests for the REST API and the operators' views."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Integer, String, column, func, table
from sqlalchemy import select as select_columns
from sqlmodel import Session, col, select

from app.borrowing.models import BorrowingRequest, RequestEvent
from app.borrowing.schemas import (
    BorrowingRequestDetail,
    BorrowingRequestPublic,
    RequestEventPublic,
    StaffTaskPublic,
)
from app.borrowing.tasks import HOW_TO_RESOLVE, StaffTask
from app.db import as_dicts


@dataclass(frozen=True)
class RequestFilter:
    institution_id: int | None = None
    state: str | None = None
    alma_request_id: str | None = None
    worldshare_request_id: str | None = None
    item_barcode: str | None = None
    needs_attention: bool | None = None
    updated_since: datetime | None = None


REQUESTS = BorrowingRequest.__table__  # type: ignore[attr-defined]
# The institution's code, which names it in every answer (the table, not the institutions
# package: the domain imports no other package).
_INSTITUTIONS = table("institution", column("id", Integer), column("code", String))
# What an answer shows of a request: the public fields, never the requester's id.
_PUBLIC_FIELDS = [name for name in BorrowingRequestPublic.model_fields if name != "institution"]
# A page is read as these columns and validated once into its items: no ORM instance is built.
_PUBLIC_COLUMNS = [
    _INSTITUTIONS.c.code.label("institution"),
    *(REQUESTS.c[name] for name in _PUBLIC_FIELDS),
]
_PUBLIC_ITEMS = TypeAdapter(list[BorrowingRequestPublic])


def list_requests(
    session: Session, where: RequestFilter, *, before_id: int | None, limit: int
) -> list[BorrowingRequestPublic]:
    """Newest first, `limit` rows older than `before_id` (keyset pagination: a page is stable
    under inserts, and each is read in the order of an index matching the filters)."""
    query = select_columns(*_PUBLIC_COLUMNS).select_from(
        REQUESTS.join(_INSTITUTIONS, _INSTITUTIONS.c.id == REQUESTS.c.institution_id)
    )
    if where.institution_id is not None:
        query = query.where(REQUESTS.c.institution_id == where.institution_id)
    if where.state is not None:
        query = query.where(REQUESTS.c.state == where.state)
    if where.alma_request_id is not None:
        query = query.where(REQUESTS.c.alma_request_id == where.alma_request_id)
    if where.worldshare_request_id is not None:
        query = query.where(REQUESTS.c.worldshare_request_id == where.worldshare_request_id)
    if where.item_barcode is not None:
        query = query.where(REQUESTS.c.item_barcode == where.item_barcode)
    if where.needs_attention is not None:
        query = query.where(REQUESTS.c.needs_attention == where.needs_attention)
    if where.updated_since is not None:
        query = query.where(REQUESTS.c.updated_at >= where.updated_since)
    if before_id is not None:
        query = query.where(REQUESTS.c.id < before_id)
    rows = session.execute(query.order_by(REQUESTS.c.id.desc()).limit(limit))
    return _PUBLIC_ITEMS.validate_python(as_dicts(rows))


def timeline(session: Session, request_id: int) -> list[RequestEvent]:
    return list(
        session.exec(
            select(RequestEvent)
            .where(RequestEvent.request_id == request_id)
            .order_by(col(RequestEvent.id))
        )
    )


def counts_by_state(session: Session, institution_id: int | None) -> dict[str, int]:
    query = select(BorrowingRequest.state, func.count()).group_by(BorrowingRequest.state)
    if institution_id is not None:
        query = query.where(BorrowingRequest.institution_id == institution_id)
    return {state: int(count) for state, count in session.exec(query)}


def count_needing_attention(session: Session, institution_id: int | None) -> int:
    query = select(func.count()).where(col(BorrowingRequest.needs_attention).is_(True))
    if institution_id is not None:
        query = query.where(BorrowingRequest.institution_id == institution_id)
    return int(session.exec(query).one())


def to_public(request: BorrowingRequest, institution_code: str) -> BorrowingRequestPublic:
    fields: dict[str, Any] = {name: getattr(request, name) for name in _PUBLIC_FIELDS}
    return BorrowingRequestPublic.model_validate(fields | {"institution": institution_code})


def to_detail(
    request: BorrowingRequest,
    institution_code: str,
    events: list[RequestEvent],
    tasks: list[StaffTask],
) -> BorrowingRequestDetail:
    return BorrowingRequestDetail(
        **to_public(request, institution_code).model_dump(),
        tasks=[
            StaffTaskPublic(
                id=t.id or 0,
                kind=t.kind,
                reason=t.reason,
                how_to_resolve=HOW_TO_RESOLVE[t.kind],
                opened_at=t.opened_at,
            )
            for t in tasks
        ],
        events=[
            RequestEventPublic(
                at=e.at,
                kind=e.kind,
                source=e.source,
                from_state=e.from_state,
                to_state=e.to_state,
                applied=e.applied,
                detail=e.detail,
            )
            for e in events
        ],
    )
