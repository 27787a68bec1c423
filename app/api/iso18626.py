"""`POST /iso18626/{institution}`: the bridge as Alma's ISO 18626 partner of last resort.

A message is parsed safely, its ids bounded, its sender checked (the institution's security code
and agency ids), stored with the jobs it causes in one transaction, and only then confirmed.
Whatever is wrong with a message is answered with the matching confirmation, `messageStatus`
ERROR and an `errorType` from the closed list. A sender the bridge will not take gets one answer
whatever the reason, so the answer tells a prober nothing; the log tells operators why.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from app.alma.iso18626 import (
    AgencyId,
    ErrorType,
    Header,
    IsoMessageError,
    IsoRequest,
    MessageKind,
    MessageStatus,
    RequestingAgencyMessage,
    ServiceType,
    encode_error_confirmation,
    encode_request_confirmation,
    encode_requesting_agency_message_confirmation,
    parse_message,
)
from app.api.deps import AppRuntime, WakeWorker
from app.borrowing import service
from app.borrowing.citation import Citation
from app.borrowing.models import InboxOutcome, InboxSource, RequestOrigin
from app.borrowing.schemas import (
    ALMA_REQUEST_ID_MAX_CHARS,
    ALMA_REQUEST_ID_PATTERN,
    REQUESTER_USER_ID_MAX_CHARS,
)
from app.borrowing.states import TERMINAL_STATES, ServiceKind
from app.db import write_session
from app.errors import ERROR_RESPONSES
from app.institutions.models import Institution
from app.institutions.secrets import SecretBox
from app.timeutil import utcnow
from app.workflows import alma_actions, intake

log = logging.getLogger("illbridge.iso18626")

ISO_BODY = ("application/xml", "text/xml")
ISO_MEDIA_TYPES = frozenset(ISO_BODY)
XML_MEDIA_TYPE = "application/xml"
SENDER_NOT_RECOGNISED = "sender not recognised"
REQUEST_ID_USED = "request id already used"
ALMA_REQUEST_ID = re.compile(ALMA_REQUEST_ID_PATTERN)

router = APIRouter(tags=["iso18626"])


class Refusal(Exception):
    """A message the bridge will not take: nothing it says is stored."""

    def __init__(self, error_type: ErrorType, error_value: str, *, echo_request_id: bool = True):
        super().__init__(error_value)
        self.error_type = error_type
        self.error_value = error_value
        self.echo_request_id = echo_request_id


@dataclass(frozen=True)
class Outcome:
    """How a message was taken: `error` set means recorded (and flagged) but not applied."""

    inbox: InboxOutcome
    error: str | None = None


def _xml(body: bytes, status_code: int = 200) -> Response:
    return Response(content=body, status_code=status_code, media_type=XML_MEDIA_TYPE)


def _confirmation(
    message: IsoRequest | RequestingAgencyMessage,
    *,
    error_type: ErrorType | None = None,
    error_value: str | None = None,
    echo_request_id: bool = True,
) -> bytes:
    status = MessageStatus.ERROR if error_type else MessageStatus.OK
    # timestampReceived repeats the sender's own timestamp: how Alma matches the answer.
    received_at = message.header.timestamp
    echo = message.echo
    if not echo_request_id:
        echo = replace(echo, requesting_agency_request_id=None)
    if isinstance(message, IsoRequest):
        return encode_request_confirmation(
            echo,
            message_status=status,
            error_type=error_type,
            error_value=error_value,
            timestamp_received=received_at,
        )
    return encode_requesting_agency_message_confirmation(
        echo,
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
            "messageStatus OK or ERROR (with errorData). A sender not taken (unknown or "
            "inactive institution, wrong or missing security code, wrong agency id) gets "
            f"errorType UnrecognisedDataValue, errorValue '{SENDER_NOT_RECOGNISED}'",
        },
        413: {"description": "Body larger than the ISO 18626 limit"},
        415: {"content": {XML_MEDIA_TYPE: {}}, "description": "Not text/xml or application/xml"},
        503: ERROR_RESPONSES[503],
    },
    # Read raw, so FastAPI cannot see it: an ISO 18626 request or requestingAgencyMessage.
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "An ISO 18626 v1.2 request or requestingAgencyMessage",
            "content": {media_type: {"schema": {"type": "string"}} for media_type in ISO_BODY},
        }
    },
)
async def receive_iso18626(
    institution: Annotated[str, Path(max_length=64)],
    request: Request,
    runtime: AppRuntime,
    wake: WakeWorker,
) -> Response:
    received_at = utcnow()
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    metrics = runtime.metrics
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
    try:
        check_identifiers(message)
        outcome = await run_in_threadpool(
            take_message, runtime.engine, runtime.secrets, institution, message
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
                error_type=refusal.error_type,
                error_value=refusal.error_value,
                echo_request_id=refusal.echo_request_id,
            )
        )
    metrics.inbound_messages.labels("iso18626", outcome.inbox).inc()
    log.info(
        "iso_message_taken",
        extra={"institution": institution, "kind": message.kind, "outcome": outcome.inbox},
    )
    if outcome.inbox is InboxOutcome.ACCEPTED:
        wake()
    if outcome.error is not None:
        return _xml(
            _confirmation(
                message,
                error_type=ErrorType.UNRECOGNISED_DATA_VALUE,
                error_value=outcome.error,
            )
        )
    return _xml(_confirmation(message))


def check_identifiers(message: IsoRequest | RequestingAgencyMessage) -> None:
    """Refuse ids no Alma sends before anything is looked up or stored with them.

    The refusal names the field and never repeats the value: it may be huge, or a patron's.
    """
    request_id = message.header.requesting_agency_request_id
    if len(request_id) > ALMA_REQUEST_ID_MAX_CHARS or not ALMA_REQUEST_ID.fullmatch(request_id):
        raise Refusal(
            ErrorType.UNRECOGNISED_DATA_VALUE, "requestingAgencyRequestId", echo_request_id=False
        )
    patron_id = (
        message.patron["patron_id"] if isinstance(message, IsoRequest) and message.patron else None
    )
    if patron_id is not None and (
        len(patron_id) > REQUESTER_USER_ID_MAX_CHARS or not patron_id.isprintable()
    ):
        raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE, "patronId")


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
        return Outcome(inbox=InboxOutcome.DUPLICATE)


def _partner_institution(
    session: Session, box: SecretBox, code: str, header: Header
) -> Institution:
    """The institution the message is for, if it comes from that institution's Alma."""
    institution = session.exec(select(Institution).where(Institution.code == code)).first()
    reason = _why_not_sender(box, institution, header)
    if reason is not None:
        log.warning("iso_sender_refused", extra={"institution": code, "reason": reason})
        raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE, SENDER_NOT_RECOGNISED)
    assert institution is not None
    return institution


