"""A real worker process for tests: the production `Worker` and `open_runtime`, test handlers.

    python -m tests.support.worker_process

Configured like `illbridge worker` (ILLBRIDGE_* settings), plus:
  ILLBRIDGE_TEST_RECORD_FILE   handlers append "<job id> <pid>" (ticks: "<job id> <pid> <period>")
  ILLBRIDGE_TEST_TICK_SECONDS  when set, a periodic `test.tick` job every that many seconds
SIGTERM or SIGINT stops it gracefully, as for `illbridge worker`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

from sqlalchemy import text

from app.config import Settings
from app.db import read_session
from app.jobs.queue import ClaimedJob
from app.jobs.registry import Registry
from app.observability import Metrics, configure_logging
from app.runtime import Runtime, open_runtime
from tests.support.jobs import AnyPayload, job_kind, registry_for_tests, worker_for

RECORD_FILE_ENV = "ILLBRIDGE_TEST_RECORD_FILE"
TICK_SECONDS_ENV = "ILLBRIDGE_TEST_TICK_SECONDS"

log = logging.getLogger("illbridge.test_worker")


def append_line(path: Path, line: str) -> None:
    """One write on an O_APPEND file, so lines from several processes never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def build_test_registry(record_file: Path, tick_seconds: float | None) -> Registry:
    async def record(_ctx: Runtime, job: ClaimedJob, _payload: AnyPayload) -> None:
        await asyncio.to_thread(append_line, record_file, f"{job.id} {os.getpid()}")

    async def sleep(ctx: Runtime, job: ClaimedJob, _payload: AnyPayload) -> None:
        log.info("test_sleep_started", extra={"job_id": job.id})
        await asyncio.sleep(float(job.payload["seconds"]))
        await record(ctx, job, _payload)

    async def tick(ctx: Runtime, job: ClaimedJob, _payload: AnyPayload) -> None:
        def period() -> str:
            with read_session(ctx.engine) as session:
                key = session.execute(
                    text("SELECT dedupe_key FROM job WHERE id = :id"), {"id": job.id}
                ).scalar_one()
            return str(key).rsplit(":", 1)[1]

        line = f"{job.id} {os.getpid()} {await asyncio.to_thread(period)}"
        await asyncio.to_thread(append_line, record_file, line)

    registry = registry_for_tests()
    registry.add(job_kind("test.record"), record)
    registry.add(job_kind("test.sleep"), sleep)
    registry.add(job_kind("test.tick"), tick)
    if tick_seconds is not None:
        registry.every(tick_seconds, job_kind("test.tick"))
    return registry


async def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    tick = os.environ.get(TICK_SECONDS_ENV)
    registry = build_test_registry(Path(os.environ[RECORD_FILE_ENV]), float(tick) if tick else None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_runtime(settings, Metrics()) as context:
        await worker_for(context, registry).run(stop)


if __name__ == "__main__":
    asyncio.run(main())
