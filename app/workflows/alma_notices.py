"""Tell Alma what happened to a borrowing request (an ISO 18626 supplyingAgencyMessage)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from app.alma.iso18626 import DEFAULT_PROFILE, PROFILES, AgencyId
from app.alma.iso_client import send_supplier_message
from app.alma.notices import NoticeSubject, build_notice
from app.borrowing import service
from app.borrowing.states import AlmaNotice, ServiceKind
from app.jobs.queue import ClaimedJob
from app.jobs.registry import Finish, PermanentJobError
from app.runtime import Runtime
from app.workflows.common import load_request
from app.workflows.kinds import NoticePayload

SOURCE = "worker"


@dataclass(frozen=True)
class Delivery:
    url: str
    message: bytes


def plan_notice(session: Session, job: ClaimedJob, notice: AlmaNotice) -> Delivery:
    request, institution = load_request(session, job)
    agencies = (
        institution.alma_agency_id_type,
        institution.alma_agency_id_value,
        institution.bridge_agency_id_type,
        institution.bridge_agency_id_value,
    )
    if not institution.alma_iso18626_url or not all(agencies):
        raise PermanentJobError(
            f"institution {institution.code} has no ISO 18626 channel "
            "(alma.iso18626_url, alma.agency_id, alma.bridge_agency_id)"
        )
    alma_type, alma_value, bridge_type, bridge_value = (str(part) for part in agencies)
    subject = NoticeSubject(
        alma_agency=AgencyId(alma_type, alma_value),
        bridge_agency=AgencyId(bridge_type, bridge_value),
        alma_request_id=request.alma_request_id,
        supplier_request_id=request.worldshare_request_id,
        state=request.state,
        lender_due_date=request.lender_due_date,
        item_barcode=request.item_barcode,
        copy=request.service_kind is ServiceKind.COPY,
        return_address=request.lender_return_address,
    )
    profile = PROFILES.get(institution.alma_iso18626_profile, PROFILES[DEFAULT_PROFILE])
    return Delivery(
        url=institution.alma_iso18626_url, message=build_notice(notice, subject, profile)
    )


def record_notice(session: Session, job: ClaimedJob, notice: AlmaNotice) -> None:
    """Alma took the notice. The request itself stays open until WorldShare is closed."""
    request, _institution = load_request(session, job)
    service.record_event(session, request, "alma_notified", SOURCE, detail={"notice": notice})


async def notify_alma(ctx: Runtime, job: ClaimedJob, payload: NoticePayload) -> Finish:
    delivery = await ctx.read(lambda session: plan_notice(session, job, payload.notice))
    await send_supplier_message(ctx.http, delivery.url, delivery.message)
    return lambda session: record_notice(session, job, payload.notice)
