"""Reading ISO 18626 (v1.2) messages safely: bounded size, no DTD, entities or network.

Lenient where Alma and the published samples stray from the XSD (``+0000`` offsets, a missing
``multipleItemRequestId``, bare or wrapped messages); strict about anything hostile.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from lxml import etree

from app.alma.iso18626.messages import (
    CONFIRMATIONS,
    ISO18626_NS,
    ISO18626_VERSION,
    Action,
    AgencyId,
    AnyConfirmation,
    CitationFields,
    ErrorType,
    Header,
    HeaderEcho,
    IncomingMessage,
    IsoMessageError,
    IsoRequest,
    MessageKind,
    MessageStatus,
    PatronFields,
    ReasonForMessage,
    RequestingAgencyMessage,
    ServiceType,
    Status,
    SupplyingAgencyMessage,
    qualified,
)
from app.alma.iso18626.profile import ALMA_DEFAULT, AlmaProfile

MAX_MESSAGE_BYTES = 256 * 1024

_FORBIDDEN_MARKUP = (b"<!DOCTYPE", b"<!ENTITY")
_SHORT_VALUE = 40

_E = TypeVar("_E", bound=StrEnum)


def safe_parser() -> etree.XMLParser:
    """No DTD, no entities, no network, no huge trees: all that hostile XML could ask for.

    DTD validation and huge trees are off by lxml's defaults (and a DOCTYPE is refused outright);
    comments and processing instructions are dropped so that only elements and text remain.
    """
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
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
        if kind in CONFIRMATIONS:
            return _parse_confirmation(message, CONFIRMATIONS[kind])
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
        root = etree.fromstring(body, safe_parser())
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
    version = root.get(qualified("version"), root.get("version"))
    # Some senders leave the version out; only a version that is given must be v1.2.
    if version is not None and version != ISO18626_VERSION:
        # v1.2's closed errorType list has no "unsupported version"; BadlyFormedMessage is closest.
        raise IsoMessageError(
            ErrorType.BADLY_FORMED_MESSAGE, f"unsupported version {_short(version)}"
        )
    messages = [child for child in root if isinstance(child.tag, str)]
    if len(messages) != 1 or etree.QName(messages[0]).namespace != ISO18626_NS:
        raise IsoMessageError(
            ErrorType.BADLY_FORMED_MESSAGE, "ISO18626Message must hold one ISO 18626 message"
        )
    return messages[0]


def _short(value: str) -> str:
    return value if len(value) <= _SHORT_VALUE else value[:_SHORT_VALUE] + "…"


def _find(parent: etree._Element, *names: str) -> etree._Element | None:
    return parent.find("/".join(qualified(name) for name in names))


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
    for identifier in bibliographic.iterfind(qualified(element)):
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
        copyright_compliance=_text(request, "serviceInfo", "copyrightCompliance"),
    )


def _patron(request: etree._Element) -> PatronFields | None:
    info = _find(request, "patronInfo")
    if info is None:
        return None
    email = next(
        (
            _text(address, "electronicAddressData")
            for address in info.iterfind(f"{qualified('address')}/{qualified('electronicAddress')}")
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


def _parse_confirmation(message: etree._Element, kind: type[AnyConfirmation]) -> AnyConfirmation:
    """Any of the three: the confirmation header, errorData and the element ``kind`` repeats."""
    if _find(message, "confirmationHeader") is None:
        raise IsoMessageError(ErrorType.BADLY_FORMED_MESSAGE, "missing confirmationHeader")
    error_type_text = _text(message, "errorData", "errorType")
    echo = _echo(message)
    timestamp = _required_datetime(message, "confirmationHeader", "timestamp")
    timestamp_received = _required_datetime(message, "confirmationHeader", "timestampReceived")
    message_status = _enum(
        MessageStatus, _required(message, "confirmationHeader", "messageStatus"), "messageStatus"
    )
    error_type = _enum(ErrorType, error_type_text, "errorType") if error_type_text else None
    error_value = _text(message, "errorData", "errorValue")
    repeated: dict[str, Any] = {}
    if (repeats := kind.repeats) is not None:
        value = _text(message, repeats.element)
        repeated[repeats.attribute] = (
            _enum(repeats.values, value, repeats.element, repeats.unknown_value) if value else None
        )
    return kind(
        echo,
        timestamp,
        timestamp_received,
        message_status,
        error_type=error_type,
        error_value=error_value,
        **repeated,
    )


_PARSERS: Mapping[MessageKind, Callable[[etree._Element, AlmaProfile], IncomingMessage]] = {
    MessageKind.REQUEST: _parse_request,
    MessageKind.SUPPLYING_AGENCY_MESSAGE: _parse_supplying_agency_message,
    MessageKind.REQUESTING_AGENCY_MESSAGE: _parse_requesting_agency_message,
}
