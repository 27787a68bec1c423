"""Export a borrowing request's citation to WorldShare: exactly one WorldShare request per Alma
request, or a staff task that says why the bridge cannot be sure.

WorldShare's Request API has no idempotency key and no search by reference, so a create is never
sent twice for one request. An attempt is marked in a transaction of its own before the create
goes out; the WorldShare id is recorded in another the moment it arrives, lease or no lease.
A marked attempt with no id is one whose answer was lost (a timeout after sending, a crash):
it is not replayed but flagged, and staff link the request they find or ask for a new export.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sqlmodel import Session

from app.borrowing import service
from app.borrowing.citation import Citation
from app.borrowing.models import BorrowingRequest
from app.borrowing.states import RequestState, Trigger
from app.institutions.models import Institution
from app.institutions.secrets import SecretBox
from app.jobs.kinds import Payload
from app.jobs.queue import ClaimedJob, enqueue
from app.jobs.registry import PermanentJobError
from app.outbound_hosts import OutboundHostRefused
from app.runtime import Runtime
from app.timeutil import utcnow
from app.upstream import TransientUpstreamError, UpstreamError
from app.workflows.common import load_request
from app.workflows.kinds import EXPORT_TO_WORLDSHARE
from app.workflows.transitions import advance
from app.workflows.worldshare_calls import key_paused, second_look, worldshare_client
from app.worldshare.client import WorldShareClient, WorldShareConfig
from app.worldshare.config import NotConfigured, worldshare_config

SOURCE = "worker"
UNKNOWN_CREATE = "the WorldShare create may have succeeded; look for reference"
# A dead export is flagged "<EXPORT> failed: <why>" (incomplete settings, a refusal by OCLC).
EXPORT = "Export to WorldShare"


@dataclass(frozen=True)
class ExportPlan:
    citation: Citation
    config: WorldShareConfig
    reference: str


def begin_export(session: Session, job: ClaimedJob, box: SecretBox) -> ExportPlan | None:
    """What to send; None when no create may be sent (flagging an attempt whose answer was lost)."""
    request, institution = load_request(session, job)
    if request.state is not RequestState.RECEIVED or request.worldshare_request_id:
        return None
    if request.export_attempted_at is not None:
        _flag_unknown_create(session, request, why="an earlier attempt ended without an answer")
        return None
    try:
        # Checked before the attempt is marked: an incomplete institution sends nothing.
        config = worldshare_config(institution, box, to_export=True)
    except NotConfigured as exc:
        raise PermanentJobError(str(exc)) from None
    key_paused(session, config, whole_window=True)
    return ExportPlan(
        citation=Citation.model_validate(request.citation),
        config=config,
        reference=request.alma_request_id,
    )


def mark_attempt(session: Session, job: ClaimedJob) -> bool:
    """Mark the create about to go out; False when another worker's attempt got there first."""
    request, _institution = load_request(session, job)
    if request.worldshare_request_id:
        return False
    if request.export_attempted_at is not None:
        # Withdrawn by `_link` if that attempt's answer arrives.
        _flag_unknown_create(session, request, why="another attempt was in flight")
        return False
    request.export_attempted_at = utcnow()
    session.add(request)
    return True


def record_created(session: Session, job: ClaimedJob, worldshare_request_id: str) -> None:
    """Keep the id WorldShare gave and mark the request exported, whoever holds the job now: a
    worker whose lease was taken over gets no finishing step. Two ids are a staff task."""
    request, institution = load_request(session, job)
    linked = request.worldshare_request_id
    detail = {"worldshare_request_id": worldshare_request_id}
    if linked is not None and linked != worldshare_request_id:
        service.record_event(
            session, request, "worldshare_request_duplicated", SOURCE, applied=False, detail=detail
        )
        service.flag(
            session,
            request,
            f"two WorldShare requests exist: {linked}, {worldshare_request_id}; "
            "cancel one in WorldShare",
            source=SOURCE,
        )
        return
    # The same id already linked: staff found the request while its answer was late.
    if linked is None:
        _link(session, request, worldshare_request_id, source=SOURCE)
        if request.state is not RequestState.RECEIVED:
            service.flag(
                session,
                request,
                f"WorldShare request {worldshare_request_id} was created while the request was "
                f"{request.state}; cancel it in WorldShare",
                source=SOURCE,
            )
            return
    _mark_exported(session, request, institution)


def forget_attempt(session: Session, job: ClaimedJob) -> None:
    """The upstream proved nothing was created: a later attempt may send again. Once another run
    has flagged the attempt, the mark stays for staff to resolve: no job of its own is left."""
    request, _institution = load_request(session, job)
    if request.worldshare_request_id is None and not _flagged_unknown(request):
        request.export_attempted_at = None
        session.add(request)


