"""A simulated Alma playing ISO 18626 requester towards the bridge.

Server side: Alma's ISO 18626 endpoint, which records the bridge's supplyingAgencyMessages and
confirms them (or fails on demand). Client side: ``send_request`` and ``send_action`` say what
Alma says to the partner of last resort. Each app keeps its own state, so tests can run several.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TypeVar

import httpx
from fastapi import FastAPI, Request, Response
from pydantic import BaseModel, Field

from app.alma.iso18626 import (
    MAX_MESSAGE_BYTES,
    Action,
    AgencyId,
    ErrorType,
    Header,
    IsoMessageError,
    MessageStatus,
    RequestConfirmation,
    RequestingAgencyMessageConfirmation,
    SupplyingAgencyMessage,
    encode_error_confirmation,
    encode_supplying_agency_message_confirmation,
    parse_message,
)
from app.sandbox.iso_requester_messages import encode_request, encode_requesting_agency_message

ISO_MEDIA_TYPE = "text/xml"

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


@dataclass
class AlmaIsoSandbox:
    """What one simulated Alma has received, and the failures it has been told to fake."""

    messages: list[ReceivedMessage] = field(default_factory=list)
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

    def record(self, message: SupplyingAgencyMessage, received_at: datetime) -> None:
        self.messages.append(
            {
                "kind": message.kind,
                "reasonForMessage": message.reason_for_message,
                "status": message.status,
                "answerYesNo": None
                if message.answer_yes_no is None
                else ("Y" if message.answer_yes_no else "N"),
                "dueDate": message.due_date.isoformat() if message.due_date else None,
                "itemId": message.item_id,
                "note": message.note,
                "requestingAgencyRequestId": message.header.requesting_agency_request_id,
                "supplyingAgencyRequestId": message.header.supplying_agency_request_id,
                "received_at": received_at.isoformat(),
            }
        )


def _xml(body: bytes) -> Response:
    return Response(content=body, media_type=ISO_MEDIA_TYPE)


def create_alma_iso_sandbox() -> FastAPI:
    sandbox = AlmaIsoSandbox()
    app = FastAPI(title="Simulated Alma ISO 18626 requester")
    app.state.sandbox = sandbox

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
            message = parse_message(body)
            if not isinstance(message, SupplyingAgencyMessage):
                # Alma as requester takes only supplyingAgencyMessages from its partner.
                raise IsoMessageError(
                    ErrorType.UNRECOGNISED_DATA_ELEMENT,
                    message.kind,
                    kind=message.kind,
                    echo=message.echo,
                )
        except IsoMessageError as error:
            return _xml(encode_error_confirmation(error, timestamp_received=received_at))
        if fault is not None:
            return _xml(
                encode_supplying_agency_message_confirmation(
                    message.header.echo,
                    reason_for_message=message.reason_for_message,
                    message_status=MessageStatus.ERROR,
                    error_type=ErrorType.UNRECOGNISED_DATA_VALUE,
                    error_value="sandbox fault: confirm_error",
                    timestamp_received=received_at,
                )
            )
        sandbox.record(message, received_at)
        return _xml(
            encode_supplying_agency_message_confirmation(
                message.header.echo,
                reason_for_message=message.reason_for_message,
                message_status=MessageStatus.OK,
                timestamp_received=received_at,
            )
        )

    @app.get("/_sandbox/messages")
    async def list_received_messages(request_id: str | None = None) -> list[ReceivedMessage]:
        return [
            message
            for message in sandbox.messages
            if request_id is None or message["requestingAgencyRequestId"] == request_id
        ]

    @app.delete("/_sandbox/messages", status_code=204)
    async def forget_received_messages() -> None:
        sandbox.messages.clear()

    @app.post("/_sandbox/faults")
    async def set_faults(faults: SandboxFaults) -> SandboxFaults:
        sandbox.faults = faults
        return faults

    @app.delete("/_sandbox/faults", status_code=204)
    async def clear_faults() -> None:
        sandbox.faults = SandboxFaults()

    return app


_Confirmation = TypeVar("_Confirmation", RequestConfirmation, RequestingAgencyMessageConfirmation)


async def _exchange(
    http: httpx.AsyncClient, bridge_url: str, body: bytes, expected: type[_Confirmation]
) -> _Confirmation:
    """POST one message and decode the confirmation, whatever HTTP status carries it."""
    response = await http.post(bridge_url, content=body, headers={"Content-Type": ISO_MEDIA_TYPE})
    try:
        confirmation = parse_message(response.content)
    except IsoMessageError:
        response.raise_for_status()
        raise
    if not isinstance(confirmation, expected):
        raise IsoMessageError(
            ErrorType.UNRECOGNISED_DATA_ELEMENT,
            f"expected {expected.kind}, got {confirmation.kind}",
        )
    return confirmation


def _header(
    request_id: str,
    requesting_agency: tuple[str, str],
    supplying_agency: tuple[str, str],
    security_code: str | None,
) -> Header:
    return Header(
        supplying_agency=AgencyId(*supplying_agency),
        requesting_agency=AgencyId(*requesting_agency),
        timestamp=datetime.now(UTC),
        requesting_agency_request_id=request_id,
        security_code=security_code,
    )


async def send_request(
    http: httpx.AsyncClient,
    bridge_url: str,
    *,
    request_id: str,
    citation: Mapping[str, str | date | None],
    patron: Mapping[str, str | None] | None,
    requesting_agency: tuple[str, str],
    supplying_agency: tuple[str, str],
    security_code: str | None = None,
) -> RequestConfirmation:
    """Alma's ``request`` to its partner of last resort: the rota reached the bridge."""
    header = _header(request_id, requesting_agency, supplying_agency, security_code)
    body = encode_request(header, citation, patron=patron)
    return await _exchange(http, bridge_url, body, RequestConfirmation)


async def send_action(
    http: httpx.AsyncClient,
    bridge_url: str,
    *,
    request_id: str,
    action: Action,
    requesting_agency: tuple[str, str],
    supplying_agency: tuple[str, str],
    note: str | None = None,
    security_code: str | None = None,
) -> RequestingAgencyMessageConfirmation:
    """Alma's requestingAgencyMessage: Renew, Received, ShippedReturn, Cancel, StatusRequest…"""
    header = _header(request_id, requesting_agency, supplying_agency, security_code)
    body = encode_requesting_agency_message(header, action=action, note=note)
    return await _exchange(http, bridge_url, body, RequestingAgencyMessageConfirmation)
