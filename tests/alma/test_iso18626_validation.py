"""The bundled v1.2 XSD: it names the first error, and our code lists are its code lists."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from app.alma.iso18626 import (
    Action,
    ErrorType,
    IsoSchemaError,
    MessageStatus,
    ReasonForMessage,
    ServiceType,
    Status,
    validate,
)
from app.sandbox.iso_requester_messages import encode_requesting_agency_message
from tests.support.iso18626 import HEADER

REPO_ROOT = Path(__file__).resolve().parents[2]
XSD = REPO_ROOT / "app" / "alma" / "schemas" / "ISO-18626-v1_2.xsd"


def test_validate_reports_the_first_schema_error() -> None:
    xml = encode_requesting_agency_message(HEADER, action=Action.RECEIVED)

    with pytest.raises(IsoSchemaError, match="action"):
        validate(xml.replace(b"<action>Received</action>", b"<action>Lost</action>"))
    with pytest.raises(IsoSchemaError, match="well-formed"):
        validate(b"<nope")


@pytest.mark.parametrize(
    ("type_name", "enum"),
    [
        ("type_action", Action),
        ("type_reasonForMessage", ReasonForMessage),
        ("type_status", Status),
        ("type_serviceType", ServiceType),
        ("type_messageStatus", MessageStatus),
        ("type_errorType", ErrorType),
    ],
)
def test_code_lists_match_the_xsd(type_name: str, enum: type) -> None:
    xs = "{http://www.w3.org/2001/XMLSchema}"
    schema = etree.parse(str(XSD))
    values = schema.xpath(
        f"//xs:simpleType[@name='{type_name}']//xs:enumeration/@value",
        namespaces={"xs": xs[1:-1]},
    )

    assert set(values) == {member.value for member in enum}
