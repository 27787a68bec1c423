"""A worker process of its own (`illbridge worker`): the API's context, no HTTP server."""

from __future__ import annotations

import asyncio

from anyio import to_thread

from app.config import Settings
from app.institutions.secrets import check_stored_secrets
from app.jobs.context import open_context
from app.jobs.setup import build_registry
from app.jobs.worker import Worker
from app.observability import Metrics


async def run_worker_process(settings: Settings, stop: asyncio.Event) -> None:
    async with open_context(settings, Metrics()) as context:
        await to_thread.run_sync(check_stored_secrets, context.engine, context.secrets)
        await Worker(context, build_registry(settings)).run(stop)
