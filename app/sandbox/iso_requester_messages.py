"""What the simulated Alma sends its ISO 18626 partner: ``request`` and requestingAgencyMessage.

Written the way Alma writes them, from Alma's citation fields, and built here rather than with
the bridge's encoder: only the vocabulary and the XSD are shared, so the bridge's parser meets
Alma's shape, not its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time
from typing import TypeAlias

from lxml import etree

from app.alma.iso18626 import (
    ISO18626_NS,
    ISO18626_VERSION,
    Action,
    AgencyId,
    CitationFields,
    Header,
    MessageKind,
    PatronFields,
    ServiceType,
    validate,
)

# Where Alma writes the delivery and return addresses inside a request's note.
SHIP_TO_MARKERS = ("#SHIP_TO#", "#ST_END#")
RETURN_TO_MARKERS = ("#RETURN_TO#", "#RT_END#")

# An element: its name and either its text or its children (None children are left out).
Node: TypeAlias = tuple[str, "str | Sequence[Node | None]"]


def encode_request(
    header: Header,
    citation: Mapping[str, str | date | None],
    *,
    patron: Mapping[str, str | None] | None = None,
    service_type: ServiceType | None = None,
    note: str | None = None,
    ship_to: str | None = None,
    return_to: str | None = None,
) -> bytes:
    """A ``request`` as Alma sends it, from Alma's citation fields.

    ``service_type`` defaults to Copy for articles (CR, DIGITAL or a journal title), else Loan.
    A citation whose ``journal_title`` differs from its ``title`` is Alma's article shape: the
    journal becomes the ISO ``title`` and the article its ``titleOfComponent``.
    """
    unknown = set(citation) - set(CitationFields.__annotations__)
    unknown |= set(patron or {}) - set(PatronFields.__annotations__)
    if unknown:
        raise ValueError(f"unknown citation or patron fields: {sorted(unknown)}")

    def text(name: str) -> str | None:
        value = citation.get(name)
        return None if value is None else str(value)

    title = text("title")
    if title is None:
        raise ValueError("a citation needs a title")
    journal_title = text("journal_title")
    host_title = journal_title or title
    if service_type is None:
        is_article = (
            journal_title is not None
            or (text("citation_type") or "").upper() == "CR"
            or (text("format") or "").upper() == "DIGITAL"
        )
        service_type = ServiceType.COPY if is_article else ServiceType.LOAN
    identifiers = [
        _item_identifier(code, value)
        for name, code in (("isbn", "ISBN"), ("issn", "ISSN"), ("doi", "DOI"))
        if (value := text(name)) is not None
    ]
    oclc_number = text("oclc_number")
    publication = [
        _optional("publisher", text("publisher")),
        _optional("publicationDate", text("year")),
        _optional("placeOfPublication", text("place_of_publication")),
    ]
    last_interest = citation.get("last_interest_date")
    need_before = (
        datetime.combine(last_interest, time(23, 59, 59), tzinfo=UTC)
        if isinstance(last_interest, date)
        else None
    )
    return _message(
        MessageKind.REQUEST,
        [
            _header(header),
            (
                "bibliographicInfo",
                [
                    ("title", host_title),
                    _optional("author", text("author")),
                    _optional("edition", text("edition")),
                    _optional(
                        "titleOfComponent",
                        text("chapter_title") or (title if host_title != title else None),
                    ),
                    _optional("authorOfComponent", text("chapter_author")),
                    _optional("volume", text("volume")),
                    _optional("issue", text("issue")),
                    _optional("pagesRequested", text("pages")),
                    *identifiers,
                    None
                    if oclc_number is None
                    else (
                        "bibliographicRecordId",
                        [
                            ("bibliographicRecordIdentifierCode", "OCLC"),
                            ("bibliographicRecordIdentifier", oclc_number),
                        ],
                    ),
                ],
            ),
            ("publicationInfo", publication) if any(publication) else None,
            (
                "serviceInfo",
                [
                    ("serviceType", service_type),
                    None if need_before is None else ("needBeforeDate", _timestamp(need_before)),
                    _optional("note", _alma_note(note, ship_to, return_to)),
                ],
            ),
            None if patron is None else _patron_info(patron),
        ],
    )


def encode_requesting_agency_message(
    header: Header, *, action: Action, note: str | None = None
) -> bytes:
    """Alma's requestingAgencyMessage: Renew, Received, ShippedReturn, Cancel, StatusRequest…"""
    return _message(
        MessageKind.REQUESTING_AGENCY_MESSAGE,
        [_header(header), ("action", action), _optional("note", note)],
    )


def _header(header: Header) -> Node:
    code = header.security_code
    return (
        "header",
        [
            _agency("supplyingAgencyId", header.supplying_agency),
            _agency("requestingAgencyId", header.requesting_agency),
            # Required by the v1.2 XSD even for a single item.
            ("multipleItemRequestId", header.multiple_item_request_id or ""),
            ("timestamp", _timestamp(header.timestamp)),
            ("requestingAgencyRequestId", header.requesting_agency_request_id),
            _optional("supplyingAgencyRequestId", header.supplying_agency_request_id),
            None if code is None else ("requestingAgencyAuthentication", [("securityCode", code)]),
        ],
    )


def _item_identifier(code: str, value: str) -> Node:
    return (
        "bibliographicItemId",
        [("bibliographicItemIdentifier", value), ("bibliographicItemIdentifierCode", code)],
    )


def _agency(name: str, agency: AgencyId) -> Node:
    return (name, [("agencyIdType", agency.type), ("agencyIdValue", agency.value)])


def _patron_info(patron: Mapping[str, str | None]) -> Node:
    email = patron.get("email")
    address: Node | None = None
    if email is not None:
        email_address = [("electronicAddressType", "email"), ("electronicAddressData", email)]
        address = ("address", [("electronicAddress", email_address)])
    return (
        "patronInfo",
        [
            _optional("patronId", patron.get("patron_id")),
            _optional("surname", patron.get("surname")),
            _optional("givenName", patron.get("given_name")),
            address,
        ],
    )


def _alma_note(note: str | None, ship_to: str | None, return_to: str | None) -> str | None:
    parts = [note or ""]
    for (start, end), address in ((SHIP_TO_MARKERS, ship_to), (RETURN_TO_MARKERS, return_to)):
        if address is not None:
            parts.append(f"{start}{address}{end}")
    return " ".join(part for part in parts if part) or None


def _optional(name: str, text: str | None) -> Node | None:
    return None if text is None else (name, text)


def _timestamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("ISO 18626 timestamps need a timezone; got a naive datetime")
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _message(kind: MessageKind, content: Sequence[Node | None]) -> bytes:
    """Wrapped as Alma wraps it: default namespace, a qualified version attribute, UTF-8."""
    root = etree.Element(
        f"{{{ISO18626_NS}}}ISO18626Message",
        {f"{{{ISO18626_NS}}}version": ISO18626_VERSION},
        # lxml-stubs reject the None key lxml uses for the default namespace.
        nsmap={None: ISO18626_NS, "ill": ISO18626_NS},  # type: ignore[dict-item]
    )
    _append(root, (kind, content))
    xml = b'<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(root, encoding="UTF-8")
    validate(xml)
    return xml


def _append(parent: etree._Element, node: Node | None) -> None:
    if node is None:
        return
    name, content = node
    element = etree.SubElement(parent, f"{{{ISO18626_NS}}}{name}")
    if isinstance(content, str):
        element.text = str(content)
    else:
        for child in content:
            _append(element, child)
