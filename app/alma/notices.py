"""The supplier notices the bridge sends Alma, built from a borrowing request's current record.

Pure: given what the request says now, the ISO 18626 supplyingAgencyMessage to send.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from app.alma.iso18626 import (
    ALMA_DEFAULT,
    AgencyId,
    AlmaProfile,
    Header,
    ReturnAddress,
    Status,
    supplier_message,
)
from app.borrowing.states import AlmaNotice, RequestState
from app.timeutil import utcnow

# What Alma is told when it asks for the status, by our state (None: the profile's supply status).
ISO_STATUS: dict[RequestState, Status | None] = {
    RequestState.RECEIVED: Status.REQUEST_RECEIVED,
    RequestState.EXPORTED: None,
    RequestState.SHIPPED: Status.LOANED,
    RequestState.IN_LIBRARY: Status.LOANED,
    RequestState.ON_LOAN: Status.LOANED,
    RequestState.RENEWAL_REQUESTED: Status.LOANED,
    RequestState.RETURNED: Status.LOANED,
    RequestState.CLOSED: Status.LOAN_COMPLETED,
    RequestState.UNFILLED: Status.UNFILLED,
    RequestState.CANCELLED: Status.CANCELLED,
}
# Answers whose status is today's, not a fixed one.
_CURRENT_STATUS_KINDS = frozenset(
    {AlmaNotice.STATUS_ANSWER, AlmaNotice.CANCEL_NO, AlmaNotice.RENEW_NO}
)


@dataclass(frozen=True)
class NoticeSubject:
    """What a notice says about one request (the ids Alma knows it by, and its dates)."""

    alma_agency: AgencyId
    bridge_agency: AgencyId
    alma_request_id: str
    supplier_request_id: str | None
    state: RequestState
    lender_due_date: date | None
    item_barcode: str | None
    copy: bool = False
    # The lender's return address in OCLC's fields (address1, locality, postal…), if known.
    return_address: Mapping[str, str] | None = None


def current_status(subject: NoticeSubject, profile: AlmaProfile = ALMA_DEFAULT) -> Status:
    """The ISO status of the request today, as Alma should read it."""
    if subject.copy and subject.state is RequestState.CLOSED:
        return Status.COPY_COMPLETED
    return ISO_STATUS[subject.state] or profile.supply_status


def build_notice(
    kind: AlmaNotice, subject: NoticeSubject, profile: AlmaProfile = ALMA_DEFAULT
) -> bytes:
    """The message for ``kind``, in the dialect of the institution's Alma (``profile``)."""
    now = utcnow()
    header = Header(
        supplying_agency=subject.bridge_agency,
        requesting_agency=subject.alma_agency,
        timestamp=now,
        requesting_agency_request_id=subject.alma_request_id,
        supplying_agency_request_id=subject.supplier_request_id,
    )
    # A copy has no due date and no item to give back.
    carries_due_date = not subject.copy and kind in (AlmaNotice.LOANED, AlmaNotice.RENEW_YES)
    return supplier_message(
        profile,
        kind,
        header,
        status=current_status(subject, profile) if kind in _CURRENT_STATUS_KINDS else None,
        due_date=subject.lender_due_date if carries_due_date else None,
        item_id=subject.item_barcode if kind is AlmaNotice.LOANED else None,
        date_sent=now if kind is AlmaNotice.LOANED else None,
        return_to=_return_to(subject.return_address) if kind is AlmaNotice.LOANED else None,
    )


def _return_to(address: Mapping[str, str] | None) -> ReturnAddress | None:
    """OCLC's address fields as ISO ``returnInfo``; the attention line is the name."""
    if not address or not address.get("address1"):
        return None
    return ReturnAddress(
        name=address.get("attention"),
        line1=address.get("address1"),
        line2=address.get("address2"),
        locality=address.get("locality"),
        postal_code=address.get("postal"),
        region=address.get("region"),
        country=address.get("country"),
    )
