"""`POST /iso18626/{institution}`: the bridge as Alma's ISO 18626 partner of last resort.

A message is parsed safely, checked against the institution's agency ids, stored with the jobs it
causes in one transaction, and only then confirmed. Whatever is wrong with a message is answered
with the matching confirmation, `messageStatus` ERROR and an `errorType` from the closed list.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from app.alma.iso18626 import (
    Action,
    AgencyId,
    ErrorType,
    Header,
    IsoMessageError,
    IsoRequest,
    MessageKind,
    MessageStatus,
    RequestingAgencyMessage,
    encode_error_confirmation,
    encode_request_confirmation,
    encode_requesting_agency_message_confirmation,
    parse_message,
)
from app.borrowing import service
from app.borrowing.citation import Citation
from app.borrowing.models import BorrowingRequest
from app.borrowing.states import AlmaNotice, Trigger
from app.db import write_session
from app.errors import ERROR_RESPONSES
from app.institutions.models import Institution
from app.institutions.secrets import SecretBox
from app.timeutil import utcnow

log = logging.getLogger("illbridge.iso18626")

ISO_MEDIA_TYPES = frozenset({"text/xml", "application/xml"})
XML_MEDIA_TYPE = "application/xml"
SOURCE = "alma_iso18626"
INBOX_SOURCE = "iso18626"

router = APIRouter(tags=["iso18626"])

# Actions that are a plain transition of the state machine.
ACTION_TRIGGERS = {
    Action.RECEIVED: Trigger.ITEM_RECEIVED,
    Action.SHIPPED_RETURN: Trigger.SHIPPED_RETURN,
}


class Refusal(Exception):
    """A message the bridge will not take: nothing it says is stored."""

    def __init__(self, error_type: ErrorType, error_value: str, *, http_status: int = 200):
        super().__init__(error_value)
        self.error_type = error_type
        self.error_value = error_value
        self.http_status = http_status


@dataclass(frozen=True)
class Outcome:
    """How a message was taken: `error` set means recorded (and flagged) but not applied."""

    inbox: str
    error: str | None = None


def _xml(body: bytes, status_code: int = 200) -> Response:
    return Response(content=body, status_code=status_code, media_type=XML_MEDIA_TYPE)


def _confirmation(
    message: IsoRequest | RequestingAgencyMessage,
    received_at: datetime,
    *,
    error_type: ErrorType | None = None,
    error_value: str | None = None,
) -> bytes:
    status = MessageStatus.ERROR if error_type else MessageStatus.OK
    if isinstance(message, IsoRequest):
        return encode_request_confirmation(
            message.echo,
            message_status=status,
            error_type=error_type,
            error_value=error_value,
            timestamp_received=received_at,
        )
    return encode_requesting_agency_message_confirmation(
        message.echo,
        action=message.action,
        message_status=status,
        error_type=error_type,
        error_value=error_value,
        timestamp_received=received_at,
    )


@router.post(
    "/iso18626/{institution}",
    response_class=Response,
    summary="Receive an ISO 18626 message from Alma",
    responses={
        200: {
            "content": {XML_MEDIA_TYPE: {}},
            "description": "A requestConfirmation or requestingAgencyMessageConfirmation, "
            "messageStatus OK or ERROR (with errorData)",
        },
        401: {
            "content": {XML_MEDIA_TYPE: {}},
            "description": "Missing or wrong requestingAgencyAuthentication/securityCode",
        },
        404: {"content": {XML_MEDIA_TYPE: {}}, "description": "Unknown institution"},
        413: {"description": "Body larger than the ISO 18626 limit"},
        415: {"content": {XML_MEDIA_TYPE: {}}, "description": "Not text/xml or application/xml"},
        503: ERROR_RESPONSES[503],
    },
)
async def receive_iso18626(
    institution: Annotated[str, Path(max_length=64)], request: Request
) -> Response:
    received_at = utcnow()
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    metrics = request.app.state.metrics
    if media_type not in ISO_MEDIA_TYPES:
        metrics.inbound_messages.labels("iso18626", "refused").inc()
        error = IsoMessageError(ErrorType.BADLY_FORMED_MESSAGE, "Content-Type must be XML")
        return _xml(encode_error_confirmation(error, timestamp_received=received_at), 415)
    try:
        message = parse_message(body)
        if not isinstance(message, IsoRequest | RequestingAgencyMessage):
            raise IsoMessageError(
                ErrorType.UNRECOGNISED_DATA_ELEMENT,
                f"{message.kind} is not accepted by a supplier",
                kind=message.kind,
                echo=message.echo,
            )
    except IsoMessageError as exc:
        metrics.inbound_messages.labels("iso18626", "refused").inc()
        log.info(
            "iso_message_refused",
            extra={"institution": institution, "error_type": str(exc.error_type)},
        )
        return _xml(encode_error_confirmation(exc, timestamp_received=received_at))
    context = request.app.state.services.context
    try:
        outcome = await run_in_threadpool(
            take_message, context.engine, context.secrets, institution, message
        )
    except Refusal as refusal:
        metrics.inbound_messages.labels("iso18626", "refused").inc()
        log.info(
            "iso_message_refused",
            extra={"institution": institution, "error_type": str(refusal.error_type)},
        )
        return _xml(
            _confirmation(
                message,
                received_at,
                error_type=refusal.error_type,
                error_value=refusal.error_value,
            ),
            refusal.http_status,
        )
    metrics.inbound_messages.labels("iso18626", outcome.inbox).inc()
    log.info(
        "iso_message_taken",
        extra={"institution": institution, "kind": message.kind, "outcome": outcome.inbox},
    )
    if outcome.inbox == "accepted":
        request.app.state.services.wake_worker()
    if outcome.error is not None:
        return _xml(
            _confirmation(
                message,
                received_at,
                error_type=ErrorType.UNRECOGNISED_DATA_VALUE,
                error_value=outcome.error,
            )
        )
    return _xml(_confirmation(message, received_at))


def take_message(
    engine: Engine,
    box: SecretBox,
    institution_code: str,
    message: IsoRequest | RequestingAgencyMessage,
) -> Outcome:
    """Store what the message says and queue what follows, in one transaction."""
    try:
        with write_session(engine) as session:
            institution = _partner_institution(session, box, institution_code, message.header)
            if isinstance(message, IsoRequest):
                outcome = _take_request(session, institution, message)
            else:
                outcome = _take_action(session, institution, message)
            session.commit()
            return outcome
    except IntegrityError:
        # The same message arrived twice at once and the other copy won: it is a duplicate.
        return Outcome(inbox="duplicate")


def _partner_institution(
    session: Session, box: SecretBox, code: str, header: Header
) -> Institution:
    """The institution the message is for, if it comes from that institution's Alma."""
    institution = session.exec(select(Institution).where(Institution.code == code)).first()
    if institution is None or not institution.active:
        raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE, "institution", http_status=404)
    expected_code = institution.alma_iso18626_security_code_encrypted
    if expected_code is not None and not hmac.compare_digest(
        (header.security_code or "").encode(), box.decrypt(expected_code).encode()
    ):
        raise Refusal(
            ErrorType.UNRECOGNISED_DATA_VALUE, "requestingAgencyAuthentication", http_status=401
        )
    checks = (
        (
            "supplyingAgencyId",
            header.supplying_agency,
            institution.bridge_agency_id_type,
            institution.bridge_agency_id_value,
        ),
        (
            "requestingAgencyId",
            header.requesting_agency,
            institution.alma_agency_id_type,
            institution.alma_agency_id_value,
        ),
    )
    for name, given, kind, value in checks:
        if not _same_agency(given, kind, value):
            raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE, name)
    return institution


