"""What Alma is told, built from a request's record: WillSupply after export and in status
answers (the profile's choice), a copy's CopyCompleted, and Loaned with the return address."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

import pytest
from lxml import etree

from app.alma.iso18626 import PROFILES, AgencyId, SupplyingAgencyMessage, parse_message
from app.alma.notices import NoticeSubject, build_notice
from app.borrowing.states import AlmaNotice, RequestState
from tests.support.iso_messages import NS

SUBJECT = NoticeSubject(
    alma_agency=AgencyId("ISIL", "US-UNIV"),
    bridge_agency=AgencyId("ISIL", "US-ILLBRIDGE"),
    alma_request_id="ALMA-1",
    supplier_request_id="167513532",
    state=RequestState.EXPORTED,
    lender_due_date=date(2027, 1, 15),
    item_barcode="ILL-000000001",
)


def told(kind: AlmaNotice, subject: NoticeSubject = SUBJECT, profile: str = "alma") -> Any:
    message = parse_message(build_notice(kind, subject, PROFILES[profile]))
    assert isinstance(message, SupplyingAgencyMessage)
    return message


@pytest.mark.parametrize("kind", [AlmaNotice.WILL_SUPPLY, AlmaNotice.STATUS_ANSWER])
def test_alma_is_told_will_supply_after_export_and_when_it_asks(kind: AlmaNotice) -> None:
    assert told(kind).status.value == "WillSupply"
    # Another requester's profile may choose the standard's ExpectToSupply instead.
    assert told(kind, profile="expect_to_supply").status.value == "ExpectToSupply"


def test_a_delivered_copy_is_copy_completed_without_due_date_or_item() -> None:
    copy = replace(SUBJECT, state=RequestState.CLOSED, copy=True)
    message = told(AlmaNotice.COPY_COMPLETED, copy)
    assert (message.reason_for_message.value, message.status.value) == (
        "StatusChange",
        "CopyCompleted",
    )
    assert message.due_date is None and message.item_id is None
    refusal = told(AlmaNotice.RENEW_NO, copy)
    assert (refusal.reason_for_message.value, refusal.status.value) == (
        "RenewResponse",
        "CopyCompleted",
    )
    assert refusal.answer_yes_no is False


def test_loaned_carries_the_lenders_return_address_as_return_info() -> None:
    lent = replace(
        SUBJECT,
        state=RequestState.SHIPPED,
        return_address={"attention": "ILL Lending", "address1": "1 Library Walk", "postal": "1"},
    )
    xml = build_notice(AlmaNotice.LOANED, lent, PROFILES["alma"])
    info = etree.fromstring(xml).find(f".//{{{NS}}}returnInfo")
    assert info is not None
    assert info.findtext(f"{{{NS}}}name") == "ILL Lending"
    assert info.findtext(f"{{{NS}}}physicalAddress/{{{NS}}}line1") == "1 Library Walk"
    assert info.findtext(f"{{{NS}}}physicalAddress/{{{NS}}}postalCode") == "1"
    message = told(AlmaNotice.LOANED, lent)
    assert message.due_date == datetime(2027, 1, 15, 12, tzinfo=UTC)
    assert message.item_id == "ILL-000000001"
