"""WorldShare ILL Request API client: create a borrowing request, read its lender status.

Only citation fields on an explicit allow-list and the opaque Alma request id leave the
bridge; nothing about the patron does. Failures are classified by `app.upstream`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx

from app.borrowing.citation import Citation
from app.upstream import UpstreamError, call, status_failure
from app.worldshare.auth import ClientCredentials, OnCall, OnRotated, TokenCache
from app.worldshare.network import LenderStatus, RenewalInfo

UPSTREAM = "WorldShare"

# Names of OCLC's failure codes (reference/oclc-worldshare-ill/failureCodes.txt).
FAILURE_NAMES: dict[int, str] = {
    30000: "Missing",
    30001: "Invalid",
    30002: "OutOfBounds",
    30004: "InvalidInstitutionSymbol",
    30005: "LenderNotSupplier",
    30007: "InvalidDataException",
    140001: "CannotReadInputException",
    140002: "CannotWriteOutputException",
    140003: "UnsupportedServiceCallParametersException",
    140004: "DataConversionException",
    140005: "UnauthorizedException",
    140006: "UnhandledException",
}

_FIELD_NAME = re.compile(r"[A-Za-z0-9_.\[\]]{1,120}")
_OCLC_NUMBER = re.compile(r"(?:\(OCoLC\))?\s*(?:ocm|ocn|on)?0*(\d{1,15})", re.IGNORECASE)


# OCLC's `Address` properties, in the order of its swagger.
ADDRESS_FIELDS = ("attention", "address1", "address2", "locality", "region", "country", "postal")
ADDRESS_FIELD_MAX_CHARS = 200


@dataclass(frozen=True)
class Requester:
    """The library asking: its registry id, addresses and billing terms. Never the patron."""

    institution_id: str
    billing_address: Mapping[str, str] | None = None
    delivery_address: Mapping[str, str] | None = None
    delivery_email: str | None = None
    lenders: tuple[int, ...] = ()
    max_cost: Mapping[str, str] | None = None
    billing_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorldShareConfig:
    institution_code: str
    base_url: str
    token_url: str
    scope: str
    key: str = field(repr=False)
    secret: str = field(repr=False)
    requester: Requester
    refresh_token: str | None = field(default=None, repr=False)
    daily_call_budget: int = 40000

    @property
    def credentials(self) -> ClientCredentials:
        return ClientCredentials(
            institution_code=self.institution_code,
            token_url=self.token_url,
            scope=self.scope,
            key=self.key,
            secret=self.secret,
            refresh_token=self.refresh_token,
        )


def build_ill_request(
    citation: Citation, requester: Requester, *, reference: str
) -> dict[str, Any]:
    """The `illRequest` envelope for a citation; every field sent is named here, no patron."""
    service_type = "COPY" if citation.is_article else "LOAN"
    item: dict[str, Any] = {}
    if citation.is_article and citation.journal_title:
        item |= {
            "title": citation.journal_title,
            "articleTitle": citation.title,
            "articleAuthor": citation.author,
        }
    else:
        item |= {
            "title": citation.title,
            "author": citation.author,
            "articleTitle": citation.chapter_title,
            "articleAuthor": citation.chapter_author,
        }
    item |= {
        "isbn": citation.isbn,
        "issn": citation.issn,
        "oclcNumber": _oclc_number(citation.oclc_number),
        "publisherName": citation.publisher,
        "publicationPlace": citation.place_of_publication,
        "publicationDate": citation.year,
        "edition": {"editionSpecific": citation.edition} if citation.edition else None,
        "issueVolume": _issue_volume(citation.volume, citation.issue),
        "pages": citation.pages,
    }
    ill_request: dict[str, Any] = {
        "requestStatus": "SUBMITTING",
        # Shown to ILL staff as the Reference ID; the opaque Alma request id, nothing personal.
        "referenceId": reference,
        "requester": _requester(requester, service_type)
        # The copyright declaration Alma made for a copy; a loan needs none.
        | _present(copyrightType=citation.copyright_compliance if service_type == "COPY" else None),
        "item": _present(**item),
    }
    if citation.last_interest_date is not None:
        ill_request["needed"] = oclc_needed(citation.last_interest_date)
    return {"illRequest": ill_request}


def _requester(requester: Requester, service_type: str) -> dict[str, Any]:
    """OCLC's `requester` as its own sample sends it: the library's addresses and lenders."""
    max_cost = requester.max_cost
    billing = _present(
        billingTypes=list(requester.billing_types) or None,
        address=_address(requester.billing_address),
        maximumCost=(
            {"amount": float(Decimal(max_cost["amount"])), "currency": max_cost["currency"]}
            if max_cost
            else None
        ),
    )
    delivery = _present(
        address=_address(requester.delivery_address), email=requester.delivery_email
    )
    lenders = [{"institutionId": lender} for lender in requester.lenders]
    return _present(
        institution={"institutionId": _institution_id(requester.institution_id)},
        serviceType=service_type,
        supplierInfo={"institutions": lenders} if lenders else None,
        requesterDelivery=delivery or None,
        requesterBilling=billing or None,
    )


def _address(address: Mapping[str, str] | None) -> dict[str, str] | None:
    # An allow-list of OCLC's names: whatever else a stored address held stays home.
    return _present(**{name: (address or {}).get(name) for name in ADDRESS_FIELDS}) or None


def _present(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


class WorldShareClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        tokens: TokenCache,
        config: WorldShareConfig,
        *,
        on_refresh_token_rotated: OnRotated | None = None,
        on_call: OnCall | None = None,
    ) -> None:
        self._http = http
        self._tokens = tokens
        self._config = config
        self._credentials = config.credentials
        self._on_rotated = on_refresh_token_rotated
        self._on_call = on_call

    def __repr__(self) -> str:
        return f"WorldShareClient(institution_code={self._config.institution_code!r})"

    async def authorise(self) -> None:
        """Have a token at hand, so a later call's failure is the call's own, not the token's."""
        await self._token()

    async def create_request(self, citation: Citation, *, reference: str) -> str:
        body = build_ill_request(citation, self._config.requester, reference=reference)
        response = await self._call("POST", "/request/data", json=body)
        request_id = _ill_request(response).get("requestId")
        if request_id is None or isinstance(request_id, bool):
            raise _unreadable(response)
        return str(request_id)

    async def get_request(self, worldshare_request_id: str) -> LenderStatus:
        path = f"/request/data/{quote(worldshare_request_id, safe='')}"
        response = await self._call("GET", path)
        ill_request = _ill_request(response)
        status = ill_request.get("requestStatus")
        if not isinstance(status, str):
            raise _unreadable(response)
        # requestId/requestStatus/referenceId are the swagger's IllRequest properties; the
        # public swagger has no read response, so dueDate, renewals, renewalStatus and
        # newDueDate follow the Due Date / Renewals / New Due Date fields OCLC shows staff;
        # returnAddress (the lender's Return To, in the swagger's Address fields) likewise.
        return LenderStatus(
            request_id=_text(ill_request.get("requestId")),
            status=status,
            due_date=_date(ill_request.get("dueDate")),
            renewal=_renewal(ill_request),
            reference=_text(ill_request.get("referenceId")),
            return_address=_return_address(ill_request.get("returnAddress")),
        )

    async def _call(
        self, method: str, path: str, *, json: dict[str, Any] | None = None
    ) -> httpx.Response:
        token, response = await self._send(method, path, json)
        if response.status_code == 401:
            self._tokens.invalidate(self._credentials.cache_key, token)
            _, response = await self._send(method, path, json)
        if response.is_success:
            return response
        codes, detail = oclc_failures(response)
        raise status_failure(UPSTREAM, response, codes=codes, detail=detail)

    async def _token(self) -> str:
        return await self._tokens.token(
            self._http, self._credentials, on_rotated=self._on_rotated, on_call=self._on_call
        )

    async def _send(
        self, method: str, path: str, json: dict[str, Any] | None
    ) -> tuple[str, httpx.Response]:
        token = await self._token()
        headers = {"Accept": "application/json", "Authorization": f"Bearer {token}"}
        url = self._config.base_url.rstrip("/") + path
        if self._on_call is not None:
            await self._on_call("create" if method == "POST" else "read")
        response = await call(self._http, UPSTREAM, method, url, json=json, headers=headers)
        return token, response


