"""Checking a message against the ISO 18626 v1.2 XSD bundled in ``app/alma/schemas``.

The only I/O of the codec: the XSD is read once, on first validation.
"""

from __future__ import annotations

import threading
from functools import cache
from importlib.resources import files

from lxml import etree

from app.alma.iso18626.parsing import safe_parser

_XSD_FILE = "ISO-18626-v1_2.xsd"

# Validation shares one XMLSchema (and its error log) between threads, so it takes turns.
_SCHEMA_LOCK = threading.Lock()


class IsoSchemaError(Exception):
    """A message the bridge built fails the v1.2 XSD: a bug on our side, so it is never sent."""


@cache
def _schema() -> etree.XMLSchema:
    source = (files("app.alma") / "schemas" / _XSD_FILE).read_bytes()
    return etree.XMLSchema(etree.fromstring(source, safe_parser()))


def validate(xml: bytes) -> None:
    """Raise IsoSchemaError with the first error if ``xml`` is not a valid v1.2 message."""
    try:
        document = etree.fromstring(xml, safe_parser())
    except etree.XMLSyntaxError as error:
        raise IsoSchemaError(f"not well-formed: {error}") from None
    schema = _schema()
    with _SCHEMA_LOCK:
        if schema.validate(document):
            return
        raise IsoSchemaError(str(schema.error_log).splitlines()[0])
