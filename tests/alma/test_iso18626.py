"""The ISO 18626 codec: what Alma sends is read safely, what the bridge sends validates."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from app.alma.iso18626 import (
    ALMA_DEFAULT,
    ISO18626_NS,
    MAX_MESSAGE_BYTES,
    Action,
    AgencyId,
    AlmaProfile,
    ErrorType,
    Header,
    HeaderEcho,
    IsoMessageError,
    IsoRequest,
    IsoSchemaError,
    MessageKind,
    MessageStatus,
    ReasonForMessage,
    RequestConfirmation,
    RequestingAgencyMessage,
    RequestingAgencyMessageConfirmation,
    ServiceType,
    Status,
    SupplyingAgencyMessage,
    SupplyingAgencyMessageConfirmation,
    encode_error_confirmation,
    encode_request_confirmation,
    encode_requesting_agency_message_confirmation,
    encode_supplying_agency_message,
    encode_supplying_agency_message_confirmation,
    parse_message,
    supplier_message,
    validate,
)
from app.borrowing.citation import Citation
from app.borrowing.states import AlmaNotice
from app.sandbox.iso_requester_messages import encode_request, encode_requesting_agency_message

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT.parent / "shared" / "reference" / "iso18626" / "examples"
XSD = REPO_ROOT / "app" / "alma" / "schemas" / "ISO-18626-v1_2.xsd"

SENT_AT = datetime(2025, 3, 4, 15, 16, 17, tzinfo=UTC)
BRIDGE = AgencyId("ISIL", "US-ILLBRIDGE")
ALMA = AgencyId("ISIL", "US-FTASU")
HEADER = Header(
    supplying_agency=BRIDGE,
    requesting_agency=ALMA,
    timestamp=SENT_AT,
    requesting_agency_request_id="RS-2025-0001",
    supplying_agency_request_id="WS-778899",
)

BOOK: dict[str, str | date | None] = {
    "title": "The Structure of Scientific Revolutions",
    "author": "Kuhn, Thomas S.",
    "isbn": "9780226458120",
    "oclc_number": "1167424",
    "publisher": "University of Chicago Press",
    "place_of_publication": "Chicago",
    "year": "1962",
    "edition": "50th anniversary",
    "format": "PHYSICAL",
    "citation_type": "BK",
    "last_interest_date": date(2025, 6, 30),
}
ARTICLE: dict[str, str | date | None] = {
    "title": "Molecular structure of nucleic acids",
    "author": "Watson, J. D.; Crick, F. H. C.",
    "journal_title": "Nature",
    "issn": "0028-0836",
    "doi": "10.1038/171737a0",
    "volume": "171",
    "issue": "4356",
    "pages": "737-738",
    "year": "1953",
    "format": "DIGITAL",
    "citation_type": "CR",
}


def header_xml(request_id: str | None = "RS-1") -> str:
    request_id_xml = (
        f"<requestingAgencyRequestId>{request_id}</requestingAgencyRequestId>" if request_id else ""
    )
    return (
        "<header>"
        "<supplyingAgencyId><agencyIdType>ISIL</agencyIdType>"
        "<agencyIdValue>US-ILLBRIDGE</agencyIdValue></supplyingAgencyId>"
        "<requestingAgencyId><agencyIdType>ISIL</agencyIdType>"
        "<agencyIdValue>US-FTASU</agencyIdValue></requestingAgencyId>"
        "<timestamp>2025-03-04T10:00:00+0000</timestamp>"
        f"{request_id_xml}"
        "</header>"
    )


def message(kind: str, body: str) -> bytes:
    return f'<{kind} xmlns="{ISO18626_NS}">{body}</{kind}>'.encode()


def full_citation(fields: dict[str, str | date | None]) -> dict[str, str | date | None]:
    return {name: fields.get(name) for name in Citation.model_fields}


def refused(body: bytes) -> IsoMessageError:
    with pytest.raises(IsoMessageError) as caught:
        parse_message(body)
    return caught.value


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize(("citation", "service_type"), [(BOOK, "Loan"), (ARTICLE, "Copy")])
def test_request_round_trip_keeps_citation_patron_and_addresses(
    citation: dict[str, str | date | None], service_type: str
) -> None:
    patron = {
        "patron_id": "2900001234",
        "surname": "Hopper",
        "given_name": "Grace",
        "email": "grace@example.edu",
    }
    xml = encode_request(
        HEADER,
        citation,
        patron=patron,
        note="Rush, please",
        ship_to="Strozier Library, Tallahassee FL",
        return_to="ILL Office, 116 Honors Way",
    )

    request = parse_message(xml)

    assert isinstance(request, IsoRequest)
    assert request.header == HEADER
    assert request.citation == full_citation(citation)
    assert request.patron == patron
    assert request.service_type == service_type
    assert request.note == "Rush, please"
    assert request.ship_to == "Strozier Library, Tallahassee FL"
    assert request.return_to == "ILL Office, 116 Honors Way"
    Citation(**request.citation)


def test_an_article_keeps_alma_shape_title_is_the_article_journal_its_host() -> None:
    xml = encode_request(
        HEADER,
        {"title": "Molecular structure of nucleic acids", "journal_title": "Nature", "issn": "1"},
    )
    bibliographic = etree.fromstring(xml).find(f".//{{{ISO18626_NS}}}bibliographicInfo")
    assert bibliographic is not None
    assert bibliographic.findtext(f"{{{ISO18626_NS}}}title") == "Nature"

    request = parse_message(xml)

    assert isinstance(request, IsoRequest)
    assert request.citation["title"] == "Molecular structure of nucleic acids"
    assert request.citation["journal_title"] == "Nature"
    assert request.citation["chapter_title"] is None
    assert request.citation["citation_type"] == "CR"


def test_book_chapter_copy_has_no_journal_title() -> None:
    chapter = {"title": "Handbook", "chapter_title": "Chapter 3", "isbn": "9780000000002"}

    request = parse_message(encode_request(HEADER, chapter, service_type=ServiceType.COPY))

    assert isinstance(request, IsoRequest)
    assert (request.citation["title"], request.citation["chapter_title"]) == (
        "Handbook",
        "Chapter 3",
    )
    assert request.citation["journal_title"] is None
    # A copy of a book chapter: digital delivery, but a book (BK), not an article (CR).
    assert (request.citation["citation_type"], request.citation["format"]) == ("BK", "DIGITAL")


@pytest.mark.parametrize("action", list(Action))
def test_requesting_agency_message_round_trip(action: Action) -> None:
    parsed = parse_message(encode_requesting_agency_message(HEADER, action=action, note="hi"))

    assert parsed == RequestingAgencyMessage(header=HEADER, action=action, note="hi")


def test_supplying_agency_message_round_trip_with_every_field() -> None:
    due = datetime(2025, 4, 1, 12, tzinfo=UTC)
    xml = encode_supplying_agency_message(
        HEADER,
        reason_for_message=ReasonForMessage.STATUS_CHANGE,
        status=Status.UNFILLED,
        answer_yes_no=False,
        note="no copies",
        reason_unfilled="NotHeld",
        due_date=due,
        last_change=SENT_AT - timedelta(hours=1),
        item_id="39876543210",
        date_sent=SENT_AT - timedelta(days=1),
    )

    assert parse_message(xml) == SupplyingAgencyMessage(
        header=HEADER,
        reason_for_message=ReasonForMessage.STATUS_CHANGE,
        status=Status.UNFILLED,
        answer_yes_no=False,
        note="no copies",
        reason_unfilled="NotHeld",
        due_date=due,
        last_change=SENT_AT - timedelta(hours=1),
        item_id="39876543210",
        date_sent=SENT_AT - timedelta(days=1),
    )


RECEIVED_AT = SENT_AT - timedelta(seconds=2)


@pytest.mark.parametrize(
    ("xml", "expected"),
    [
        (
            encode_request_confirmation(
                HEADER.echo,
                message_status=MessageStatus.OK,
                timestamp=SENT_AT,
                timestamp_received=RECEIVED_AT,
            ),
            RequestConfirmation(HEADER.echo, SENT_AT, RECEIVED_AT, MessageStatus.OK),
        ),
        (
            encode_request_confirmation(
                HeaderEcho(),
                message_status=MessageStatus.ERROR,
                error_type=ErrorType.BADLY_FORMED_MESSAGE,
                error_value="not well-formed XML",
                timestamp=SENT_AT,
                timestamp_received=RECEIVED_AT,
            ),
            RequestConfirmation(
                HeaderEcho(),
                SENT_AT,
                RECEIVED_AT,
                MessageStatus.ERROR,
                error_type=ErrorType.BADLY_FORMED_MESSAGE,
                error_value="not well-formed XML",
            ),
        ),
        (
            encode_requesting_agency_message_confirmation(
                HEADER.echo,
                action=Action.RENEW,
                message_status=MessageStatus.OK,
                timestamp=SENT_AT,
                timestamp_received=RECEIVED_AT,
            ),
            RequestingAgencyMessageConfirmation(
                HEADER.echo, SENT_AT, RECEIVED_AT, MessageStatus.OK, Action.RENEW
            ),
        ),
        (
            encode_supplying_agency_message_confirmation(
                HEADER.echo,
                reason_for_message=ReasonForMessage.RENEW_RESPONSE,
                message_status=MessageStatus.ERROR,
                error_type=ErrorType.UNRECOGNISED_DATA_VALUE,
                error_value="requestingAgencyRequestId RS-9",
                timestamp=SENT_AT,
                timestamp_received=RECEIVED_AT,
            ),
            SupplyingAgencyMessageConfirmation(
                HEADER.echo,
                SENT_AT,
                RECEIVED_AT,
                MessageStatus.ERROR,
                ReasonForMessage.RENEW_RESPONSE,
                error_type=ErrorType.UNRECOGNISED_DATA_VALUE,
                error_value="requestingAgencyRequestId RS-9",
            ),
        ),
    ],
    ids=["request-ok", "request-error", "requesting-ok", "supplying-error"],
)
def test_confirmation_round_trip(xml: bytes, expected: object) -> None:
    assert parse_message(xml) == expected


def test_confirmation_status_and_error_type_must_agree() -> None:
    with pytest.raises(ValueError, match="error_type"):
        encode_request_confirmation(HEADER.echo, message_status=MessageStatus.ERROR)
    with pytest.raises(ValueError, match="error_type"):
        encode_request_confirmation(
            HEADER.echo,
            message_status=MessageStatus.OK,
            error_type=ErrorType.BADLY_FORMED_MESSAGE,
        )


# --- what the bridge tells Alma ---------------------------------------------------------------

EXPECTED_SUPPLIER_MESSAGES = {
    AlmaNotice.EXPECT_TO_SUPPLY: ("RequestResponse", "ExpectToSupply", None),
    AlmaNotice.WILL_SUPPLY: ("RequestResponse", "WillSupply", None),
    AlmaNotice.LOANED: ("StatusChange", "Loaned", None),
    AlmaNotice.RENEW_YES: ("RenewResponse", "Loaned", True),
    AlmaNotice.RENEW_NO: ("RenewResponse", "Loaned", False),
    AlmaNotice.LOAN_COMPLETED: ("RequestResponse", "LoanCompleted", None),
    AlmaNotice.UNFILLED: ("RequestResponse", "Unfilled", None),
    AlmaNotice.CANCELLED: ("StatusChange", "Cancelled", None),
    AlmaNotice.CANCEL_YES: ("CancelResponse", "Cancelled", True),
    AlmaNotice.CANCEL_NO: ("CancelResponse", "WillSupply", False),
    AlmaNotice.STATUS_ANSWER: ("StatusRequestResponse", "WillSupply", None),
}


@pytest.mark.parametrize("kind", list(AlmaNotice))
def test_supplier_message_kinds_follow_alma_habits_and_validate(kind: AlmaNotice) -> None:
    reason, status, answer = EXPECTED_SUPPLIER_MESSAGES[kind]
    reports_current_status = kind in (
        AlmaNotice.CANCEL_NO,
        AlmaNotice.STATUS_ANSWER,
    )
    current = {"status": Status.WILL_SUPPLY} if reports_current_status else {}

    xml = supplier_message(
        ALMA_DEFAULT, kind, HEADER, due_date=date(2025, 5, 2), item_id="3901", **current
    )

    validate(xml)
    parsed = parse_message(xml)
    assert isinstance(parsed, SupplyingAgencyMessage)
    assert (parsed.reason_for_message, parsed.status, parsed.answer_yes_no) == (
        reason,
        status,
        answer,
    )
    assert parsed.due_date == datetime(2025, 5, 2, 12, tzinfo=UTC)
    assert parsed.item_id == "3901"


def test_loaned_carries_lender_due_date_and_item_id() -> None:
    xml = supplier_message(
        ALMA_DEFAULT,
        AlmaNotice.LOANED,
        HEADER,
        due_date=datetime(2025, 5, 2, 23, 59, tzinfo=timezone(timedelta(hours=-4))),
        item_id="OCLC-ITEM-1",
        date_sent=SENT_AT,
    )

    parsed = parse_message(xml)

    assert isinstance(parsed, SupplyingAgencyMessage)
    assert parsed.due_date == datetime(2025, 5, 3, 3, 59, tzinfo=UTC)
    assert (parsed.item_id, parsed.date_sent) == ("OCLC-ITEM-1", SENT_AT)
    assert b"<dueDate>2025-05-03T03:59:00Z</dueDate>" in xml


def test_profile_decides_reason_for_message() -> None:
    profile = AlmaProfile(reason_for_status={Status.LOANED: ReasonForMessage.REQUEST_RESPONSE})

    parsed = parse_message(supplier_message(profile, AlmaNotice.LOANED, HEADER))

    assert isinstance(parsed, SupplyingAgencyMessage)
    assert parsed.reason_for_message is ReasonForMessage.REQUEST_RESPONSE
    with pytest.raises(ValueError, match="no reasonForMessage"):
        supplier_message(profile, AlmaNotice.WILL_SUPPLY, HEADER)


def test_supplier_message_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="due date"):
        supplier_message(ALMA_DEFAULT, AlmaNotice.RENEW_YES, HEADER)
    with pytest.raises(ValueError, match="current status"):
        supplier_message(ALMA_DEFAULT, AlmaNotice.STATUS_ANSWER, HEADER)
    with pytest.raises(ValueError, match="takes no status"):
        supplier_message(ALMA_DEFAULT, AlmaNotice.LOANED, HEADER, status=Status.OVERDUE)


def test_naive_timestamps_are_refused_on_the_way_out() -> None:
    naive = Header(BRIDGE, ALMA, datetime(2025, 1, 1), "RS-1")

    with pytest.raises(ValueError, match="naive"):
        encode_requesting_agency_message(naive, action=Action.RECEIVED)


def test_emitted_messages_are_wrapped_v1_2_utf8_with_declaration() -> None:
    xml = encode_requesting_agency_message(HEADER, action=Action.RECEIVED)

    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = etree.fromstring(xml)
    assert root.tag == f"{{{ISO18626_NS}}}ISO18626Message"
    assert root.get(f"{{{ISO18626_NS}}}version") == "1.2"
    assert b"<timestamp>2025-03-04T15:16:17Z</timestamp>" in xml


def test_validate_reports_the_first_schema_error() -> None:
    xml = encode_requesting_agency_message(HEADER, action=Action.RECEIVED)

    with pytest.raises(IsoSchemaError, match="action"):
        validate(xml.replace(b"<action>Received</action>", b"<action>Lost</action>"))
    with pytest.raises(IsoSchemaError, match="well-formed"):
        validate(b"<nope")


@pytest.mark.parametrize(
    ("type_name", "enum"),
    [
        ("type_action", Action),
        ("type_reasonForMessage", ReasonForMessage),
        ("type_status", Status),
        ("type_serviceType", ServiceType),
        ("type_messageStatus", MessageStatus),
        ("type_errorType", ErrorType),
    ],
)
def test_code_lists_match_the_xsd(type_name: str, enum: type) -> None:
    xs = "{http://www.w3.org/2001/XMLSchema}"
    schema = etree.parse(str(XSD))
    values = schema.xpath(
        f"//xs:simpleType[@name='{type_name}']//xs:enumeration/@value",
        namespaces={"xs": xs[1:-1]},
    )

    assert set(values) == {member.value for member in enum}


# --- what Alma and others send ----------------------------------------------------------------

SAMPLES = {
    "request.xml": IsoRequest,
    "requestConfirmation.xml": RequestConfirmation,
    "requestingAgencyMessage.xml": RequestingAgencyMessage,
    "requestingAgencyMessageConfirmation.xml": RequestingAgencyMessageConfirmation,
    "supplyingAgencyMessage.xml": SupplyingAgencyMessage,
    "supplyingAgencyMessageConfirmation.xml": SupplyingAgencyMessageConfirmation,
}


@pytest.mark.parametrize(("name", "expected_type"), sorted(SAMPLES.items()))
def test_published_samples_parse(name: str, expected_type: type) -> None:
    if not EXAMPLES.is_dir():
        pytest.skip(f"ISO 18626 samples not found at {EXAMPLES}")

    parsed = parse_message((EXAMPLES / name).read_bytes())

    assert isinstance(parsed, expected_type)
    assert parsed.echo.requesting_agency == AgencyId("agencyIdType2", "agencyIdValue1")
    assert parsed.echo.requesting_agency_request_id == "requestingAgencyRequestId1"


def test_sample_request_maps_onto_alma_citation_fields() -> None:
    if not EXAMPLES.is_dir():
        pytest.skip(f"ISO 18626 samples not found at {EXAMPLES}")

    request = parse_message((EXAMPLES / "request.xml").read_bytes())

    assert isinstance(request, IsoRequest)
    assert request.header.timestamp == datetime(1900, 1, 1, 1, 1, 1, tzinfo=UTC)
    # A copy of a component with no ISBN: an article, in Alma's shape.
    assert request.citation["title"] == "titleOfComponent1"
    assert request.citation["author"] == "authorOfComponent1"
    assert request.citation["journal_title"] == "title1"
    assert request.citation["pages"] == "pagesRequested1"
    assert request.citation["last_interest_date"] == date(1900, 1, 2)
    assert (request.citation["citation_type"], request.citation["format"]) == ("CR", "DIGITAL")
    assert request.patron == {
        "patron_id": "patronId1",
        "surname": "surname1",
        "given_name": "givenName1",
        "email": None,
    }


def test_identifier_codes_in_any_case_and_oclc_record_id() -> None:
    body = header_xml() + (
        "<bibliographicInfo><title>T</title>"
        "<bibliographicItemId><bibliographicItemIdentifier>978-1</bibliographicItemIdentifier>"
        "<bibliographicItemIdentifierCode>isbn</bibliographicItemIdentifierCode>"
        "</bibliographicItemId>"
        "<bibliographicRecordId>"
        "<bibliographicRecordIdentifierCode>Oclc</bibliographicRecordIdentifierCode>"
        "<bibliographicRecordIdentifier>42</bibliographicRecordIdentifier>"
        "</bibliographicRecordId></bibliographicInfo>"
        "<serviceInfo><serviceType>Loan</serviceType></serviceInfo>"
    )

    request = parse_message(message("request", body))

    assert isinstance(request, IsoRequest)
    assert (request.citation["isbn"], request.citation["oclc_number"]) == ("978-1", "42")
    assert (request.citation["citation_type"], request.citation["format"]) == ("BK", "PHYSICAL")


def test_bare_and_wrapped_messages_read_the_same() -> None:
    body = header_xml() + "<action>Renew</action>"
    wrapped = (
        f'<ISO18626Message xmlns="{ISO18626_NS}" xmlns:ill="{ISO18626_NS}" ill:version="1.2">'
        f"<requestingAgencyMessage>{body}</requestingAgencyMessage></ISO18626Message>"
    ).encode()

    assert parse_message(wrapped) == parse_message(message("requestingAgencyMessage", body))


def test_alma_note_markers_are_split_out() -> None:
    note = "Please hurry #SHIP_TO#Main Library\n1 Campus Dr#ST_END# #RETURN_TO#ILL, Box 9#RT_END#"

    assert ALMA_DEFAULT.split_note(note) == (
        "Please hurry",
        "Main Library\n1 Campus Dr",
        "ILL, Box 9",
    )
    assert ALMA_DEFAULT.split_note("#SHIP_TO#Main#ST_END#") == (None, "Main", None)


# --- hostile and broken input -----------------------------------------------------------------

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE request [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<request xmlns="http://illtransactions.org/2013/iso18626"><header>
<requestingAgencyRequestId>&x;</requestingAgencyRequestId></header></request>"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<requestingAgencyMessage xmlns="http://illtransactions.org/2013/iso18626">
<note>&lol9;</note></requestingAgencyMessage>"""


