"""The simulated Alma requester: strict as Alma about what its partner tells it, and speaking
Alma's part from its own fixtures, with nothing of the bridge's codec inside."""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from app.alma.iso18626 import (
    ALMA_DEFAULT,
    AgencyId,
    ErrorType,
    Header,
    IncomingMessage,
    IsoMessageError,
    IsoRequest,
    MessageStatus,
    RequestingAgencyMessage,
    SupplyingAgencyMessageConfirmation,
    encode_error_confirmation,
    encode_request_confirmation,
    encode_requesting_agency_message_confirmation,
    parse_message,
    supplier_message,
    validate,
)
from app.borrowing.states import AlmaNotice
from app.sandbox.alma_requester import (
    PartnerAnswer,
    create_alma_iso_sandbox,
    send_action,
    send_request,
)
from app.sandbox.alma_rules import AlmaRequest, Notice, Refused, Taken, judge
from app.sandbox.alma_vocabulary import Action, ReasonForMessage, ServiceType, Status
from app.sandbox.alma_xml import Agency

ALMA = ("ISIL", "US-FTASU")
BRIDGE = ("ISIL", "US-ILLBRIDGE")
ALMA_URL = "http://alma.test"
BRIDGE_URL = "http://bridge.test/iso18626"
BOOK = {"title": "Middlemarch", "author": "Eliot, George", "isbn": "9780141439549"}
ARTICLE = {"title": "Molecular structure of nucleic acids", "journal_title": "Nature"}
PATRON = {"patron_id": "P-9", "surname": "Brooke", "given_name": "Dorothea", "email": None}
APP = Path(__file__).resolve().parents[2] / "app"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- the bridge Alma talks to -----------------------------------------------------------------


def stub_bridge(received: list[IncomingMessage], refuse: Iterable[str] = ()) -> FastAPI:
    """Stands in for the bridge's ISO endpoint: parse with the bridge's codec, remember, confirm
    (ERROR for the actions in ``refuse``)."""
    app = FastAPI()
    refused_actions = set(refuse)

    @app.post("/iso18626")
    async def iso18626(request: Request) -> Response:
        try:
            message = parse_message(await request.body())
        except IsoMessageError as error:
            return Response(encode_error_confirmation(error), 400, media_type="text/xml")
        received.append(message)
        if isinstance(message, RequestingAgencyMessage):
            refused = message.action in refused_actions
            body = encode_requesting_agency_message_confirmation(
                message.echo,
                action=message.action,
                message_status=MessageStatus.ERROR if refused else MessageStatus.OK,
                error_type=ErrorType.UNRECOGNISED_DATA_VALUE if refused else None,
                error_value="no" if refused else None,
            )
        else:
            body = encode_request_confirmation(message.echo, message_status=MessageStatus.OK)
        return Response(body, media_type="text/xml")

    @app.post("/down")
    async def down() -> Response:
        return Response("maintenance", 503)

    return app


@pytest.fixture
def bridge_inbox() -> list[IncomingMessage]:
    return []


@pytest.fixture
async def alma(bridge_inbox: list[IncomingMessage]) -> AsyncIterator[httpx.AsyncClient]:
    partner = httpx.ASGITransport(app=stub_bridge(bridge_inbox))
    transport = httpx.ASGITransport(app=create_alma_iso_sandbox(partner_transport=partner))
    async with httpx.AsyncClient(transport=transport, base_url=ALMA_URL) as client:
        yield client


async def alma_sends_request(
    alma: httpx.AsyncClient,
    request_id: str = "RS-1",
    citation: dict[str, Any] = BOOK,
    service_type: ServiceType | None = None,
) -> PartnerAnswer:
    return await send_request(
        alma,
        ALMA_URL,
        bridge_url=BRIDGE_URL,
        request_id=request_id,
        citation=citation,
        patron=PATRON,
        requesting_agency=ALMA,
        supplying_agency=BRIDGE,
        service_type=service_type,
    )


