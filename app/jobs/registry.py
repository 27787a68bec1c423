"""What a worker can run: job kinds with their typed payloads, their handlers and retry policy,
and the periodic schedule. The queue knows no kind's meaning: workflows register them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from pydantic import ValidationError
from sqlmodel import Session

from app.jobs.kinds import JobKind, P, Payload
from app.jobs.queue import AttemptLimits, ClaimedJob

C = TypeVar("C")

# The handler's last database step, committed in the transaction that marks the job succeeded.
Finish = Callable[[Session], object]
# Called in the transaction that marks the job dead, to flag what it was working for.
OnDead = Callable[[Session, ClaimedJob, str], None]


class PermanentJobError(Exception):
    """The handler knows retrying cannot help; the message must be free of secrets and PII."""


class JobDeferred(Exception):
    """Not now, and not a failure: run the job again at `until`, the attempt not counted (an
    upstream's budget is spent, say). The message must be free of secrets and PII."""

    def __init__(self, until: datetime, why: str) -> None:
        super().__init__(why)
        self.until = until


@dataclass(frozen=True)
class Handler(Generic[C]):
    run: Callable[[C, ClaimedJob], Awaitable[Finish | None]]
    max_attempts: int
    on_dead: OnDead | None = None


# The dedupe key of a periodic job's run: the prefix, its name and the period's number.
PERIODIC_KEY_PREFIX = "periodic:"


@dataclass(frozen=True)
class Periodic:
    """A job enqueued once per `every_seconds`, however many workers run."""

    name: str
    kind: JobKind[Payload]
    every_seconds: float


@dataclass
class Registry(Generic[C]):
    """Handlers by kind name; `C` is whatever the process gives every handler (its services)."""

    default_max_attempts: int
    handlers: dict[str, Handler[C]] = field(default_factory=dict)
    periodic: list[Periodic] = field(default_factory=list)

    def add(
        self,
        kind: JobKind[P],
        run: Callable[[C, ClaimedJob, P], Awaitable[Finish | None]],
        *,
        on_dead: OnDead | None = None,
        max_attempts: int | None = None,
    ) -> None:
        """Register `run` for `kind`; it gets the job's payload parsed as the kind declares."""
        if kind.name in self.handlers:
            raise ValueError(f"a handler for {kind.name!r} is already registered")

        async def parsed(context: C, job: ClaimedJob) -> Finish | None:
            try:
                payload = kind.payload.model_validate(job.payload)
            except ValidationError:
                raise PermanentJobError(
                    f"{kind.name} job {job.id} has an unreadable payload"
                ) from None
            return await run(context, job, payload)

        self.handlers[kind.name] = Handler(
            run=parsed, max_attempts=max_attempts or self.default_max_attempts, on_dead=on_dead
        )

    def every(self, seconds: float, kind: JobKind[Payload], *, name: str | None = None) -> None:
        self.periodic.append(Periodic(name=name or kind.name, kind=kind, every_seconds=seconds))

    def attempt_limits(self) -> AttemptLimits:
        return AttemptLimits(
            by_kind={name: handler.max_attempts for name, handler in self.handlers.items()},
            default=self.default_max_attempts,
        )
