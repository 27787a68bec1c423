"""The simulated Alma's XML: its fixtures filled in, a safe parser, the v1.2 XSD, and reading what
its partner sends it.

The fixtures in ``alma_messages/`` are Alma's messages written out. Each optional element sits on
a line of its own, and a line is left out when a value on it is None. The XSD there is the
standard's v1.2 file, Alma's own copy.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib.resources import files
from string import Template

from lxml import etree

from app.sandbox.alma_vocabulary import ErrorType

NS = "http://illtransactions.org/2013/iso18626"
VERSION = "1.2"
MAX_MESSAGE_BYTES = 256 * 1024
_FIXTURES = files("app.sandbox") / "alma_messages"
_XSD = "ISO-18626-v1_2.xsd"
_FORBIDDEN_MARKUP = (b"<!DOCTYPE", b"<!ENTITY")
# XML 1.0 Char production: what may appear in a document at all.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Validation shares one XMLSchema (and its error log) between threads, so it takes turns.
_SCHEMA_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class Agency:
    type: str
    value: str


class Unreadable(Exception):
    """A message Alma cannot take as it stands, with the errorType its confirmation gives."""

    def __init__(self, error_type: ErrorType, error_value: str) -> None:
        super().__init__(f"{error_type}: {error_value}")
        self.error_type = error_type
        self.error_value = error_value


class Fragment(str):
    """XML already filled in from a fixture, put into another one as it is."""

    __slots__ = ()


# --- writing ----------------------------------------------------------------------------------


def xs_datetime(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("ISO 18626 timestamps need a timezone; got a naive datetime")
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@cache
def _fixture(name: str) -> str:
    return (_FIXTURES / name).read_text(encoding="utf-8")


def _escape(value: str) -> str:
    if _NOT_XML.search(value):
        raise ValueError("a value holds a character XML 1.0 does not allow")
    # Line breaks as character references: a raw CR would come back as LF, and a filled-in
    # fragment's own line breaks are then only the fixture's.
    for raw, reference in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("\r", "&#13;")):
        value = value.replace(raw, reference)
    return value.replace("\n", "&#10;")


def fill(fixture: str, **values: str | None) -> Fragment:
    """``fixture`` with its ``$names`` filled: text escaped, a Fragment as it is, a None's line
    left out. Every name must be given, and no other."""
    text = _fixture(fixture)
    expected = set(Template(text).get_identifiers())
    if set(values) != expected:
        raise ValueError(f"{fixture} takes {sorted(expected)}, got {sorted(values)}")
    lines = []
    for line in text.splitlines():
        template = Template(line)
        names = template.get_identifiers()
        if any(values[name] is None for name in names):
            continue
        indent = line[: len(line) - len(line.lstrip())]
        lines.append(
            template.substitute(
                {
                    name: value.replace("\n", "\n" + indent)
                    if isinstance(value, Fragment)
                    else _escape(value)
                    for name in names
                    if (value := values[name]) is not None
                }
            )
        )
    return Fragment("\n".join(lines))


def message_bytes(fixture: str, **values: str | None) -> bytes:
    """A whole message from its fixture, checked against the XSD before it leaves Alma."""
    xml = fill(fixture, **values).encode("utf-8")
    problem = schema_problem(parse(xml))
    if problem is not None:
        raise ValueError(f"{fixture} filled in is not valid ISO 18626 v1.2: {problem}")
    return xml


# --- reading ----------------------------------------------------------------------------------


def safe_parser() -> etree.XMLParser:
    """No DTD, no entities, no network, no huge trees; comments and PIs dropped."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def parse(body: bytes) -> etree._Element:
    """The root element of ``body``, or Unreadable (BadlyFormedMessage) for anything hostile."""
    if len(body) > MAX_MESSAGE_BYTES:
        raise Unreadable(ErrorType.BADLY_FORMED_MESSAGE, "message too large")
    if any(markup in body for markup in _FORBIDDEN_MARKUP):
        raise Unreadable(ErrorType.BADLY_FORMED_MESSAGE, "DOCTYPE is not allowed")
    try:
        root = etree.fromstring(body, safe_parser())
    except etree.XMLSyntaxError:
        raise Unreadable(ErrorType.BADLY_FORMED_MESSAGE, "not well-formed XML") from None
    # A DOCTYPE in another encoding slips past the byte check; lxml-stubs lack DocInfo.doctype.
    if root.getroottree().docinfo.doctype:  # type: ignore[union-attr]
        raise Unreadable(ErrorType.BADLY_FORMED_MESSAGE, "DOCTYPE is not allowed")
    return root


