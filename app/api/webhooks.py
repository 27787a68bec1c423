"""`GET|POST /webhooks/alma/{institution}`: Alma's webhook listener.

Alma waits 5 s and retries a timeout or a 5xx after 1 h, 3 h and 6 h; a 4xx is final. So an event
is verified on its raw bytes, stored with the job that handles it in one transaction keyed on
its `id`, and answered 200 only after the commit (accepted, duplicate or ignored); 503 only when
it could not be stored. Most loans are not interlibrary loans: those are answered `ignored`
having written nothing. The work is done a batch at a time by `app.api.webhook_intake`.

The POST is the one hot path of the service, so it skips FastAPI's per-request machinery: the
`ListenerFirst` middleware, ahead of all of FastAPI's and Starlette's layers, hands it to its
route's handler, and `ListenerRoute`'s handler calls `receive_webhook` without dependency
solving, body decoding or response validation; the body is read, under its limit, by
`receive_webhook` itself. The route stays a FastAPI route, so `/docs` describes it from the
declaration below.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from sqlmodel import Session, select
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.deps import AppRuntime
from app.api.routing import AuthFirstRoute
from app.api.webhook_intake import Delivery, NotStored, WebhookStatus
from app.db import read_session
from app.errors import (
    ERROR_RESPONSES,
    AppError,
    ErrorEnvelope,
    NotFound,
    PayloadTooLarge,
    envelope,
    internal_error,
)
from app.institutions.models import Institution
from app.observability import declared_too_large

log = logging.getLogger("illbridge.webhooks")

# Alma's events are a few kilobytes; anything much larger is refused before it is read.
MAX_WEBHOOK_BYTES = 64 * 1024
PATH_PREFIX = "/webhooks/alma/"
MAX_CODE_CHARS = 64

router = APIRouter(tags=["webhooks"], route_class=AuthFirstRoute)


class Challenge(BaseModel):
    challenge: str


class WebhookAnswer(BaseModel):
    status: WebhookStatus


def _error(status: int, description: str) -> dict[str, object]:
    return {**ERROR_RESPONSES[status], "description": description}


_RESPONSES: dict[int | str, dict[str, object]] = {
    400: _error(400, "No challenge parameter, or a body that is not a JSON object with an id"),
    401: _error(401, "Missing, malformed or wrong X-Exl-Signature; nothing stored"),
    404: _error(404, "Unknown institution"),
    413: _error(413, "Body larger than the webhook limit"),
    415: {
        "model": ErrorEnvelope,
        "description": "A Content-Type other than application/json; nothing stored",
    },
    422: _error(422, "Validation error"),
    503: _error(503, "The event could not be stored (or the database is down); Alma retries"),
}


@router.get(
    "/webhooks/alma/{institution}",
    summary="Answer Alma's webhook challenge",
    responses={k: v for k, v in _RESPONSES.items() if k in (400, 404, 422, 503)},
)
def challenge(
    institution: Annotated[str, Path(max_length=MAX_CODE_CHARS)],
    runtime: AppRuntime,
    challenge: Annotated[str | None, Query(max_length=1000)] = None,
) -> Challenge:
    """Alma checks the listener when the integration profile is saved: echo `challenge`."""
    if challenge is None:
        raise AppError("the challenge parameter is required", code="bad_request")
    with read_session(runtime.engine) as session:
        _institution(session, institution)
    return Challenge(challenge=challenge)


def _institution(session: Session, code: str) -> Institution:
    found = session.exec(select(Institution).where(Institution.code == code)).first()
    if found is None or not found.active:
        raise NotFound(f"no institution {code}")
    return found


class ListenerRoute(APIRoute):
    """A route whose endpoint takes the request as it came: no dependencies, no body decoding,
    no response validation. Errors are still answered with the envelope."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            institution = request.path_params["institution"]
            try:
                return await endpoint(institution, request)
            except AppError as exc:
                refusal = envelope(exc.status_code, exc.code, exc.detail)
                if isinstance(exc, PayloadTooLarge):  # the rest of the body is not read
                    refusal.headers["connection"] = "close"
                return refusal

        return handle