@pytest.mark.parametrize(
    "body",
    [XXE, XXE.decode().replace('"1.0"?>', '"1.0" encoding="UTF-16"?>').encode("utf-16")],
    ids=["utf-8", "utf-16"],
)
def test_external_entity_reads_no_file(body: bytes) -> None:
    error = refused(body)

    assert error.error_type is ErrorType.BADLY_FORMED_MESSAGE
    assert "root:" not in error.error_value
    assert "root:" not in str(error)


def test_billion_laughs_is_refused_quickly() -> None:
    started = time.monotonic()

    error = refused(BILLION_LAUGHS)

    assert error.error_type is ErrorType.BADLY_FORMED_MESSAGE
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(
    ("body", "error_type", "value_mentions"),
    [
        (b"", ErrorType.BADLY_FORMED_MESSAGE, "empty"),
        (b"   \n", ErrorType.BADLY_FORMED_MESSAGE, "empty"),
        (b"this is not XML", ErrorType.BADLY_FORMED_MESSAGE, "well-formed"),
        (b"<request xmlns='urn:other'/>", ErrorType.BADLY_FORMED_MESSAGE, "namespace"),
        (b"<request/>", ErrorType.BADLY_FORMED_MESSAGE, "namespace"),
        (
            f'<ISO18626Message xmlns="{ISO18626_NS}" xmlns:ill="{ISO18626_NS}" '
            f'ill:version="2021-2"><request/></ISO18626Message>'.encode(),
            ErrorType.BADLY_FORMED_MESSAGE,
            "version 2021-2",
        ),
        (
            f'<ISO18626Message xmlns="{ISO18626_NS}"><request/></ISO18626Message>'.encode(),
            ErrorType.BADLY_FORMED_MESSAGE,
            "version",
        ),
        (
            f'<ISO18626Message xmlns="{ISO18626_NS}" xmlns:ill="{ISO18626_NS}" '
            f'ill:version="1.2"></ISO18626Message>'.encode(),
            ErrorType.BADLY_FORMED_MESSAGE,
            "one ISO 18626 message",
        ),
        (message("loanRequest", ""), ErrorType.UNRECOGNISED_DATA_ELEMENT, "loanRequest"),
        (b"<r>" + b"x" * MAX_MESSAGE_BYTES + b"</r>", ErrorType.BADLY_FORMED_MESSAGE, "large"),
    ],
    ids=[
        "empty",
        "blank",
        "not-xml",
        "wrong-namespace",
        "no-namespace",
        "wrong-version",
        "missing-version",
        "empty-wrapper",
        "unknown-root",
        "too-large",
    ],
)
def test_broken_messages_are_refused(
    body: bytes, error_type: ErrorType, value_mentions: str
) -> None:
    error = refused(body)

    assert error.error_type is error_type
    assert value_mentions in error.error_value
    assert error.kind is None


