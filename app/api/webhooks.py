"""`GET|POST /webhooks/alma/{institution}`: Alma's webhook listener.

Alma waits 5 s and retries a timeout or a 5xx after 1 h, 3 h and 6 h; a 4xx is final. So an event
is verified on its raw bytes, stored with the job that handles it in one transaction keyed on
its `id`, and answered 200 only after the commit (accepted, duplicate or ignored); 503 only when
it could not be stored. Most loans are not interlibrary loans: those are answered `ignored`
having written nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy import bindparam, or_, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session, col, select

from app.alma.webhooks import AlmaEvent, BadEvent, parse_event, signature_valid
from app.api.deps import AppRuntime, WakeWorker
from app.api.routing import AuthFirstRoute
from app.borrowing import service
from app.borrowing.models import BorrowingRequest, InboxOutcome, InboxSource
from app.borrowing.tasks import TaskKind, open_institution_task
from app.db import read_session, write_session
from app.errors import ERROR_RESPONSES, AppError, NotFound, Unauthorized
from app.institutions.models import Institution
from app.institutions.secrets import SecretBox
from app.jobs.queue import enqueue
from app.workflows.kinds import HANDLE_LOAN_EVENT, LoanEventPayload

log = logging.getLogger("illbridge.webhooks")

# Alma's events are a few kilobytes; anything much larger is refused before it is read.
MAX_WEBHOOK_BYTES = 64 * 1024
PATH_PREFIX = "/webhooks/alma/"

router = APIRouter(tags=["webhooks"], route_class=AuthFirstRoute)


class WebhookStatus(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"


class Challenge(BaseModel):
    challenge: str


class WebhookAnswer(BaseModel):
    status: WebhookStatus


class NotStored(AppError):
    """The event could not be stored: Alma will send it again."""

    status_code = 503
    code = "not_stored"


def _error(status: int, description: str) -> dict[str, object]:
    return {**ERROR_RESPONSES[status], "description": description}


_RESPONSES: dict[int | str, dict[str, object]] = {
    400: _error(400, "No challenge parameter, or a body that is not a JSON object with an id"),
    401: _error(401, "Missing, malformed or wrong X-Exl-Signature; nothing stored"),
    404: _error(404, "Unknown institution"),
    413: _error(413, "Body larger than the webhook limit"),
    422: _error(422, "Validation error"),
    503: _error(503, "The event could not be stored (or the database is down); Alma retries"),
}


@router.get(
    "/webhooks/alma/{institution}",
    summary="Answer Alma's webhook challenge",
    responses={k: v for k, v in _RESPONSES.items() if k in (400, 404, 422, 503)},
)
def challenge(
    institution: Annotated[str, Path(max_length=64)],
    runtime: AppRuntime,
    challenge: Annotated[str | None, Query(max_length=1000)] = None,
) -> Challenge:
    """Alma checks the listener when the integration profile is saved: echo `challenge`."""
    if challenge is None:
        raise AppError("the challenge parameter is required", code="bad_request")
    with read_session(runtime.engine) as session:
        _institution(session, institution)
    return Challenge(challenge=challenge)


@router.post(
    "/webhooks/alma/{institution}",
    summary="Receive an Alma webhook event",
    responses=_RESPONSES,
    openapi_extra={
        "parameters": [
            {
                "name": "X-Exl-Signature",
                "in": "header",
                "required": True,
                "description": "Base64 of HMAC-SHA256(webhook secret, raw body)",
                "schema": {"type": "string"},
            }
        ],
        "requestBody": {
            "required": True,
            "description": "An Alma webhook event (JSON), read and verified as raw bytes",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
    },
)
async def receive_webhook(
    institution: Annotated[str, Path(max_length=64)],
    request: Request,
    runtime: AppRuntime,
    wake: WakeWorker,
) -> WebhookAnswer:
    body = await request.body()
    signature = request.headers.get("x-exl-signature")
    try:
        taken = await run_in_threadpool(
            take_event, runtime.engine, runtime.secrets, institution, body, signature
        )
    except SQLAlchemyError as exc:
        runtime.metrics.inbound_messages.labels("webhook", "not_stored").inc()
        log.warning(
            "webhook_not_stored", extra={"institution": institution, "error": type(exc).__name__}
        )
        raise NotStored("the event could not be stored; retry later") from None
    runtime.metrics.inbound_messages.labels("webhook", taken.status.value).inc()
    if taken.status is not WebhookStatus.IGNORED:
        log.info(
            "webhook_taken",
            extra={"institution": institution, "alma_event": taken.event, "outcome": taken.status},
        )
    if taken.queued:
        wake()
    return WebhookAnswer(status=taken.status)


@dataclass(frozen=True)
class Taken:
    status: WebhookStatus
    event: str
    queued: bool = False


@dataclass(frozen=True)
class Match:
    institution_id: int
    request_id: int | None
    unmatched: bool  # a resource-sharing library's loan that matches no request


@dataclass(frozen=True)
class Listener:
    """What the listener needs of an institution."""

    id: int
    webhook_secrets: str | None
    resource_sharing_libraries: tuple[str, ...]


# Built once: every event runs the same two small reads, so they skip the ORM and reuse the
# compiled SQL. A loan matches on any id the bridge linked; an absent id binds NULL, which
# matches nothing.
_LISTENER = select(
    Institution.id,
    Institution.alma_webhook_secrets_encrypted,
    Institution.alma_resource_sharing_libraries,
).where(Institution.code == bindparam("code"), col(Institution.active).is_(True))
_MATCH = (
    select(BorrowingRequest.id)
    .where(
        BorrowingRequest.institution_id == bindparam("institution_id"),
        or_(
            col(BorrowingRequest.item_barcode) == bindparam("item_barcode"),
            col(BorrowingRequest.alma_item_id) == bindparam("item_id"),
            col(BorrowingRequest.alma_loan_id) == bindparam("loan_id"),
            col(BorrowingRequest.alma_request_id) == bindparam("request_id"),
        ),
    )
    .order_by(col(BorrowingRequest.id).desc())
    .limit(1)
)


def take_event(
    engine: Engine, box: SecretBox, code: str, body: bytes, signature: str | None
) -> Taken:
    """Verify, read and store one event with the job that handles it; nothing for an ignored one."""
    with engine.connect() as connection:
        row = connection.execute(_LISTENER, {"code": code}).first()
        if row is None:
            raise NotFound(f"no institution {code}")
        listener = Listener(row[0], row[1], tuple(row[2] or ()))
        secrets = _decrypted(box, listener.webhook_secrets) if listener.webhook_secrets else ()
        if not signature_valid(body, signature, secrets):
            log.warning("webhook_signature_refused", extra={"institution": code})
            raise Unauthorized("missing or wrong X-Exl-Signature", code="bad_signature")
        try:
            event = parse_event(body)
        except BadEvent as exc:
            raise AppError(str(exc), code="bad_request") from None
        match = _match(connection, listener, event)
        connection.rollback()
    if match is None:
        return Taken(WebhookStatus.IGNORED, event.event)
    try:
        with write_session(engine) as session:
            status = _store(session, match, event)
            session.commit()
    except IntegrityError:
        # The same event arrived twice at once and the other copy was stored.
        return Taken(WebhookStatus.DUPLICATE, event.event)
    return Taken(status, event.event, queued=status is WebhookStatus.ACCEPTED)


def _institution(session: Session, code: str) -> Institution:
    found = session.exec(select(Institution).where(Institution.code == code)).first()
    if found is None or not found.active:
        raise NotFound(f"no institution {code}")
    return found


@lru_cache(maxsize=256)
def _decrypted(box: SecretBox, ciphertext: str) -> tuple[str, ...]:
    return tuple(box.decrypt_list(ciphertext))


def _match(connection: Connection, listener: Listener, event: AlmaEvent) -> Match | None:
    """The request a LOAN event is about, an unmatched loan to keep, or None to ignore it.

    A borrowed temporary item is known by the barcode the bridge gave Alma, the item id or
    loan id already linked, or the Alma request id; a loan in one of the institution's
    resource-sharing libraries is kept even when it matches nothing.
    """
    loan = event.loan
    if event.loan_event is None or loan is None:
        return None
    found = connection.execute(
        _MATCH,
        {
            "institution_id": listener.id,
            "item_barcode": loan.item_barcode,
            "item_id": loan.item_id,
            "loan_id": loan.loan_id,
            "request_id": loan.request_id,
        },
    ).scalar()
    if found is not None:
        return Match(listener.id, found, unmatched=False)
    if loan.library and loan.library in listener.resource_sharing_libraries:
        return Match(listener.id, None, unmatched=True)
    return None


def _store(session: Session, match: Match, event: AlmaEvent) -> WebhookStatus:
    # A repeat fails the inbox's unique key (source, external id): the caller answers duplicate.
    external_id = f"{match.institution_id}:{event.id}"
    loan = event.loan
    assert loan is not None and event.loan_event is not None
    # Ids staff and the handler need; never the patron's.
    summary = {
        "event": event.event,
        "loan_id": loan.loan_id,
        "item_barcode": loan.item_barcode,
        "library": loan.library,
    }
    service.record_inbound(
        session,
        source=InboxSource.WEBHOOK,
        external_id=external_id,
        kind=event.event,
        outcome=InboxOutcome.UNMATCHED if match.unmatched else InboxOutcome.ACCEPTED,
        institution_id=match.institution_id,
        request_id=match.request_id,
        **summary,
    )
    if match.unmatched:
        open_institution_task(
            session,
            match.institution_id,
            TaskKind.UNMATCHED_LOAN,
            f"Alma sent {event.event} for item {loan.item_barcode or loan.item_id} in "
            f"resource-sharing library {loan.library}, which matches no borrowing request",
            {**summary, "item_id": loan.item_id, "alma_request_id": loan.request_id},
        )
        return WebhookStatus.ACCEPTED
    if loan.user_id is not None:
        # The patron's Alma id, needed to update their loan, kept in its one column.
        session.execute(
            update(BorrowingRequest)
            .where(
                col(BorrowingRequest.id) == match.request_id,
                col(BorrowingRequest.requester_user_id).is_(None),
            )
            .values(requester_user_id=loan.user_id)
        )
    enqueue(
        session,
        HANDLE_LOAN_EVENT,
        LoanEventPayload(
            event_id=event.id,
            event=event.loan_event,
            loan_id=loan.loan_id,
            item_barcode=loan.item_barcode,
            item_id=loan.item_id,
            due_date=loan.due_date,
        ),
        dedupe_key=f"webhook:{external_id}",
        institution_id=match.institution_id,
        request_id=match.request_id,
    )
    return WebhookStatus.ACCEPTED
