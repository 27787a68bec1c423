"""Borrowing requests: intake of unfilled Alma requests, and reads with their timelines."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response, status
from pydantic import AfterValidator
from sqlalchemy.exc import IntegrityError

from app.api.deps import (
    Context,
    Reader,
    ReadSession,
    WakeWorker,
    Writer,
    ensure_visible,
)
from app.api.pagination import MAX_ID, decode_cursor, encode_cursor
from app.borrowing import queries, service
from app.borrowing.schemas import (
    BorrowingRequestCreate,
    BorrowingRequestDetail,
    BorrowingRequestPage,
    BorrowingRequestPublic,
)
from app.borrowing.states import RequestState
from app.db import read_session, write_session
from app.errors import ERROR_RESPONSES, Conflict, NotFound
from app.institutions.service import get_by_code

router = APIRouter(prefix="/api/v1/requests", tags=["requests"], responses=ERROR_RESPONSES)


def _as_utc(value: datetime) -> datetime:
    """A time without an offset is read as UTC."""
    try:
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range once converted to UTC") from None


UtcDateTime = Annotated[datetime, AfterValidator(_as_utc)]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Repeat a create safely: the same key returns the same request",
    ),
]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "Already registered: the existing request"}},
)
def register_request(
    body: BorrowingRequestCreate,
    token: Writer,
    context: Context,
    response: Response,
    wake: WakeWorker,
    idempotency_key: IdempotencyKey = None,
) -> BorrowingRequestPublic:
    """Register an unfilled Alma borrowing request; its citation is exported to WorldShare."""
    try:
        with write_session(context.engine) as session:
            institution = get_by_code(session, body.institution)
            ensure_visible(token, institution)
            request, created = service.register_request(
                session,
                institution,
                alma_request_id=body.alma_request_id,
                citation=body.citation,
                requester_user_id=body.requester_user_id,
                origin=service.ORIGIN_API,
                idempotency_key=idempotency_key,
            )
            if created:
                service.record_inbound(
                    session,
                    source="rest",
                    external_id=f"{institution.id}:{body.alma_request_id}",
                    kind="borrowing_request",
                    outcome="accepted",
                    institution_id=institution.id,
                    request_id=request.id,
                    idempotency_key=idempotency_key is not None,
                )
            session.commit()
    except IntegrityError:
        # Lost a race with an identical create: answer with the winner's record.
        with read_session(context.engine) as session:
            institution = get_by_code(session, body.institution)
            assert institution.id is not None
            existing = service.find_request(
                session,
                institution.id,
                alma_request_id=body.alma_request_id,
                idempotency_key=idempotency_key,
            )
            if existing is None:
                raise
            request, created = existing, False
    if created:
        wake()
    else:
        response.status_code = status.HTTP_200_OK
    return queries.to_public(request, institution.code)


@router.get("")
def list_requests(
    token: Reader,
    session: ReadSession,
    institution: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")] = None,
    state: RequestState | None = None,
    alma_request_id: Annotated[str | None, Query(max_length=128, pattern=r"^[\w\-.:]+$")] = None,
    worldshare_request_id: Annotated[
        str | None, Query(max_length=64, pattern=r"^[\w\-.:]+$")
    ] = None,
    needs_attention: bool | None = None,
    updated_since: Annotated[
        UtcDateTime | None, Query(description="Changed at or after; no offset means UTC")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> BorrowingRequestPage:
    institution_id = token.institution_id
    if institution is not None:
        found = get_by_code(session, institution)
        ensure_visible(token, found)
        institution_id = found.id
    where = queries.RequestFilter(
        institution_id=institution_id,
        state=state.value if state else None,
        alma_request_id=alma_request_id,
        worldshare_request_id=worldshare_request_id,
        needs_attention=needs_attention,
        updated_since=updated_since,
    )
    rows = queries.list_requests(session, where, before_id=decode_cursor(cursor), limit=limit + 1)
    page = rows[:limit]
    more = len(rows) > limit
    last_id = page[-1][0].id if page else None
    return BorrowingRequestPage(
        items=[queries.to_public(request, code) for request, code in page],
        next_cursor=encode_cursor(last_id) if more and last_id is not None else None,
    )


@router.get("/{request_id}")
def get_request(
    request_id: Annotated[int, Path(ge=1, le=MAX_ID)], token: Reader, session: ReadSession
) -> BorrowingRequestDetail:
    """One request with its timeline (every event, applied or refused)."""
    row = queries.get_request(session, request_id)
    if row is None or (token.institution_id not in (None, row[0].institution_id)):
        raise NotFound(f"no request {request_id}")
    request, code = row
    return queries.to_detail(request, code, queries.timeline(session, request_id))


@router.post("/{request_id}/resolve")
def resolve_attention(
    request_id: Annotated[int, Path(ge=1, le=MAX_ID)], token: Writer, context: Context
) -> BorrowingRequestPublic:
    """Staff did what the flag asked (e.g. cancelled the WorldShare request): clear the flag.

    The timeline records which token cleared it; no free text is taken, as it could name a patron.
    """
    with write_session(context.engine) as session:
        row = queries.get_request(session, request_id)
        if row is None or token.institution_id not in (None, row[0].institution_id):
            raise NotFound(f"no request {request_id}")
        request, code = row
        if not request.needs_attention:
            raise Conflict(f"request {request_id} is not flagged")
        service.clear_flag(session, request, source="operator", why=f"resolved by {token.name}")
        session.commit()
    return queries.to_public(request, code)