@cache
def _schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.fromstring((_FIXTURES / _XSD).read_bytes(), safe_parser()))


def schema_problem(document: etree._Element) -> str | None:
    """The first way ``document`` fails the v1.2 XSD, or None when it is valid."""
    schema = _schema()
    with _SCHEMA_LOCK:
        if schema.validate(document):
            return None
        # "<string>:line:col:ERROR:SCHEMASV:code: message": the message alone.
        return str(schema.error_log).splitlines()[0].split(": ", 1)[-1]


def message_element(root: etree._Element) -> etree._Element:
    """The one message in ``root``, bare or wrapped in ``ISO18626Message``."""
    if etree.QName(root).namespace != NS:
        raise Unreadable(ErrorType.BADLY_FORMED_MESSAGE, "not in the ISO 18626 namespace")
    if etree.QName(root).localname != "ISO18626Message":
        return root
    children = [child for child in root if isinstance(child.tag, str)]
    if len(children) != 1:
        raise Unreadable(
            ErrorType.BADLY_FORMED_MESSAGE, "ISO18626Message must hold one ISO 18626 message"
        )
    return children[0]


def kind_of(element: etree._Element) -> str:
    return etree.QName(element).localname


def _text(element: etree._Element, path: str) -> str | None:
    found = element.find(path, {"i": NS})
    if found is None:
        return None
    return (found.text or "").strip()


def _agency(element: etree._Element, path: str) -> Agency | None:
    kind = _text(element, f"{path}/i:agencyIdType")
    value = _text(element, f"{path}/i:agencyIdValue")
    return None if kind is None or value is None else Agency(kind, value)


@dataclass(frozen=True, slots=True)
class SupplierMessage:
    """A supplyingAgencyMessage as Alma reads it: the texts as sent, judged elsewhere."""

    requesting_agency: Agency | None
    supplying_agency: Agency | None
    timestamp: str | None
    requesting_agency_request_id: str | None
    supplying_agency_request_id: str | None
    multiple_item_request_id: str | None
    reason_for_message: str | None
    answer_yes_no: str | None
    note: str | None
    status: str | None
    due_date: str | None
    item_id: str | None
    # returnInfo/physicalAddress as one line ("line1, locality postalCode"), if sent.
    return_to: str | None = None


def read_supplier_message(message: etree._Element) -> SupplierMessage:
    return SupplierMessage(
        requesting_agency=_agency(message, "i:header/i:requestingAgencyId"),
        supplying_agency=_agency(message, "i:header/i:supplyingAgencyId"),
        timestamp=_text(message, "i:header/i:timestamp"),
        requesting_agency_request_id=_text(message, "i:header/i:requestingAgencyRequestId"),
        supplying_agency_request_id=_text(message, "i:header/i:supplyingAgencyRequestId"),
        multiple_item_request_id=_text(message, "i:header/i:multipleItemRequestId"),
        reason_for_message=_text(message, "i:messageInfo/i:reasonForMessage"),
        answer_yes_no=_text(message, "i:messageInfo/i:answerYesNo"),
        note=_text(message, "i:messageInfo/i:note"),
        status=_text(message, "i:statusInfo/i:status"),
        due_date=_text(message, "i:statusInfo/i:dueDate"),
        item_id=_text(message, "i:deliveryInfo/i:itemId"),
        return_to=_return_to(message),
    )


def _return_to(message: etree._Element) -> str | None:
    parts = [
        _text(message, f"i:returnInfo/i:physicalAddress/i:{name}")
        for name in ("line1", "line2", "locality", "postalCode", "region", "country")
    ]
    return ", ".join(part for part in parts if part) or None


@dataclass(frozen=True, slots=True)
class PartnerConfirmation:
    """What the partner answered to Alma's request or requestingAgencyMessage."""

    kind: str
    message_status: str | None
    error_type: str | None
    error_value: str | None
    requesting_agency_request_id: str | None
    action: str | None


def read_confirmation(message: etree._Element) -> PartnerConfirmation:
    return PartnerConfirmation(
        kind=kind_of(message),
        message_status=_text(message, "i:confirmationHeader/i:messageStatus"),
        error_type=_text(message, "i:errorData/i:errorType"),
        error_value=_text(message, "i:errorData/i:errorValue"),
        requesting_agency_request_id=_text(
            message, "i:confirmationHeader/i:requestingAgencyRequestId"
        ),
        action=_text(message, "i:action"),
    )


def read_datetime(text: str) -> datetime:
    """An xs:dateTime as sent (``Z``, ``+00:00`` or none); ValueError when it is not one."""
    return datetime.fromisoformat(text)