def test_unknown_action_is_unsupported_action_type_with_echo() -> None:
    error = refused(message("requestingAgencyMessage", header_xml() + "<action>Lost</action>"))

    assert error.error_type is ErrorType.UNSUPPORTED_ACTION_TYPE
    assert error.error_value == "action Lost"
    assert error.kind is MessageKind.REQUESTING_AGENCY_MESSAGE
    assert error.echo.requesting_agency_request_id == "RS-1"

    confirmation = parse_message(encode_error_confirmation(error))
    assert isinstance(confirmation, RequestingAgencyMessageConfirmation)
    assert confirmation.message_status is MessageStatus.ERROR
    assert confirmation.error_type is ErrorType.UNSUPPORTED_ACTION_TYPE
    assert confirmation.echo.requesting_agency == ALMA


def test_unknown_reason_for_message_is_unsupported_reason() -> None:
    body = header_xml() + (
        "<messageInfo><reasonForMessage>Gossip</reasonForMessage></messageInfo>"
        "<statusInfo><status>Loaned</status></statusInfo>"
    )

    error = refused(message("supplyingAgencyMessage", body))

    assert error.error_type is ErrorType.UNSUPPORTED_REASON_FOR_MESSAGE_TYPE
    assert isinstance(
        parse_message(encode_error_confirmation(error)), SupplyingAgencyMessageConfirmation
    )


