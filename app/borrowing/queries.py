"""Read-side queries over borrowing requests for the REST API and the operators' views."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func
from sqlmodel import Session, col, select

from app.borrowing.models import BorrowingRequest, RequestEvent
from app.borrowing.schemas import (
    BorrowingRequestDetail,
    BorrowingRequestPublic,
    RequestEventPublic,
    StaffTaskPublic,
)
from app.borrowing.tasks import HOW_TO_RESOLVE, StaffTask


@dataclass(frozen=True)
class RequestFilter:
    institution_id: int | None = None
    state: str | None = None
    alma_request_id: str | None = None
    worldshare_request_id: str | None = None
    item_barcode: str | None = None
    needs_attention: bool | None = None
    updated_since: datetime | None = None


def list_requests(
    session: Session, where: RequestFilter, *, before_id: int | None, limit: int
) -> list[BorrowingRequest]:
    query = select(BorrowingRequest)
    if where.institution_id is not None:
        query = query.where(BorrowingRequest.institution_id == where.institution_id)
    if where.state is not None:
        query = query.where(BorrowingRequest.state == where.state)
    if where.alma_request_id is not None:
        query = query.where(BorrowingRequest.alma_request_id == where.alma_request_id)
    if where.worldshare_request_id is not None:
        query = query.where(BorrowingRequest.worldshare_request_id == where.worldshare_request_id)
    if where.item_barcode is not None:
        query = query.where(BorrowingRequest.item_barcode == where.item_barcode)
    if where.needs_attention is not None:
        query = query.where(BorrowingRequest.needs_attention == where.needs_attention)
    if where.updated_since is not None:
        query = query.where(col(BorrowingRequest.updated_at) >= where.updated_since)
    if before_id is not None:
        query = query.where(col(BorrowingRequest.id) < before_id)
    query = query.order_by(col(BorrowingRequest.id).desc()).limit(limit)
    return list(session.exec(query))


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
    assert request.id is not None
    return BorrowingRequestPublic(
        id=request.id,
        institution=institution_code,
        alma_request_id=request.alma_request_id,
        worldshare_request_id=request.worldshare_request_id,
        state=request.state,
        origin=request.origin,
        needs_attention=request.needs_attention,
        attention_reason=request.attention_reason,
        lender_status=request.lender_status,
        lender_due_date=request.lender_due_date,
        patron_due_date=request.patron_due_date,
        item_barcode=request.item_barcode,
        citation=request.citation,
        created_at=request.created_at,
        updated_at=request.updated_at,
        closed_at=request.closed_at,
    )


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
