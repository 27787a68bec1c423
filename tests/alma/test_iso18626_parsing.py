"""Reading ISO 18626: what Alma and others send is read safely, in Alma's shape."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.alma.iso18626 import (
    ISO18626_NS,
    MAX_MESSAGE_BYTES,
    Action,
    AgencyId,
    ErrorType,
    HeaderEcho,
    IsoMessageError,
    IsoRequest,
    MessageKind,
    MessageStatus,
    RequestConfirmation,
    RequestingAgencyMessage,
    RequestingAgencyMessageConfirmation,
    SupplyingAgencyMessage,
    SupplyingAgencyMessageConfirmation,
    encode_error_confirmation,
    parse_message,
)
from app.sandbox.iso_requester_messages import encode_request
from tests.support.iso18626 import ALMA, HEADER

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT.parent / "shared" / "reference" / "iso18626" / "examples"


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


def refused(body: bytes) -> IsoMessageError:
    with pytest.raises(IsoMessageError) as caught:
        parse_message(body)
    return caught.value


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


def test_a_message_without_a_version_attribute_is_read() -> None:
    unversioned = (
        f'<ISO18626Message xmlns="{ISO18626_NS}"><requestingAgencyMessage>'
        f"{header_xml()}<action>Received</action></requestingAgencyMessage></ISO18626Message>"
    ).encode()

    parsed = parse_message(unversioned)

    assert isinstance(parsed, RequestingAgencyMessage)
    assert parsed.action is Action.RECEIVED


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
