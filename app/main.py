"""The application factory. Nothing here runs at import: `create_app()` and the lifespan build
the engine, the one shared HTTP client, the job context and, unless disabled, an in-process worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from anyio import to_thread
from fastapi import FastAPI

from app.alma.iso18626 import MAX_MESSAGE_BYTES
from app.alma.iso_endpoint import router as iso18626_router
from app.api import router as api_router
from app.config import Settings, get_settings
from app.errors import install_error_handlers
from app.institutions.secrets import check_stored_secrets
from app.jobs.context import JobContext, open_context
from app.jobs.setup import build_registry
from app.jobs.worker import Worker
from app.observability import BodySizeLimitMiddleware, Metrics, RequestContextMiddleware

API_DESCRIPTION = """\
illbridge sits between Ex Libris **Alma** and OCLC **WorldShare ILL**: it exports the citation of
every unfilled borrowing request to WorldShare (never patron data), keeps the two linked, and
shows every step. Authenticate with `Authorization: Bearer <token>` (`illbridge token create`).
Every error answers with `{"error": "<code>", "detail": "<message>"}`.
"""


def _body_limit_for(path: str) -> int | None:
    """ISO 18626 messages are small; anything larger is refused before it is read."""
    return MAX_MESSAGE_BYTES if path.startswith("/iso18626/") else None


@dataclass
class Services:
    """What routes reach through `request.app.state.services`."""

    context: JobContext
    worker: Worker | None

    def wake_worker(self) -> None:
        """Nudge the in-process worker (if any) to claim new jobs now; safe from any thread."""
        if self.worker is not None:
            self.worker.wake()


def create_app(settings: Settings | None = None, *, run_worker: bool = False) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_context(settings, metrics) as context:
            await to_thread.run_sync(check_stored_secrets, context.engine, context.secrets)
            worker = Worker(context, build_registry(settings)) if run_worker else None
            app.state.services = Services(context=context, worker=worker)
            stop = asyncio.Event()
            worker_task = asyncio.create_task(worker.run(stop)) if worker else None
            try:
                yield
            finally:
                stop.set()
                if worker_task is not None:
                    await worker_task

    app = FastAPI(
        title="illbridge",
        version="0.1.0",
        summary="Alma ⇄ OCLC WorldShare ILL bridge",
        description=API_DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(api_router)
    app.include_router(iso18626_router)
    if settings.sandbox:
        from app.sandbox.mount import mount_sandboxes

        mount_sandboxes(app)
    app.add_middleware(
        BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes, limit_for=_body_limit_for
    )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    return app