def answer_lost(session: Session, job: ClaimedJob, error: str) -> None:
    request, _institution = load_request(session, job)
    if request.worldshare_request_id is None:
        _flag_unknown_create(session, request, why=error)


def _mark_exported(session: Session, request: BorrowingRequest, institution: Institution) -> None:
    if request.state is not RequestState.RECEIVED or request.worldshare_request_id is None:
        return
    service.schedule_first_poll(request, institution.poll_interval_seconds)
    advance(
        session,
        request,
        Trigger.EXPORTED,
        SOURCE,
        detail={"worldshare_request_id": request.worldshare_request_id},
    )


def resolve_unknown_create(
    session: Session,
    request: BorrowingRequest,
    institution: Institution,
    *,
    worldshare_request_id: str | None,
    staff: str,
) -> None:
    """Staff looked in WorldShare: link the request they found, or (None) export again."""
    assert request.id is not None
    source = "operator"
    if worldshare_request_id is not None:
        _link(session, request, worldshare_request_id, source=source)
        service.clear_flag(session, request, source=source, why=f"linked by {staff}")
        _mark_exported(session, request, institution)
        return
    request.export_attempted_at = None
    session.add(request)
    event = service.record_event(session, request, "export_requested_again", source)
    service.clear_flag(session, request, source=source, why=f"new export asked by {staff}")
    enqueue(
        session,
        EXPORT_TO_WORLDSHARE,
        dedupe_key=f"export:{request.id}:{event.id}",
        institution_id=request.institution_id,
        request_id=request.id,
    )


def _link(
    session: Session, request: BorrowingRequest, worldshare_request_id: str, *, source: str
) -> None:
    request.worldshare_request_id = worldshare_request_id
    request.export_attempted_at = None
    session.add(request)
    service.record_event(
        session,
        request,
        "worldshare_request_linked",
        source,
        detail={"worldshare_request_id": worldshare_request_id},
    )
    if (request.attention_reason or "").startswith((UNKNOWN_CREATE, f"{EXPORT} failed")):
        service.clear_flag(session, request, source=source, why="the WorldShare id is known")


def _flagged_unknown(request: BorrowingRequest) -> bool:
    return request.needs_attention and (request.attention_reason or "").startswith(UNKNOWN_CREATE)


def _flag_unknown_create(session: Session, request: BorrowingRequest, *, why: str) -> None:
    if _flagged_unknown(request):
        return
    service.record_event(
        session, request, "worldshare_create_unknown", SOURCE, applied=False, detail={"why": why}
    )
    service.flag(
        session,
        request,
        f"{UNKNOWN_CREATE} {request.alma_request_id} ({why}); resolve with the WorldShare id "
        "found, or ask for a new export",
        source=SOURCE,
    )


def _nothing_created(exc: UpstreamError) -> bool:
    """An answer that proves WorldShare kept nothing: an error status, or nothing sent at all."""
    if isinstance(exc, OutboundHostRefused):
        return True
    if exc.status_code is not None:
        return not 200 <= exc.status_code < 300
    return isinstance(exc, TransientUpstreamError) and not exc.may_have_been_sent


async def export_citation(ctx: Runtime, job: ClaimedJob, _payload: Payload) -> None:
    """Each step commits on its own: what WorldShare answered is kept even if the lease is gone."""
    plan = await ctx.write(lambda session: begin_export(session, job, ctx.secrets))
    if plan is None:
        return
    client = worldshare_client(ctx, plan.config)
    try:
        await client.authorise()
    except UpstreamError as exc:
        raise await second_look(ctx, plan.config, exc) from None
    if not await ctx.write(lambda session: mark_attempt(session, job)):
        return
    # The create is bounded by its own call deadline; once it is out, its answer is recorded even
    # when the handler's deadline passes meanwhile (a worker paused, then resumed).
    await asyncio.shield(_create_and_record(ctx, job, client, plan))


async def _create_and_record(
    ctx: Runtime, job: ClaimedJob, client: WorldShareClient, plan: ExportPlan
) -> None:
    try:
        worldshare_request_id = await client.create_request(plan.citation, reference=plan.reference)
    except UpstreamError as exc:
        if _nothing_created(exc):
            await ctx.write(lambda session: forget_attempt(session, job))
            raise await second_look(ctx, plan.config, exc) from None
        lost = exc.message
        await ctx.write(lambda session: answer_lost(session, job, lost))
        return
    await ctx.write(lambda session: record_created(session, job, worldshare_request_id))
