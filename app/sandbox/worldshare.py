"""A simulated OCLC WorldShare: token endpoint, ILL Request API and a lender that acts on cue.

Mounted at a sandbox root, the service uses `<root>/oauth/token` as token URL and
`<root>/ILL` as base URL. Answers follow the shapes in `reference/oclc-worldshare-ill/`.
The token endpoint grants client credentials and, for a staff user's refresh token
(`POST /_sandbox/refresh-tokens` plays the user signing in), the refresh-token grant: each
refresh answers a new refresh token, and the one used is refused from then on.
Control endpoints under `/_sandbox` play the lender and inject faults. All state belongs to
one app instance.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

EXPIRES_AT_FORMAT = "%Y-%m-%d %H:%M:%SZ"
VALIDATION_MESSAGE = "There was an error processing your request. Please check the error detail."
# OCLC's failure codes (reference/oclc-worldshare-ill/failureCodes.txt) this sandbox answers.
MISSING, INVALID, OUT_OF_BOUNDS, INVALID_DATA = 30000, 30001, 30002, 30007
MAX_LENDERS = 15
CURRENCY = re.compile(r"[A-Z]{3}")
# OCLC's date-time: `2019-08-15T00:00:00.000+0000` (its sample request writes `-00:00`).
OCLC_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?(Z|[+-]\d{2}:?\d{2})")
# What WorldShare reports for a request that is with its lenders and not yet answered.
AWAITING_LENDER = "PRODUCED"
SHIPPED = "IN_TRANSIT"


@dataclass(frozen=True)
class WorldShareSandboxSettings:
    clients: Mapping[str, str] | None = None
    """WSKey → secret; None accepts any non-empty key and secret."""
    token_lifetime_s: int = 3599
    refresh_token_lifetime_s: int = 604799
    refresh_tokens: Mapping[str, str] | None = None
    """Refresh tokens staff users obtained beforehand → the WSKey each was issued to."""
    context_institution_id: str = "128807"
    loan_period_days: int = 28
    first_request_id: int = 167513532
    auto_ship_after_s: float | None = None
    """The auto-lender ships a waiting request this long after it was created (None = off)."""
    auto_close_after_s: float | None = None
    """The auto-lender checks a shipped item back in this long after shipping (None = off)."""


class FailNext(BaseModel):
    status: Literal[429, 500, 502, 503, 504]
    retry_after: int | None = None
    path: Literal["request", "token"] = "request"


class ValidationFault(BaseModel):
    failureCode: int = 30001
    fieldName: str = "item.title"


class FaultsUpdate(BaseModel):
    latency_ms: int | None = Field(default=None, ge=0)
    fail_next: list[FailNext] = []
    validation_error: ValidationFault | None = None
    expire_tokens: bool = False
    misdirect_reads: bool | None = None
    """Reads answer with another request's id (a mixed-up proxy or cache) until cleared."""


class ShipOrder(BaseModel):
    due_date: date | None = None
    # Where the item goes back to, in OCLC's address fields (address1, locality, postal…).
    return_address: dict[str, str] | None = None


class RenewalAnswer(BaseModel):
    approve: bool
    due_date: date | None = None


class RawStatus(BaseModel):
    status: str = Field(min_length=1)


class StaffEdit(BaseModel):
    """What WorldShare staff may change on a request by hand."""

    reference_id: str = Field(min_length=1, max_length=128)


@dataclass
class _Faults:
    latency_ms: int = 0
    fail_next: list[FailNext] = field(default_factory=list)
    validation_error: ValidationFault | None = None
    misdirect_reads: bool = False


@dataclass
class _AccessToken:
    wskey: str
    expires_at: float
    revoked: bool = False


@dataclass
class _RefreshToken:
    wskey: str
    expires_at: float
    used: bool = False


class StaffSignIn(BaseModel):
    wskey: str = Field(min_length=1)


