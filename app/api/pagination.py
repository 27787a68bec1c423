"""Opaque cursors for keyset pagination (newest first, by id), and the lists' answer."""

from __future__ import annotations

import base64
import binascii
import json

from fastapi import Response
from pydantic import BaseModel

from app.errors import AppError

# The largest id a path or cursor may name: ids are INTEGER columns (int4 on PostgreSQL).
MAX_ID = 2**31 - 1


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": last_id}).encode()).decode()


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        before = value["before"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeError):
        raise AppError("cursor is not one this API issued", code="invalid_cursor") from None
    # bool is an int to Python, not to the database.
    if not isinstance(before, int) or isinstance(before, bool) or not 1 <= before <= MAX_ID:
        raise AppError("cursor is not one this API issued", code="invalid_cursor")
    return before


def json_answer(model: BaseModel) -> Response:
    """A model already built by the route, serialised once, here, on the route's thread.

    Returned from a sync route declared with `response_model=`, it spares FastAPI's check of
    the return value, which it runs on another thread-pool hop for a sync route.
    """
    return Response(model.model_dump_json(), media_type="application/json")