def oclc_failures(response: httpx.Response) -> tuple[tuple[str, ...], str]:
    """Codes like `30000:item.title` and a readable summary from an OCLC error body."""
    try:
        details = response.json()["response"]["error"]["detail"]
    except (ValueError, KeyError, TypeError):
        return (), ""
    failures: list[tuple[str, str]] = []
    for entry in details if isinstance(details, list) else []:
        if not isinstance(entry, dict):
            continue
        code = entry.get("failureCode")
        field_name = entry.get("fieldName")
        # Only numbers and field paths leave this function: never OCLC's echo of our data.
        code_text = str(code) if isinstance(code, int) and not isinstance(code, bool) else "?"
        field_text = (
            field_name if isinstance(field_name, str) and _FIELD_NAME.fullmatch(field_name) else ""
        )
        name = FAILURE_NAMES.get(code, "Failure") if isinstance(code, int) else "Failure"
        failures.append((f"{code_text}:{field_text}", f"{code_text} {name} {field_text}".rstrip()))
    if not failures:
        return (), ""
    summary = "; ".join(text for _, text in failures)
    return tuple(code for code, _ in failures), f"rejected the request: {summary}"


def _ill_request(response: httpx.Response) -> dict[str, Any]:
    try:
        ill_request = response.json()["response"]["illRequest"]
    except (ValueError, KeyError, TypeError):
        raise _unreadable(response) from None
    if not isinstance(ill_request, dict):
        raise _unreadable(response)
    return ill_request


