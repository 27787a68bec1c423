"""The simulated Alma requester: it confirms what the bridge tells it and speaks Alma's part."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from app.alma.iso18626 import (
    ALMA_DEFAULT,
    Action,
    AgencyId,
    ErrorType,
    Header,
    IncomingMessage,
    IsoMessageError,
    IsoRequest,
    MessageStatus,
    RequestConfirmation,
    RequestingAgencyMessage,
    RequestingAgencyMessageConfirmation,
    SupplyingAgencyMessageConfirmation,
    encode_error_confirmation,
    encode_request_confirmation,
    encode_requesting_agency_message_confirmation,
    parse_message,
    supplier_message,
)
from app.borrowing.states import AlmaNotice
from app.sandbox.alma_requester import create_alma_iso_sandbox, send_action, send_request

ALMA = ("ISIL", "US-FTASU")
BRIDGE = ("ISIL", "US-ILLBRIDGE")
ALMA_URL = "http://alma.test"
BRIDGE_URL = "http://bridge.test/iso18626"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def alma() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_alma_iso_sandbox())
    async with httpx.AsyncClient(transport=transport, base_url=ALMA_URL) as client:
        yield client


def bridge_header(request_id: str = "RS-1") -> Header:
    return Header(
        supplying_agency=AgencyId(*BRIDGE),
        requesting_agency=AgencyId(*ALMA),
        timestamp=datetime.now(UTC),
        requesting_agency_request_id=request_id,
        supplying_agency_request_id="WS-1",
    )


async def post_iso(client: httpx.AsyncClient, body: bytes) -> httpx.Response:
    return await client.post("/iso18626", content=body, headers={"Content-Type": "text/xml"})


def loaned(request_id: str = "RS-1") -> bytes:
    return supplier_message(
        ALMA_DEFAULT,
        AlmaNotice.LOANED,
        bridge_header(request_id),
        due_date=date(2025, 6, 1),
        item_id="39000111",
    )


@pytest.mark.anyio
async def test_supplying_agency_message_is_confirmed_and_recorded(
    alma: httpx.AsyncClient,
) -> None:
    response = await post_iso(alma, loaned("RS-1"))
    await post_iso(alma, loaned("RS-2"))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    confirmation = parse_message(response.content)
    assert isinstance(confirmation, SupplyingAgencyMessageConfirmation)
    assert confirmation.message_status is MessageStatus.OK
    assert confirmation.reason_for_message == "StatusChange"
    assert confirmation.echo.requesting_agency_request_id == "RS-1"

    received = (await alma.get("/_sandbox/messages", params={"request_id": "RS-1"})).json()
    assert len(received) == 1
    assert {
        key: received[0][key]
        for key in ("kind", "reasonForMessage", "status", "answerYesNo", "dueDate", "itemId")
    } == {
        "kind": "supplyingAgencyMessage",
        "reasonForMessage": "StatusChange",
        "status": "Loaned",
        "answerYesNo": None,
        "dueDate": "2025-06-01T12:00:00+00:00",
        "itemId": "39000111",
    }
    assert received[0]["received_at"]
    assert len((await alma.get("/_sandbox/messages")).json()) == 2


@pytest.mark.anyio
async def test_messages_can_be_forgotten(alma: httpx.AsyncClient) -> None:
    await post_iso(alma, loaned())

    assert (await alma.delete("/_sandbox/messages")).status_code == 204
    assert (await alma.get("/_sandbox/messages")).json() == []


@pytest.mark.anyio
async def test_confirm_error_fault_answers_error_and_records_nothing(
    alma: httpx.AsyncClient,
) -> None:
    await alma.post("/_sandbox/faults", json={"confirm_error": True, "times": 1})

    failed = parse_message((await post_iso(alma, loaned())).content)
    recovered = parse_message((await post_iso(alma, loaned())).content)

    assert isinstance(failed, SupplyingAgencyMessageConfirmation)
    assert failed.message_status is MessageStatus.ERROR
    assert failed.error_type is ErrorType.UNRECOGNISED_DATA_VALUE
    assert isinstance(recovered, SupplyingAgencyMessageConfirmation)
    assert recovered.message_status is MessageStatus.OK
    assert len((await alma.get("/_sandbox/messages")).json()) == 1


@pytest.mark.anyio
async def test_fail_status_fault_fails_the_given_number_of_times(
    alma: httpx.AsyncClient,
) -> None:
    await alma.post("/_sandbox/faults", json={"fail_status": 503, "times": 2})

    statuses = [(await post_iso(alma, loaned())).status_code for _ in range(3)]

    assert statuses == [503, 503, 200]
    assert len((await alma.get("/_sandbox/messages")).json()) == 1


@pytest.mark.anyio
async def test_faults_without_times_last_until_cleared(alma: httpx.AsyncClient) -> None:
    await alma.post("/_sandbox/faults", json={"fail_status": 500})

    assert (await post_iso(alma, loaned())).status_code == 500
    assert (await post_iso(alma, loaned())).status_code == 500
    assert (await alma.delete("/_sandbox/faults")).status_code == 204
    assert (await post_iso(alma, loaned())).status_code == 200


@pytest.mark.anyio
async def test_garbage_gets_an_error_confirmation(alma: httpx.AsyncClient) -> None:
    confirmation = parse_message((await post_iso(alma, b"not xml")).content)

    assert isinstance(confirmation, RequestConfirmation)
    assert confirmation.error_type is ErrorType.BADLY_FORMED_MESSAGE


@pytest.mark.anyio
async def test_sandboxes_keep_their_own_state(alma: httpx.AsyncClient) -> None:
    other_transport = httpx.ASGITransport(app=create_alma_iso_sandbox())
    async with httpx.AsyncClient(transport=other_transport, base_url=ALMA_URL) as other:
        await post_iso(alma, loaned())

        assert (await other.get("/_sandbox/messages")).json() == []


# --- Alma's voice towards the bridge ----------------------------------------------------------


def stub_bridge(received: list[IncomingMessage]) -> FastAPI:
    """Stands in for the bridge's ISO endpoint: parse, remember, confirm."""
    app = FastAPI()

    @app.post("/iso18626")
    async def iso18626(request: Request) -> Response:
        try:
            message = parse_message(await request.body())
        except IsoMessageError as error:
            return Response(encode_error_confirmation(error), 400, media_type="text/xml")
        received.append(message)
        if isinstance(message, RequestingAgencyMessage):
            body = encode_requesting_agency_message_confirmation(
                message.echo, action=message.action, message_status=MessageStatus.OK
            )
        else:
            body = encode_request_confirmation(message.echo, message_status=MessageStatus.OK)
        return Response(body, media_type="text/xml")

    @app.post("/down")
    async def down() -> Response:
        return Response("maintenance", 503)

    return app


