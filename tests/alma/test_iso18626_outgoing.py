"""What the bridge sends: confirmations and supplyingAgencyMessages, XSD-valid, in Alma's habits."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from lxml import etree

from app.alma.iso18626 import (
    ALMA_DEFAULT,
    ISO18626_NS,
    Action,
    ErrorType,
    Header,
    HeaderEcho,
    MessageStatus,
    ReasonForMessage,
    RequestConfirmation,
    RequestingAgencyMessageConfirmation,
    Status,
    SupplyingAgencyMessage,
    SupplyingAgencyMessageConfirmation,
    encode_request_confirmation,
    encode_requesting_agency_message_confirmation,
    encode_supplying_agency_message,
    encode_supplying_agency_message_confirmation,
    parse_message,
    supplier_message,
    validate,
)
from app.borrowing.states import AlmaNotice
from tests.support.iso18626 import ALMA, BRIDGE, HEADER, SENT_AT


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


def test_the_bridge_refuses_naive_timestamps() -> None:
    naive = Header(BRIDGE, ALMA, datetime(2025, 1, 1), "RS-1")

    with pytest.raises(ValueError, match="naive"):
        supplier_message(ALMA_DEFAULT, AlmaNotice.WILL_SUPPLY, naive)


def test_the_bridge_wraps_its_messages_v1_2_utf8_with_declaration() -> None:
    xml = supplier_message(ALMA_DEFAULT, AlmaNotice.WILL_SUPPLY, HEADER)

    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = etree.fromstring(xml)
    assert root.tag == f"{{{ISO18626_NS}}}ISO18626Message"
    assert root.get(f"{{{ISO18626_NS}}}version") == "1.2"
    assert b"<timestamp>2025-03-04T15:16:17Z</timestamp>" in xml


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
    AlmaNotice.COPY_COMPLETED: ("StatusChange", "CopyCompleted", None),
    AlmaNotice.RENEW_YES: ("RenewResponse", "Loaned", True),
    AlmaNotice.RENEW_NO: ("RenewResponse", "WillSupply", False),
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
        AlmaNotice.RENEW_NO,
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


def test_supplier_message_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="due date"):
        supplier_message(ALMA_DEFAULT, AlmaNotice.RENEW_YES, HEADER)
    with pytest.raises(ValueError, match="current status"):
        supplier_message(ALMA_DEFAULT, AlmaNotice.STATUS_ANSWER, HEADER)
    with pytest.raises(ValueError, match="takes no status"):
        supplier_message(ALMA_DEFAULT, AlmaNotice.LOANED, HEADER, status=Status.OVERDUE)
