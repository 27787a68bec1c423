"""Clean-up runs: confirm a stale request's WorldShare side is over, then close the Alma side.

A dry run plans from what is cached (the last polled WorldShare status) and sends nothing. A
real run reads each WorldShare request afresh, plans with the same `plan_step`, then closes Alma's
side: the ISO 18626 Unfilled/Cancelled notice for a request that came over ISO 18626, the Alma
REST cancel (the institution's reason, `notify_user=false`) for one registered through the API.
Each request is recorded in a transaction of its own, so one failing never stops the others and
a run picked up again after a crash skips what it already did.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlmodel import Session, col, select

from app.alma.rest import AlmaClient, internal_request_id
from app.borrowing import service
from app.borrowing.cleanup import (
    BatchStatus,
    Candidate,
    CleanupAction,
    CleanupBatch,
    CleanupItem,
    ItemOutcome,
    PlannedStep,
    plan_step,
)
from app.borrowing.models import BorrowingRequest
from app.borrowing.states import Trigger
from app.borrowing.tasks import TaskKind, close_task
from app.errors import Conflict
from app.institutions.models import Institution
from app.jobs.kinds import Payload
from app.jobs.queue import ClaimedJob, enqueue
from app.jobs.registry import Finish
from app.runtime import Runtime
from app.timeutil import utcnow
from app.upstream import UpstreamError
from app.workflows.alma_calls import NOT_CONFIGURED, alma_client
from app.workflows.kinds import RUN_CLEANUP, CleanupPayload
from app.workflows.stale_check import assess_open_requests
from app.workflows.transitions import advance
from app.workflows.worldshare_calls import second_look, worldshare_client
from app.worldshare.client import WorldShareConfig
from app.worldshare.config import NotConfigured, worldshare_config
from app.worldshare.status import answer_mismatch, map_status

SOURCE = "cleanup"
# How many requests one automatic run considers.
AUTO_LIMIT = 200
ABANDONED_AFTER = timedelta(days=1)


@dataclass(frozen=True)
class Line:
    """One stale request as clean-up sees it."""

    candidate: Candidate
    alma_request_id: str
    worldshare_request_id: str | None
    lender_status: str | None  # cached: the last polled status
    requester_user_id: str | None
    alma_internal_request_id: str | None


def stale_lines(
    session: Session, institution: Institution, *, limit: int, skip: frozenset[int] = frozenset()
) -> list[Line]:
    """The institution's stale requests, oldest id first, at most `limit`."""
    assert institution.id is not None
    lines = []
    for item in assess_open_requests(session, utcnow(), institution_id=institution.id):
        request = item.request
        if item.staleness is None or request.id in skip:
            continue
        assert request.id is not None
        lines.append(
            Line(
                candidate=Candidate(
                    request_id=request.id,
                    state=request.state,
                    origin=request.origin,
                    has_worldshare_id=request.worldshare_request_id is not None,
                    stale_reason=item.staleness.reason.value,
                ),
                alma_request_id=request.alma_request_id,
                worldshare_request_id=request.worldshare_request_id,
                lender_status=request.lender_status,
                requester_user_id=request.requester_user_id,
                alma_internal_request_id=request.alma_internal_request_id,
            )
        )
        if len(lines) >= limit:
            break
    return lines


def plan_line(line: Line, lender_status: str | None, status_map: dict[str, str]) -> PlannedStep:
    outcome = map_status(lender_status, status_map) if lender_status is not None else None
    return plan_step(line.candidate, lender_status, outcome)


def dry_run(
    session: Session, institution: Institution, *, limit: int, requested_by: str
) -> CleanupBatch:
    """Plan from what is cached and store the plan; nothing is sent anywhere."""
    assert institution.id is not None
    batch = CleanupBatch(
        institution_id=institution.id,
        dry_run=True,
        max_requests=limit,
        requested_by=requested_by,
        status=BatchStatus.DONE,
        finished_at=utcnow(),
    )
    session.add(batch)
    session.flush()
    assert batch.id is not None
    for line in stale_lines(session, institution, limit=limit):
        step = plan_line(line, line.lender_status, institution.status_map)
        outcome = ItemOutcome.LEFT if step.action is CleanupAction.LEAVE else ItemOutcome.PLANNED
        session.add(_item(batch.id, line, step, line.lender_status, outcome))
    session.flush()
    return batch


