"""A simulated Alma playing ISO 18626 requester towards the bridge, strict as Alma is.

Server side: Alma's ISO 18626 endpoint. It reads the partner's supplyingAgencyMessages with its
own reader, refuses what Alma refuses (``alma_rules``) with an ERROR confirmation, and keeps per
request what it was told. Alma's voice: ``POST /_sandbox/requests`` and
``POST /_sandbox/requests/{id}/actions`` make it send a ``request`` or an action to its partner
(written from its own fixtures), so Alma knows what it asked; ``send_request`` and
``send_action`` call them. Nothing here comes from the bridge's packages: each app keeps its own
state, so tests can run several.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException, Request, Response
from lxml import etree
from pydantic import BaseModel, Field

from app.sandbox.alma_api import install_alma_api
from app.sandbox.alma_rest import add_alma_rest_api
from app.sandbox.alma_rules import AlmaRequest, Notice, Refused, Taken, judge
from app.sandbox.alma_vocabulary import (
    Action,
    ErrorType,
    MessageStatus,
    ReasonForMessage,
    ServiceType,
    Status,
)
from app.sandbox.alma_xml import (
    MAX_MESSAGE_BYTES,
    Agency,
    SupplierMessage,
    Unreadable,
    kind_of,
    message_element,
    parse,
    read_confirmation,
    read_datetime,
    read_supplier_message,
    schema_problem,
)
from app.sandbox.iso_requester_messages import (
    AlmaCitation,
    AlmaHeader,
    AlmaPatron,
    ConfirmationEcho,
    encode_request,
    encode_requesting_agency_message,
    encode_supplying_agency_message_confirmation,
)

ISO_MEDIA_TYPE = "text/xml"
# Alma gives up on its partner a little before a caller waiting on Alma would.
PARTNER_TIMEOUT_SECONDS = 8.0
_SHORT = 60
_REASONS = frozenset(ReasonForMessage)
_STATUSES = frozenset(Status)

ReceivedMessage = dict[str, str | None]


class SandboxFaults(BaseModel):
    """Failures to inject: an HTTP status instead of a confirmation, or an ERROR confirmation.

    ``times`` counts the messages to fail; None fails every message until the faults are cleared.
    """

    confirm_error: bool = False
    fail_status: int | None = Field(default=None, ge=400, le=599)
    times: int | None = Field(default=None, ge=1)

    @property
    def active(self) -> bool:
        return self.confirm_error or self.fail_status is not None


class PartnerAnswer(BaseModel):
    """The partner's confirmation of what Alma sent, as Alma read it."""

    http_status: int
    kind: str
    message_status: MessageStatus
    error_type: ErrorType | None = None
    error_value: str | None = None
    requesting_agency_request_id: str | None = None
    action: str | None = None


class _ToPartner(BaseModel):
    bridge_url: str = Field(pattern=r"^https?://")
    requesting_agency: tuple[str, str]
    supplying_agency: tuple[str, str]
    security_code: str | None = None


class SendRequest(_ToPartner):
    request_id: str = Field(min_length=1)
    citation: AlmaCitation
    patron: AlmaPatron | None = None
    service_type: ServiceType | None = None
    note: str | None = None
    ship_to: str | None = None
    return_to: str | None = None


class SendAction(_ToPartner):
    action: Action
    note: str | None = None


@dataclass
class AlmaIsoSandbox:
    """What one simulated Alma has sent and been told, and the failures it fakes."""

    requests: dict[str, AlmaRequest] = field(default_factory=dict)
    messages: list[ReceivedMessage] = field(default_factory=list)
    refusals: list[ReceivedMessage] = field(default_factory=list)
    faults: SandboxFaults = field(default_factory=SandboxFaults)

    def take_fault(self) -> SandboxFaults | None:
        """The fault to apply to the next message, spending one of its ``times``."""
        fault = self.faults
        if not fault.active:
            return None
        if fault.times is not None:
            remaining = fault.times - 1
            self.faults = (
                fault.model_copy(update={"times": remaining}) if remaining else SandboxFaults()
            )
        return fault

    def take(
        self, document: etree._Element, message: SupplierMessage, received_at: datetime
    ) -> Refused | None:
        """Judge one supplyingAgencyMessage and record it; the refusal, if Alma refuses it."""
        try:
            notice = _notice(document, message)
        except Unreadable as error:
            return self.refuse(message, Refused(error.error_type, error.error_value), received_at)
        known = self.requests.get(notice.request_id)
        verdict = judge(notice, known)
        if isinstance(verdict, Refused):
            return self.refuse(message, verdict, received_at)
        if verdict is Taken.APPLIED and known is not None:
            known.apply(notice)
        self.messages.append(_entry(message, received_at) | {"outcome": verdict.value})
        return None

    def refuse(
        self, message: SupplierMessage | None, refusal: Refused, received_at: datetime
    ) -> Refused:
        entry = (
            _entry(message, received_at)
            if message is not None
            else {"kind": None, "received_at": received_at.isoformat()}
        )
        self.refusals.append(
            entry | {"errorType": refusal.error_type.value, "errorValue": refusal.error_value}
        )
        return refusal


