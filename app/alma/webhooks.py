"""Alma webhooks, the pure part: the signature check and reading an event's envelope.

Alma signs the raw body: `X-Exl-Signature` is the standard Base64 of HMAC-SHA256(secret, body).
The check runs on the bytes as received (never re-serialised JSON), in constant time, against
every valid secret of the institution (two during a rotation).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

import orjson

# An HMAC-SHA256 is 32 bytes; its standard Base64 is 44 characters.
_SIGNATURE_BYTES = 32
_ID_MAX_CHARS = 128
_FIELD_MAX_CHARS = 255


class LoanEventKind(StrEnum):
    LOAN_CREATED = "LOAN_CREATED"
    LOAN_RETURNED = "LOAN_RETURNED"
    LOAN_RENEWED = "LOAN_RENEWED"
    LOAN_DUE_DATE = "LOAN_DUE_DATE"
    LOAN_LOST = "LOAN_LOST"
    LOAN_CLAIMED_RETURNED = "LOAN_CLAIMED_RETURNED"


class BadEvent(ValueError):
    """A body that is not an Alma event the listener can read (answered 400)."""


def sign(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def signature_valid(body: bytes, header: str | None, secrets: Sequence[str]) -> bool:
    """Whether `header` is the signature of `body` under one of `secrets`.

    Every secret is compared, whichever matches, so the time taken does not say which one did.
    """
    if not header or not secrets:
        return False
    try:
        given = base64.b64decode(header.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(given) != _SIGNATURE_BYTES:
        return False
    matched = False
    for secret in secrets:
        expected = hmac.new(secret.encode(), body, hashlib.sha256).digest()
        matched |= hmac.compare_digest(expected, given)
    return matched


@dataclass(frozen=True)
class LoanFacts:
    """What a LOAN event says about the patron's loan; `user_id` is the patron's and is never
    logged or put on the timeline."""

    loan_id: str
    user_id: str | None
    item_barcode: str | None
    item_id: str | None
    library: str | None
    request_id: str | None
    due_date: date | None
    loan_status: str | None


@dataclass(frozen=True)
class AlmaEvent:
    id: str
    action: str  # upper case
    event: str  # upper case, e.g. LOAN_CREATED
    time: datetime | None
    loan: LoanFacts | None

    @property
    def loan_event(self) -> LoanEventKind | None:
        if self.action != "LOAN" or self.loan is None:
            return None
        try:
            return LoanEventKind(self.event)
        except ValueError:
            return None


def parse_event(body: bytes) -> AlmaEvent:
    """The envelope of an Alma webhook; `BadEvent` when the body is not a JSON object with an id."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadEvent("the body is not JSON") from None
    if not isinstance(document, dict):
        raise BadEvent("the body is not a JSON object")
    event_id = document.get("id")
    if not isinstance(event_id, str | int) or not str(event_id).strip():
        raise BadEvent("the event has no id")
    event_id = str(event_id)
    if len(event_id) > _ID_MAX_CHARS or not event_id.isprintable():
        raise BadEvent("the event id is not one Alma sends")
    action = _text(document.get("action")) or ""
    event = _text(_value(document.get("event"))) or ""
    loan = document.get("item_loan")
    return AlmaEvent(
        id=event_id,
        action=action.upper(),
        event=event.upper(),
        time=_datetime(document.get("time")),
        loan=_loan(loan) if isinstance(loan, dict) else None,
    )


def _loan(loan: dict[str, Any]) -> LoanFacts | None:
    loan_id = _text(loan.get("loan_id"))
    if loan_id is None:
        return None
    return LoanFacts(
        loan_id=loan_id,
        user_id=_text(loan.get("user_id")),
        item_barcode=_text(loan.get("item_barcode")),
        item_id=_text(loan.get("item_id")),
        library=_text(_value(loan.get("library"))),
        request_id=_text(_value(loan.get("request_id"))),
        due_date=_due_date(loan.get("due_date")),
        loan_status=_text(loan.get("loan_status")),
    )


def _value(field: Any) -> Any:
    """Alma writes code fields as `{"value": …, "desc": …}`; some events as a bare string."""
    return field.get("value") if isinstance(field, dict) else field


def _text(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > _FIELD_MAX_CHARS or not value.isprintable():
        return None
    return value


def _datetime(value: Any) -> datetime | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _due_date(value: Any) -> date | None:
    """Alma's due date is an instant (`2022-02-09T22:00:00Z`); the day is the one it names."""
    moment = _datetime(value)
    if moment is not None:
        return moment.date()
    text = _text(value)
    if text is None:
        return None
    try:
        return date.fromisoformat(text.removesuffix("Z")[:10])
    except ValueError:
        return None