def test_unknown_status_value_is_unrecognised_data_value() -> None:
    body = header_xml() + (
        "<messageInfo><reasonForMessage>StatusChange</reasonForMessage></messageInfo>"
        "<statusInfo><status>Teleported</status></statusInfo>"
    )

    assert refused(message("supplyingAgencyMessage", body)).error_type is (
        ErrorType.UNRECOGNISED_DATA_VALUE
    )


def test_request_without_request_id_names_the_element() -> None:
    body = header_xml(request_id=None) + "<bibliographicInfo><title>T</title></bibliographicInfo>"

    error = refused(message("request", body))

    assert error.error_type is ErrorType.BADLY_FORMED_MESSAGE
    assert "requestingAgencyRequestId" in error.error_value
    assert error.kind is MessageKind.REQUEST
    assert error.echo.requesting_agency == ALMA
    confirmation = parse_message(encode_error_confirmation(error))
    assert isinstance(confirmation, RequestConfirmation)
    assert confirmation.message_status is MessageStatus.ERROR


def test_request_without_any_title_is_refused() -> None:
    body = header_xml() + "<bibliographicInfo><author>A</author></bibliographicInfo>"

    error = refused(message("request", body))

    assert error.error_value == "missing bibliographicInfo/title"


def test_bad_timestamp_is_unrecognised_data_value_and_short() -> None:
    body = header_xml().replace("2025-03-04T10:00:00+0000", "yesterday" * 50)

    error = refused(message("requestingAgencyMessage", body + "<action>Renew</action>"))

    assert error.error_type is ErrorType.UNRECOGNISED_DATA_VALUE
    assert len(error.error_value) < 60


