"""The seam between the bridge and a lending network, so a second one (ISO 18626) can be added."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Protocol

from app.borrowing.citation import Citation


@dataclass(frozen=True)
class RenewalInfo:
    """The lender's side of renewals: how often renewed and its answer to the latest one."""

    renewals: int
    status: str | None
    new_due_date: date | None


@dataclass(frozen=True)
class LenderStatus:
    """What the lending network says about one borrowing request, as read by polling."""

    request_id: str | None
    status: str
    due_date: date | None
    renewal: RenewalInfo | None
    reference: str | None
    # Where the lender wants the item back, in OCLC's address fields, when it says.
    return_address: dict[str, str] | None = None


class LendingNetwork(Protocol):
    async def create_request(self, citation: Citation, *, reference: str) -> str: ...

    async def get_request(self, worldshare_request_id: str) -> LenderStatus: ...
