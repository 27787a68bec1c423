"""A worker process of its own (`illbridge worker`): the API's context, no HTTP server."""

from __future__ import annotations

import asyncio

from app.config import Settings
from app.institutions.service import warn_of_iso18626_opt_outs
from app.jobs.context import open_context
from app.jobs.setup import build_registry
from app.jobs.worker import Worker
from app.observability import Metrics


async def run_worker_process(settings: Settings, stop: asyncio.Event) -> None:
    async with open_context(settings, Metrics()) as context:
        await context.read(warn_of_iso18626_opt_outs)
        await Worker(context, build_registry(settings)).run(stop)
