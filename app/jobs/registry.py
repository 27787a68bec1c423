"""What the worker can run: handlers by job kind, and the periodic schedule."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlmodel import Session

from app.jobs.queue import ClaimedJob

if TYPE_CHECKING:
    from app.jobs.context import JobContext

# The handler's last database step, committed in the transaction that marks the job succeeded.
Finish = Callable[[Session], object]
Run = Callable[["JobContext", ClaimedJob], Awaitable[Finish | None]]
# Called in the transaction that marks the job dead, to flag what it was working for.
OnDead = Callable[[Session, ClaimedJob, str], None]


class PermanentJobError(Exception):
    """The handler knows retrying cannot help; the message must be free of secrets and PII."""


@dataclass(frozen=True)
class Handler:
    run: Run
    on_dead: OnDead | None = None


# The dedupe key of a periodic job's run: the prefix, its name and the period's number.
PERIODIC_KEY_PREFIX = "periodic:"


@dataclass(frozen=True)
class Periodic:
    """A job enqueued once per `every_seconds`, however many workers run."""

    name: str
    kind: str
    every_seconds: float
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass
class Registry:
    handlers: dict[str, Handler] = field(default_factory=dict)
    periodic: list[Periodic] = field(default_factory=list)

    def add(self, kind: str, run: Run, *, on_dead: OnDead | None = None) -> None:
        if kind in self.handlers:
            raise ValueError(f"a handler for {kind!r} is already registered")
        self.handlers[kind] = Handler(run=run, on_dead=on_dead)

    def every(self, seconds: float, kind: str, *, name: str | None = None) -> None:
        self.periodic.append(Periodic(name=name or kind, kind=kind, every_seconds=seconds))
