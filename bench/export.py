"""Export throughput: N borrowing requests exported by a real `illbridge worker` process to the
WorldShare sandbox (its own process) with a configurable latency per Request API call.

Prints exports/second next to the ideal, concurrency ÷ latency, for each round and their median.

    .venv/bin/python -m bench.export --requests 2000 --concurrency 16 --latency-ms 100 --rounds 3
    .venv/bin/python -m bench.export --workers 2           # the same 16 slots over two processes

Run from the repository's root: the sandbox process and the setup are shared with the tests
(`tests/support/processes.py`).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import func
from sqlmodel import select

from app.borrowing.citation import Citation
from app.borrowing.models import RequestEvent
from app.config import Settings
from app.db import create_db_engine, read_session
from app.migrations import upgrade
from tests.support.processes import (
    ROOT,
    SandboxProcess,
    register_requests,
    sandbox_institution,
)


def prepare(settings: Settings, sandbox: str, requests: int) -> None:
    upgrade(settings.database_url)
    engine = create_db_engine(settings.database_url)
    institution = sandbox_institution(engine, settings, sandbox, code="BENCH")
    citation = Citation(title="Benchmarking Interlibrary Loan", author="A. Librarian")
    register_requests(engine, institution, (f"BENCH-{n}" for n in range(requests)), citation)
    engine.dispose()


def exported_events(settings: Settings) -> tuple[int, float | None]:
    engine = create_db_engine(settings.database_url)
    with read_session(engine) as session:
        count, first, last = session.exec(
            select(func.count(), func.min(RequestEvent.at), func.max(RequestEvent.at)).where(
                RequestEvent.kind == "exported"
            )
        ).one()
    engine.dispose()
    span = (last - first).total_seconds() if count > 1 else None
    return int(count), span


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_round(args: argparse.Namespace, sandbox: str, database_url: str) -> tuple[float, float]:
    key = Fernet.generate_key().decode()
    settings = Settings(database_url=database_url, secret_key=key)
    prepare(settings, sandbox, args.requests)
    env = {
        **os.environ,
        "ILLBRIDGE_DATABASE_URL": database_url,
        "ILLBRIDGE_SECRET_KEY": key,
        "ILLBRIDGE_WORKER_CONCURRENCY": str(args.concurrency // args.workers),
        "ILLBRIDGE_LOG_LEVEL": "WARNING",
        "ILLBRIDGE_SANDBOX": "false",
    }
    workers = [
        subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], cwd=ROOT, env=env)
        for _ in range(args.workers)
    ]
    try:
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            count, span = exported_events(settings)
            if count >= args.requests:
                break
            time.sleep(0.25)
        else:
            raise SystemExit(f"only {count} of {args.requests} exported in {args.timeout} s")
        # Start-up included: a worker's whole CPU time over the exports it made.
        worker_cpu = sum(cpu_seconds(worker.pid) for worker in workers)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=30)
    assert span is not None
    # The span runs from the first export to the last: process start-up is left out.
    return (count - 1) / span, 1000 * worker_cpu / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16, help="in all, over the workers")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--database-url", help="PostgreSQL URL of an empty database; default a fresh SQLite file"
    )
    args = parser.parse_args()

    sandbox_process = SandboxProcess()
    sandbox = sandbox_process.url
    sandbox_process.set_faults(latency_ms=args.latency_ms)
    ideal = args.concurrency / (args.latency_ms / 1000)
    rates = []
    try:
        for number in range(1, args.rounds + 1):
            with tempfile.TemporaryDirectory() as tmp:
                url = args.database_url or f"sqlite:///{tmp}/bench.db"
                if args.database_url:
                    reset_postgres(url)
                rate, cpu_ms = run_round(args, sandbox, url)
            rates.append(rate)
            print(
                f"round {number}: {rate:7.1f} exports/s   ideal {ideal:.1f}   "
                f"{100 * rate / ideal:5.1f} % of ideal   worker CPU {cpu_ms:.1f} ms/export"
            )
    finally:
        sandbox_process.stop()
    median = statistics.median(rates)
    backend = "postgresql" if args.database_url else "sqlite"
    print(
        f"median: {median:.1f} exports/s = {100 * median / ideal:.1f} % of ideal "
        f"({args.requests} requests, concurrency {args.concurrency} over {args.workers} "
        f"worker process(es), "
        f"latency {args.latency_ms:g} ms, {backend})"
    )


def reset_postgres(url: str) -> None:
    from app.migrations import downgrade

    downgrade(url, "base")


if __name__ == "__main__":
    main()
