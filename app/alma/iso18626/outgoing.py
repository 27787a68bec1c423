"""What the bridge sends: confirmations of what Alma sent, and supplyingAgencyMessages.

Everything is wrapped in ``<ISO18626Message ill:version="1.2">``, as Alma does, and validated
against the XSD before it is returned: a message that fails is a bug and is never sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from types import MappingProxyType
from typing import Any, TypedDict, Unpack

from lxml import etree

from app.alma.iso18626.messages import (
    ISO18626_NS,
    ISO18626_VERSION,
    Action,
    AgencyId,
    AnyConfirmation,
    Confirmation,
    ErrorType,
    Header,
    HeaderEcho,
    IsoMessageError,
    MessageKind,
    MessageStatus,
    ReasonForMessage,
    RequestConfirmation,
    RequestingAgencyMessageConfirmation,
    ReturnAddress,
    Status,
    SupplyingAgencyMessageConfirmation,
    confirmation_for,
    qualified,
)
from app.alma.iso18626.profile import AlmaProfile
from app.alma.iso18626.validation import validate
from app.borrowing.states import AlmaNotice

# --- writing XML ------------------------------------------------------------------------------


def _xs_datetime(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("ISO 18626 timestamps need a timezone; got a naive datetime")
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _document(kind: MessageKind) -> tuple[etree._Element, etree._Element]:
    root = etree.Element(
        qualified("ISO18626Message"),
        {qualified("version"): ISO18626_VERSION},
        # Alma's shape: elements in the default namespace, the version attribute qualified
        # (lxml-stubs reject the None key lxml uses for the default namespace).
        nsmap={None: ISO18626_NS, "ill": ISO18626_NS},  # type: ignore[dict-item]
    )
    return root, etree.SubElement(root, qualified(kind))


def _sub(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, qualified(name))
    if text is not None:
        element.text = str(text)
    return element


def _optional(parent: etree._Element, name: str, text: str | None) -> None:
    if text is not None:
        _sub(parent, name, text)


def _finish(root: etree._Element) -> bytes:
    xml = b'<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(root, encoding="UTF-8")
    validate(xml)
    return xml


def _agency_element(parent: etree._Element, name: str, agency: AgencyId) -> None:
    element = _sub(parent, name)
    _sub(element, "agencyIdType", agency.type)
    _sub(element, "agencyIdValue", agency.value)


def _header_element(message: etree._Element, header: Header) -> None:
    element = _sub(message, "header")
    _agency_element(element, "supplyingAgencyId", header.supplying_agency)
    _agency_element(element, "requestingAgencyId", header.requesting_agency)
    # The v1.2 XSD requires multipleItemRequestId even when the request is a single item.
    _sub(element, "multipleItemRequestId", header.multiple_item_request_id or "")
    _sub(element, "timestamp", _xs_datetime(header.timestamp))
    _sub(element, "requestingAgencyRequestId", header.requesting_agency_request_id)
    _optional(element, "supplyingAgencyRequestId", header.supplying_agency_request_id)
    if header.security_code is not None:
        authentication = _sub(element, "requestingAgencyAuthentication")
        _sub(authentication, "securityCode", header.security_code)


# --- confirmations ----------------------------------------------------------------------------


class ConfirmationDetails(TypedDict, total=False):
    """What a confirmation may add; both timestamps default to now."""

    error_type: ErrorType | None
    error_value: str | None
    timestamp_received: datetime | None
    timestamp: datetime | None


def encode_confirmation(confirmation: Confirmation) -> bytes:
    """Any of the three confirmations; an ERROR one needs an error_type, an OK one has none."""
    is_error = confirmation.message_status is MessageStatus.ERROR
    if is_error != (confirmation.error_type is not None):
        raise ValueError("an ERROR confirmation needs an error_type, an OK one must not have one")
    echo = confirmation.echo
    root, message = _document(confirmation.kind)
    header = _sub(message, "confirmationHeader")
    if echo.supplying_agency is not None:
        _agency_element(header, "supplyingAgencyId", echo.supplying_agency)
    if echo.requesting_agency is not None:
        _agency_element(header, "requestingAgencyId", echo.requesting_agency)
    _sub(header, "timestamp", _xs_datetime(confirmation.timestamp))
    _optional(header, "requestingAgencyRequestId", echo.requesting_agency_request_id)
    _optional(header, "multipleItemRequestId", echo.multiple_item_request_id)
    _sub(header, "timestampReceived", _xs_datetime(confirmation.timestamp_received))
    _sub(header, "messageStatus", confirmation.message_status)
    if confirmation.repeats is not None:
        _optional(message, confirmation.repeats.element, confirmation.repeated)
    if confirmation.error_type is not None:
        error_data = _sub(message, "errorData")
        _sub(error_data, "errorType", confirmation.error_type)
        _optional(error_data, "errorValue", confirmation.error_value)
    return _finish(root)


def _confirm(
    kind: type[AnyConfirmation],
    echo: HeaderEcho,
    message_status: MessageStatus,
    details: ConfirmationDetails,
    **repeated: Any,
) -> bytes:
    now = datetime.now(UTC)
    confirmation = kind(
        echo,
        details.get("timestamp") or now,
        details.get("timestamp_received") or now,
        message_status,
        error_type=details.get("error_type"),
        error_value=details.get("error_value"),
        **repeated,
    )
    return encode_confirmation(confirmation)


def encode_request_confirmation(
    echo: HeaderEcho, *, message_status: MessageStatus, **details: Unpack[ConfirmationDetails]
) -> bytes:
    return _confirm(RequestConfirmation, echo, message_status, details)


def encode_requesting_agency_message_confirmation(
    echo: HeaderEcho,
    *,
    action: Action | None,
    message_status: MessageStatus,
    **details: Unpack[ConfirmationDetails],
) -> bytes:
    return _confirm(
        RequestingAgencyMessageConfirmation, echo, message_status, details, action=action
    )


def encode_supplying_agency_message_confirmation(
    echo: HeaderEcho,
    *,
    reason_for_message: ReasonForMessage | None,
    message_status: MessageStatus,
    **details: Unpack[ConfirmationDetails],
) -> bytes:
    return _confirm(
        SupplyingAgencyMessageConfirmation,
        echo,
        message_status,
        details,
        reason_for_message=reason_for_message,
    )


def encode_error_confirmation(
    error: IsoMessageError, *, timestamp_received: datetime | None = None
) -> bytes:
    """The ERROR confirmation matching the refused message (requestConfirmation if unknown)."""
    details = ConfirmationDetails(
        error_type=error.error_type,
        error_value=error.error_value,
        timestamp_received=timestamp_received,
    )
    return _confirm(confirmation_for(error.kind), error.echo, MessageStatus.ERROR, details)


# --- supplyingAgencyMessage -------------------------------------------------------------------


def encode_supplying_agency_message(
    header: Header,
    *,
    reason_for_message: ReasonForMessage,
    status: Status,
    answer_yes_no: bool | None = None,
    note: str | None = None,
    reason_unfilled: str | None = None,
    due_date: datetime | None = None,
    last_change: datetime | None = None,
    item_id: str | None = None,
    date_sent: datetime | None = None,
    return_to: ReturnAddress | None = None,
) -> bytes:
    """``lastChange`` defaults to the header timestamp; ``deliveryInfo`` appears with an item id
    or a date sent (``dateSent`` defaulting to the header timestamp); ``returnInfo`` with
    ``return_to``."""
    root, message = _document(MessageKind.SUPPLYING_AGENCY_MESSAGE)
    _header_element(message, header)
    info = _sub(message, "messageInfo")
    _sub(info, "reasonForMessage", reason_for_message)
    if answer_yes_no is not None:
        _sub(info, "answerYesNo", "Y" if answer_yes_no else "N")
    _optional(info, "note", note)
    _optional(info, "reasonUnfilled", reason_unfilled)
    status_info = _sub(message, "statusInfo")
    _sub(status_info, "status", status)
    if due_date is not None:
        _sub(status_info, "dueDate", _xs_datetime(due_date))
    _sub(status_info, "lastChange", _xs_datetime(last_change or header.timestamp))
    if item_id is not None or date_sent is not None:
        delivery = _sub(message, "deliveryInfo")
        _sub(delivery, "dateSent", _xs_datetime(date_sent or header.timestamp))
        _optional(delivery, "itemId", item_id)
    if return_to is not None:
        _return_info(message, return_to)
    return _finish(root)


def _return_info(message: etree._Element, address: ReturnAddress) -> None:
    info = _sub(message, "returnInfo")
    _optional(info, "name", address.name)
    physical = _sub(info, "physicalAddress")
    for name, value in (
        ("line1", address.line1),
        ("line2", address.line2),
        ("locality", address.locality),
        ("postalCode", address.postal_code),
        ("region", address.region),
        ("country", address.country),
    ):
        _optional(physical, name, value)


# --- what the bridge tells Alma ---------------------------------------------------------------


# kind → (reasonForMessage, None: the profile's for the status; status, None: the caller's; answer)
_SUPPLIER_MESSAGES: Mapping[
    AlmaNotice, tuple[ReasonForMessage | None, Status | None, bool | None]
] = MappingProxyType(
    {
        AlmaNotice.EXPECT_TO_SUPPLY: (None, Status.EXPECT_TO_SUPPLY, None),
        AlmaNotice.WILL_SUPPLY: (None, None, None),
        AlmaNotice.LOANED: (None, Status.LOANED, None),
        AlmaNotice.COPY_COMPLETED: (None, Status.COPY_COMPLETED, None),
        AlmaNotice.RENEW_YES: (ReasonForMessage.RENEW_RESPONSE, Status.LOANED, True),
        AlmaNotice.RENEW_NO: (ReasonForMessage.RENEW_RESPONSE, None, False),
        AlmaNotice.LOAN_COMPLETED: (None, Status.LOAN_COMPLETED, None),
        AlmaNotice.UNFILLED: (None, Status.UNFILLED, None),
        AlmaNotice.CANCELLED: (None, Status.CANCELLED, None),
        AlmaNotice.CANCEL_YES: (
            ReasonForMessage.CANCEL_RESPONSE,
            Status.CANCELLED,
            True,
        ),
        AlmaNotice.CANCEL_NO: (ReasonForMessage.CANCEL_RESPONSE, None, False),
        AlmaNotice.STATUS_ANSWER: (ReasonForMessage.STATUS_REQUEST_RESPONSE, None, None),
    }
)


def _lender_due_date(due_date: date | datetime) -> datetime:
    if isinstance(due_date, datetime):
        return due_date
    # Noon UTC is the same calendar day in every timezone an Alma institution runs in.
    return datetime.combine(due_date, time(12), tzinfo=UTC)


def supplier_message(
    profile: AlmaProfile,
    kind: AlmaNotice,
    header: Header,
    *,
    status: Status | None = None,
    due_date: date | datetime | None = None,
    item_id: str | None = None,
    date_sent: datetime | None = None,
    note: str | None = None,
    reason_unfilled: str | None = None,
    return_to: ReturnAddress | None = None,
) -> bytes:
    """The supplyingAgencyMessage for ``kind``, shaped the way ``profile``'s Alma accepts it.

    With ``ALMA_DEFAULT``:

    ================  =====================  ================  ===========
    kind              reasonForMessage       status            answerYesNo
    ================  =====================  ================  ===========
    expect_to_supply  RequestResponse        ExpectToSupply    -
    will_supply       RequestResponse        supply_status     -
    loaned            StatusChange           Loaned            -
    copy_completed    StatusChange           CopyCompleted     -
    renew_yes         RenewResponse          Loaned            Y
    renew_no          RenewResponse          ``status``        N
    loan_completed    RequestResponse        LoanCompleted     -
    unfilled          RequestResponse        Unfilled          -
    cancelled         StatusChange           Cancelled         -
    cancel_yes        CancelResponse         Cancelled         Y
    cancel_no         CancelResponse         ``status``        N
    status_answer     StatusRequestResponse  ``status``        -
    ================  =====================  ================  ===========

    ``status`` is given for cancel_no, renew_no and status_answer only; will_supply reports the
    profile's ``supply_status`` (WillSupply); renew_yes needs the new ``due_date``. A bare date
    is sent as noon UTC that day.
    """
    reason, planned_status, answer = _SUPPLIER_MESSAGES[kind]
    if kind is AlmaNotice.WILL_SUPPLY:
        planned_status = profile.supply_status
    if planned_status is not None and status is not None:
        raise ValueError(f"{kind} always reports {planned_status}; it takes no status")
    if kind is AlmaNotice.RENEW_YES and due_date is None:
        raise ValueError("an approved renewal needs the new due date")
    reported_status = planned_status or status
    if reported_status is None:
        raise ValueError(f"{kind} needs the current status")
    if reason is None:
        if reported_status not in profile.reason_for_status:
            raise ValueError(f"the Alma profile has no reasonForMessage for {reported_status}")
        reason = profile.reason_for_status[reported_status]
    return encode_supplying_agency_message(
        header,
        reason_for_message=reason,
        status=reported_status,
        answer_yes_no=answer,
        note=note,
        reason_unfilled=reason_unfilled,
        due_date=_lender_due_date(due_date) if due_date is not None else None,
        item_id=item_id,
        date_sent=date_sent,
        return_to=return_to,
    )
