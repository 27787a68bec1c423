"""A simulated Alma REST API for loans and a webhook sender, strict as Alma is.

REST: `GET|PUT /almaws/v1/users/{user_id}/loans/{loan_id}`, requiring `Authorization: apikey …`
and answering errors in Alma's shape (borrowing requests are `app.sandbox.alma_rest`).
Webhooks: `POST /_sandbox/loans` loans an item to a patron and sends `LOAN_CREATED` to the
listener, `POST /_sandbox/loans/{loan_id}/events` sends another LOAN event (`LOAN_RETURNED`,
`LOAN_RENEWED`, …). Events are written like Alma's (the envelope and `item_loan` of
`reference/alma-webhooks/loan_created.json`) and signed with this module's own HMAC, never the
bridge's verifier.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

WEBHOOK_TIMEOUT_SECONDS = 5.0  # Alma waits 5 s for the listener
_ids = itertools.count(2410068350005506)


def alma_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={
            "errorsExist": True,
            "errorList": {
                "error": {
                    "errorCode": code,
                    "errorMessage": message,
                    "trackingId": f"E01-SANDBOX-{next(_ids)}",
                }
            },
            "result": None,
        },
    )


def signature(secret: str, body: bytes) -> str:
    """What Alma puts in X-Exl-Signature."""
    digest = hmac.new(secret.encode("utf-8"), msg=body, digestmod=hashlib.sha256).digest()
    return base64.standard_b64encode(digest).decode("ascii")


@dataclass
class Loan:
    loan_id: str
    user_id: str
    item_barcode: str
    item_id: str
    library: str
    due_date: str  # Alma's instant, e.g. 2027-01-08T23:59:00Z
    request_id: str | None
    loan_status: str = "ACTIVE"
    puts: int = 0

    def rest(self) -> dict[str, Any]:
        return {
            "loan_id": self.loan_id,
            "user_id": self.user_id,
            "item_barcode": self.item_barcode,
            "item_id": self.item_id,
            "library": {"value": self.library, "desc": self.library},
            "due_date": self.due_date,
            "loan_status": self.loan_status,
            "process_status": "NORMAL",
        }


@dataclass
class AlmaApiSandbox:
    api_keys: set[str] = field(default_factory=set)  # empty: any key is taken
    loans: dict[str, Loan] = field(default_factory=dict)
    sent: list[dict[str, Any]] = field(default_factory=list)
    throttle_next: int = 0  # answer this many calls with 429 PER_SECOND_THRESHOLD


class Listener(BaseModel):
    webhook_url: str = Field(pattern=r"^https?://")
    secret: str = Field(min_length=1)
    institution: str = "01SANDBOX_INST"


class NewLoan(Listener):
    user_id: str = Field(min_length=1)
    item_barcode: str = Field(min_length=1)
    item_id: str | None = None
    library: str = "ILL"
    due_date: date
    request_id: str | None = None


class LoanEvent(Listener):
    event: str = Field(pattern=r"^LOAN_[A-Z_]+$")
    due_date: date | None = None


class SentEvent(BaseModel):
    event_id: str
    http_status: int | None
    answer: Any = None


_EVENT_DESC = {
    "LOAN_CREATED": "Loan created",
    "LOAN_RETURNED": "Loan returned",
    "LOAN_RENEWED": "Loan renewed",
    "LOAN_DUE_DATE": "Loan due date changed",
    "LOAN_LOST": "Loan lost",
    "LOAN_CLAIMED_RETURNED": "Loan claimed returned",
}


def _instant(day: date) -> str:
    return f"{day.isoformat()}T23:59:00Z"


def loan_event_body(event: str, loan: Loan, institution: str) -> bytes:
    """An event as Alma writes it: compact JSON, Alma's key order, the other families null."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + "000Z"
    document = {
        "id": str(next(_ids)),
        "action": "LOAN",
        "institution": {"value": institution, "desc": "Sandbox University"},
        "time": now,
        "event": {"value": event, "desc": _EVENT_DESC.get(event, event)},
        "item_loan": {
            "loan_id": loan.loan_id,
            "circ_desk": {"value": "DEFAULT_CIRC_DESK", "desc": "Circulation Desk"},
            "return_circ_desk": {"value": "", "desc": None, "link": None},
            "library": {"value": loan.library, "desc": loan.library},
            "user_id": loan.user_id,
            "item_barcode": loan.item_barcode,
            "due_date": loan.due_date,
            "loan_status": loan.loan_status,
            "loan_date": now,
            "returned_by": {"value": "", "link": None},
            "process_status": "NORMAL",
            "item_id": loan.item_id,
            "title": "Temporary item",
            "request_id": {"value": loan.request_id or "", "link": None},
            "renewable": True,
            "last_renew_status": {"value": "", "desc": ""},
        },
        "bib": None,
        "holding": None,
        "item": None,
        "portfolio": None,
        "representation": None,
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


async def send_signed(
    url: str, secret: str, body: bytes, *, transport: httpx.AsyncBaseTransport | None = None
) -> SentEvent:
    event_id = json.loads(body)["id"]
    async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_SECONDS, transport=transport) as http:
        try:
            response = await http.post(
                url,
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Exl-Signature": signature(secret, body),
                },
            )
        except httpx.HTTPError:
            return SentEvent(event_id=event_id, http_status=None)
    try:
        answer = response.json()
    except ValueError:
        answer = None
    return SentEvent(event_id=event_id, http_status=response.status_code, answer=answer)


