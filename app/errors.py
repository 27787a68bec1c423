"""One error family, one JSON envelope: `{"error": "<code>", "detail": "<message>"}`."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("illbridge.errors")


class ErrorEnvelope(BaseModel):
    error: str
    detail: str


class AppError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, detail: str, *, code: str | None = None, status_code: int | None = None):
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class Unauthorized(AppError):
    status_code = 401
    code = "unauthorized"


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"


# Declared on every route so /docs shows the envelope for each error status.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorEnvelope, "description": description}
    for status, description in {
        400: "Bad request",
        401: "Missing or invalid bearer token",
        403: "Token lacks the required scope",
        404: "Not found (or not visible to this token)",
        409: "Conflict",
        413: "Body too large",
        422: "Validation error",
        503: "Database unavailable; retry later",
    }.items()
}

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "unavailable",
}


def envelope(status_code: int, code: str, detail: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status_code == 401 else None
    return JSONResponse(
        status_code=status_code, content={"error": code, "detail": detail}, headers=headers
    )


def describe_validation_errors(errors: Sequence[Any], *, whole: str = "body") -> list[str]:
    """`where: what` per error (ten at most), never the offending input: it may carry patron
    data or a secret."""
    parts = []
    for error in errors[:10]:
        if error.get("type") == "json_invalid":
            parts.append(f"{whole}: malformed JSON")
            continue
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where or whole}: {error.get('msg', 'invalid')}")
    return parts


def _validation_detail(exc: RequestValidationError) -> str:
    return "; ".join(describe_validation_errors(exc.errors())) or "invalid request"


_ENVELOPE_REF = {"$ref": "#/components/schemas/ErrorEnvelope"}


def _declare_envelopes(app: FastAPI) -> None:
    """Declare the envelope for every JSON (or body-less) error response in the OpenAPI document.

    The handlers below answer every error with the envelope, FastAPI's own 422 declaration
    included; responses a route declares in another media type (ISO 18626 XML) are kept.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                for status, response in operation.get("responses", {}).items():
                    if status.startswith("2"):
                        continue
                    content = response.setdefault("content", {})
                    if not content or "application/json" in content:
                        content["application/json"] = {"schema": dict(_ENVELOPE_REF)}
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("ErrorEnvelope", ErrorEnvelope.model_json_schema())
        for unused in ("HTTPValidationError", "ValidationError"):
            if f"#/components/schemas/{unused}" not in json.dumps(schema["paths"]):
                components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    _declare_envelopes(app)

    @app.exception_handler(AppError)
    async def _app_error(_request: Request, exc: AppError) -> JSONResponse:
        return envelope(exc.status_code, exc.code, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if getattr(request.state, "unparsable_body", False):  # set by app/api/routing.py
            return envelope(422, "validation_error", "body: malformed JSON")
        return envelope(422, "validation_error", _validation_detail(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return envelope(exc.status_code, code, str(exc.detail))

    @app.exception_handler(DataError)
    async def _data_error(_request: Request, exc: DataError) -> JSONResponse:
        # The database refused a value validation let through (a NUL byte, an out-of-range int).
        log.warning("value_refused_by_database", extra={"error_type": type(exc.orig).__name__})
        detail = "a value is out of range or holds a character the database refuses (NUL)"
        return envelope(422, "invalid_value", detail)

    async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        # Unreachable, too slow (connect or statement timeout), locked, or no pooled connection
        # free in time: all retryable, none a 500.
        orig = exc.orig if isinstance(exc, OperationalError) else exc
        log.warning("database_unavailable", extra={"error_type": type(orig).__name__})
        return envelope(503, "database_unavailable", "the database is unavailable; retry later")

    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(PoolTimeout, _database_unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        return internal_error(exc)


def internal_error(exc: Exception) -> JSONResponse:
    """The answer to a fault nobody foresaw: its type in the log, no detail to the client."""
    log.error("unhandled_error", extra={"error_type": type(exc).__name__})
    return envelope(500, "internal_error", "internal error; see the service log")
