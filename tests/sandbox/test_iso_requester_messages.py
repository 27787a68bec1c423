"""What the simulated Alma sends, from its own fixtures in Alma's shape, read back by the bridge
unchanged."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from lxml import etree

from app.alma.iso18626 import (
    ISO18626_NS,
    Header,
    IsoRequest,
    RequestingAgencyMessage,
    ServiceType,
    parse_message,
)
from app.alma.iso18626 import Action as BridgeAction
from app.borrowing.citation import Citation
from app.sandbox.alma_vocabulary import Action
from app.sandbox.iso_requester_messages import encode_request, encode_requesting_agency_message
from tests.support.iso18626 import ALMA, BRIDGE, HEADER

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


def full_citation(fields: dict[str, str | date | None]) -> dict[str, str | date | None]:
    return {name: fields.get(name) for name in Citation.model_fields}


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

    assert parsed == RequestingAgencyMessage(
        header=HEADER, action=BridgeAction(action.value), note="hi"
    )


def test_alma_never_sends_an_action_a_borrower_has_no_use_for() -> None:
    with pytest.raises(ValueError, match="ShippedForward"):
        encode_requesting_agency_message(HEADER, action="ShippedForward")


def test_values_are_escaped_into_the_fixture_not_spliced() -> None:
    title = 'Tom & Jerry <b>"cat"</b> ]]> <!-- x -->\r\nsecond line'
    code = "se<cret>&"

    request = parse_message(
        encode_request(
            Header(BRIDGE, ALMA, HEADER.timestamp, "RS-<1>", security_code=code),
            {"title": title},
            patron={"surname": "two\nlines"},
            note="a & b",
        )
    )

    assert isinstance(request, IsoRequest)
    assert request.citation["title"] == title
    assert request.header.requesting_agency_request_id == "RS-<1>"
    assert request.header.security_code == code
    assert request.note == "a & b"
    assert request.patron is not None and request.patron["surname"] == "two\nlines"


def test_a_character_xml_cannot_carry_is_refused_on_the_way_out() -> None:
    with pytest.raises(ValueError, match="XML"):
        encode_request(HEADER, {"title": "bell \x07"})


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