def _notice(document: etree._Element, message: SupplierMessage) -> Notice:
    """The message in Alma's terms, or Unreadable: an unknown reason or status is named as such
    (the XSD would only say invalid), then the XSD judges the rest."""
    reason, status = message.reason_for_message, message.status
    if reason is not None and reason not in _REASONS:
        raise Unreadable(ErrorType.UNSUPPORTED_REASON_FOR_MESSAGE_TYPE, reason[:_SHORT])
    if status is not None and status not in _STATUSES:
        raise Unreadable(ErrorType.UNRECOGNISED_DATA_VALUE, f"status {status}"[:_SHORT])
    problem = schema_problem(document)
    if problem is not None:
        raise Unreadable(ErrorType.BADLY_FORMED_MESSAGE, problem[:_SHORT])
    # Valid against the XSD: the header and the status are there.
    assert message.requesting_agency and message.supplying_agency
    assert message.requesting_agency_request_id is not None
    assert reason is not None and status is not None
    try:
        due_date = None if message.due_date is None else read_datetime(message.due_date)
    except ValueError:
        raise Unreadable(ErrorType.UNRECOGNISED_DATA_VALUE, "statusInfo/dueDate") from None
    return Notice(
        request_id=message.requesting_agency_request_id,
        requesting_agency=message.requesting_agency,
        supplying_agency=message.supplying_agency,
        reason=ReasonForMessage(reason),
        status=Status(status),
        answer=None if message.answer_yes_no is None else message.answer_yes_no == "Y",
        due_date=due_date,
        item_id=message.item_id or None,
    )


def _entry(message: SupplierMessage, received_at: datetime) -> ReceivedMessage:
    due_date = message.due_date
    try:
        due_date = None if due_date is None else read_datetime(due_date).isoformat()
    except ValueError:
        pass
    return {
        "kind": "supplyingAgencyMessage",
        "reasonForMessage": message.reason_for_message,
        "status": message.status,
        "answerYesNo": message.answer_yes_no,
        "dueDate": due_date,
        "itemId": message.item_id,
        "returnTo": message.return_to,
        "note": message.note,
        "requestingAgencyRequestId": message.requesting_agency_request_id,
        "supplyingAgencyRequestId": message.supplying_agency_request_id,
        "received_at": received_at.isoformat(),
    }


def _echo(message: SupplierMessage | None) -> ConfirmationEcho:
    if message is None:
        return ConfirmationEcho()
    try:
        timestamp = None if message.timestamp is None else read_datetime(message.timestamp)
    except ValueError:
        timestamp = None
    if timestamp is not None and timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)  # xs:dateTime without an offset: read as UTC
    reason = message.reason_for_message
    return ConfirmationEcho(
        supplying_agency=message.supplying_agency,
        requesting_agency=message.requesting_agency,
        requesting_agency_request_id=message.requesting_agency_request_id,
        multiple_item_request_id=message.multiple_item_request_id or None,
        timestamp=timestamp,
        reason_for_message=reason if reason in _REASONS else None,
    )


def _confirm(
    message: SupplierMessage | None, error_type: ErrorType | None = None, error_value: str = ""
) -> Response:
    body = encode_supplying_agency_message_confirmation(
        _echo(message),
        error_type=error_type,
        error_value=None if error_type is None else error_value,
    )
    return Response(content=body, media_type=ISO_MEDIA_TYPE)