@pytest.mark.anyio
async def test_send_request_plays_alma_and_decodes_the_confirmation() -> None:
    received: list[IncomingMessage] = []
    transport = httpx.ASGITransport(app=stub_bridge(received))
    citation = {"title": "Middlemarch", "author": "Eliot, George", "isbn": "9780141439549"}
    patron = {"patron_id": "P-9", "surname": "Brooke", "given_name": "Dorothea", "email": None}

    async with httpx.AsyncClient(transport=transport) as http:
        confirmation = await send_request(
            http,
            BRIDGE_URL,
            request_id="RS-77",
            citation=citation,
            patron=patron,
            requesting_agency=ALMA,
            supplying_agency=BRIDGE,
        )

    assert isinstance(confirmation, RequestConfirmation)
    assert confirmation.message_status is MessageStatus.OK
    assert confirmation.echo.requesting_agency_request_id == "RS-77"
    (request,) = received
    assert isinstance(request, IsoRequest)
    assert request.citation["title"] == "Middlemarch"
    assert request.citation["isbn"] == "9780141439549"
    assert request.patron == patron
    assert request.header.requesting_agency == AgencyId(*ALMA)


@pytest.mark.anyio
async def test_send_action_plays_alma_and_decodes_the_confirmation() -> None:
    received: list[IncomingMessage] = []
    transport = httpx.ASGITransport(app=stub_bridge(received))

    async with httpx.AsyncClient(transport=transport) as http:
        confirmation = await send_action(
            http,
            BRIDGE_URL,
            request_id="RS-77",
            action=Action.RENEW,
            requesting_agency=ALMA,
            supplying_agency=BRIDGE,
            note="patron asked",
        )

    assert isinstance(confirmation, RequestingAgencyMessageConfirmation)
    assert confirmation.action is Action.RENEW
    (message,) = received
    assert isinstance(message, RequestingAgencyMessage)
    assert (message.action, message.note) == (Action.RENEW, "patron asked")
    assert message.header.requesting_agency_request_id == "RS-77"


@pytest.mark.anyio
async def test_send_action_surfaces_http_failures_without_a_confirmation() -> None:
    transport = httpx.ASGITransport(app=stub_bridge([]))

    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(httpx.HTTPStatusError):
            await send_action(
                http,
                "http://bridge.test/down",
                request_id="RS-77",
                action=Action.RECEIVED,
                requesting_agency=ALMA,
                supplying_agency=BRIDGE,
            )