def test_unparseable_message_gets_an_error_request_confirmation() -> None:
    confirmation = parse_message(encode_error_confirmation(refused(b"<<<")))

    assert isinstance(confirmation, RequestConfirmation)
    assert confirmation.error_type is ErrorType.BADLY_FORMED_MESSAGE
    assert confirmation.echo == HeaderEcho()


# --- patron privacy ---------------------------------------------------------------------------

# The snowman marks patron data; no citation value may ever contain it.
PATRON_MARK = "\u2603"
xml_text = st.text(
    # XML 1.0 refuses control characters and the non-characters (U+FFFE, U+FFFF: category Cn).
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Cn")),
    min_size=1,
    max_size=40,
).map(str.strip)
patron_value = xml_text.map(lambda text: f"{PATRON_MARK}{text}")
citation_value = xml_text.filter(lambda text: bool(text) and PATRON_MARK not in text)


@settings(max_examples=75, deadline=None)
@given(
    patron=st.fixed_dictionaries(
        {
            "patron_id": patron_value,
            "surname": patron_value,
            "given_name": patron_value,
            "email": patron_value,
        }
    ),
    title=citation_value,
    author=citation_value,
    chapter_title=citation_value,
)
def test_patron_data_never_lands_in_the_citation(
    patron: dict[str, str], title: str, author: str, chapter_title: str
) -> None:
    citation = {"title": title, "author": author, "chapter_title": chapter_title, "issn": "1"}

    request = parse_message(encode_request(HEADER, citation, patron=patron))

    assert isinstance(request, IsoRequest)
    assert request.patron == patron
    assert not any(PATRON_MARK in str(value) for value in request.citation.values())
    assert request.citation["title"] == title
