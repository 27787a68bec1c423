"""An article or chapter that Alma sends over ISO 18626 reaches WorldShare with its parts intact."""

from datetime import UTC, datetime

from app.alma.iso18626 import (
    ISO18626_NS,
    AgencyId,
    Header,
    IsoRequest,
    ServiceType,
    parse_message,
)
from app.borrowing.citation import Citation
from app.sandbox.iso_requester_messages import encode_request
from app.worldshare.client import Requester, build_ill_request

HEADER = Header(
    supplying_agency=AgencyId("ISIL", "US-ILLBRIDGE"),
    requesting_agency=AgencyId("ISIL", "US-UNIV"),
    timestamp=datetime(2026, 11, 29, tzinfo=UTC),
    requesting_agency_request_id="A-1",
)


def item_sent(citation: dict[str, str], service_type: ServiceType | None = None) -> dict:
    parsed = parse_message(encode_request(HEADER, citation, service_type=service_type))
    assert isinstance(parsed, IsoRequest)
    body = build_ill_request(
        Citation.model_validate(parsed.citation),
        Requester(institution_id="128807", billing_address={"address1": "1 Library Walk"}),
        reference="A-1",
    )
    return dict(body["illRequest"]["item"]) | {
        "serviceType": body["illRequest"]["requester"]["serviceType"]
    }


def test_an_article_goes_as_a_copy_of_the_article_from_its_journal():
    item = item_sent(
        {
            "title": "Molecular structure of nucleic acids",
            "author": "Watson, J. D.",
            "journal_title": "Nature",
            "issn": "0028-0836",
            "volume": "171",
            "pages": "737-738",
        }
    )
    assert item["title"] == "Nature"
    assert item["articleTitle"] == "Molecular structure of nucleic acids"
    assert item["articleAuthor"] == "Watson, J. D."
    assert item["serviceType"] == "COPY"


def test_a_book_chapter_copy_names_the_book_and_the_chapter():
    item = item_sent(
        {"title": "Handbook of ILL", "chapter_title": "Chapter 3", "isbn": "9780000000002"},
        ServiceType.COPY,
    )
    assert (item["title"], item["articleTitle"]) == ("Handbook of ILL", "Chapter 3")
    assert item["serviceType"] == "COPY"


def test_a_loan_is_a_loan_of_the_book():
    item = item_sent({"title": "The Name of the Rose", "isbn": "9780151446476"})
    assert item["title"] == "The Name of the Rose"
    assert "articleTitle" not in item
    assert item["serviceType"] == "LOAN"


def test_alma_s_need_before_date_and_copyright_declaration_reach_worldshare():
    # Written as Alma writes it (serviceInfo in the XSD's order), not with the bridge's codec.
    xml = f"""<ISO18626Message xmlns="{ISO18626_NS}" version="1.2"><request>
      <header>
        <supplyingAgencyId><agencyIdType>ISIL</agencyIdType>
          <agencyIdValue>US-ILLBRIDGE</agencyIdValue></supplyingAgencyId>
        <requestingAgencyId><agencyIdType>ISIL</agencyIdType>
          <agencyIdValue>US-UNIV</agencyIdValue></requestingAgencyId>
        <timestamp>2026-11-29T10:00:00Z</timestamp>
        <requestingAgencyRequestId>A-2</requestingAgencyRequestId>
      </header>
      <bibliographicInfo>
        <title>Nature</title><titleOfComponent>Molecular structure</titleOfComponent>
      </bibliographicInfo>
      <serviceInfo>
        <serviceType>Copy</serviceType>
        <needBeforeDate>2026-12-15T00:00:00Z</needBeforeDate>
        <copyrightCompliance>US:CCG</copyrightCompliance>
      </serviceInfo>
    </request></ISO18626Message>"""
    parsed = parse_message(xml.encode())
    assert isinstance(parsed, IsoRequest)

    body = build_ill_request(
        Citation.model_validate(parsed.citation),
        Requester(institution_id="128807", billing_address={"address1": "1 Library Walk"}),
        reference="A-2",
    )["illRequest"]

    assert body["needed"] == "2026-12-15T12:00:00.000+0000"
    assert body["requester"]["serviceType"] == "COPY"
    assert body["requester"]["copyrightType"] == "US:CCG"
