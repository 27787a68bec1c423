"""Sends supplyingAgencyMessages to an institution's Alma ISO 18626 endpoint."""

from __future__ import annotations

import httpx

from app.alma.iso18626 import (
    IsoMessageError,
    MessageStatus,
    SupplyingAgencyMessageConfirmation,
    parse_message,
)
from app.upstream import PermanentUpstreamError, call, status_failure

UPSTREAM = "Alma ISO 18626"


async def send_supplier_message(
    http: httpx.AsyncClient, url: str, message: bytes
) -> SupplyingAgencyMessageConfirmation:
    """POST one message; a confirmation with messageStatus OK, or a classified failure."""
    response = await call(
        http,
        UPSTREAM,
        "POST",
        url,
        content=message,
        headers={"Content-Type": "application/xml", "Accept": "application/xml"},
    )
    if not response.is_success:
        raise status_failure(UPSTREAM, response)
    try:
        confirmation = parse_message(response.content)
    except IsoMessageError as exc:
        raise PermanentUpstreamError(
            f"{UPSTREAM}: unreadable confirmation ({exc.error_type})"
        ) from None
    if not isinstance(confirmation, SupplyingAgencyMessageConfirmation):
        raise PermanentUpstreamError(f"{UPSTREAM}: answered with {confirmation.kind}")
    if confirmation.message_status is not MessageStatus.OK:
        raise PermanentUpstreamError(
            f"{UPSTREAM}: Alma refused the message "
            f"({confirmation.error_type}: {confirmation.error_value or 'no detail'})",
            codes=(str(confirmation.error_type),),
        )
    return confirmation
