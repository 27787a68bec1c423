"""Export a borrowing request's citation to WorldShare, exactly once per request."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from app.borrowing import service
from app.borrowing.citation import Citation
from app.borrowing.states import RequestState, Trigger
from app.institutions.secrets import SecretBox
from app.jobs.kinds import Payload
from app.jobs.queue import ClaimedJob
from app.jobs.registry import Finish, PermanentJobError
from app.runtime import Runtime
from app.workflows.common import load_request
from app.workflows.transitions import advance
from app.worldshare.client import WorldShareClient, WorldShareConfig
from app.worldshare.config import NotConfigured, worldshare_config


@dataclass(frozen=True)
class ExportPlan:
    citation: Citation
    config: WorldShareConfig
    reference: str


def plan_export(session: Session, job: ClaimedJob, box: SecretBox) -> ExportPlan | None:
    """What to send, or None when the request is no longer waiting for export."""
    request, institution = load_request(session, job)
    if request.state != RequestState.RECEIVED:
        return None
    try:
        config = worldshare_config(institution, box)
    except NotConfigured as exc:
        raise PermanentJobError(str(exc)) from None
    return ExportPlan(
        citation=Citation.model_validate(request.citation),
        config=config,
        reference=request.alma_request_id,
    )


def record_export(session: Session, job: ClaimedJob, worldshare_request_id: str) -> None:
    """Link the WorldShare request and mark the request exported, in one step."""
    request, institution = load_request(session, job)
    if request.state != RequestState.RECEIVED:
        # Cancelled meanwhile, or exported by a worker whose lease we took over.
        if request.worldshare_request_id != worldshare_request_id:
            service.record_event(
                session,
                request,
                "worldshare_request_orphaned",
                "worker",
                applied=False,
                detail={"worldshare_request_id": worldshare_request_id},
            )
            service.flag(
                session,
                request,
                f"WorldShare request {worldshare_request_id} was created while the request was "
                f"{request.state}; cancel it in WorldShare",
                source="worker",
            )
        return
    request.worldshare_request_id = worldshare_request_id
    service.schedule_first_poll(request, institution.poll_interval_seconds)
    advance(
        session,
        request,
        Trigger.EXPORTED,
        "worker",
        detail={"worldshare_request_id": worldshare_request_id},
    )


async def export_citation(ctx: Runtime, job: ClaimedJob, _payload: Payload) -> Finish | None:
    plan = await ctx.read(lambda session: plan_export(session, job, ctx.secrets))
    if plan is None:
        return None
    client = WorldShareClient(ctx.http, ctx.worldshare_tokens, plan.config)
    worldshare_request_id = await client.create_request(plan.citation, reference=plan.reference)
    return lambda session: record_export(session, job, worldshare_request_id)