def _same_agency(agency: AgencyId, kind: str | None, value: str | None) -> bool:
    if not kind or not value:
        return False
    return agency.type.upper() == kind.upper() and agency.value.upper() == value.upper()


def _take_request(session: Session, institution: Institution, message: IsoRequest) -> Outcome:
    assert institution.id is not None
    alma_request_id = message.header.requesting_agency_request_id
    external_id = f"request:{institution.id}:{alma_request_id}"
    if service.find_request(session, institution.id, alma_request_id=alma_request_id):
        return Outcome(inbox="duplicate")
    try:
        citation = Citation.model_validate(message.citation)
    except ValidationError as exc:
        field = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "bibliographicInfo"
        raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE, f"citation {field}") from None
    request, _created = service.register_request(
        session,
        institution,
        alma_request_id=alma_request_id,
        citation=citation,
        requester_user_id=message.patron["patron_id"] if message.patron else None,
        origin=service.ORIGIN_ISO18626,
    )
    service.record_inbound(
        session,
        source=INBOX_SOURCE,
        external_id=external_id,
        kind=MessageKind.REQUEST.value,
        outcome="accepted",
        institution_id=institution.id,
        request_id=request.id,
        service_type=message.service_type.value if message.service_type else None,
    )
    return Outcome(inbox="accepted")


def _take_action(
    session: Session, institution: Institution, message: RequestingAgencyMessage
) -> Outcome:
    assert institution.id is not None
    header = message.header
    external_id = (
        f"action:{institution.id}:{header.requesting_agency_request_id}:"
        f"{message.action.value}:{header.timestamp.isoformat()}"
    )
    if (seen := service.find_inbound(session, INBOX_SOURCE, external_id)) is not None:
        return Outcome(inbox="duplicate", error=seen.summary.get("error"))
    request = service.find_request(
        session, institution.id, alma_request_id=header.requesting_agency_request_id
    )
    if request is None:
        raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE, "requestingAgencyRequestId")
    error = _apply_action(session, request, message.action, header.timestamp)
    service.record_inbound(
        session,
        source=INBOX_SOURCE,
        external_id=external_id,
        kind=MessageKind.REQUESTING_AGENCY_MESSAGE.value,
        outcome="flagged" if error else "accepted",
        institution_id=institution.id,
        request_id=request.id,
        action=message.action.value,
        error=error,
    )
    return Outcome(inbox="flagged" if error else "accepted", error=error)


def _apply_action(
    session: Session, request: BorrowingRequest, action: Action, sent_at: datetime
) -> str | None:
    """Apply one action; a message for the confirmation's errorValue when it did not fit."""
    before = request.state
    if action in ACTION_TRIGGERS:
        applied = service.apply_trigger(session, request, ACTION_TRIGGERS[action], SOURCE)
    elif action is Action.RENEW:
        applied = service.request_renewal(session, request, SOURCE)
    elif action is Action.CANCEL:
        service.cancel_from_alma(session, request, SOURCE)
        applied = True  # a refused cancel is answered by CancelResponse N, not an error
    elif action is Action.STATUS_REQUEST:
        service.notify_alma(
            session, request, AlmaNotice.STATUS_ANSWER, key=f"status:{sent_at.isoformat()}"
        )
        applied = True
    elif action is Action.NOTIFICATION:
        # The note is free text from staff and may name the patron: only its arrival is kept.
        service.record_event(session, request, "alma_notification", SOURCE)
        applied = True
    else:
        raise Refusal(ErrorType.UNSUPPORTED_ACTION_TYPE, action.value)
    if applied:
        return None
    return f"{action.value} does not apply in state {before}"
