"""The application factory. Nothing here runs at import: `create_app()` and the lifespan build
the process's runtime (engine, the one shared HTTP client, secrets) and, unless disabled, an
in-process worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from starlette.types import ASGIApp

from app.alma.iso18626 import MAX_MESSAGE_BYTES
from app.api import router as api_router
from app.api.health import ReadinessProbe, RecentReads
from app.api.iso18626 import router as iso18626_router
from app.api.webhook_intake import WebhookIntake
from app.api.webhooks import MAX_WEBHOOK_BYTES, ListenerFirst
from app.api.webhooks import PATH_PREFIX as WEBHOOK_PATH_PREFIX
from app.api.webhooks import router as webhooks_router
from app.config import Settings, get_settings
from app.errors import install_error_handlers
from app.jobs.worker import Worker
from app.observability import BodySizeLimitMiddleware, Metrics, RequestContextMiddleware
from app.ops import mount_ops
from app.runtime import Runtime, open_runtime
from app.workflows.registry import new_worker

API_DESCRIPTION = """\
illbridge sits between Ex Libris **Alma** and OCLC **WorldShare ILL**: it exports the citation of
every unfilled borrowing request to WorldShare (never patron data), keeps the two linked, and
shows every step. Authenticate with `Authorization: Bearer <token>` (`illbridge token create`).
Every error answers with `{"error": "<code>", "detail": "<message>"}`.
"""


# FastAPI's native OpenTelemetry instrumentation, off unless asked for: with no provider set it
# still checks for one on every request and wraps every operation.
_NO_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}


def _body_limit_for(path: str) -> int | None:
    """ISO 18626 messages and Alma's events are small; larger bodies are refused unread (the
    listener's POST is answered before this layer and keeps the same limit itself)."""
    if path.startswith(WEBHOOK_PATH_PREFIX):
        return MAX_WEBHOOK_BYTES
    return MAX_MESSAGE_BYTES if path.startswith("/iso18626/") else None


@dataclass
class Services:
    """What routes reach through `request.app.state.services`."""

    runtime: Runtime
    worker: Worker[Runtime] | None
    readiness: ReadinessProbe
    webhook_intake: WebhookIntake

    def wake_worker(self) -> None:
        """Nudge the in-process worker (if any) to claim new jobs now; safe from any thread."""
        if self.worker is not None:
            self.worker.wake()


class IllbridgeAPI(FastAPI):
    """FastAPI with two layers ahead of its own: every request's context (its id and timing),
    then Alma's webhook listener, the service's one hot path (`app.api.webhooks`). Starlette
    builds the stack on the first request; `state.metrics` is set by then."""

    def build_middleware_stack(self) -> ASGIApp:
        listener_first = ListenerFirst(super().build_middleware_stack())
        return RequestContextMiddleware(listener_first, metrics=self.state.metrics)


def create_app(settings: Settings | None = None, *, run_worker: bool = False) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics(stats_max_age_seconds=settings.metrics_cache_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_runtime(settings, metrics) as runtime:
            worker = new_worker(runtime) if run_worker else None
            readiness = ReadinessProbe(settings)
            webhook_intake = WebhookIntake(runtime.engine, runtime.secrets)
            app.state.services = Services(
                runtime=runtime,
                worker=worker,
                readiness=readiness,
                webhook_intake=webhook_intake,
            )
            stop = asyncio.Event()
            worker_task = asyncio.create_task(worker.run(stop)) if worker else None
            try:
                yield
            finally:
                stop.set()
                readiness.close()
                webhook_intake.close()
                if worker_task is not None:
                    await worker_task

    app = IllbridgeAPI(
        title="illbridge",
        version="0.1.0",
        summary="Alma ⇄ OCLC WorldShare ILL bridge",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        telemetry=None if settings.opentelemetry else _NO_TELEMETRY,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.recent_stats = RecentReads(settings.stats_cache_seconds)
    install_error_handlers(app)
    app.include_router(api_router)
    app.include_router(iso18626_router)
    app.include_router(webhooks_router)
    mount_ops(app)
    if settings.sandbox:
        from app.sandbox.bridge_clock import router as bridge_clock_router
        from app.sandbox.mount import mount_sandboxes

        app.include_router(bridge_clock_router)
        mount_sandboxes(app)
    app.add_middleware(
        BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes, limit_for=_body_limit_for
    )
    return app