def create_alma_iso_sandbox(
    *, partner_transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """``partner_transport`` carries what Alma sends its partner (default: the network)."""
    sandbox = AlmaIsoSandbox()
    app = FastAPI(title="Simulated Alma ISO 18626 requester")
    app.state.sandbox = sandbox
    # Alma's REST API and webhook sender, on the same simulated Alma.
    install_alma_api(app, listener_transport=partner_transport)
    # Alma's borrowing requests in the REST API (clean-up).
    add_alma_rest_api(app)

    @app.post("/iso18626")
    async def receive_supplying_agency_message(request: Request) -> Response:
        received_at = datetime.now(UTC)
        body = await request.body()
        if len(body) > MAX_MESSAGE_BYTES:
            return Response(status_code=413)
        fault = sandbox.take_fault()
        if fault is not None and fault.fail_status is not None:
            return Response(status_code=fault.fail_status)
        try:
            document = parse(body)
            element = message_element(document)
        except Unreadable as error:
            sandbox.refuse(None, Refused(error.error_type, error.error_value), received_at)
            return _confirm(None, error.error_type, error.error_value)
        message = read_supplier_message(element)
        if kind_of(element) != "supplyingAgencyMessage":
            # Alma as requester takes only supplyingAgencyMessages from its partner.
            refusal = Refused(ErrorType.UNRECOGNISED_DATA_ELEMENT, kind_of(element)[:_SHORT])
            sandbox.refuse(None, refusal, received_at)
            return _confirm(None, refusal.error_type, refusal.error_value)
        if fault is not None:
            return _confirm(
                message, ErrorType.UNRECOGNISED_DATA_VALUE, "sandbox fault: confirm_error"
            )
        refused = sandbox.take(document, message, received_at)
        if refused is not None:
            return _confirm(message, refused.error_type, refused.error_value)
        return _confirm(message)

    async def to_partner(order: _ToPartner, body: bytes) -> PartnerAnswer:
        async with httpx.AsyncClient(
            transport=partner_transport, timeout=PARTNER_TIMEOUT_SECONDS
        ) as http:
            try:
                response = await http.post(
                    order.bridge_url, content=body, headers={"Content-Type": ISO_MEDIA_TYPE}
                )
            except httpx.HTTPError as error:
                raise HTTPException(
                    502, f"the partner did not answer: {type(error).__name__}"
                ) from None
        return _read_answer(response)

    @app.post("/_sandbox/requests")
    async def send_request_to_partner(order: SendRequest) -> PartnerAnswer:
        """Alma sends a ``request`` to its partner: the rota reached it."""
        service_type = order.service_type or order.citation.service_type()
        body = encode_request(
            _header(order, order.request_id),
            order.citation,
            patron=order.patron,
            service_type=service_type,
            note=order.note,
            ship_to=order.ship_to,
            return_to=order.return_to,
        )
        # Known before it is sent: the partner may answer it before it confirms it.
        known = sandbox.requests.setdefault(
            order.request_id,
            AlmaRequest(
                order.request_id,
                service_type,
                alma_agency=Agency(*order.requesting_agency),
                partner_agency=Agency(*order.supplying_agency),
            ),
        )
        answer = await to_partner(order, body)
        known.partner_answer = answer.message_status.value
        return answer

    @app.post("/_sandbox/requests/{request_id}/actions")
    async def send_action_to_partner(request_id: str, order: SendAction) -> PartnerAnswer:
        """Alma sends a requestingAgencyMessage about one request."""
        body = encode_requesting_agency_message(
            _header(order, request_id), action=order.action, note=order.note
        )
        known = sandbox.requests.get(request_id)
        asked_before = known.renewal_asked if known is not None else False
        if known is not None:
            known.actions_sent.append(order.action.value)
            if order.action is Action.RENEW:
                known.renewal_asked = True
        try:
            answer = await to_partner(order, body)
        except HTTPException:
            if known is not None:
                known.renewal_asked = asked_before
            raise
        if known is not None and answer.message_status is not MessageStatus.OK:
            # A refused Renew will get no RenewResponse.
            known.renewal_asked = asked_before
        return answer

    @app.get("/_sandbox/requests")
    async def list_requests() -> list[dict[str, Any]]:
        return [known.public() for known in sandbox.requests.values()]

    @app.get("/_sandbox/requests/{request_id}")
    async def show_request(request_id: str) -> dict[str, Any]:
        known = sandbox.requests.get(request_id)
        if known is None:
            raise HTTPException(404, "Alma sent no request with this id")
        return known.public()

    @app.get("/_sandbox/messages")
    async def list_received_messages(request_id: str | None = None) -> list[ReceivedMessage]:
        """The partner's messages Alma took: ``outcome`` applied, or ignored (ExpectToSupply)."""
        return _for_request(sandbox.messages, request_id)

    @app.delete("/_sandbox/messages", status_code=204)
    async def forget_received_messages() -> None:
        sandbox.messages.clear()

    @app.get("/_sandbox/refusals")
    async def list_refusals(request_id: str | None = None) -> list[ReceivedMessage]:
        """What Alma refused, with the errorType and errorValue it answered."""
        return _for_request(sandbox.refusals, request_id)

    @app.post("/_sandbox/faults")
    async def set_faults(faults: SandboxFaults) -> SandboxFaults:
        sandbox.faults = faults
        return faults

    @app.delete("/_sandbox/faults", status_code=204)
    async def clear_faults() -> None:
        sandbox.faults = SandboxFaults()

    return app


def _for_request(entries: list[ReceivedMessage], request_id: str | None) -> list[ReceivedMessage]:
    return [
        entry
        for entry in entries
        if request_id is None or entry.get("requestingAgencyRequestId") == request_id
    ]


def _header(order: _ToPartner, request_id: str) -> AlmaHeader:
    return AlmaHeader(
        supplying_agency=Agency(*order.supplying_agency),
        requesting_agency=Agency(*order.requesting_agency),
        timestamp=datetime.now(UTC),
        requesting_agency_request_id=request_id,
        security_code=order.security_code,
    )


def _read_answer(response: httpx.Response) -> PartnerAnswer:
    """The partner's confirmation, whatever HTTP status carries it; 502 when there is none."""
    try:
        document = parse(response.content)
        element = message_element(document)
    except Unreadable:
        raise HTTPException(
            502, f"the partner answered HTTP {response.status_code} without a confirmation"
        ) from None
    problem = schema_problem(document)
    if problem is not None:
        raise HTTPException(502, f"the partner's confirmation is not valid v1.2: {problem}")
    read = read_confirmation(element)
    if read.kind not in {"requestConfirmation", "requestingAgencyMessageConfirmation"}:
        raise HTTPException(502, f"the partner answered with a {read.kind}")
    return PartnerAnswer(
        http_status=response.status_code,
        kind=read.kind,
        message_status=MessageStatus(read.message_status or MessageStatus.ERROR),
        error_type=None if read.error_type is None else ErrorType(read.error_type),
        error_value=read.error_value,
        requesting_agency_request_id=read.requesting_agency_request_id,
        action=read.action,
    )


# --- the test's and the demo's hand on Alma ---------------------------------------------------


async def send_request(
    http: httpx.AsyncClient,
    alma_url: str,
    *,
    bridge_url: str,
    request_id: str,
    citation: AlmaCitation | dict[str, Any],
    patron: AlmaPatron | dict[str, Any] | None,
    requesting_agency: tuple[str, str],
    supplying_agency: tuple[str, str],
    security_code: str | None = None,
    service_type: ServiceType | None = None,
) -> PartnerAnswer:
    """Have the simulated Alma at ``alma_url`` send its ``request`` to the bridge."""
    order = SendRequest(
        bridge_url=bridge_url,
        request_id=request_id,
        citation=AlmaCitation.model_validate(citation),
        patron=None if patron is None else AlmaPatron.model_validate(patron),
        requesting_agency=requesting_agency,
        supplying_agency=supplying_agency,
        security_code=security_code,
        service_type=service_type,
    )
    return await _order(http, f"{alma_url}/_sandbox/requests", order)


async def send_action(
    http: httpx.AsyncClient,
    alma_url: str,
    *,
    bridge_url: str,
    request_id: str,
    action: Action,
    requesting_agency: tuple[str, str],
    supplying_agency: tuple[str, str],
    note: str | None = None,
    security_code: str | None = None,
) -> PartnerAnswer:
    """Have the simulated Alma send Renew, Received, ShippedReturn, Cancel, StatusRequest…"""
    order = SendAction(
        bridge_url=bridge_url,
        action=action,
        note=note,
        requesting_agency=requesting_agency,
        supplying_agency=supplying_agency,
        security_code=security_code,
    )
    return await _order(http, f"{alma_url}/_sandbox/requests/{request_id}/actions", order)


async def _order(http: httpx.AsyncClient, url: str, order: BaseModel) -> PartnerAnswer:
    """HTTPStatusError when the partner gave no readable confirmation (Alma answers 502)."""
    response = await http.post(url, json=order.model_dump(mode="json"))
    response.raise_for_status()
    return PartnerAnswer.model_validate(response.json())