def start_run(
    session: Session,
    institution: Institution,
    *,
    limit: int,
    requested_by: str,
    queue: bool = True,
) -> CleanupBatch:
    """Store a real run; `queue` hands it to the workers (the CLI runs it itself)."""
    assert institution.id is not None
    running = session.exec(
        select(CleanupBatch.id).where(
            CleanupBatch.institution_id == institution.id,
            col(CleanupBatch.dry_run).is_(False),
            col(CleanupBatch.status).in_([BatchStatus.QUEUED.value, BatchStatus.RUNNING.value]),
            # A command-line run whose process died is not waited for beyond a day.
            col(CleanupBatch.created_at) > utcnow() - ABANDONED_AFTER,
        )
    ).first()
    if running is not None:
        raise Conflict(f"clean-up batch {running} of {institution.code} has not finished")
    batch = CleanupBatch(
        institution_id=institution.id, dry_run=False, max_requests=limit, requested_by=requested_by
    )
    session.add(batch)
    session.flush()
    assert batch.id is not None
    if queue:
        enqueue(
            session,
            RUN_CLEANUP,
            CleanupPayload(batch_id=batch.id),
            dedupe_key=f"cleanup:{batch.id}",
            institution_id=institution.id,
        )
    return batch


def _item(
    batch_id: int,
    line: Line,
    step: PlannedStep,
    lender_status: str | None,
    outcome: ItemOutcome,
    error: str | None = None,
) -> CleanupItem:
    return CleanupItem(
        batch_id=batch_id,
        request_id=line.candidate.request_id,
        action=step.action,
        why=step.why[:500],
        lender_status=lender_status,
        outcome=outcome,
        error=error[:1000] if error else None,
    )


@dataclass(frozen=True)
class RunWork:
    batch_id: int
    lines: list[Line]
    status_map: dict[str, str]
    cancel_reason: str
    worldshare: WorldShareConfig | None
    alma: AlmaClient | None
    problem: str | None  # why WorldShare cannot be read at all


def begin_run(session: Session, ctx: Runtime, batch_id: int) -> RunWork | None:
    """Mark the batch running and gather what is left to do; None when it is done already."""
    batch = session.get(CleanupBatch, batch_id)
    if batch is None or batch.dry_run or batch.status is BatchStatus.DONE:
        return None
    institution = session.get(Institution, batch.institution_id)
    assert institution is not None
    done = frozenset(
        session.exec(select(CleanupItem.request_id).where(CleanupItem.batch_id == batch_id)).all()
    )
    batch.status = BatchStatus.RUNNING
    session.add(batch)
    try:
        config: WorldShareConfig | None = worldshare_config(institution, ctx.secrets)
        problem = None
    except NotConfigured as exc:
        config, problem = None, str(exc)
    return RunWork(
        batch_id=batch_id,
        lines=stale_lines(
            session, institution, limit=max(0, batch.max_requests - len(done)), skip=done
        ),
        status_map=dict(institution.status_map),
        cancel_reason=institution.cancel_reason,
        worldshare=config,
        alma=alma_client(ctx, institution),
        problem=problem,
    )


@dataclass(frozen=True)
class LineResult:
    step: PlannedStep
    lender_status: str | None
    alma_internal_request_id: str | None = None
    error: str | None = None


async def _run_line(ctx: Runtime, work: RunWork, line: Line) -> LineResult:
    if line.worldshare_request_id is None:
        return LineResult(plan_line(line, None, work.status_map), None)
    if work.worldshare is None:
        leave = PlannedStep(CleanupAction.LEAVE, "WorldShare cannot be read")
        return LineResult(leave, None, error=work.problem)
    asked = line.worldshare_request_id
    try:
        lender = await worldshare_client(ctx, work.worldshare).get_request(asked)
    except UpstreamError as exc:
        # A 429 pauses the key (second_look records it); the line is left for a later run.
        failure = await second_look(ctx, work.worldshare, exc)
        return LineResult(
            PlannedStep(CleanupAction.LEAVE, "WorldShare read failed"), None, error=str(failure)
        )
    mismatch = answer_mismatch(lender, asked=asked, alma_request_id=line.alma_request_id)
    if mismatch is not None:
        return LineResult(
            PlannedStep(CleanupAction.LEAVE, "WorldShare answered about another request"),
            None,
            error=mismatch,
        )
    step = plan_line(line, lender.status, work.status_map)
    if step.action is not CleanupAction.ALMA_REST_CANCEL:
        return LineResult(step, lender.status)
    client = work.alma
    if client is None:
        return LineResult(step, lender.status, error=NOT_CONFIGURED)
    if line.requester_user_id is None:
        return LineResult(
            step, lender.status, error="no patron id is kept to address Alma's REST API"
        )
    internal = line.alma_internal_request_id
    try:
        if internal is None:
            internal = await internal_request_id(
                client, line.requester_user_id, line.alma_request_id
            )
        await client.cancel_request(
            line.requester_user_id, internal, reason=work.cancel_reason, notify_user=False
        )
    except UpstreamError as exc:
        return LineResult(step, lender.status, alma_internal_request_id=internal, error=exc.message)
    return LineResult(step, lender.status, alma_internal_request_id=internal)