@dataclass
class _LenderRequest:
    request_id: int
    document: dict[str, Any]
    created: datetime
    created_clock: float
    status: str = AWAITING_LENDER
    edited: datetime | None = None
    shipped_clock: float | None = None
    due_date: date | None = None
    renewals: int = 0
    renewal_status: str | None = None
    new_due_date: date | None = None
    return_address: dict[str, str] | None = None

    def view(self) -> dict[str, Any]:
        """The illRequest as WorldShare returns it on a read."""
        ill_request = dict(self.document)
        ill_request |= {
            "requestId": self.request_id,
            "created": _oclc_datetime(self.created),
            "edited": _oclc_datetime(self.edited or self.created),
            "requestStatus": self.status,
        }
        if self.due_date is not None:
            ill_request |= {"dueDate": _oclc_date(self.due_date), "renewals": self.renewals}
        if self.renewal_status is not None:
            ill_request["renewalStatus"] = self.renewal_status
        if self.new_due_date is not None:
            ill_request["newDueDate"] = _oclc_date(self.new_due_date)
        if self.return_address is not None:
            ill_request["returnAddress"] = self.return_address
        return ill_request


class LenderLifeCycle:
    """The lender's side of WorldShare requests: created, shipped, renewed, closed. Its clock
    can be a simulated one (`bench/polling_budget.py` runs it over simulated weeks)."""

    def __init__(
        self,
        settings: WorldShareSandboxSettings,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.now = now
        self.clock = clock
        self.requests: dict[int, _LenderRequest] = {}
        self.next_request_id = settings.first_request_id

    def add_request(self, document: dict[str, Any]) -> _LenderRequest:
        lender_request = _LenderRequest(
            request_id=self.next_request_id,
            document=document,
            created=self.now(),
            created_clock=self.clock(),
        )
        self.requests[lender_request.request_id] = lender_request
        self.next_request_id += 1
        return lender_request

    def advance_auto_lender(self, lender_request: _LenderRequest) -> None:
        """Move a request along as time has passed; computed on read, no background task."""
        settings, now = self.settings, self.clock()
        ship_after, close_after = settings.auto_ship_after_s, settings.auto_close_after_s
        if (
            ship_after is not None
            and lender_request.status == AWAITING_LENDER
            and now - lender_request.created_clock >= ship_after
        ):
            self.ship(lender_request, None)
            lender_request.shipped_clock = lender_request.created_clock + ship_after
        shipped_clock = lender_request.shipped_clock
        if (
            close_after is not None
            and lender_request.status == SHIPPED
            and shipped_clock is not None
            and now - shipped_clock >= close_after
        ):
            self.set_status(lender_request, "COMPLETE")

    def ship(
        self,
        lender_request: _LenderRequest,
        due_date: date | None,
        return_address: dict[str, str] | None = None,
    ) -> None:
        loan_period = timedelta(days=self.settings.loan_period_days)
        lender_request.return_address = return_address
        lender_request.due_date = due_date or self.now().date() + loan_period
        lender_request.shipped_clock = self.clock()
        self.set_status(lender_request, SHIPPED)

    def answer_renewal(
        self, lender_request: _LenderRequest, *, approve: bool, due_date: date | None
    ) -> None:
        if approve:
            current = lender_request.due_date or self.now().date()
            lender_request.due_date = due_date or current + timedelta(
                days=self.settings.loan_period_days
            )
            lender_request.new_due_date = lender_request.due_date
            lender_request.renewals += 1
        lender_request.renewal_status = "APPROVED" if approve else "DENIED"
        lender_request.edited = self.now()

    def set_status(self, lender_request: _LenderRequest, status: str) -> None:
        lender_request.status = status
        lender_request.edited = self.now()


class _SandboxState(LenderLifeCycle):
    def __init__(self, settings: WorldShareSandboxSettings) -> None:
        super().__init__(settings)
        self.tokens: dict[str, _AccessToken] = {}
        self.refresh_tokens: dict[str, _RefreshToken] = {
            token: _RefreshToken(wskey, time.time() + settings.refresh_token_lifetime_s)
            for token, wskey in (settings.refresh_tokens or {}).items()
        }
        self.faults = _Faults()
        self.calls: list[dict[str, Any]] = []
        self.stats: Counter[str] = Counter(token_requests=0, creates=0, reads=0)

    async def record(self, request: Request) -> None:
        body = await request.body()
        self.calls.append(
            {
                "method": request.method,
                "url": str(request.url),
                "headers": [[name, value] for name, value in request.headers.items()],
                "body": body.decode("utf-8", errors="replace"),
            }
        )

    def injected_failure(self, path: Literal["request", "token"]) -> JSONResponse | None:
        for index, failure in enumerate(self.faults.fail_next):
            if failure.path == path:
                del self.faults.fail_next[index]
                headers = {}
                if failure.retry_after is not None:
                    headers["Retry-After"] = str(failure.retry_after)
                return _http_error(
                    failure.status, HTTPStatus(failure.status).phrase, headers=headers
                )
        return None

    def bearer_valid(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        access = self.tokens.get(token) if scheme.lower() == "bearer" else None
        return access is not None and not access.revoked and time.time() < access.expires_at


def create_worldshare_sandbox(settings: WorldShareSandboxSettings | None = None) -> FastAPI:
    state = _SandboxState(settings or WorldShareSandboxSettings())
    app = FastAPI(title="WorldShare sandbox", description=__doc__)
    app.state.worldshare = state

    @app.post("/oauth/token")
    async def issue_token(request: Request) -> JSONResponse:
        await state.record(request)
        state.stats["token_requests"] += 1
        if (failure := state.injected_failure("token")) is not None:
            return failure
        wskey, secret = _basic_credentials(request)
        if not _client_accepted(state.settings.clients, wskey, secret):
            return _token_error(401, f"WSKey '{wskey}' is invalid")
        form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
        if form.get("grant_type") == ["refresh_token"]:
            used = state.refresh_tokens.get(form.get("refresh_token", [""])[0])
            if used is None or used.used or used.wskey != wskey or time.time() >= used.expires_at:
                return _token_error(401, "Refresh token is invalid or expired")
            used.used = True
            return JSONResponse(_issue_access_token(state, wskey, with_refresh_token=True))
        if form.get("grant_type") != ["client_credentials"]:
            return _token_error(400, "Unsupported grant_type")
        if not form.get("scope", [""])[0].strip():
            return _token_error(400, "Missing scope")
        return JSONResponse(_issue_access_token(state, wskey, with_refresh_token=False))

    @app.post("/_sandbox/refresh-tokens")
    async def staff_sign_in(sign_in: StaffSignIn) -> JSONResponse:
        """A staff user signed in (OCLC's authorization-code flow): their tokens."""
        return JSONResponse(_issue_access_token(state, sign_in.wskey, with_refresh_token=True))

    @app.post("/ILL/request/data")
    async def create_request(request: Request) -> JSONResponse:
        await state.record(request)
        if (refusal := await _request_api_gate(state, request)) is not None:
            return refusal
        ill_request, failures = _validated(await request.body())
        if state.faults.validation_error is not None:
            failures = [state.faults.validation_error.model_dump()]
        if failures:
            return _validation_error(ill_request, failures)
        lender_request = state.add_request(_stored_document(ill_request))
        state.stats["creates"] += 1
        # A new request answers SUBMITTING, as in OCLC's samples, then waits on lenders.
        return _envelope(lender_request.view() | {"requestStatus": "SUBMITTING"})

    @app.get("/ILL/request/data/{request_id}")
    async def read_request(request_id: str, request: Request) -> JSONResponse:
        await state.record(request)
        if (refusal := await _request_api_gate(state, request)) is not None:
            return refusal
        lender_request = _find(state, request_id)
        if lender_request is None:
            return _http_error(404, "Request not found")
        state.advance_auto_lender(lender_request)
        state.stats["reads"] += 1
        view = lender_request.view()
        if state.faults.misdirect_reads:
            view["requestId"] = lender_request.request_id + 1_000_000
        return _envelope(view)

    @app.post("/_sandbox/requests/{request_id}/ship")
    async def ship(request_id: str, order: ShipOrder | None = None) -> JSONResponse:
        return _lender_acts(
            state,
            request_id,
            {AWAITING_LENDER},
            lambda found: state.ship(
                found,
                order.due_date if order else None,
                order.return_address if order else None,
            ),
        )

    @app.post("/_sandbox/requests/{request_id}/renewal")
    async def answer_renewal(request_id: str, answer: RenewalAnswer) -> JSONResponse:
        def renew(found: _LenderRequest) -> None:
            state.answer_renewal(found, approve=answer.approve, due_date=answer.due_date)

        return _lender_acts(state, request_id, {SHIPPED}, renew)

    @app.post("/_sandbox/requests/{request_id}/unfill")
    async def unfill(request_id: str) -> JSONResponse:
        return _lender_acts(
            state, request_id, {AWAITING_LENDER}, lambda found: state.set_status(found, "UNFILLED")
        )

    @app.post("/_sandbox/requests/{request_id}/cancel")
    async def cancel(request_id: str) -> JSONResponse:
        return _lender_acts(
            state, request_id, {AWAITING_LENDER}, lambda found: state.set_status(found, "CANCELLED")
        )

    @app.post("/_sandbox/requests/{request_id}/close")
    async def close(request_id: str) -> JSONResponse:
        return _lender_acts(
            state,
            request_id,
            {SHIPPED, "RETURNED"},
            lambda found: state.set_status(found, "COMPLETE"),
        )

    @app.post("/_sandbox/requests/{request_id}/status")
    async def set_raw_status(request_id: str, raw: RawStatus) -> JSONResponse:
        return _lender_acts(
            state, request_id, None, lambda found: state.set_status(found, raw.status)
        )

    @app.post("/_sandbox/requests/{request_id}/edit")
    async def staff_edit(request_id: str, edit: StaffEdit) -> JSONResponse:
        def change(found: _LenderRequest) -> None:
            found.document["referenceId"] = edit.reference_id
            found.edited = state.now()

        return _lender_acts(state, request_id, None, change)

    @app.post("/_sandbox/faults")
    async def set_faults(update: FaultsUpdate) -> dict[str, Any]:
        if update.latency_ms is not None:
            state.faults.latency_ms = update.latency_ms
        state.faults.fail_next.extend(update.fail_next)
        if update.validation_error is not None:
            state.faults.validation_error = update.validation_error
        if update.misdirect_reads is not None:
            state.faults.misdirect_reads = update.misdirect_reads
        if update.expire_tokens:
            for access in state.tokens.values():
                access.revoked = True
        return _faults_view(state.faults)

    @app.delete("/_sandbox/faults")
    async def clear_faults() -> dict[str, Any]:
        state.faults = _Faults()
        return _faults_view(state.faults)

    @app.get("/_sandbox/calls")
    async def calls() -> list[dict[str, Any]]:
        return state.calls

    @app.get("/_sandbox/requests")
    async def created_requests() -> list[dict[str, Any]]:
        """Every request created, as staff would find it in WorldShare (referenceId included)."""
        return [found.view() for found in state.requests.values()]

    @app.get("/_sandbox/stats")
    async def stats() -> dict[str, int]:
        return dict(state.stats)

    return app


async def _request_api_gate(state: _SandboxState, request: Request) -> JSONResponse | None:
    """Latency, injected failures and the bearer check every Request API call goes through."""
    if state.faults.latency_ms:
        await asyncio.sleep(state.faults.latency_ms / 1000)
    if (failure := state.injected_failure("request")) is not None:
        return failure
    if not state.bearer_valid(request):
        return _http_error(401, "No valid authentication credentials found in request")
    return None


def _validated(raw_body: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The inbound illRequest and OCLC-style failures (code + field) for what is wrong.

    OCLC's checks as its samples show them: required fields Missing (30000), ids that are not
    integers and values of the wrong kind Invalid (30001), a lender string over 15 OutOfBounds
    (30002). A `patron` block is refused (30007): OCLC would keep it, the bridge must never
    send one, and this sandbox exists to catch that.
    """
    try:
        envelope = json.loads(raw_body)
    except ValueError:
        return {}, [{"failureCode": 140001, "fieldName": "illRequest"}]
    ill_request = envelope.get("illRequest") if isinstance(envelope, dict) else None
    if not isinstance(ill_request, dict):
        return {}, [{"failureCode": 30000, "fieldName": "illRequest"}]
    failures: list[dict[str, Any]] = []

    def fail(code: int, field_name: str) -> None:
        failures.append({"failureCode": code, "fieldName": field_name})

    if ill_request.get("patron") is not None:
        fail(INVALID_DATA, "patron")
    item = _object(ill_request.get("item"))
    if not _text_given(item.get("title")):
        fail(MISSING, "item.title")
    if item.get("oclcNumber") is not None and not _integer(item["oclcNumber"]):
        fail(INVALID, "item.oclcNumber")
    requester = _object(ill_request.get("requester"))
    institution_id = _object(requester.get("institution")).get("institutionId")
    if institution_id is None or institution_id == "":
        fail(MISSING, "requester.institution.institutionId")
    elif not _integer(institution_id):
        fail(INVALID, "requester.institution.institutionId")
    service_type = requester.get("serviceType")
    if service_type is None:
        fail(MISSING, "requester.serviceType")
    elif service_type not in ("COPY", "LOAN"):
        fail(INVALID, "requester.serviceType")
    lenders = _object(requester.get("supplierInfo")).get("institutions")
    if lenders is not None:
        if not isinstance(lenders, list):
            fail(INVALID, "requester.supplierInfo.institutions")
        elif len(lenders) > MAX_LENDERS:
            fail(OUT_OF_BOUNDS, "requester.supplierInfo.institutions")
        else:
            for index, lender in enumerate(lenders):
                if not _integer(_object(lender).get("institutionId")):
                    fail(INVALID, f"requester.supplierInfo.institutions[{index}].institutionId")
    billing = _object(requester.get("requesterBilling"))
    billing_address = _object(billing.get("address"))
    if not _text_given(billing_address.get("address1")):
        fail(MISSING, "requester.requesterBilling.address.address1")
    for path, address in (
        ("requester.requesterBilling.address", billing_address),
        (
            "requester.requesterDelivery.address",
            _object(requester.get("requesterDelivery")).get("address"),
        ),
    ):
        for name, value in _object(address).items():
            if value is not None and not isinstance(value, str):
                fail(INVALID, f"{path}.{name}")
    maximum_cost = billing.get("maximumCost")
    if maximum_cost is not None:
        cost = _object(maximum_cost)
        amount = cost.get("amount")
        if not isinstance(amount, int | float) or isinstance(amount, bool) or amount < 0:
            fail(INVALID, "requester.requesterBilling.maximumCost.amount")
        if not isinstance(cost.get("currency"), str) or not CURRENCY.fullmatch(cost["currency"]):
            fail(INVALID, "requester.requesterBilling.maximumCost.currency")
    needed = ill_request.get("needed")
    if needed is not None and _parse_oclc_date(needed) is None:
        fail(INVALID, "needed")
    return ill_request, failures


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text_given(value: object) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _stored_document(ill_request: dict[str, Any]) -> dict[str, Any]:
    """What OCLC keeps of an inbound request: all of it, plus its own fulfilment type."""
    document = {
        name: value
        for name, value in ill_request.items()
        if name not in ("requestId", "created", "edited", "requestStatus")
    }
    document["requester"] = {"fulfillmentType": "OCLC_ILL"} | dict(ill_request["requester"])
    return document


def _issue_access_token(
    state: _SandboxState, wskey: str, *, with_refresh_token: bool
) -> dict[str, str]:
    """OCLC's token answer (`access_token.json`); a refresh token only in a user context."""
    lifetime = state.settings.token_lifetime_s
    token = "tk_" + secrets.token_urlsafe(24)
    expires_at = time.time() + lifetime
    state.tokens[token] = _AccessToken(wskey=wskey, expires_at=expires_at)
    institution = state.settings.context_institution_id
    answer = {
        "access_token": token,
        "token_type": "bearer",
        "expires_in": str(lifetime),
        "principalID": str(uuid.uuid5(uuid.NAMESPACE_URL, wskey)),
        "principalIDNS": f"urn:oclc:platform:{institution}",
        "contextInstitutionId": institution,
        "expires_at": datetime.fromtimestamp(expires_at, UTC).strftime(EXPIRES_AT_FORMAT),
    }
    if not with_refresh_token:
        return answer
    refresh_lifetime = state.settings.refresh_token_lifetime_s
    refresh_token = "rt_" + secrets.token_urlsafe(24)
    refresh_expires_at = time.time() + refresh_lifetime
    state.refresh_tokens[refresh_token] = _RefreshToken(wskey, refresh_expires_at)
    return answer | {
        "refresh_token": refresh_token,
        "refresh_token_expires_in": str(refresh_lifetime),
        "refresh_token_expires_at": datetime.fromtimestamp(refresh_expires_at, UTC).strftime(
            EXPIRES_AT_FORMAT
        ),
    }


def _basic_credentials(request: Request) -> tuple[str, str]:
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    wskey, _, secret = decoded.partition(":")
    return wskey, secret


def _client_accepted(clients: Mapping[str, str] | None, wskey: str, secret: str) -> bool:
    if not wskey or not secret:
        return False
    if clients is None:
        return True
    expected = clients.get(wskey)
    return expected is not None and secrets.compare_digest(expected, secret)


def _find(state: _SandboxState, request_id: str) -> _LenderRequest | None:
    return state.requests.get(int(request_id)) if request_id.isdigit() else None


def _lender_acts(
    state: _SandboxState,
    request_id: str,
    allowed_from: set[str] | None,
    action: Callable[[_LenderRequest], None],
) -> JSONResponse:
    lender_request = _find(state, request_id)
    if lender_request is None:
        return JSONResponse({"error": "not_found", "detail": "no such request"}, status_code=404)
    if allowed_from is not None and lender_request.status not in allowed_from:
        detail = f"request {request_id} is {lender_request.status}"
        return JSONResponse({"error": "conflict", "detail": detail}, status_code=409)
    action(lender_request)
    return _envelope(lender_request.view())


def _faults_view(faults: _Faults) -> dict[str, Any]:
    return {
        "latency_ms": faults.latency_ms,
        "fail_next": [failure.model_dump() for failure in faults.fail_next],
        "validation_error": (
            faults.validation_error.model_dump() if faults.validation_error else None
        ),
        "misdirect_reads": faults.misdirect_reads,
    }


def _envelope(ill_request: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"response": {"illRequest": ill_request}})


def _validation_error(ill_request: dict[str, Any], failures: list[dict[str, Any]]) -> JSONResponse:
    error = {"message": VALIDATION_MESSAGE, "detail": failures, "instance": str(uuid.uuid4())}
    return JSONResponse({"response": {"error": error, "illRequest": ill_request}}, status_code=400)


def _http_error(
    status: int, message: str, *, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"code": {"type": "http", "value": str(status)}, "message": message}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _token_error(status: int, message: str) -> JSONResponse:
    body = {
        "code": {"type": "http", "value": str(status)},
        "details": "Authorization header: HTTP Basic",
        "message": message,
    }
    return JSONResponse(body, status_code=status)


def _oclc_datetime(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def _oclc_date(day: date) -> str:
    return f"{day.isoformat()}T00:00:00.000+0000"


def _parse_oclc_date(value: object) -> date | None:
    if not isinstance(value, str) or not OCLC_DATE_TIME.fullmatch(value):
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None
