"""Borrowing requests: intake of unfilled Alma requests, and reads with their timelines."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response, status
from pydantic import AfterValidator
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from app.api.deps import (
    AppRuntime,
    Reader,
    ReadSession,
    WakeWorker,
    Writer,
    ensure_visible,
    institution_in_view,
)
from app.api.pagination import MAX_ID, decode_cursor, encode_cursor, json_answer
from app.api.routing import AuthFirstRoute
from app.borrowing import queries, tasks
from app.borrowing.models import BorrowingRequest, InboxSource, RequestOrigin
from app.borrowing.schemas import (
    BorrowingRequestCreate,
    BorrowingRequestDetail,
    BorrowingRequestPage,
    BorrowingRequestPublic,
    RenewalAnswer,
    ResolveAttention,
)
from app.borrowing.states import TERMINAL_STATES, RequestState
from app.db import write_session
from app.errors import ERROR_RESPONSES, Conflict, NotFound
from app.institutions.models import Institution
from app.institutions.service import Caller, codes_by_id
from app.workflows import intake, loans, resolution

router = APIRouter(
    prefix="/api/v1/requests",
    tags=["requests"],
    responses=ERROR_RESPONSES,
    route_class=AuthFirstRoute,
)


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
    runtime: AppRuntime,
    response: Response,
    wake: WakeWorker,
    idempotency_key: IdempotencyKey = None,
) -> BorrowingRequestPublic:
    """Register an unfilled Alma borrowing request; its citation is exported to WorldShare."""
    new = intake.NewRequest(
        alma_request_id=body.alma_request_id,
        citation=body.citation,
        requester_user_id=body.requester_user_id,
        origin=RequestOrigin.API,
        inbox=InboxSource.REST,
        idempotency_key=idempotency_key,
        summary={"idempotency_key": idempotency_key is not None},
    )
    with write_session(runtime.engine) as session:
        institution = intake.intake_institution(session, body.institution)
        ensure_visible(token, institution)
        assert institution.id is not None
        try:
            request, created = intake.take_request(session, institution, new)
            session.commit()
        except IntegrityError:
            # Lost a race with an identical create: answer with the winner's record.
            session.rollback()
            winner = intake.race_winner(runtime.engine, institution.id, new)
            if winner is None:
                raise
            request, created = winner, False
    if created:
        wake()
    else:
        response.status_code = status.HTTP_200_OK
    return queries.to_public(request, institution.code)


@router.get("", response_model=BorrowingRequestPage)
def list_requests(
    token: Reader,
    session: ReadSession,
    institution: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")] = None,
    state: RequestState | None = None,
    alma_request_id: Annotated[str | None, Query(max_length=128, pattern=r"^[\w\-.:]+$")] = None,
    worldshare_request_id: Annotated[
        str | None, Query(max_length=64, pattern=r"^[\w\-.:]+$")
    ] = None,
    item_barcode: Annotated[
        str | None,
        Query(max_length=128, pattern=r"^[\w\-.:]+$", description="The temporary item's barcode"),
    ] = None,
    needs_attention: bool | None = None,
    updated_since: Annotated[
        UtcDateTime | None, Query(description="Changed at or after; no offset means UTC")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    institution_id = token.institution_id
    if institution is not None:
        institution_id = institution_in_view(session, token, institution)
    where = queries.RequestFilter(
        institution_id=institution_id,
        state=state.value if state else None,
        alma_request_id=alma_request_id,
        worldshare_request_id=worldshare_request_id,
        item_barcode=item_barcode,
        needs_attention=needs_attention,
        updated_since=updated_since,
    )
    items = queries.list_requests(session, where, before_id=decode_cursor(cursor), limit=limit + 1)
    page = items[:limit]
    more = len(items) > limit
    return json_answer(
        BorrowingRequestPage(
            items=page, next_cursor=encode_cursor(page[-1].id) if more and page else None
        )
    )


def _visible_request(session: Session, token: Caller, request_id: int) -> BorrowingRequest:
    request = session.get(BorrowingRequest, request_id)
    if request is None or token.institution_id not in (None, request.institution_id):
        raise NotFound(f"no request {request_id}")
    return request


@router.get("/{request_id}")
def get_request(
    request_id: Annotated[int, Path(ge=1, le=MAX_ID)], token: Reader, session: ReadSession
) -> BorrowingRequestDetail:
    """One request with its timeline (every event, applied or refused)."""
    request = _visible_request(session, token, request_id)
    code = codes_by_id(session, {request.institution_id})[request.institution_id]
    return queries.to_detail(
        request, code, queries.timeline(session, request_id), tasks.open_tasks(session, request)
    )


@router.post("/{request_id}/resolve")
def resolve_attention(
    request_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    token: Writer,
    runtime: AppRuntime,
    wake: WakeWorker,
    body: ResolveAttention | None = None,
) -> BorrowingRequestPublic:
    """Staff did what the flag or a task asked (e.g. cancelled the WorldShare request).

    With no body: the flag is cleared and every open task closed; with `task`: that task only.

    For an export whose answer was lost, say what was found in WorldShare: the id of the request
    carrying the Alma id as its reference (linked; polling starts), or `export_again`. The
    timeline records which token acted; no free text is taken, as it could name a patron.
    """
    body = body or ResolveAttention()
    with write_session(runtime.engine) as session:
        request = _visible_request(session, token, request_id)
        institution = session.get(Institution, request.institution_id)
        assert institution is not None
        resolution.resolve(session, request, institution, body, staff=token.name)
        session.commit()
    if body.export_again:
        wake()
    return queries.to_public(request, institution.code)


@router.post("/{request_id}/renewal")
def report_renewal(
    request_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    body: RenewalAnswer,
    token: Writer,
    runtime: AppRuntime,
    wake: WakeWorker,
) -> BorrowingRequestPublic:
    """Report the lender's answer to a renewal (WorldShare's API cannot tell it in time).

    Approved: Alma is told RenewResponse Y with the new lender due date, and the patron's loan
    is moved to that date less the institution's offset, then read back (a mismatch opens a
    due-date-drift task). Refused: RenewResponse N, no date changes. Reporting an answer again,
    or one polling already saw, changes nothing.
    """
    with write_session(runtime.engine) as session:
        request = _visible_request(session, token, request_id)
        if request.state in TERMINAL_STATES:
            raise Conflict(f"request {request_id} is {request.state.value}")
        institution = session.get(Institution, request.institution_id)
        assert institution is not None
        applied = loans.report_renewal(
            session,
            request,
            institution,
            approved=body.approved,
            due_date=body.due_date,
            source=f"operator:{token.name}"[:32],
        )
        session.commit()
    if applied:
        wake()
    return queries.to_public(request, institution.code)