def _why_not_sender(box: SecretBox, institution: Institution | None, header: Header) -> str | None:
    """Why the message is not from the institution's Alma, or None when it is.

    Every check runs whatever the outcome of the others, with one decryption and one
    constant-time comparison even for an unknown institution, so all refusals take one path.
    """
    stored = institution.alma_iso18626_security_code_encrypted if institution else None
    expected = box.decrypt(stored or _stand_in_code(box))
    given = header.security_code
    matches = hmac.compare_digest(_digest(given or ""), _digest(expected))
    allowed_without = institution is not None and institution.alma_iso18626_allow_without_code
    # A code that is carried must be the right one; only the opt-out admits none.
    code_ok = matches if stored is not None and given is not None else allowed_without
    checks = (
        ("unknown_institution", institution is not None),
        ("inactive_institution", institution is not None and institution.active),
        ("security_code", code_ok),
        (
            "supplying_agency",
            institution is not None
            and _same_agency(
                header.supplying_agency,
                institution.bridge_agency_id_type,
                institution.bridge_agency_id_value,
            ),
        ),
        (
            "requesting_agency",
            institution is not None
            and _same_agency(
                header.requesting_agency,
                institution.alma_agency_id_type,
                institution.alma_agency_id_value,
            ),
        ),
    )
    return next((reason for reason, passed in checks if not passed), None)


