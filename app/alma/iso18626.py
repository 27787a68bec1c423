"""ISO 18626 (v1.2) codec for the Alma channel: safe parsing, XSD-valid encoding, Alma's habits.

Pure functions over bytes. The only I/O is reading the bundled XSD, once, on first validation.
Parsing is lenient where Alma and the published samples stray from the XSD (``+0000`` offsets,
a missing ``multipleItemRequestId``, bare or wrapped messages); everything emitted is wrapped in
``<ISO18626Message ill:version="1.2">``, as Alma does, and validated before it is returned.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from enum import StrEnum
from functools import cache
from importlib.resources import files
from types import MappingProxyType
from typing import ClassVar, TypeAlias, TypedDict, TypeVar

from lxml import etree

from app.borrowing.states import AlmaNotice

ISO18626_NS = "http://illtransactions.org/2013/iso18626"
ISO18626_VERSION = "1.2"
MAX_MESSAGE_BYTES = 256 * 1024

_XSD_FILE = "ISO-18626-v1_2.xsd"
_FORBIDDEN_MARKUP = (b"<!DOCTYPE", b"<!ENTITY")
_SHORT_VALUE = 40

_E = TypeVar("_E", bound=StrEnum)


class MessageKind(StrEnum):
    """The six ISO 18626 messages, named by their element."""

    REQUEST = "request"
    REQUEST_CONFIRMATION = "requestConfirmation"
    SUPPLYING_AGENCY_MESSAGE = "supplyingAgencyMessage"
    SUPPLYING_AGENCY_MESSAGE_CONFIRMATION = "supplyingAgencyMessageConfirmation"
    REQUESTING_AGENCY_MESSAGE = "requestingAgencyMessage"
    REQUESTING_AGENCY_MESSAGE_CONFIRMATION = "requestingAgencyMessageConfirmation"


class Action(StrEnum):
    STATUS_REQUEST = "StatusRequest"
    RECEIVED = "Received"
    CANCEL = "Cancel"
    RENEW = "Renew"
    SHIPPED_RETURN = "ShippedReturn"
    SHIPPED_FORWARD = "ShippedForward"
    NOTIFICATION = "Notification"


class ReasonForMessage(StrEnum):
    REQUEST_RESPONSE = "RequestResponse"
    STATUS_REQUEST_RESPONSE = "StatusRequestResponse"
    RENEW_RESPONSE = "RenewResponse"
    CANCEL_RESPONSE = "CancelResponse"
    STATUS_CHANGE = "StatusChange"
    NOTIFICATION = "Notification"


class Status(StrEnum):
    REQUEST_RECEIVED = "RequestReceived"
    EXPECT_TO_SUPPLY = "ExpectToSupply"
    WILL_SUPPLY = "WillSupply"
    LOANED = "Loaned"
    OVERDUE = "Overdue"
    RECALLED = "Recalled"
    RETRY_POSSIBLE = "RetryPossible"
    UNFILLED = "Unfilled"
    COPY_COMPLETED = "CopyCompleted"
    LOAN_COMPLETED = "LoanCompleted"
    COMPLETED_WITHOUT_RETURN = "CompletedWithoutReturn"
    CANCELLED = "Cancelled"


class ServiceType(StrEnum):
    COPY = "Copy"
    LOAN = "Loan"
    COPY_OR_LOAN = "CopyOrLoan"


class MessageStatus(StrEnum):
    OK = "OK"
    ERROR = "ERROR"


class ErrorType(StrEnum):
    """The closed v1.2 list of reasons a confirmation may give for refusing a message."""

    UNSUPPORTED_ACTION_TYPE = "UnsupportedActionType"
    UNSUPPORTED_REASON_FOR_MESSAGE_TYPE = "UnsupportedReasonForMessageType"
    UNRECOGNISED_DATA_ELEMENT = "UnrecognisedDataElement"
    UNRECOGNISED_DATA_VALUE = "UnrecognisedDataValue"
    BADLY_FORMED_MESSAGE = "BadlyFormedMessage"


class IsoMessageError(Exception):
    """An incoming message the bridge must refuse, with what the matching confirmation needs.

    ``kind`` is the message refused (None when it could not be told), ``echo`` whatever of its
    header could be read. ``error_value`` names an element or quotes a short value, never the body.
    """

    def __init__(
        self,
        error_type: ErrorType,
        error_value: str,
        *,
        kind: MessageKind | None = None,
        echo: HeaderEcho | None = None,
    ) -> None:
        super().__init__(f"{error_type}: {error_value}")
        self.error_type = error_type
        self.error_value = error_value
        self.kind = kind
        self.echo = echo or HeaderEcho()


class IsoSchemaError(Exception):
    """A message the bridge built fails the v1.2 XSD: a bug on our side, so it is never sent."""


@dataclass(frozen=True, slots=True)
class AgencyId:
    type: str
    value: str


@dataclass(frozen=True, slots=True)
class Header:
    supplying_agency: AgencyId
    requesting_agency: AgencyId
    timestamp: datetime
    requesting_agency_request_id: str
    supplying_agency_request_id: str | None = None
    multiple_item_request_id: str | None = None
    # requestingAgencyAuthentication/securityCode: a shared secret, never shown or echoed.
    security_code: str | None = field(default=None, repr=False)

    @property
    def echo(self) -> HeaderEcho:
        return HeaderEcho(
            supplying_agency=self.supplying_agency,
            requesting_agency=self.requesting_agency,
            requesting_agency_request_id=self.requesting_agency_request_id,
            multiple_item_request_id=self.multiple_item_request_id,
        )


@dataclass(frozen=True, slots=True)
class HeaderEcho:
    """The header fields a confirmation repeats; any may be absent from a message being refused."""

    supplying_agency: AgencyId | None = None
    requesting_agency: AgencyId | None = None
    requesting_agency_request_id: str | None = None
    multiple_item_request_id: str | None = None


class CitationFields(TypedDict):
    """Keyword arguments for ``app.borrowing.citation.Citation``: the item, never the patron."""

    title: str
    author: str | None
    isbn: str | None
    issn: str | None
    oclc_number: str | None
    publisher: str | None
    place_of_publication: str | None
    year: str | None
    edition: str | None
    volume: str | None
    issue: str | None
    pages: str | None
    journal_title: str | None
    chapter_title: str | None
    chapter_author: str | None
    doi: str | None
    format: str | None
    citation_type: str | None
    last_interest_date: date | None


class PatronFields(TypedDict):
    patron_id: str | None
    surname: str | None
    given_name: str | None
    email: str | None


@dataclass(frozen=True, slots=True)
class IsoRequest:
    """A borrowing request Alma could not fill inside the consortium.

    ``patron``, ``ship_to`` and ``return_to`` are patron-adjacent data kept apart from the citation.
    """

    kind: ClassVar[MessageKind] = MessageKind.REQUEST
    header: Header
    citation: CitationFields
    patron: PatronFields | None
    service_type: ServiceType | None
    note: str | None
    ship_to: str | None
    return_to: str | None

    @property
    def echo(self) -> HeaderEcho:
        return self.header.echo


@dataclass(frozen=True, slots=True)
class RequestingAgencyMessage:
    kind: ClassVar[MessageKind] = MessageKind.REQUESTING_AGENCY_MESSAGE
    header: Header
    action: Action
    note: str | None

    @property
    def echo(self) -> HeaderEcho:
        return self.header.echo


@dataclass(frozen=True, slots=True)
class SupplyingAgencyMessage:
    kind: ClassVar[MessageKind] = MessageKind.SUPPLYING_AGENCY_MESSAGE
    header: Header
    reason_for_message: ReasonForMessage
    status: Status
    answer_yes_no: bool | None = None
    note: str | None = None
    reason_unfilled: str | None = None
    due_date: datetime | None = None
    last_change: datetime | None = None
    item_id: str | None = None
    date_sent: datetime | None = None

    @property
    def echo(self) -> HeaderEcho:
        return self.header.echo


@dataclass(frozen=True, slots=True)
class RequestConfirmation:
    kind: ClassVar[MessageKind] = MessageKind.REQUEST_CONFIRMATION
    echo: HeaderEcho
    timestamp: datetime
    timestamp_received: datetime
    message_status: MessageStatus
    error_type: ErrorType | None = None
    error_value: str | None = None


@dataclass(frozen=True, slots=True)
class RequestingAgencyMessageConfirmation:
    kind: ClassVar[MessageKind] = MessageKind.REQUESTING_AGENCY_MESSAGE_CONFIRMATION
    echo: HeaderEcho
    timestamp: datetime
    timestamp_received: datetime
    message_status: MessageStatus
    action: Action | None = None
    error_type: ErrorType | None = None
    error_value: str | None = None


@dataclass(frozen=True, slots=True)
class SupplyingAgencyMessageConfirmation:
    kind: ClassVar[MessageKind] = MessageKind.SUPPLYING_AGENCY_MESSAGE_CONFIRMATION
    echo: HeaderEcho
    timestamp: datetime
    timestamp_received: datetime
    message_status: MessageStatus
    reason_for_message: ReasonForMessage | None = None
    error_type: ErrorType | None = None
    error_value: str | None = None


IncomingMessage: TypeAlias = (
    IsoRequest
    | RequestingAgencyMessage
    | SupplyingAgencyMessage
    | RequestConfirmation
    | RequestingAgencyMessageConfirmation
    | SupplyingAgencyMessageConfirmation
)


# --- Alma's habits ----------------------------------------------------------------------------

_ALMA_REASON_FOR_STATUS: Mapping[Status, ReasonForMessage] = MappingProxyType(
    {
        Status.EXPECT_TO_SUPPLY: ReasonForMessage.REQUEST_RESPONSE,
        Status.WILL_SUPPLY: ReasonForMessage.REQUEST_RESPONSE,
        Status.LOANED: ReasonForMessage.STATUS_CHANGE,
        Status.LOAN_COMPLETED: ReasonForMessage.REQUEST_RESPONSE,
        Status.UNFILLED: ReasonForMessage.REQUEST_RESPONSE,
        Status.CANCELLED: ReasonForMessage.STATUS_CHANGE,
    }
)


@dataclass(frozen=True, slots=True)
class AlmaProfile:
    """How one Alma institution speaks ISO 18626; ``ALMA_DEFAULT`` is Alma out of the box.

    ``reason_for_status`` is the reasonForMessage Alma accepts for each status the bridge reports
    unprompted; the note markers are where Alma writes delivery and return addresses.
    """

    reason_for_status: Mapping[Status, ReasonForMessage] = field(
        default_factory=lambda: _ALMA_REASON_FOR_STATUS
    )
    ship_to_markers: tuple[str, str] = ("#SHIP_TO#", "#ST_END#")
    return_to_markers: tuple[str, str] = ("#RETURN_TO#", "#RT_END#")

    def split_note(self, note: str | None) -> tuple[str | None, str | None, str | None]:
        """(staff note, ship-to address, return-to address) from an Alma request note."""
        if note is None:
            return None, None, None
        note, ship_to = _cut_between(note, self.ship_to_markers)
        note, return_to = _cut_between(note, self.return_to_markers)
        return note.strip() or None, ship_to, return_to

    def join_note(self, note: str | None, ship_to: str | None, return_to: str | None) -> str | None:
        parts = [note or ""]
        if ship_to is not None:
            parts.append(f"{self.ship_to_markers[0]}{ship_to}{self.ship_to_markers[1]}")
        if return_to is not None:
            parts.append(f"{self.return_to_markers[0]}{return_to}{self.return_to_markers[1]}")
        return " ".join(part for part in parts if part) or None


ALMA_DEFAULT = AlmaProfile()


def _cut_between(text: str, markers: tuple[str, str]) -> tuple[str, str | None]:
    start, end = (re.escape(marker) for marker in markers)
    found = re.search(f"{start}(.*?){end}", text, re.DOTALL)
    if found is None:
        return text, None
    return text[: found.start()] + text[found.end() :], found.group(1).strip() or None


# --- parsing ----------------------------------------------------------------------------------


def _safe_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        dtd_validation=False,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def parse_message(body: bytes, profile: AlmaProfile = ALMA_DEFAULT) -> IncomingMessage:
    """Decode one ISO 18626 message, bare or wrapped in ``ISO18626Message`` (v1.2 only).

    Raises IsoMessageError carrying the errorType and, when known, the message kind and header.
    """
    message = _unwrap(_parse_xml(body))
    kind = _enum(
        MessageKind,
        etree.QName(message).localname,
        "message",
        ErrorType.UNRECOGNISED_DATA_ELEMENT,
    )
    try:
        return _PARSERS[kind](message, profile)
    except IsoMessageError as error:
        raise IsoMessageError(
            error.error_type, error.error_value, kind=kind, echo=_echo(message)
        ) from None


def _parse_xml(body: bytes) -> etree._Element:
    if not body.strip():
        raise IsoMessageError(ErrorType.BADLY_FORMED_MESSAGE, "empty message")
    if len(body) > MAX_MESSAGE_BYTES:
        raise IsoMessageError(ErrorType.BADLY_FORMED_MESSAGE, "message too large")
    if any(markup in body for markup in _FORBIDDEN_MARKUP):
        raise IsoMessageError(ErrorType.BADLY_FORMED_MESSAGE, "DOCTYPE is not allowed")
    try:
        root = etree.fromstring(body, _safe_parser())
    except etree.XMLSyntaxError:
        raise IsoMessageError(ErrorType.BADLY_FORMED_MESSAGE, "not well-formed XML") from None
    # A DOCTYPE in another encoding (UTF-16) slips past the byte check above, never past this;
    # lxml-stubs lack DocInfo.doctype.
    if root.getroottree().docinfo.doctype:  # type: ignore[union-attr]
        raise IsoMessageError(ErrorType.BADLY_FORMED_MESSAGE, "DOCTYPE is not allowed")
    return root


def _unwrap(root: etree._Element) -> etree._Element:
    if etree.QName(root).namespace != ISO18626_NS:
        raise IsoMessageError(ErrorType.BADLY_FORMED_MESSAGE, "not in the ISO 18626 namespace")
    if etree.QName(root).localname != "ISO18626Message":
        return root
    version = root.get(_q("version"), root.get("version"))
    if version != ISO18626_VERSION:
        # v1.2's closed errorType list has no "unsupported version"; BadlyFormedMessage is closest.
        raise IsoMessageError(
            ErrorType.BADLY_FORMED_MESSAGE, f"unsupported version {_short(version or '(none)')}"
        )
    messages = [child for child in root if isinstance(child.tag, str)]
    if len(messages) != 1 or etree.QName(messages[0]).namespace != ISO18626_NS:
        raise IsoMessageError(
            ErrorType.BADLY_FORMED_MESSAGE, "ISO18626Message must hold one ISO 18626 message"
        )
    return messages[0]


def _q(name: str) -> str:
    return f"{{{ISO18626_NS}}}{name}"


def _short(value: str) -> str:
    return value if len(value) <= _SHORT_VALUE else value[:_SHORT_VALUE] + "…"


def _find(parent: etree._Element, *names: str) -> etree._Element | None:
    return parent.find("/".join(_q(name) for name in names))


def _text(parent: etree._Element, *names: str) -> str | None:
    element = _find(parent, *names)
    if element is None or element.text is None:
        return None
    return element.text.strip() or None


def _required(parent: etree._Element, *names: str) -> str:
    value = _text(parent, *names)
    if value is None:
        raise IsoMessageError(ErrorType.BADLY_FORMED_MESSAGE, f"missing {'/'.join(names)}")
    return value


def _enum(
    cls: type[_E],
    value: str,
    name: str,
    error_type: ErrorType = ErrorType.UNRECOGNISED_DATA_VALUE,
) -> _E:
    try:
        return cls(value)
    except ValueError:
        raise IsoMessageError(error_type, f"{name} {_short(value)}") from None


def _datetime(value: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise IsoMessageError(
            ErrorType.UNRECOGNISED_DATA_VALUE, f"{name} {_short(value)}"
        ) from None
    # xs:dateTime without an offset is local time of unknown zone; UTC is the only safe reading.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _optional_datetime(parent: etree._Element, *names: str) -> datetime | None:
    value = _text(parent, *names)
    return None if value is None else _datetime(value, names[-1])


def _required_datetime(parent: etree._Element, *names: str) -> datetime:
    return _datetime(_required(parent, *names), names[-1])


def _yes_no(value: str | None) -> bool | None:
    if value is None:
        return None
    if value not in ("Y", "N"):
        raise IsoMessageError(ErrorType.UNRECOGNISED_DATA_VALUE, f"answerYesNo {_short(value)}")
    return value == "Y"


def _agency(header: etree._Element, name: str) -> AgencyId:
    return AgencyId(
        type=_required(header, name, "agencyIdType"),
        value=_required(header, name, "agencyIdValue"),
    )


def _agency_or_none(header: etree._Element, name: str) -> AgencyId | None:
    id_type, value = _text(header, name, "agencyIdType"), _text(header, name, "agencyIdValue")
    return AgencyId(id_type, value) if id_type and value else None


def _header(message: etree._Element) -> Header:
    header = _find(message, "header")
    if header is None:
        raise IsoMessageError(ErrorType.BADLY_FORMED_MESSAGE, "missing header")
    return Header(
        supplying_agency=_agency(header, "supplyingAgencyId"),
        requesting_agency=_agency(header, "requestingAgencyId"),
        timestamp=_required_datetime(header, "timestamp"),
        requesting_agency_request_id=_required(header, "requestingAgencyRequestId"),
        supplying_agency_request_id=_text(header, "supplyingAgencyRequestId"),
        multiple_item_request_id=_text(header, "multipleItemRequestId"),
        security_code=_text(header, "requestingAgencyAuthentication", "securityCode"),
    )


def _echo(message: etree._Element) -> HeaderEcho:
    header = _find(message, "header")
    if header is None:
        header = _find(message, "confirmationHeader")
    if header is None:
        return HeaderEcho()
    return HeaderEcho(
        supplying_agency=_agency_or_none(header, "supplyingAgencyId"),
        requesting_agency=_agency_or_none(header, "requestingAgencyId"),
        requesting_agency_request_id=_text(header, "requestingAgencyRequestId"),
        multiple_item_request_id=_text(header, "multipleItemRequestId"),
    )


def _identifiers(
    bibliographic: etree._Element, element: str, code: str, value: str
) -> dict[str, str]:
    """Identifier code (upper-cased: Alma's codes are, other senders' may not be) → first value."""
    found: dict[str, str] = {}
    for identifier in bibliographic.iterfind(_q(element)):
        id_code, id_value = _text(identifier, code), _text(identifier, value)
        if id_code and id_value:
            found.setdefault(id_code.upper(), id_value)
    return found


def _citation(
    request: etree._Element, bibliographic: etree._Element, service_type: ServiceType | None
) -> CitationFields:
    """Map ISO bibliographic data onto Alma's citation fields, in Alma's conventions.

    ISO ``title`` is the host item and ``titleOfComponent`` the part asked for. A copy of a
    component with no ISBN is an article: Alma calls the article ``title`` and its host the
    ``journal_title``. Otherwise the host is the ``title`` and a component is a chapter
    (``chapter_title``/``chapter_author``).
    """
    ids = _identifiers(
        bibliographic,
        "bibliographicRecordId",
        "bibliographicRecordIdentifierCode",
        "bibliographicRecordIdentifier",
    ) | _identifiers(
        bibliographic,
        "bibliographicItemId",
        "bibliographicItemIdentifierCode",
        "bibliographicItemIdentifier",
    )
    host_title = _text(bibliographic, "title")
    component_title = _text(bibliographic, "titleOfComponent")
    title = host_title or component_title
    if title is None:
        raise IsoMessageError(ErrorType.BADLY_FORMED_MESSAGE, "missing bibliographicInfo/title")
    is_copy = service_type is ServiceType.COPY or (
        service_type is not ServiceType.LOAN and component_title is not None
    )
    is_article = (
        is_copy and host_title is not None and component_title is not None and "ISBN" not in ids
    )
    author = _text(bibliographic, "author")
    component_author = _text(bibliographic, "authorOfComponent")
    need_before = _optional_datetime(request, "serviceInfo", "needBeforeDate")
    return CitationFields(
        title=component_title if is_article and component_title else title,
        author=(component_author or author) if is_article else author,
        isbn=ids.get("ISBN"),
        issn=ids.get("ISSN"),
        oclc_number=ids.get("OCLC"),
        publisher=_text(request, "publicationInfo", "publisher"),
        place_of_publication=_text(request, "publicationInfo", "placeOfPublication"),
        year=_text(request, "publicationInfo", "publicationDate"),
        edition=_text(bibliographic, "edition"),
        volume=_text(bibliographic, "volume"),
        issue=_text(bibliographic, "issue"),
        pages=_text(bibliographic, "pagesRequested"),
        journal_title=host_title if is_article else None,
        chapter_title=None if is_article else component_title,
        chapter_author=None if is_article else component_author,
        doi=ids.get("DOI"),
        format="DIGITAL" if is_copy else "PHYSICAL",
        citation_type="CR" if is_article else "BK",
        last_interest_date=need_before.date() if need_before else None,
    )


def _patron(request: etree._Element) -> PatronFields | None:
    info = _find(request, "patronInfo")
    if info is None:
        return None
    email = next(
        (
            _text(address, "electronicAddressData")
            for address in info.iterfind(f"{_q('address')}/{_q('electronicAddress')}")
            if (_text(address, "electronicAddressType") or "").lower() == "email"
        ),
        None,
    )
    return PatronFields(
        patron_id=_text(info, "patronId"),
        surname=_text(info, "surname"),
        given_name=_text(info, "givenName"),
        email=email,
    )


def _parse_request(message: etree._Element, profile: AlmaProfile) -> IsoRequest:
    header = _header(message)
    bibliographic = _find(message, "bibliographicInfo")
    if bibliographic is None:
        raise IsoMessageError(ErrorType.BADLY_FORMED_MESSAGE, "missing bibliographicInfo")
    service_type_text = _text(message, "serviceInfo", "serviceType")
    service_type = (
        _enum(ServiceType, service_type_text, "serviceType") if service_type_text else None
    )
    note, ship_to, return_to = profile.split_note(_text(message, "serviceInfo", "note"))
    return IsoRequest(
        header=header,
        citation=_citation(message, bibliographic, service_type),
        patron=_patron(message),
        service_type=service_type,
        note=note,
        ship_to=ship_to,
        return_to=return_to,
    )


def _parse_requesting_agency_message(
    message: etree._Element, profile: AlmaProfile
) -> RequestingAgencyMessage:
    header = _header(message)
    action = _enum(
        Action, _required(message, "action"), "action", ErrorType.UNSUPPORTED_ACTION_TYPE
    )
    return RequestingAgencyMessage(header=header, action=action, note=_text(message, "note"))


def _parse_supplying_agency_message(
    message: etree._Element, profile: AlmaProfile
) -> SupplyingAgencyMessage:
    header = _header(message)
    reason = _enum(
        ReasonForMessage,
        _required(message, "messageInfo", "reasonForMessage"),
        "reasonForMessage",
        ErrorType.UNSUPPORTED_REASON_FOR_MESSAGE_TYPE,
    )
    return SupplyingAgencyMessage(
        header=header,
        reason_for_message=reason,
        status=_enum(Status, _required(message, "statusInfo", "status"), "status"),
        answer_yes_no=_yes_no(_text(message, "messageInfo", "answerYesNo")),
        note=_text(message, "messageInfo", "note"),
        reason_unfilled=_text(message, "messageInfo", "reasonUnfilled"),
        due_date=_optional_datetime(message, "statusInfo", "dueDate"),
        last_change=_optional_datetime(message, "statusInfo", "lastChange"),
        item_id=_text(message, "deliveryInfo", "itemId"),
        date_sent=_optional_datetime(message, "deliveryInfo", "dateSent"),
    )


@dataclass(frozen=True, slots=True)
class _ConfirmationCommon:
    echo: HeaderEcho
    timestamp: datetime
    timestamp_received: datetime
    message_status: MessageStatus
    error_type: ErrorType | None
    error_value: str | None


def _confirmation_common(message: etree._Element) -> _ConfirmationCommon:
    if _find(message, "confirmationHeader") is None:
        raise IsoMessageError(ErrorType.BADLY_FORMED_MESSAGE, "missing confirmationHeader")
    error_type = _text(message, "errorData", "errorType")
    return _ConfirmationCommon(
        echo=_echo(message),
        timestamp=_required_datetime(message, "confirmationHeader", "timestamp"),
        timestamp_received=_required_datetime(message, "confirmationHeader", "timestampReceived"),
        message_status=_enum(
            MessageStatus,
            _required(message, "confirmationHeader", "messageStatus"),
            "messageStatus",
        ),
        error_type=_enum(ErrorType, error_type, "errorType") if error_type else None,
        error_value=_text(message, "errorData", "errorValue"),
    )


def _parse_request_confirmation(
    message: etree._Element, profile: AlmaProfile
) -> RequestConfirmation:
    common = _confirmation_common(message)
    return RequestConfirmation(
        echo=common.echo,
        timestamp=common.timestamp,
        timestamp_received=common.timestamp_received,
        message_status=common.message_status,
        error_type=common.error_type,
        error_value=common.error_value,
    )


def _parse_requesting_agency_message_confirmation(
    message: etree._Element, profile: AlmaProfile
) -> RequestingAgencyMessageConfirmation:
    common = _confirmation_common(message)
    action = _text(message, "action")
    return RequestingAgencyMessageConfirmation(
        echo=common.echo,
        timestamp=common.timestamp,
        timestamp_received=common.timestamp_received,
        message_status=common.message_status,
        action=_enum(Action, action, "action", ErrorType.UNSUPPORTED_ACTION_TYPE)
        if action
        else None,
        error_type=common.error_type,
        error_value=common.error_value,
    )


def _parse_supplying_agency_message_confirmation(
    message: etree._Element, profile: AlmaProfile
) -> SupplyingAgencyMessageConfirmation:
    common = _confirmation_common(message)
    reason = _text(message, "reasonForMessage")
    return SupplyingAgencyMessageConfirmation(
        echo=common.echo,
        timestamp=common.timestamp,
        timestamp_received=common.timestamp_received,
        message_status=common.message_status,
        reason_for_message=_enum(
            ReasonForMessage,
            reason,
            "reasonForMessage",
            ErrorType.UNSUPPORTED_REASON_FOR_MESSAGE_TYPE,
        )
        if reason
        else None,
        error_type=common.error_type,
        error_value=common.error_value,
    )


_PARSERS: Mapping[MessageKind, Callable[[etree._Element, AlmaProfile], IncomingMessage]] = {
    MessageKind.REQUEST: _parse_request,
    MessageKind.REQUEST_CONFIRMATION: _parse_request_confirmation,
    MessageKind.SUPPLYING_AGENCY_MESSAGE: _parse_supplying_agency_message,
    MessageKind.SUPPLYING_AGENCY_MESSAGE_CONFIRMATION: _parse_supplying_agency_message_confirmation,
    MessageKind.REQUESTING_AGENCY_MESSAGE: _parse_requesting_agency_message,
    MessageKind.REQUESTING_AGENCY_MESSAGE_CONFIRMATION: (
        _parse_requesting_agency_message_confirmation
    ),
}


# --- validation -------------------------------------------------------------------------------

# Validation shares one XMLSchema (and its error log) between threads, so it takes turns.
_SCHEMA_LOCK = threading.Lock()


@cache
def _schema() -> etree.XMLSchema:
    source = (files("app.alma") / "schemas" / _XSD_FILE).read_bytes()
    return etree.XMLSchema(etree.fromstring(source, _safe_parser()))


def validate(xml: bytes) -> None:
    """Raise IsoSchemaError with the first error if ``xml`` is not a valid v1.2 message."""
    try:
        document = etree.fromstring(xml, _safe_parser())
    except etree.XMLSyntaxError as error:
        raise IsoSchemaError(f"not well-formed: {error}") from None
    schema = _schema()
    with _SCHEMA_LOCK:
        if schema.validate(document):
            return
        raise IsoSchemaError(str(schema.error_log).splitlines()[0])


# --- encoding ---------------------------------------------------------------------------------


def _xs_datetime(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("ISO 18626 timestamps need a timezone; got a naive datetime")
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _document(kind: MessageKind) -> tuple[etree._Element, etree._Element]:
    root = etree.Element(
        _q("ISO18626Message"),
        {_q("version"): ISO18626_VERSION},
        # Alma's shape: elements in the default namespace, the version attribute qualified
        # (lxml-stubs reject the None key lxml uses for the default namespace).
        nsmap={None: ISO18626_NS, "ill": ISO18626_NS},  # type: ignore[dict-item]
    )
    return root, etree.SubElement(root, _q(kind))


def _sub(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, _q(name))
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


def _confirmation(
    kind: MessageKind,
    echo: HeaderEcho,
    *,
    message_status: MessageStatus,
    error_type: ErrorType | None,
    error_value: str | None,
    timestamp_received: datetime | None,
    timestamp: datetime | None,
    answered: tuple[str, str] | None = None,
) -> bytes:
    if (message_status is MessageStatus.ERROR) != (error_type is not None):
        raise ValueError("an ERROR confirmation needs an error_type, an OK one must not have one")
    now = datetime.now(UTC)
    root, message = _document(kind)
    header = _sub(message, "confirmationHeader")
    if echo.supplying_agency is not None:
        _agency_element(header, "supplyingAgencyId", echo.supplying_agency)
    if echo.requesting_agency is not None:
        _agency_element(header, "requestingAgencyId", echo.requesting_agency)
    _sub(header, "timestamp", _xs_datetime(timestamp or now))
    _optional(header, "requestingAgencyRequestId", echo.requesting_agency_request_id)
    _optional(header, "multipleItemRequestId", echo.multiple_item_request_id)
    _sub(header, "timestampReceived", _xs_datetime(timestamp_received or now))
    _sub(header, "messageStatus", message_status)
    if answered is not None:
        _sub(message, *answered)
    if error_type is not None:
        error_data = _sub(message, "errorData")
        _sub(error_data, "errorType", error_type)
        _optional(error_data, "errorValue", error_value)
    return _finish(root)


def encode_request_confirmation(
    echo: HeaderEcho,
    *,
    message_status: MessageStatus,
    error_type: ErrorType | None = None,
    error_value: str | None = None,
    timestamp_received: datetime | None = None,
    timestamp: datetime | None = None,
) -> bytes:
    return _confirmation(
        MessageKind.REQUEST_CONFIRMATION,
        echo,
        message_status=message_status,
        error_type=error_type,
        error_value=error_value,
        timestamp_received=timestamp_received,
        timestamp=timestamp,
    )


def encode_requesting_agency_message_confirmation(
    echo: HeaderEcho,
    *,
    action: Action | None,
    message_status: MessageStatus,
    error_type: ErrorType | None = None,
    error_value: str | None = None,
    timestamp_received: datetime | None = None,
    timestamp: datetime | None = None,
) -> bytes:
    return _confirmation(
        MessageKind.REQUESTING_AGENCY_MESSAGE_CONFIRMATION,
        echo,
        message_status=message_status,
        error_type=error_type,
        error_value=error_value,
        timestamp_received=timestamp_received,
        timestamp=timestamp,
        answered=("action", action) if action is not None else None,
    )


def encode_supplying_agency_message_confirmation(
    echo: HeaderEcho,
    *,
    reason_for_message: ReasonForMessage | None,
    message_status: MessageStatus,
    error_type: ErrorType | None = None,
    error_value: str | None = None,
    timestamp_received: datetime | None = None,
    timestamp: datetime | None = None,
) -> bytes:
    return _confirmation(
        MessageKind.SUPPLYING_AGENCY_MESSAGE_CONFIRMATION,
        echo,
        message_status=message_status,
        error_type=error_type,
        error_value=error_value,
        timestamp_received=timestamp_received,
        timestamp=timestamp,
        answered=(
            ("reasonForMessage", reason_for_message) if reason_for_message is not None else None
        ),
    )


def encode_error_confirmation(
    error: IsoMessageError, *, timestamp_received: datetime | None = None
) -> bytes:
    """The ERROR confirmation matching the refused message (requestConfirmation if unknown)."""
    if error.kind is MessageKind.REQUESTING_AGENCY_MESSAGE:
        return encode_requesting_agency_message_confirmation(
            error.echo,
            action=None,
            message_status=MessageStatus.ERROR,
            error_type=error.error_type,
            error_value=error.error_value,
            timestamp_received=timestamp_received,
        )
    if error.kind is MessageKind.SUPPLYING_AGENCY_MESSAGE:
        return encode_supplying_agency_message_confirmation(
            error.echo,
            reason_for_message=None,
            message_status=MessageStatus.ERROR,
            error_type=error.error_type,
            error_value=error.error_value,
            timestamp_received=timestamp_received,
        )
    return encode_request_confirmation(
        error.echo,
        message_status=MessageStatus.ERROR,
        error_type=error.error_type,
        error_value=error.error_value,
        timestamp_received=timestamp_received,
    )


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
) -> bytes:
    """``lastChange`` defaults to the header timestamp; ``deliveryInfo`` appears with an item id
    or a date sent (``dateSent`` defaulting to the header timestamp)."""
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
    return _finish(root)


def encode_requesting_agency_message(
    header: Header, *, action: Action, note: str | None = None
) -> bytes:
    root, message = _document(MessageKind.REQUESTING_AGENCY_MESSAGE)
    _header_element(message, header)
    _sub(message, "action", action)
    _optional(message, "note", note)
    return _finish(root)


def _end_of_day(day: date) -> datetime:
    return datetime.combine(day, time(23, 59, 59), tzinfo=UTC)


def encode_request(
    header: Header,
    citation: Mapping[str, str | date | None],
    *,
    patron: Mapping[str, str | None] | None = None,
    service_type: ServiceType | None = None,
    note: str | None = None,
    ship_to: str | None = None,
    return_to: str | None = None,
    profile: AlmaProfile = ALMA_DEFAULT,
) -> bytes:
    """A ``request`` as Alma sends it, from Alma's citation fields (the inverse of parsing).

    ``service_type`` defaults to Copy for articles (CR, DIGITAL or a journal title), else Loan.
    A citation whose ``journal_title`` differs from its ``title`` is Alma's article shape: the
    journal becomes the ISO ``title`` and the article its ``titleOfComponent``.
    """
    unknown = set(citation) - set(CitationFields.__annotations__)
    unknown |= set(patron or {}) - set(PatronFields.__annotations__)
    if unknown:
        raise ValueError(f"unknown citation or patron fields: {sorted(unknown)}")

    def field_text(name: str) -> str | None:
        value = citation.get(name)
        return None if value is None else str(value)

    title = field_text("title")
    if title is None:
        raise ValueError("a citation needs a title")
    host_title = field_text("journal_title") or title
    component_title = field_text("chapter_title") or (title if host_title != title else None)
    if service_type is None:
        is_article = (
            (field_text("citation_type") or "").upper() == "CR"
            or (field_text("format") or "").upper() == "DIGITAL"
            or field_text("journal_title") is not None
        )
        service_type = ServiceType.COPY if is_article else ServiceType.LOAN

    root, message = _document(MessageKind.REQUEST)
    _header_element(message, header)
    bibliographic = _sub(message, "bibliographicInfo")
    _sub(bibliographic, "title", host_title)
    _optional(bibliographic, "author", field_text("author"))
    _optional(bibliographic, "edition", field_text("edition"))
    _optional(bibliographic, "titleOfComponent", component_title)
    _optional(bibliographic, "authorOfComponent", field_text("chapter_author"))
    _optional(bibliographic, "volume", field_text("volume"))
    _optional(bibliographic, "issue", field_text("issue"))
    _optional(bibliographic, "pagesRequested", field_text("pages"))
    for name, code in (("isbn", "ISBN"), ("issn", "ISSN"), ("doi", "DOI")):
        if (value := field_text(name)) is not None:
            item_id = _sub(bibliographic, "bibliographicItemId")
            _sub(item_id, "bibliographicItemIdentifier", value)
            _sub(item_id, "bibliographicItemIdentifierCode", code)
    if (oclc_number := field_text("oclc_number")) is not None:
        record_id = _sub(bibliographic, "bibliographicRecordId")
        _sub(record_id, "bibliographicRecordIdentifierCode", "OCLC")
        _sub(record_id, "bibliographicRecordIdentifier", oclc_number)

    publication = {
        "publisher": field_text("publisher"),
        "publicationDate": field_text("year"),
        "placeOfPublication": field_text("place_of_publication"),
    }
    if any(publication.values()):
        publication_info = _sub(message, "publicationInfo")
        for name, value in publication.items():
            _optional(publication_info, name, value)

    service_info = _sub(message, "serviceInfo")
    _sub(service_info, "serviceType", service_type)
    last_interest = citation.get("last_interest_date")
    if isinstance(last_interest, date):
        _sub(service_info, "needBeforeDate", _xs_datetime(_end_of_day(last_interest)))
    _optional(service_info, "note", profile.join_note(note, ship_to, return_to))

    if patron is not None:
        patron_info = _sub(message, "patronInfo")
        _optional(patron_info, "patronId", patron.get("patron_id"))
        _optional(patron_info, "surname", patron.get("surname"))
        _optional(patron_info, "givenName", patron.get("given_name"))
        if (email := patron.get("email")) is not None:
            address = _sub(_sub(patron_info, "address"), "electronicAddress")
            _sub(address, "electronicAddressType", "email")
            _sub(address, "electronicAddressData", email)
    return _finish(root)


# --- what the bridge tells Alma ---------------------------------------------------------------


# kind → (reasonForMessage, None: the profile's for the status; status, None: the caller's; answer)
_SUPPLIER_MESSAGES: Mapping[
    AlmaNotice, tuple[ReasonForMessage | None, Status | None, bool | None]
] = MappingProxyType(
    {
        AlmaNotice.EXPECT_TO_SUPPLY: (None, Status.EXPECT_TO_SUPPLY, None),
        AlmaNotice.WILL_SUPPLY: (None, Status.WILL_SUPPLY, None),
        AlmaNotice.LOANED: (None, Status.LOANED, None),
        AlmaNotice.RENEW_YES: (ReasonForMessage.RENEW_RESPONSE, Status.LOANED, True),
        AlmaNotice.RENEW_NO: (ReasonForMessage.RENEW_RESPONSE, Status.LOANED, False),
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
) -> bytes:
    """The supplyingAgencyMessage for ``kind``, shaped the way ``profile``'s Alma accepts it.

    With ``ALMA_DEFAULT``:

    ================  =====================  ================  ===========
    kind              reasonForMessage       status            answerYesNo
    ================  =====================  ================  ===========
    expect_to_supply  RequestResponse        ExpectToSupply    -
    will_supply       RequestResponse        WillSupply        -
    loaned            StatusChange           Loaned            -
    renew_yes         RenewResponse          Loaned            Y
    renew_no          RenewResponse          Loaned            N
    loan_completed    RequestResponse        LoanCompleted     -
    unfilled          RequestResponse        Unfilled          -
    cancelled         StatusChange           Cancelled         -
    cancel_yes        CancelResponse         Cancelled         Y
    cancel_no         CancelResponse         ``status``        N
    status_answer     StatusRequestResponse  ``status``        -
    ================  =====================  ================  ===========

    ``status`` is given for cancel_no and status_answer only; renew_yes needs the new
    ``due_date``. A bare date is sent as noon UTC that day.
    """
    reason, planned_status, answer = _SUPPLIER_MESSAGES[kind]
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
    )