def record_line(session: Session, work: RunWork, line: Line, result: LineResult) -> None:
    request = session.exec(
        select(BorrowingRequest)
        .where(BorrowingRequest.id == line.candidate.request_id)
        .with_for_update()
    ).one()
    step = result.step
    if result.alma_internal_request_id and request.alma_internal_request_id is None:
        request.alma_internal_request_id = result.alma_internal_request_id
        session.add(request)
    if result.error is not None:
        session.add(
            _item(work.batch_id, line, step, result.lender_status, ItemOutcome.FAILED, result.error)
        )
        service.record_event(
            session,
            request,
            "cleanup_failed",
            SOURCE,
            applied=False,
            detail={"batch_id": work.batch_id, "error": result.error[:300]},
        )
        return
    if step.action is CleanupAction.LEAVE:
        session.add(_item(work.batch_id, line, step, result.lender_status, ItemOutcome.LEFT))
        return
    request.lender_status = result.lender_status
    applied = advance(
        session,
        request,
        Trigger.CLEANED_UP,
        SOURCE,
        detail={
            "reason": work.cancel_reason,
            "batch_id": work.batch_id,
            "lender_status": result.lender_status,
            "stale_reason": line.candidate.stale_reason,
            "alma": step.action.value,
        },
        notice=step.notice,
    )
    if not applied:
        error = f"the request became {request.state.value} during the run"
        session.add(
            _item(work.batch_id, line, step, result.lender_status, ItemOutcome.FAILED, error)
        )
        return
    if request.stale_reason is not None:
        close_task(session, request, TaskKind.STALE_REQUEST, source=SOURCE, resolution="cleaned up")
        request.stale_reason = None
        request.stale_since = None
    session.add(_item(work.batch_id, line, step, result.lender_status, ItemOutcome.DONE))


def finish_run(session: Session, batch_id: int) -> None:
    batch = session.get(CleanupBatch, batch_id)
    assert batch is not None
    batch.status = BatchStatus.DONE
    batch.finished_at = utcnow()
    session.add(batch)


def _recorder(work: RunWork, line: Line, result: LineResult) -> Callable[[Session], None]:
    return lambda session: record_line(session, work, line, result)


async def run_batch(ctx: Runtime, batch_id: int, *, budget_seconds: float | None = None) -> bool:
    """Carry out a stored real run, one request at a time; False when `budget_seconds` ran
    out with requests left (the caller queues the rest), True when the batch is done."""
    work = await ctx.write(lambda session: begin_run(session, ctx, batch_id))
    if work is None:
        return True
    started = time.monotonic()
    for done, line in enumerate(work.lines, start=1):
        result = await _run_line(ctx, work, line)
        await ctx.write(_recorder(work, line, result))
        over = budget_seconds is not None and time.monotonic() - started > budget_seconds
        if over and done < len(work.lines):
            return False
    await ctx.write(lambda session: finish_run(session, batch_id))
    return True


def queue_rest(session: Session, job: ClaimedJob, batch_id: int) -> None:
    """A batch longer than one job run goes on in a fresh job."""
    enqueue(
        session,
        RUN_CLEANUP,
        CleanupPayload(batch_id=batch_id),
        dedupe_key=f"cleanup:{batch_id}:after-job-{job.id}",
        institution_id=job.institution_id,
    )


def close_dead_run(session: Session, job: ClaimedJob, error: str) -> None:
    """A run whose job died is ended, so the next run is not refused as a duplicate."""
    batch_id = job.payload.get("batch_id")
    batch = session.get(CleanupBatch, batch_id) if isinstance(batch_id, int) else None
    if batch is not None and batch.status is not BatchStatus.DONE:
        finish_run(session, batch.id or 0)


async def run_cleanup(ctx: Runtime, job: ClaimedJob, payload: CleanupPayload) -> Finish | None:
    # Half the handler's deadline: the worker cancels a run that overstays it.
    budget = ctx.settings.job_deadline_seconds / 2
    if await run_batch(ctx, payload.batch_id, budget_seconds=budget):
        return None
    return lambda session: queue_rest(session, job, payload.batch_id)


def start_automatic_runs(session: Session) -> int:
    """A run for each institution whose policy asks for automatic clean-up and has none going."""
    started = 0
    institutions = session.exec(
        select(Institution).where(
            col(Institution.auto_cleanup).is_(True), col(Institution.active).is_(True)
        )
    ).all()
    for institution in institutions:
        try:
            start_run(session, institution, limit=AUTO_LIMIT, requested_by="auto_cleanup")
        except Conflict:
            continue
        started += 1
    return started


async def auto_cleanup(_ctx: Runtime, _job: ClaimedJob, _payload: Payload) -> Finish:
    return start_automatic_runs


def batch_lines(session: Session, batch_id: int) -> list[tuple[CleanupItem, BorrowingRequest]]:
    return list(
        session.exec(
            select(CleanupItem, BorrowingRequest)
            .join(BorrowingRequest, col(BorrowingRequest.id) == col(CleanupItem.request_id))
            .where(CleanupItem.batch_id == batch_id)
            .order_by(col(CleanupItem.id))
        ).all()
    )