@lru_cache(maxsize=8)
def _stand_in_code(box: SecretBox) -> str:
    """A ciphertext to decrypt when there is no stored code, so that step is never skipped."""
    return box.encrypt(hashlib.sha256(b"no iso18626 security code").hexdigest())


def _digest(code: str) -> bytes:
    # Equal lengths, so the comparison's time does not depend on how long either code is.
    return hashlib.sha256(code.encode()).digest()


def _same_agency(agency: AgencyId, kind: str | None, value: str | None) -> bool:
    if not kind or not value:
        return False
    return agency.type.upper() == kind.upper() and agency.value.upper() == value.upper()


def _take_request(session: Session, institution: Institution, message: IsoRequest) -> Outcome:
    assert institution.id is not None
    alma_request_id = message.header.requesting_agency_request_id
    known = service.find_request(session, institution.id, alma_request_id=alma_request_id)
    if known is not None and known.state in TERMINAL_STATES:
        # A new request under an id that has run its course is not a re-send (as CrossLink).
        raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE, REQUEST_ID_USED)
    try:
        citation = Citation.model_validate(message.citation)
    except ValidationError as exc:
        field = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "bibliographicInfo"
        raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE, f"citation {field}") from None
    new = intake.NewRequest(
        alma_request_id=message.header.requesting_agency_request_id,
        citation=citation,
        requester_user_id=message.patron["patron_id"] if message.patron else None,
        origin=RequestOrigin.ISO18626,
        inbox=InboxSource.ISO18626,
        summary={"service_type": message.service_type.value if message.service_type else None},
        service_kind=_service_kind(message),
    )
    _request, created = intake.take_request(session, institution, new)
    return Outcome(inbox=InboxOutcome.ACCEPTED if created else InboxOutcome.DUPLICATE)


def _service_kind(message: IsoRequest) -> ServiceKind:
    """Copy or loan: as Alma says, or (CopyOrLoan, unsaid) a copy when a part is asked for."""
    if message.service_type is ServiceType.COPY:
        return ServiceKind.COPY
    if message.service_type is ServiceType.LOAN:
        return ServiceKind.LOAN
    return ServiceKind.COPY if message.citation["format"] == "DIGITAL" else ServiceKind.LOAN


def _take_action(
    session: Session, institution: Institution, message: RequestingAgencyMessage
) -> Outcome:
    assert institution.id is not None
    header = message.header
    external_id = (
        f"action:{institution.id}:{header.requesting_agency_request_id}:"
        f"{message.action.value}:{header.timestamp.isoformat()}"
    )
    if (seen := service.find_inbound(session, InboxSource.ISO18626, external_id)) is not None:
        return Outcome(inbox=InboxOutcome.DUPLICATE, error=seen.summary.get("error"))
    request = service.find_request(
        session, institution.id, alma_request_id=header.requesting_agency_request_id
    )
    if request is None:
        raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE, "requestingAgencyRequestId")
    if message.action not in alma_actions.HANDLED_ACTIONS:
        raise Refusal(ErrorType.UNSUPPORTED_ACTION_TYPE, message.action.value)
    taken = alma_actions.apply_action(
        session, request, message.action, header.timestamp, message.note
    )
    service.record_inbound(
        session,
        source=InboxSource.ISO18626,
        external_id=external_id,
        kind=MessageKind.REQUESTING_AGENCY_MESSAGE.value,
        outcome=taken.inbox,
        institution_id=institution.id,
        request_id=request.id,
        action=message.action.value,
        error=taken.error,
    )
    return Outcome(inbox=taken.inbox, error=taken.error)
