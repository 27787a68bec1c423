"""Webhook ingress: signed Alma LOAN webhooks at concurrency 32 to `illbridge serve --no-worker`
(one process), for two mixes, on SQLite and PostgreSQL, beside a bare ASGI app on the same
uvicorn; then a burst of distinct relevant webhooks at concurrency 64.

* ignored: loans of ordinary items (a library that is not a resource-sharing one): no write.
* relevant: loans of linked temporary items, each a distinct event: stored and queued.

Both servers run at once and are measured in turns (bare, ignored, relevant) for --rounds
rounds, so a busy moment of the shared machine falls on all three alike. Prints the medians of
req/s, p50 and p99 over the rounds, the non-2xx summed, the ratio of the medians to the bare app,
then the burst's 5xx count and how many of its events were stored.

    .venv/bin/python -m bench.webhooks --requests 4000 --burst 10000
    .venv/bin/python -m bench.webhooks --postgres-url postgresql+psycopg://postgres@127.0.0.1/bench

The load generator (`bench/loadgen.py`) speaks HTTP/1.1 over keep-alive sockets itself, so the
client's own cost stays small beside the server's. Run from the repository's root.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from cryptography.fernet import Fernet
from sqlalchemy import func, text
from sqlmodel import select

from app.borrowing.models import BorrowingRequest, InboundMessage
from app.config import Settings
from app.db import create_db_engine, read_session, write_session
from app.migrations import downgrade, upgrade
from bench.loadgen import Result, load
from tests.support.factories import make_institution
from tests.support.processes import ROOT, free_port

SECRET = "bench-webhook-secret"  # noqa: S105 (a throwaway bench secret)
CODE = "BENCH"
PATH = f"/webhooks/alma/{CODE}"
LINKED_ITEMS = 500


def signature(body: bytes) -> str:
    return base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()


def loan_event(event_id: int, barcode: str, library: str) -> bytes:
    document = {
        "id": str(event_id),
        "action": "LOAN",
        "institution": {"value": "01BENCH_INST", "desc": "Bench University"},
        "time": "2026-12-01T10:00:00.000Z",
        "event": {"value": "LOAN_CREATED", "desc": "Loan created"},
        "item_loan": {
            "loan_id": str(9_000_000_000 + event_id),
            "library": {"value": library, "desc": library},
            "user_id": "bench-patron",
            "item_barcode": barcode,
            "due_date": "2027-01-08T23:59:00Z",
            "loan_status": "ACTIVE",
            "item_id": str(8_000_000_000 + event_id),
            "request_id": {"value": "", "link": None},
        },
        "bib": None,
        "holding": None,
        "item": None,
        "portfolio": None,
        "representation": None,
    }
    return json.dumps(document, separators=(",", ":")).encode()


def http_request(body: bytes, port: int) -> bytes:
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"X-Exl-Signature: {signature(body)}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def mix(kind: str, count: int, start: int) -> Iterator[bytes]:
    for n in range(start, start + count):
        if kind == "ignored":
            yield loan_event(n, f"3903100{n:07d}", "MAIN")
        else:
            yield loan_event(n, f"ILL{n % LINKED_ITEMS + 1:09d}", "ILL")


@contextmanager
def serving(command: list[str], env: dict[str, str], port: int) -> Iterator[None]:
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit(f"{command} did not start") from None
                time.sleep(0.2)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


def prepare(database_url: str, key: str) -> None:
    if database_url.startswith("postgresql"):
        downgrade(database_url, "base")
    upgrade(database_url)
    settings = Settings(database_url=database_url, secret_key=key)
    engine = create_db_engine(database_url)
    make_institution(
        engine,
        settings,
        code=CODE,
        alma={"webhook_secrets": [SECRET], "resource_sharing_libraries": ["ILL"]},
    )
    with write_session(engine) as session:
        institution_id = session.exec(text("SELECT id FROM institution")).scalar_one()
        for n in range(1, LINKED_ITEMS + 1):
            session.add(
                BorrowingRequest(
                    institution_id=institution_id,
                    alma_request_id=f"BENCH-{n}",
                    citation={"title": "Bench"},
                    state="in_library",
                    item_barcode=f"ILL{n:09d}",
                )
            )
        session.commit()
    engine.dispose()


def stored_webhooks(database_url: str) -> int:
    engine = create_db_engine(database_url)
    with read_session(engine) as session:
        count = session.exec(select(func.count()).where(InboundMessage.source == "webhook")).one()
    engine.dispose()
    return int(count)


def run_backend(name: str, database_url: str, args: argparse.Namespace) -> list[str]:
    """Rounds of bare, ignored, relevant, one after the other, so the three see the same
    machine; then the burst."""
    key = Fernet.generate_key().decode()
    prepare(database_url, key)
    port, bare_port = free_port(), free_port()
    env = {
        **os.environ,
        "ILLBRIDGE_DATABASE_URL": database_url,
        "ILLBRIDGE_SECRET_KEY": key,
        "ILLBRIDGE_LOG_LEVEL": "WARNING",
        "ILLBRIDGE_SANDBOX": "false",
    }
    command = [sys.executable, "-m", "app.cli", "serve", "--no-worker", "--port", str(port)]
    bare_command = [
        *(sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--port", str(bare_port)),
        *("--log-level", "warning", "--no-access-log"),
    ]
    results: dict[str, list[Result]] = {"bare": [], "ignored": [], "relevant": []}
    next_id = 1
    with serving(bare_command, dict(os.environ), bare_port), serving(command, env, port):
        for kind in ("ignored", "relevant"):
            warm = [http_request(b, port) for b in mix(kind, 200, 10_000_000 + next_id)]
            load(port, warm, args.concurrency)
        # The bare app answers several times faster: more requests keep its rounds as long.
        bare = [http_request(b, bare_port) for b in mix("ignored", 5 * args.requests, 1)]
        for _ in range(args.rounds):
            results["bare"].append(load(bare_port, bare, args.concurrency))
            for kind in ("ignored", "relevant"):
                requests = [http_request(b, port) for b in mix(kind, args.requests, next_id)]
                next_id += args.requests
                results[kind].append(load(port, requests, args.concurrency))
        burst_from = next_id + 20_000_000
        before = stored_webhooks(database_url)
        burst = [http_request(b, port) for b in mix("relevant", args.burst, burst_from)]
        result = load(port, burst, 64)
        stored = stored_webhooks(database_url) - before
    bare_rate = statistics.median(r.rate for r in results["bare"])
    rows = [row(f"bare ASGI app, {name}", "-", results["bare"], bare_rate)]
    rows += [
        row(f"illbridge {name}", kind, results[kind], bare_rate) for kind in ("ignored", "relevant")
    ]
    rows.append(
        f"burst {name}: {args.burst} distinct relevant webhooks at concurrency 64: "
        f"{result.rate:,.0f} req/s, p99 {result.percentile(0.99):.1f} ms, "
        f"5xx {result.count(500, 600)}, non-2xx {len(result.statuses) - result.count(200, 300)}, "
        f"stored {stored}"
    )
    return rows


def row(target: str, kind: str, rounds: list[Result], bare_rate: float) -> str:
    """Medians over the rounds; non-2xx summed."""
    rate = statistics.median(r.rate for r in rounds)
    p50 = statistics.median(r.percentile(0.5) for r in rounds)
    p99 = statistics.median(r.percentile(0.99) for r in rounds)
    failed = sum(len(r.statuses) - r.count(200, 300) for r in rounds)
    return (
        f"| {target:<26} | {kind:<8} | {rate:>8,.0f} | {p50:>6.1f} | {p99:>6.1f} | {failed:>7} | "
        f"{100 * rate / bare_rate:>6.1f} % |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000, help="per mix and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--postgres-url", help="an empty PostgreSQL database to use (reset)")
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    args = parser.parse_args()
    for option in ("requests", "rounds", "concurrency", "burst"):
        if getattr(args, option) < 1:
            parser.error(f"--{option} must be at least 1")

    lines = [
        f"concurrency {args.concurrency}, {args.requests} requests per mix and round, "
        f"medians of {args.rounds} rounds; load average {os.getloadavg()[0]:.1f} at the start",
        "| target                     | mix      |    req/s | p50 ms | p99 ms | non-2xx "
        "| of bare  |",
        "|----------------------------|----------|---------:|-------:|-------:|--------:"
        "|---------:|",
    ]
    bursts = []
    with tempfile.TemporaryDirectory() as tmp:
        backends = []
        if args.only in (None, "sqlite"):
            backends.append(("sqlite", f"sqlite:///{tmp}/bench.db"))
        if args.postgres_url and args.only in (None, "postgresql"):
            backends.append(("postgresql", args.postgres_url))
        for name, url in backends:
            rows = run_backend(name, url, args)
            lines.extend(rows[:-1])
            bursts.append(rows[-1])
    lines.append(f"load average {os.getloadavg()[0]:.1f} at the end")
    print("\n".join([*lines, *bursts]))


if __name__ == "__main__":
    main()
