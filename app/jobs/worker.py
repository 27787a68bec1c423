"""The worker loop: claim jobs, run their handlers with no transaction open, record outcomes.

At most `concurrency` handlers run at once, each for at most `job_deadline_seconds`. A handler
that raises a transient error or overruns its deadline is retried with capped exponential backoff
and full jitter (never sooner than Retry-After); a permanent error or an exhausted budget sends
the job to `dead` with a clean message. Leases are renewed while a handler runs, and a worker
whose lease was taken over finds its outcome refused. Stopping drains: handlers in flight get
`worker_drain_seconds` to finish, then are cancelled and their jobs given back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections import deque
from typing import Generic

from anyio import to_thread
from sqlalchemy.engine import Engine

from app.config import Settings
from app.db import write_session
from app.jobs import queue
from app.jobs.backoff import retry_delay
from app.jobs.queue import ClaimedJob
from app.jobs.registry import (
    PERIODIC_KEY_PREFIX,
    C,
    Finish,
    Handler,
    JobDeferred,
    PermanentJobError,
    Registry,
)
from app.observability import Metrics, RepeatedWarnings
from app.upstream import PermanentUpstreamError, TransientUpstreamError

log = logging.getLogger("illbridge.worker")

# While the database is down the loop's warnings repeat every poll: one line per this, counted.
REPEATED_WARNING_SECONDS = 30.0


class DeadlineExceeded(Exception):
    """A handler ran past `job_deadline_seconds`: a transient failure, retried like any other."""


class _GivenBack(Exception):
    """The drain ran out while the handler ran: its job goes back to the queue, not counted."""


def describe_failure(exc: BaseException) -> tuple[str, bool, float | None]:
    """(clean message, permanent?, retry_after) for a handler's exception.

    Only our own error types carry their message: any other exception is named by its type,
    since its text may echo a payload.
    """
    if isinstance(exc, TransientUpstreamError):
        return exc.message, False, exc.retry_after
    if isinstance(exc, PermanentUpstreamError):
        return exc.message, True, None
    if isinstance(exc, PermanentJobError):
        return str(exc), True, None
    if isinstance(exc, DeadlineExceeded):
        return str(exc), False, None
    return f"unexpected {type(exc).__name__}", False, None


class Worker(Generic[C]):
    """Runs the jobs of `registry`, giving each handler `context` (the process's services)."""

    def __init__(
        self,
        registry: Registry[C],
        context: C,
        *,
        engine: Engine,
        settings: Settings,
        metrics: Metrics,
    ) -> None:
        self.registry = registry
        self.context = context
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self.name = f"worker-{uuid.uuid4().hex[:8]}"
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_tick = -math.inf
        self._limits = registry.attempt_limits()
        # The deadline of every handler running, so an expired drain can bring them all forward.
        self._deadlines: set[asyncio.Timeout] = set()
        self._drain_expired = False
        self._warnings = RepeatedWarnings(log, REPEATED_WARNING_SECONDS)

    def wake(self) -> None:
        """Claim now rather than at the next poll; safe to call from any thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then drain the handlers in flight."""
        self._loop = asyncio.get_running_loop()
        concurrency = self.settings.worker_concurrency
        running: set[asyncio.Task[None]] = set()
        # Jobs claimed ahead, so a freed slot starts at once and claims go in batches.
        ready: deque[ClaimedJob] = deque()
        prefetch = self.settings.worker_prefetch
        log.info("worker_started", extra={"worker": self.name, "concurrency": concurrency})
        while not stop.is_set():
            await self._schedule_periodic()
            while ready and len(running) < concurrency:
                task = asyncio.create_task(self._execute(ready.popleft()))
                running.add(task)
                task.add_done_callback(running.discard)
            if len(ready) <= prefetch // 2:
                wanted = concurrency + prefetch - len(running) - len(ready)
                try:
                    claimed = await to_thread.run_sync(
                        queue.claim,
                        self.engine,
                        wanted,
                        self.settings.job_lease_seconds,
                        self._limits,
                    )
                except Exception as exc:
                    claimed = []
                    self._warnings.warning("claim_failed", error_type=type(exc).__name__)
                else:
                    self._warnings.resolved("claim_failed")
                ready.extend(claimed)
                if claimed and len(running) < concurrency:
                    continue
            await self._idle(stop, running)
        if ready:
            # Claimed but not started: back to the queue for any worker, not left to expire.
            try:
                await to_thread.run_sync(queue.release, self.engine, list(ready))
            except Exception as exc:
                log.warning("release_failed", extra={"error_type": type(exc).__name__})
        if running:
            await self._drain(set(running))
        log.info("worker_stopped", extra={"worker": self.name})

    async def _drain(self, running: set[asyncio.Task[None]]) -> None:
        """Let the handlers in flight finish for `worker_drain_seconds`, then give their jobs back.

        Given back is as if never claimed (queued, lease released, attempt not counted), so
        another worker takes them at once rather than after the lease runs out.
        """
        drain = self.settings.worker_drain_seconds
        log.info(
            "worker_draining",
            extra={"worker": self.name, "in_flight": len(running), "drain_s": drain},
        )
        _, pending = await asyncio.wait(running, timeout=drain)
        if not pending:
            return
        log.warning("worker_drain_expired", extra={"worker": self.name, "in_flight": len(pending)})
        self._drain_expired = True
        now = asyncio.get_running_loop().time()
        for deadline in self._deadlines:
            if not deadline.expired():
                deadline.reschedule(now)
        await asyncio.gather(*pending, return_exceptions=True)

    async def _idle(self, stop: asyncio.Event, running: set[asyncio.Task[None]]) -> None:
        self._wake.clear()
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        await asyncio.wait(
            [*waiters, *running],
            timeout=self.settings.worker_poll_seconds,
            return_when=asyncio.FIRST_COMPLETED,
        )
        for waiter in waiters:
            waiter.cancel()

    async def _schedule_periodic(self) -> None:
        now = time.time()
        if now - self._last_tick < self.settings.periodic_tick_seconds:
            return
        self._last_tick = now
        if self.registry.periodic:
            try:
                await to_thread.run_sync(self._enqueue_due_periodic, now)
            except Exception as exc:
                self._warnings.warning("periodic_failed", error_type=type(exc).__name__)
            else:
                self._warnings.resolved("periodic_failed")

    def _enqueue_due_periodic(self, now: float) -> None:
        with write_session(self.engine) as session:
            for periodic in self.registry.periodic:
                period = math.floor(now / periodic.every_seconds)
                queue.enqueue(
                    session,
                    periodic.kind,
                    dedupe_key=f"{PERIODIC_KEY_PREFIX}{periodic.name}:{period}",
                )
            session.commit()

    async def _execute(self, job: ClaimedJob) -> None:
        handler = self.registry.handlers.get(job.kind)
        started = time.perf_counter()
        heartbeat = asyncio.create_task(self._heartbeat(job))
        error: BaseException | None = None
        finish: Finish | None = None
        try:
            if handler is None:
                raise PermanentJobError(f"no handler for job kind {job.kind!r}")
            if job.attempts > job.max_attempts:
                raise PermanentJobError("attempts exhausted (leases expired repeatedly)")
            finish = await self._run_handler(handler, job)
        except Exception as exc:
            error = exc
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        self.metrics.job_duration.labels(job.kind).observe(time.perf_counter() - started)
        try:
            if isinstance(error, _GivenBack):
                outcome = await to_thread.run_sync(self._give_back, job)
            else:
                outcome = await to_thread.run_sync(self._record, job, handler, error, finish)
        except Exception as exc:
            # Nothing recorded: the lease runs out and the job runs again (at least once).
            outcome = "record_failed"
            log.error(
                "job_record_failed",
                extra={"job_id": job.id, "kind": job.kind, "error_type": type(exc).__name__},
            )
        self.metrics.jobs_finished.labels(job.kind, outcome).inc()

    async def _run_handler(self, handler: Handler, job: ClaimedJob) -> Finish | None:
        """The handler under its deadline, so a hung upstream cannot hold its job running for ever;
        an expired drain brings every deadline forward to now."""
        seconds = self.settings.job_deadline_seconds
        deadline = asyncio.timeout(seconds)
        self._deadlines.add(deadline)
        try:
            async with deadline:
                return await handler.run(self.context, job)
        except TimeoutError:
            if not deadline.expired():
                raise
            if self._drain_expired:
                raise _GivenBack from None
            raise DeadlineExceeded(f"handler exceeded its deadline of {seconds:g} s") from None
        finally:
            self._deadlines.discard(deadline)

    async def _heartbeat(self, job: ClaimedJob) -> None:
        lease = self.settings.job_lease_seconds
        while True:
            await asyncio.sleep(lease / 3)
            try:
                if not await to_thread.run_sync(queue.extend_lease, self.engine, job, lease):
                    return
            except Exception as exc:
                # A failed renewal must not end the handler's run; two thirds of the lease remain.
                self._warnings.warning(
                    "lease_renewal_failed", error_type=type(exc).__name__, job_id=job.id
                )
            else:
                self._warnings.resolved("lease_renewal_failed")

    def _give_back(self, job: ClaimedJob) -> str:
        fields = {"job_id": job.id, "kind": job.kind, "attempt": job.attempts}
        if not queue.release(self.engine, [job]):
            log.warning("job_lease_lost", extra=fields)
            return "lease_lost"
        log.info("job_given_back", extra=fields)
        return "given_back"

    def _defer(self, job: ClaimedJob, deferred: JobDeferred) -> str:
        fields = {"job_id": job.id, "kind": job.kind, "attempt": job.attempts}
        with write_session(self.engine) as session:
            if not queue.mark_deferred(session, job, until=deferred.until, why=str(deferred)):
                log.warning("job_lease_lost", extra=fields)
                return "lease_lost"
            session.commit()
        log.info(
            "job_deferred",
            extra={**fields, "until": deferred.until.isoformat(), "why": str(deferred)},
        )
        return "deferred"

    def _record(
        self,
        job: ClaimedJob,
        handler: Handler[C] | None,
        error: BaseException | None,
        finish: Finish | None,
    ) -> str:
        fields = {"job_id": job.id, "kind": job.kind, "attempt": job.attempts}
        if error is None:
            try:
                with write_session(self.engine) as session:
                    # The handler's last write commits with the job's success, and only while
                    # this worker still holds the lease: a stale finisher writes nothing.
                    if not queue.mark_succeeded(session, job):
                        log.warning("job_lease_lost", extra=fields)
                        return "lease_lost"
                    if finish is not None:
                        finish(session)
                    session.commit()
                    log.debug("job_succeeded", extra=fields)
                    return "succeeded"
            except Exception as exc:
                error = exc
        if isinstance(error, JobDeferred):
            return self._defer(job, error)
        with write_session(self.engine) as session:
            message, permanent, retry_after = describe_failure(error)
            if not permanent and job.attempts < job.max_attempts:
                delay = retry_delay(
                    job.attempts,
                    base=self.settings.job_backoff_base_seconds,
                    cap=self.settings.job_backoff_cap_seconds,
                    retry_after=retry_after,
                )
                if queue.mark_retry(session, job, delay=delay, error=message):
                    session.commit()
                    log.info(
                        "job_retry", extra={**fields, "delay_s": round(delay, 3), "error": message}
                    )
                    return "retried"
                log.warning("job_lease_lost", extra=fields)
                return "lease_lost"
            if not queue.mark_dead(session, job, error=message):
                log.warning("job_lease_lost", extra=fields)
                return "lease_lost"
            if handler is not None and handler.on_dead is not None:
                try:
                    with session.begin_nested():
                        handler.on_dead(session, job, message)
                except Exception as exc:
                    # The job still settles as dead; only the flag on its request is missing.
                    log.error(
                        "job_on_dead_failed", extra={**fields, "error_type": type(exc).__name__}
                    )
            session.commit()
            log.warning("job_dead", extra={**fields, "error": message})
            return "dead"