def install_alma_api(
    app: FastAPI, *, listener_transport: httpx.AsyncBaseTransport | None = None
) -> AlmaApiSandbox:
    sandbox = AlmaApiSandbox()
    app.state.alma_api = sandbox

    def refused(request: Request) -> JSONResponse | None:
        auth = request.headers.get("authorization", "")
        key = auth.removeprefix("apikey ").strip() if auth.startswith("apikey ") else ""
        if not key or (sandbox.api_keys and key not in sandbox.api_keys):
            return alma_error(401, "UNAUTHORIZED", "API-key not defined or not configured")
        if sandbox.throttle_next > 0:
            sandbox.throttle_next -= 1
            return alma_error(429, "PER_SECOND_THRESHOLD", "Request per second threshold reached")
        return None

    def answer(content: Any, status: int = 200) -> JSONResponse:
        return JSONResponse(content, status_code=status, headers={"X-Exl-Api-Remaining": "49000"})

    @app.get("/almaws/v1/users/{user_id}/loans/{loan_id}")
    async def get_loan(user_id: str, loan_id: str, request: Request) -> Response:
        if (no := refused(request)) is not None:
            return no
        loan = sandbox.loans.get(loan_id)
        if loan is None or loan.user_id != user_id:
            return alma_error(400, "401890", "Loan not found")
        return answer(loan.rest())

    @app.put("/almaws/v1/users/{user_id}/loans/{loan_id}")
    async def put_loan(user_id: str, loan_id: str, request: Request) -> Response:
        if (no := refused(request)) is not None:
            return no
        loan = sandbox.loans.get(loan_id)
        if loan is None or loan.user_id != user_id:
            return alma_error(400, "401890", "Loan not found")
        try:
            body = await request.json()
            due = datetime.fromisoformat(str(body["due_date"]).replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError):
            return alma_error(400, "401652", "General Error: invalid loan object")
        loan.due_date = due.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        loan.puts += 1
        return answer(loan.rest())

    @app.post("/_sandbox/loans")
    async def loan_item(new: NewLoan) -> dict[str, Any]:
        """Staff loan the item to the patron; Alma sends LOAN_CREATED."""
        loan = Loan(
            loan_id=str(next(_ids)),
            user_id=new.user_id,
            item_barcode=new.item_barcode,
            item_id=new.item_id or str(next(_ids)),
            library=new.library,
            due_date=_instant(new.due_date),
            request_id=new.request_id,
        )
        sandbox.loans[loan.loan_id] = loan
        sent = await _send(new, "LOAN_CREATED", loan)
        return {"loan_id": loan.loan_id, "sent": sent.model_dump()}

    @app.post("/_sandbox/loans/{loan_id}/events")
    async def loan_event(loan_id: str, order: LoanEvent) -> dict[str, Any]:
        """Something happens to a loan (returned, renewed, lost…); Alma sends the event."""
        loan = sandbox.loans.get(loan_id)
        if loan is None:
            return {"loan_id": loan_id, "sent": None}
        if order.due_date is not None:
            loan.due_date = _instant(order.due_date)
        if order.event == "LOAN_RETURNED":
            loan.loan_status = "COMPLETE"
        sent = await _send(order, order.event, loan)
        return {"loan_id": loan_id, "sent": sent.model_dump()}

    @app.get("/_sandbox/loans/{loan_id}")
    async def show_loan(loan_id: str) -> dict[str, Any]:
        loan = sandbox.loans.get(loan_id)
        return {} if loan is None else {**loan.rest(), "puts": loan.puts}

    @app.post("/_sandbox/throttle")
    async def throttle(times: int = 1) -> dict[str, int]:
        sandbox.throttle_next = times
        return {"throttle_next": times}

    async def _send(listener: Listener, event: str, loan: Loan) -> SentEvent:
        body = loan_event_body(event, loan, listener.institution)
        sent = await send_signed(
            listener.webhook_url, listener.secret, body, transport=listener_transport
        )
        sandbox.sent.append(sent.model_dump())
        return sent

    return sandbox