_ANSWERS = {status: json.dumps({"status": status.value}).encode() for status in WebhookStatus}


async def receive_webhook(
    institution: Annotated[str, Path(max_length=MAX_CODE_CHARS)], request: Request
) -> Response:
    """Verify one Alma event on its raw bytes and store it (or ignore it); 200 once stored."""
    if len(institution) > MAX_CODE_CHARS:
        raise AppError(
            f"path.institution: String should have at most {MAX_CODE_CHARS} characters",
            code="validation_error",
            status_code=422,
        )
    signature, body = await _signed_body(request)
    services = request.app.state.services
    counted = services.runtime.metrics.inbound_messages
    try:
        taken = await services.webhook_intake.take(Delivery(institution, body, signature))
    except NotStored:
        counted.labels("webhook", "not_stored").inc()
        raise
    counted.labels("webhook", taken.status.value).inc()
    if taken.status is not WebhookStatus.IGNORED:
        log.info(
            "webhook_taken",
            extra={"institution": institution, "alma_event": taken.event, "outcome": taken.status},
        )
    if taken.queued:
        services.wake_worker()
    return Response(_ANSWERS[taken.status], media_type="application/json")


async def _signed_body(request: Request) -> tuple[str | None, bytes]:
    """The X-Exl-Signature header and the raw body, read as it comes and refused (413) once
    it passes MAX_WEBHOOK_BYTES, as declared or as sent. A body declared as anything but JSON
    (an integration profile set to XML) is refused unread (415)."""
    signature = declared = media_type = None
    for name, value in request.scope["headers"]:
        if name == b"x-exl-signature":
            signature = value.decode("latin-1")
        elif name == b"content-length":
            declared = value
        elif name == b"content-type":
            media_type = value.partition(b";")[0].strip().lower()
    if declared_too_large(declared, MAX_WEBHOOK_BYTES):
        raise PayloadTooLarge(f"body exceeds {MAX_WEBHOOK_BYTES} bytes")
    if media_type is not None and media_type != b"application/json":
        raise AppError(
            "Alma's webhook profile must send JSON (Content-Type: application/json)",
            code="unsupported_media_type",
            status_code=415,
        )
    chunks = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_WEBHOOK_BYTES:
            raise PayloadTooLarge(f"body exceeds {MAX_WEBHOOK_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return signature, b"".join(chunks)


router.add_api_route(
    "/webhooks/alma/{institution}",
    receive_webhook,
    methods=["POST"],
    route_class_override=ListenerRoute,
    summary="Receive an Alma webhook event",
    response_model=WebhookAnswer,
    responses=_RESPONSES,
    openapi_extra={
        "parameters": [
            {
                "name": "X-Exl-Signature",
                "in": "header",
                "required": True,
                "description": "Base64 of HMAC-SHA256(webhook secret, raw body)",
                "schema": {"type": "string"},
            }
        ],
        "requestBody": {
            "required": True,
            "description": "An Alma webhook event (JSON), read and verified as raw bytes",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
    },
)


class ListenerFirst:
    """ASGI middleware ahead of FastAPI's own layers (`app.main`): a POST to Alma's listener
    goes straight to its route's handler, which reads the body under the webhook limit itself.
    Only the request context (id, timing) is outside it, so an unexpected error is answered
    here (500)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.route = next(r for r in router.routes if isinstance(r, ListenerRoute))
        self.handle = self.route.get_route_handler()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            found = self.route.path_regex.match(scope["path"])
            if found is not None:
                scope["route"] = self.route
                scope["path_params"] = found.groupdict()
                try:
                    response = await self.handle(Request(scope, receive))
                except ClientDisconnect:
                    return
                except Exception as exc:
                    response = internal_error(exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