async def alma_sends(
    alma: httpx.AsyncClient, action: Action, request_id: str = "RS-1", url: str = BRIDGE_URL
) -> PartnerAnswer:
    return await send_action(
        alma,
        ALMA_URL,
        bridge_url=url,
        request_id=request_id,
        action=action,
        requesting_agency=ALMA,
        supplying_agency=BRIDGE,
        note="patron asked",
    )


# --- what the bridge tells Alma ---------------------------------------------------------------


def bridge_header(request_id: str = "RS-1") -> Header:
    return Header(
        supplying_agency=AgencyId(*BRIDGE),
        requesting_agency=AgencyId(*ALMA),
        timestamp=datetime.now(UTC),
        requesting_agency_request_id=request_id,
        supplying_agency_request_id="WS-1",
    )


def loaned(request_id: str = "RS-1") -> bytes:
    """A Loaned as the bridge's own encoder writes it."""
    return supplier_message(
        ALMA_DEFAULT,
        AlmaNotice.LOANED,
        bridge_header(request_id),
        due_date=date(2025, 6, 1),
        item_id="39000111",
    )


def supplier_xml(
    reason: str,
    status: str,
    *,
    request_id: str = "RS-1",
    answer: str | None = None,
    due: str | None = None,
    item: str | None = None,
    requesting: tuple[str, str] = ALMA,
    timestamp: str = "2025-05-01T09:30:00Z",
) -> bytes:
    """Any supplyingAgencyMessage, by hand, including ones the bridge's encoder would not write."""
    answer_xml = "" if answer is None else f"<answerYesNo>{answer}</answerYesNo>"
    due_xml = "" if due is None else f"<dueDate>{due}</dueDate>"
    delivery = (
        ""
        if item is None
        else f"<deliveryInfo><dateSent>{timestamp}</dateSent><itemId>{escape(item)}</itemId>"
        "</deliveryInfo>"
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<ISO18626Message xmlns="http://illtransactions.org/2013/iso18626"
  xmlns:ill="http://illtransactions.org/2013/iso18626" ill:version="1.2">
 <supplyingAgencyMessage>
  <header>
   <supplyingAgencyId><agencyIdType>{BRIDGE[0]}</agencyIdType>
    <agencyIdValue>{BRIDGE[1]}</agencyIdValue></supplyingAgencyId>
   <requestingAgencyId><agencyIdType>{requesting[0]}</agencyIdType>
    <agencyIdValue>{escape(requesting[1])}</agencyIdValue></requestingAgencyId>
   <multipleItemRequestId/>
   <timestamp>{timestamp}</timestamp>
   <requestingAgencyRequestId>{escape(request_id)}</requestingAgencyRequestId>
   <supplyingAgencyRequestId>WS-1</supplyingAgencyRequestId>
  </header>
  <messageInfo><reasonForMessage>{escape(reason)}</reasonForMessage>{answer_xml}</messageInfo>
  <statusInfo><status>{escape(status)}</status>{due_xml}<lastChange>{timestamp}</lastChange>
  </statusInfo>
  {delivery}
 </supplyingAgencyMessage>
</ISO18626Message>""".encode()


async def post_iso(client: httpx.AsyncClient, body: bytes) -> httpx.Response:
    return await client.post("/iso18626", content=body, headers={"Content-Type": "text/xml"})


async def alma_answers(
    client: httpx.AsyncClient, body: bytes
) -> SupplyingAgencyMessageConfirmation:
    """Alma's confirmation, as the bridge reads it (and valid against the bridge's XSD)."""
    response = await post_iso(client, body)
    assert response.status_code == 200
    validate(response.content)
    confirmation = parse_message(response.content)
    assert isinstance(confirmation, SupplyingAgencyMessageConfirmation)
    return confirmation


async def refused_with(client: httpx.AsyncClient, body: bytes) -> tuple[ErrorType | None, str]:
    """Alma refused ``body``: the errorType it answered, and it recorded the refusal."""
    before = len((await client.get("/_sandbox/refusals")).json())
    taken_before = len((await client.get("/_sandbox/messages")).json())
    confirmation = await alma_answers(client, body)
    assert confirmation.message_status is MessageStatus.ERROR
    refusals = (await client.get("/_sandbox/refusals")).json()
    assert len(refusals) == before + 1
    assert refusals[-1]["errorType"] == confirmation.error_type
    assert len((await client.get("/_sandbox/messages")).json()) == taken_before
    return confirmation.error_type, str(confirmation.error_value)


async def told(client: httpx.AsyncClient, request_id: str = "RS-1") -> dict[str, Any]:
    response = await client.get(f"/_sandbox/requests/{request_id}")
    assert response.status_code == 200
    return dict(response.json())


# --- taking what the bridge says --------------------------------------------------------------


@pytest.mark.anyio
async def test_supplying_agency_message_is_confirmed_and_recorded(
    alma: httpx.AsyncClient,
) -> None:
    await alma_sends_request(alma, "RS-1")
    await alma_sends_request(alma, "RS-2")
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
    assert received[0]["outcome"] == "applied"
    assert received[0]["received_at"]
    assert len((await alma.get("/_sandbox/messages")).json()) == 2
    assert (await alma.get("/_sandbox/refusals")).json() == []


@pytest.mark.anyio
@pytest.mark.parametrize("sent", ["2025-05-01T09:30:00Z", "2025-05-01T05:30:00-04:00"])
async def test_the_confirmation_repeats_the_messages_timestamp(
    alma: httpx.AsyncClient, sent: str
) -> None:
    await alma_sends_request(alma)

    body = supplier_xml("RequestResponse", "WillSupply", timestamp=sent)
    confirmation = await alma_answers(alma, body)

    assert confirmation.timestamp_received == datetime(2025, 5, 1, 9, 30, tzinfo=UTC)


@pytest.mark.anyio
async def test_what_alma_was_told_is_kept_per_request(alma: httpx.AsyncClient) -> None:
    await alma_sends_request(alma)
    await alma_answers(alma, supplier_xml("RequestResponse", "WillSupply"))
    await alma_answers(
        alma, supplier_xml("StatusChange", "Loaned", due="2025-06-01T12:00:00Z", item="ILL-7")
    )
    await alma_sends(alma, Action.RENEW)
    await alma_answers(
        alma, supplier_xml("RenewResponse", "Loaned", answer="Y", due="2025-07-01T12:00:00Z")
    )

    record = await told(alma)

    assert {key: record[key] for key in ("status", "dueDate", "itemId", "renewalAsked")} == {
        "status": "Loaned",
        "dueDate": "2025-07-01T12:00:00+00:00",
        "itemId": "ILL-7",
        "renewalAsked": False,
    }
    assert record["renewals"] == [{"answerYesNo": "Y", "dueDate": "2025-07-01T12:00:00+00:00"}]
    assert record["actionsSent"] == ["Renew"]
    assert record["serviceType"] == "Loan"
    assert (await alma.get("/_sandbox/requests/NEVER")).status_code == 404


@pytest.mark.anyio
async def test_expect_to_supply_is_taken_but_ignored(alma: httpx.AsyncClient) -> None:
    await alma_sends_request(alma)

    confirmation = await alma_answers(alma, supplier_xml("RequestResponse", "ExpectToSupply"))

    assert confirmation.message_status is MessageStatus.OK
    (message,) = (await alma.get("/_sandbox/messages")).json()
    assert (message["status"], message["outcome"]) == ("ExpectToSupply", "ignored")
    assert (await told(alma))["status"] is None
    await alma_answers(alma, supplier_xml("RequestResponse", "WillSupply"))
    assert (await told(alma))["status"] == "WillSupply"


@pytest.mark.anyio
async def test_a_copy_ends_with_copy_completed(alma: httpx.AsyncClient) -> None:
    await alma_sends_request(alma, citation=ARTICLE)

    confirmation = await alma_answers(alma, supplier_xml("StatusChange", "CopyCompleted"))

    assert confirmation.message_status is MessageStatus.OK
    record = await told(alma)
    assert (record["serviceType"], record["status"]) == ("Copy", "CopyCompleted")


# --- what Alma refuses (each passed through before) -------------------------------------------


@pytest.mark.anyio
async def test_a_status_alma_does_not_know_is_refused(alma: httpx.AsyncClient) -> None:
    await alma_sends_request(alma)

    error_type, error_value = await refused_with(alma, supplier_xml("StatusChange", "Shipped"))

    assert error_type is ErrorType.UNRECOGNISED_DATA_VALUE
    assert "Shipped" in error_value
    assert (await told(alma))["status"] is None


@pytest.mark.anyio
async def test_a_reason_alma_does_not_know_is_refused(alma: httpx.AsyncClient) -> None:
    await alma_sends_request(alma)

    error_type, _ = await refused_with(alma, supplier_xml("Shipment", "Loaned"))

    assert error_type is ErrorType.UNSUPPORTED_REASON_FOR_MESSAGE_TYPE


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reason", "status"),
    [
        ("RequestResponse", "Loaned"),
        ("RequestResponse", "Cancelled"),
        ("RequestResponse", "CopyCompleted"),
        ("StatusChange", "WillSupply"),
        ("StatusChange", "LoanCompleted"),
        ("StatusChange", "Unfilled"),
        ("StatusChange", "Overdue"),
        ("Notification", "Loaned"),
    ],
)
async def test_a_reason_that_does_not_fit_the_status_is_refused(
    alma: httpx.AsyncClient, reason: str, status: str
) -> None:
    await alma_sends_request(alma)

    body = supplier_xml(reason, status, due="2025-06-01T12:00:00Z")
    error_type, _ = await refused_with(alma, body)

    assert error_type is ErrorType.UNSUPPORTED_REASON_FOR_MESSAGE_TYPE


@pytest.mark.anyio
async def test_a_renew_response_for_no_renewal_asked_is_refused(alma: httpx.AsyncClient) -> None:
    await alma_sends_request(alma)
    granted = supplier_xml("RenewResponse", "Loaned", answer="Y", due="2025-07-01T12:00:00Z")

    error_type, error_value = await refused_with(alma, granted)

    assert error_type is ErrorType.UNSUPPORTED_REASON_FOR_MESSAGE_TYPE
    assert "RenewResponse" in error_value
    assert (await alma_sends(alma, Action.RENEW)).message_status == "OK"
    assert (await told(alma))["renewalAsked"] is True
    assert (await alma_answers(alma, granted)).message_status is MessageStatus.OK
    # The answer was had: the same answer again is a leftover, not a second renewal.
    await refused_with(alma, granted)
    assert len((await told(alma))["renewals"]) == 1


@pytest.mark.anyio
async def test_a_renew_the_partner_refused_awaits_no_answer() -> None:
    stub = create_alma_iso_sandbox(
        partner_transport=httpx.ASGITransport(app=stub_bridge([], refuse={"Renew"}))
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=stub), base_url=ALMA_URL
    ) as refusing:
        await alma_sends_request(refusing)

        answer = await alma_sends(refusing, Action.RENEW)

        assert (answer.message_status, answer.error_type) == ("ERROR", "UnrecognisedDataValue")
        assert (await told(refusing))["renewalAsked"] is False
        await refused_with(refusing, supplier_xml("RenewResponse", "Loaned", answer="N"))


@pytest.mark.anyio
@pytest.mark.parametrize("reason", ["RenewResponse", "CancelResponse"])
async def test_an_answer_without_yes_or_no_is_refused(alma: httpx.AsyncClient, reason: str) -> None:
    await alma_sends_request(alma)
    await alma_sends(alma, Action.RENEW)

    error_type, error_value = await refused_with(
        alma, supplier_xml(reason, "Loaned", due="2025-07-01T12:00:00Z")
    )

    assert error_type is ErrorType.BADLY_FORMED_MESSAGE
    assert error_value == "messageInfo/answerYesNo"


@pytest.mark.anyio
async def test_loaned_without_a_due_date_is_refused_for_a_loan(alma: httpx.AsyncClient) -> None:
    await alma_sends_request(alma)

    error_type, error_value = await refused_with(
        alma, supplier_xml("StatusChange", "Loaned", item="ILL-7")
    )

    assert (error_type, error_value) == (ErrorType.BADLY_FORMED_MESSAGE, "statusInfo/dueDate")
    await alma_sends(alma, Action.RENEW)
    await refused_with(alma, supplier_xml("RenewResponse", "Loaned", answer="Y"))
    # A refusal changes no due date, so it needs none.
    await alma_answers(alma, supplier_xml("RenewResponse", "Loaned", answer="N"))


@pytest.mark.anyio
async def test_a_message_for_a_request_alma_never_sent_is_refused(
    alma: httpx.AsyncClient,
) -> None:
    error_type, error_value = await refused_with(alma, loaned("NEVER-SENT"))

    assert (error_type, error_value) == (
        ErrorType.UNRECOGNISED_DATA_VALUE,
        "requestingAgencyRequestId",
    )
    (refusal,) = (await alma.get("/_sandbox/refusals", params={"request_id": "NEVER-SENT"})).json()
    assert (refusal["reasonForMessage"], refusal["status"]) == ("StatusChange", "Loaned")


@pytest.mark.anyio
async def test_a_message_about_another_agencys_request_is_refused(
    alma: httpx.AsyncClient,
) -> None:
    await alma_sends_request(alma)

    body = supplier_xml("RequestResponse", "WillSupply", requesting=("ISIL", "US-OTHER"))
    error_type, error_value = await refused_with(alma, body)

    assert (error_type, error_value) == (ErrorType.UNRECOGNISED_DATA_VALUE, "requestingAgencyId")


@pytest.mark.anyio
async def test_a_message_not_valid_against_the_xsd_is_refused(alma: httpx.AsyncClient) -> None:
    await alma_sends_request(alma)
    valid = supplier_xml("RequestResponse", "WillSupply")
    no_last_change = valid.replace(b"<lastChange>2025-05-01T09:30:00Z</lastChange>", b"")
    bad_timestamp = valid.replace(b"<timestamp>2025-05-01T09:30:00Z", b"<timestamp>yesterday")

    for body in (no_last_change, bad_timestamp):
        error_type, _ = await refused_with(alma, body)
        assert error_type is ErrorType.BADLY_FORMED_MESSAGE
    assert (await told(alma))["status"] is None


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        b"not xml",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>',
        b"<supplyingAgencyMessage xmlns='urn:other'/>",
    ],
    ids=["garbage", "doctype", "other-namespace"],
)
async def test_unreadable_xml_gets_a_badly_formed_confirmation(
    alma: httpx.AsyncClient, body: bytes
) -> None:
    error_type, _ = await refused_with(alma, body)

    assert error_type is ErrorType.BADLY_FORMED_MESSAGE


@pytest.mark.anyio
async def test_a_message_alma_does_not_take_from_a_supplier_is_refused(
    alma: httpx.AsyncClient,
) -> None:
    request = supplier_xml("RequestResponse", "WillSupply").replace(
        b"supplyingAgencyMessage", b"request"
    )

    error_type, error_value = await refused_with(alma, request)

    assert (error_type, error_value) == (ErrorType.UNRECOGNISED_DATA_ELEMENT, "request")


@pytest.mark.parametrize(
    ("reason", "status", "answer", "due", "renewal_asked", "service_type", "expected"),
    [
        ("RequestResponse", "WillSupply", None, None, False, "Loan", Taken.APPLIED),
        ("RequestResponse", "ExpectToSupply", None, None, False, "Loan", Taken.IGNORED),
        ("StatusRequestResponse", "ExpectToSupply", None, None, False, "Loan", Taken.IGNORED),
        ("CancelResponse", "ExpectToSupply", False, None, False, "Loan", Taken.APPLIED),
        ("StatusChange", "Loaned", None, True, False, "Loan", Taken.APPLIED),
        ("StatusChange", "Loaned", None, None, False, "Loan", "statusInfo/dueDate"),
        ("StatusChange", "Loaned", None, None, False, "CopyOrLoan", "statusInfo/dueDate"),
        ("StatusChange", "CopyCompleted", None, None, False, "Copy", Taken.APPLIED),
        (
            "StatusChange",
            "CopyCompleted",
            None,
            None,
            False,
            "Loan",
            "status CopyCompleted on a loan",
        ),
        ("RenewResponse", "Loaned", True, True, True, "Loan", Taken.APPLIED),
        ("RenewResponse", "Loaned", True, None, True, "Loan", "statusInfo/dueDate"),
        ("RenewResponse", "Loaned", False, None, True, "Loan", Taken.APPLIED),
        ("RenewResponse", "Loaned", True, True, False, "Loan", "RenewResponse: no Renew"),
        ("RenewResponse", "Loaned", None, True, True, "Loan", "messageInfo/answerYesNo"),
        ("CancelResponse", "Cancelled", True, None, False, "Loan", Taken.APPLIED),
        ("StatusRequestResponse", "Loaned", None, None, False, "Loan", Taken.APPLIED),
        ("RequestResponse", "LoanCompleted", None, None, False, "Loan", Taken.APPLIED),
        ("StatusChange", "LoanCompleted", None, None, False, "Loan", "StatusChange LoanCompleted"),
        ("Notification", "Loaned", None, True, False, "Loan", "Notification"),
    ],
)
def test_judge_table(
    reason: str,
    status: str,
    answer: bool | None,
    due: bool | None,
    renewal_asked: bool,
    service_type: str,
    expected: Taken | str,
) -> None:
    request = AlmaRequest(
        "RS-1",
        ServiceType(service_type),
        Agency(*ALMA),
        Agency(*BRIDGE),
        renewal_asked=renewal_asked,
        actions_sent=["Cancel"] if reason == "CancelResponse" else [],
    )
    notice = Notice(
        "RS-1",
        Agency(*ALMA),
        Agency(*BRIDGE),
        ReasonForMessage(reason),
        Status(status),
        answer=answer,
        due_date=datetime(2025, 6, 1, 12, tzinfo=UTC) if due else None,
    )

    verdict = judge(notice, request)

    assert (verdict.error_value if isinstance(verdict, Refused) else verdict) == expected


def test_a_cancel_response_for_no_cancel_asked_is_refused() -> None:
    request = AlmaRequest("RS-1", ServiceType.LOAN, Agency(*ALMA), Agency(*BRIDGE))
    notice = Notice(
        "RS-1",
        Agency(*ALMA),
        Agency(*BRIDGE),
        ReasonForMessage.CANCEL_RESPONSE,
        Status.CANCELLED,
        answer=True,
    )
    verdict = judge(notice, request)
    assert isinstance(verdict, Refused)
    assert verdict.error_value == "CancelResponse: no Cancel"


# --- faults on demand -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_messages_can_be_forgotten(alma: httpx.AsyncClient) -> None:
    await alma_sends_request(alma)
    await post_iso(alma, loaned())

    assert (await alma.delete("/_sandbox/messages")).status_code == 204
    assert (await alma.get("/_sandbox/messages")).json() == []


@pytest.mark.anyio
async def test_confirm_error_fault_answers_error_and_records_nothing(
    alma: httpx.AsyncClient,
) -> None:
    await alma_sends_request(alma)
    await alma.post("/_sandbox/faults", json={"confirm_error": True, "times": 1})

    failed = await alma_answers(alma, loaned())
    recovered = await alma_answers(alma, loaned())

    assert failed.message_status is MessageStatus.ERROR
    assert failed.error_type is ErrorType.UNRECOGNISED_DATA_VALUE
    assert recovered.message_status is MessageStatus.OK
    assert len((await alma.get("/_sandbox/messages")).json()) == 1
    assert (await alma.get("/_sandbox/refusals")).json() == []


@pytest.mark.anyio
async def test_fail_status_fault_fails_the_given_number_of_times(
    alma: httpx.AsyncClient,
) -> None:
    await alma_sends_request(alma)
    await alma.post("/_sandbox/faults", json={"fail_status": 503, "times": 2})

    statuses = [(await post_iso(alma, loaned())).status_code for _ in range(3)]

    assert statuses == [503, 503, 200]
    assert len((await alma.get("/_sandbox/messages")).json()) == 1


@pytest.mark.anyio
async def test_faults_without_times_last_until_cleared(alma: httpx.AsyncClient) -> None:
    await alma_sends_request(alma)
    await alma.post("/_sandbox/faults", json={"fail_status": 500})

    assert (await post_iso(alma, loaned())).status_code == 500
    assert (await post_iso(alma, loaned())).status_code == 500
    assert (await alma.delete("/_sandbox/faults")).status_code == 204
    assert (await post_iso(alma, loaned())).status_code == 200


@pytest.mark.anyio
async def test_sandboxes_keep_their_own_state(alma: httpx.AsyncClient) -> None:
    other_transport = httpx.ASGITransport(app=create_alma_iso_sandbox())
    async with httpx.AsyncClient(transport=other_transport, base_url=ALMA_URL) as other:
        await alma_sends_request(alma)
        await post_iso(alma, loaned())

        assert (await other.get("/_sandbox/messages")).json() == []
        assert (await other.get("/_sandbox/requests")).json() == []
        assert await refused_with(other, loaned()) == (
            ErrorType.UNRECOGNISED_DATA_VALUE,
            "requestingAgencyRequestId",
        )


# --- Alma's voice towards the bridge ----------------------------------------------------------


@pytest.mark.anyio
async def test_send_request_plays_alma_and_reads_the_confirmation(
    alma: httpx.AsyncClient, bridge_inbox: list[IncomingMessage]
) -> None:
    confirmation = await alma_sends_request(alma, "RS-77")

    assert confirmation.kind == "requestConfirmation"
    assert confirmation.message_status == "OK"
    assert confirmation.requesting_agency_request_id == "RS-77"
    (request,) = bridge_inbox
    assert isinstance(request, IsoRequest)
    assert request.citation["title"] == "Middlemarch"
    assert request.citation["isbn"] == "9780141439549"
    assert request.patron == PATRON
    assert request.header.requesting_agency == AgencyId(*ALMA)
    assert (await told(alma, "RS-77"))["partnerAnswer"] == "OK"


@pytest.mark.anyio
async def test_send_action_plays_alma_and_reads_the_confirmation(
    alma: httpx.AsyncClient, bridge_inbox: list[IncomingMessage]
) -> None:
    confirmation = await alma_sends(alma, Action.RENEW, "RS-77")

    assert confirmation.kind == "requestingAgencyMessageConfirmation"
    assert confirmation.action == "Renew"
    (message,) = bridge_inbox
    assert isinstance(message, RequestingAgencyMessage)
    assert (message.action, message.note) == ("Renew", "patron asked")
    assert message.header.requesting_agency_request_id == "RS-77"


@pytest.mark.anyio
async def test_send_action_surfaces_http_failures_without_a_confirmation(
    alma: httpx.AsyncClient,
) -> None:
    with pytest.raises(httpx.HTTPStatusError) as failure:
        await alma_sends(alma, Action.RECEIVED, url="http://bridge.test/down")

    assert failure.value.response.status_code == 502
    assert "503" in failure.value.response.json()["detail"]


# --- independence -----------------------------------------------------------------------------


def imports_of(module: str) -> set[str]:
    path = APP.parent / (module.replace(".", "/") + ".py")
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module}: relative import"
            names.add(str(node.module))
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_simulated_alma_imports_nothing_of_the_bridge() -> None:
    seen: set[str] = set()
    todo = ["app.sandbox.alma_requester"]
    while todo:
        module = todo.pop()
        seen.add(module)
        for name in imports_of(module):
            assert not name.startswith(("app.alma", "app.borrowing", "app.workflows")), (
                f"{module} imports {name}"
            )
            assert name == "app" or not name.startswith("app.") or name.startswith("app.sandbox.")
            if name.startswith("app.sandbox.") and name not in seen:
                todo.append(name)

    assert {
        "app.sandbox.alma_requester",
        "app.sandbox.alma_rules",
        "app.sandbox.alma_vocabulary",
        "app.sandbox.alma_xml",
        "app.sandbox.iso_requester_messages",
    } <= seen


def test_alma_keeps_its_own_copy_of_the_standard_v1_2_xsd() -> None:
    own = APP / "sandbox" / "alma_messages" / "ISO-18626-v1_2.xsd"
    bridges = APP / "alma" / "schemas" / "ISO-18626-v1_2.xsd"

    assert own.read_bytes() == bridges.read_bytes()