def _unreadable(response: httpx.Response) -> UpstreamError:
    # A 2xx is not a transient status, so this classifies as permanent.
    return status_failure(UPSTREAM, response, detail="unreadable response body")


def _return_address(value: object) -> dict[str, str] | None:
    if not isinstance(value, dict):
        return None
    fields = {
        name: str(value[name]).strip()[:ADDRESS_FIELD_MAX_CHARS]
        for name in ADDRESS_FIELDS
        if isinstance(value.get(name), str) and str(value[name]).strip()
    }
    return fields if fields.get("address1") else None


def _renewal(ill_request: dict[str, Any]) -> RenewalInfo | None:
    renewals = ill_request.get("renewals")
    status = _text(ill_request.get("renewalStatus"))
    new_due_date = _date(ill_request.get("newDueDate"))
    if not renewals and status is None and new_due_date is None:
        return None
    count = renewals if isinstance(renewals, int) and not isinstance(renewals, bool) else 0
    return RenewalInfo(renewals=count, status=status, new_due_date=new_due_date)


def _date(value: object) -> date | None:
    """The date part of OCLC's `2019-08-31T00:00:00.000+0000` (or a plain date)."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _text(value: object) -> str | None:
    return str(value) if isinstance(value, str | int) and value != "" else None


def oclc_needed(day: date) -> str:
    """A need-before date as OCLC's date-time at noon UTC: midnight UTC is the evening before
    in the Americas, as staff there would see it (the bridge sends Alma due dates at noon too)."""
    return f"{day.isoformat()}T12:00:00.000+0000"


def _oclc_number(value: str | None) -> int | None:
    """OCLC numbers are integers in the API; `(OCoLC)ocm00012345` style prefixes are dropped."""
    match = _OCLC_NUMBER.fullmatch(value.strip()) if value else None
    return int(match.group(1)) if match else None


def _institution_id(value: str) -> int | str:
    # The registry id is an integer to OCLC; anything else is sent as is for OCLC to reject.
    return int(value) if value.isdigit() else value


def _issue_volume(volume: str | None, issue: str | None) -> str | None:
    parts = [volume, f"no. {issue}" if issue else None]
    return ", ".join(part for part in parts if part) or None
