"""Lists, searches and counts at a consortium's scale: N borrowing requests (with N/5 jobs and
N/50 staff tasks) seeded in bulk, then every list, search and count of the REST API and the
dashboard asked at concurrency 4 of one `illbridge serve --no-worker` process over HTTP.

Prints p50/p95 per query, for each backend:

    .venv/bin/python -m bench.lists --backend postgres --requests 1000000
    .venv/bin/python -m bench.lists --backend sqlite --requests 100000

PostgreSQL: a database `illbridge_bench_lists` on the server of ILLBRIDGE_TEST_POSTGRES_URL
(or --postgres-url), seeded with COPY and kept: a second run with the same --requests reuses it
(--reseed starts again). SQLite: a file under var/ seeded with executemany. The calls go
through `bench/loadgen.py`'s keep-alive client, which costs the 2-core machine little beside the
server (httpx from threads took about a core of it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from cryptography.fernet import Fernet
from sqlalchemy import func, insert, text
from sqlalchemy.engine import Engine, make_url
from sqlmodel import select

from app.borrowing.models import BorrowingRequest
from app.borrowing.tasks import StaffTask, TaskKind
from app.config import Settings
from app.db import create_db_engine, read_session
from app.institutions.models import Institution
from app.jobs.models import Job
from app.migrations import upgrade
from bench.loadgen import get, load
from tests.support.factories import make_institution, make_token
from tests.support.processes import ROOT, free_port

INSTITUTIONS = ["FSU", *(f"M{n:02d}" for n in range(1, 10))]  # FSU holds 30 %, the rest 7.8 %
STATES = [  # a consortium's year: most requests are done with
    ("closed", 0.55),
    ("on_loan", 0.10),
    ("exported", 0.06),
    ("shipped", 0.04),
    ("in_library", 0.03),
    ("returned", 0.05),
    ("renewal_requested", 0.01),
    ("received", 0.01),
    ("unfilled", 0.08),
    ("cancelled", 0.07),
]
JOB_STATUSES = [("succeeded", 0.97), ("queued", 0.015), ("running", 0.005), ("dead", 0.01)]
JOB_KINDS = ["worldshare.export", "worldshare.poll", "alma.notify"]
CITATION = json.dumps({"title": "The Book of Tea", "author": "Okakura Kakuzo"})
SECRET_KEY_FILE = "bench-lists.key"  # noqa: S105 (a file name)


def _pick(rng: random.Random, weighted: list[tuple[str, float]]) -> str:
    return rng.choices([value for value, _ in weighted], [w for _, w in weighted])[0]


def _institution_of(rng: random.Random, ids: list[int]) -> int:
    return ids[0] if rng.random() < 0.3 else rng.choice(ids[1:])


def request_rows(n: int, ids: list[int], now: datetime) -> Iterator[dict[str, Any]]:
    """Requests 1..n, older ids first, spread over the past year."""
    rng = random.Random(12)
    for i in range(1, n + 1):
        state = _pick(rng, STATES)
        created = now - timedelta(days=365) + timedelta(seconds=i * 365 * 86400 / n)
        updated = min(now, created + timedelta(days=rng.randint(0, 30)))
        if state in ("received", "exported", "shipped", "renewal_requested"):
            updated = created
        with_item = state in ("on_loan", "returned", "closed", "renewal_requested", "in_library")
        yield {
            "id": i,
            "institution_id": _institution_of(rng, ids),
            "alma_request_id": f"A{i}",
            "origin": "iso18626",
            "citation": CITATION,
            "state": state,
            "worldshare_request_id": None if state == "received" else str(90_000_000 + i),
            "item_barcode": f"ILL{i:09d}" if with_item else None,
            "needs_attention": rng.random() < 0.01,
            "created_at": created,
            "updated_at": updated,
            "closed_at": updated if state in ("closed", "unfilled", "cancelled") else None,
        }


def job_rows(n: int, ids: list[int], requests: int, now: datetime) -> Iterator[dict[str, Any]]:
    rng = random.Random(13)
    for i in range(1, n + 1):
        request_id = min(requests, i * 5)
        at = now - timedelta(days=30) + timedelta(seconds=i * 30 * 86400 / n)
        yield {
            "id": i,
            "kind": rng.choice(JOB_KINDS),
            "payload": "{}",
            "status": _pick(rng, JOB_STATUSES),
            "institution_id": _institution_of(rng, ids),
            "request_id": request_id,
            "attempts": 1,
            "max_attempts": 8,
            "run_at": at,
            "created_at": at,
            "updated_at": at,
        }


def task_rows(n: int, ids: list[int], requests: int, now: datetime) -> Iterator[dict[str, Any]]:
    rng = random.Random(14)
    kinds = list(TaskKind)
    for i in range(1, n + 1):
        opened = now - timedelta(days=365) + timedelta(seconds=i * 365 * 86400 / n)
        is_open = rng.random() < 0.2
        yield {
            "id": i,
            "institution_id": _institution_of(rng, ids),
            "request_id": min(requests, i * 50),
            "kind": rng.choice(kinds).value,
            "reason": "Seeded for the list benchmark",
            "detail": "{}",
            "opened_at": opened,
            "closed_at": None if is_open else opened + timedelta(days=2),
            "resolution": None if is_open else "resolved by bench",
        }


def _copy(engine: Engine, table: str, rows: Iterator[dict[str, Any]]) -> None:
    """PostgreSQL's COPY, through psycopg's row writer."""
    first = next(rows)
    columns = list(first)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:  # type: ignore[attr-defined]
            copy.write_row([first[c] for c in columns])
            for row in rows:
                copy.write_row([row[c] for c in columns])
        # The table names are this module's constants.
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"  # noqa: S608
        )
        raw.commit()
    finally:
        raw.close()


def _executemany(engine: Engine, model: Any, rows: Iterator[dict[str, Any]]) -> None:
    """SQLite: executemany in batches, one transaction. JSON columns get their Python value."""
    json_columns = {"citation", "payload", "detail"}
    batch: list[dict[str, Any]] = []
    with engine.begin() as connection:
        for row in rows:
            batch.append({k: json.loads(v) if k in json_columns else v for k, v in row.items()})
            if len(batch) == 20_000:
                connection.execute(insert(model), batch)
                batch.clear()
        if batch:
            connection.execute(insert(model), batch)


def seed(engine: Engine, settings: Settings, requests: int) -> None:
    now = datetime.now(UTC)
    ids = []
    for code in INSTITUTIONS:
        institution = make_institution(engine, settings, code)
        assert institution.id is not None
        ids.append(institution.id)
    jobs, tasks = requests // 5, requests // 50
    started = time.perf_counter()
    if engine.dialect.name == "postgresql":
        _copy(engine, "borrowing_request", request_rows(requests, ids, now))
        _copy(engine, "job", job_rows(jobs, ids, requests, now))
        _copy(engine, "staff_task", task_rows(tasks, ids, requests, now))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
    else:
        _executemany(engine, BorrowingRequest, request_rows(requests, ids, now))
        _executemany(engine, Job, job_rows(jobs, ids, requests, now))
        _executemany(engine, StaffTask, task_rows(tasks, ids, requests, now))
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
    took = time.perf_counter() - started
    print(f"seeded {requests} requests, {jobs} jobs, {tasks} tasks in {took:.0f} s")


def _seeded(engine: Engine) -> int:
    try:
        with read_session(engine) as session:
            return int(session.exec(select(func.count()).select_from(BorrowingRequest)).one())
    except Exception:
        return 0


def postgres_database(server_url: str, name: str, fresh: bool) -> str:
    url = make_url(server_url)
    admin = create_db_engine(url.set(database="postgres").render_as_string(hide_password=False))
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        exists = connection.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
        ).first()
        if exists and fresh:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        if not exists or fresh:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def prepare(database_url: str, key: str, requests: int, reseed: bool) -> tuple[Settings, bool]:
    settings = Settings(database_url=database_url, secret_key=key, sandbox=False)
    upgrade(database_url)
    engine = create_db_engine(database_url)
    try:
        count = _seeded(engine)
        if count == requests and not reseed:
            print(f"reusing {count} seeded requests")
            return settings, False
        if count:
            raise SystemExit(f"{database_url} holds {count} requests; use --reseed")
        seed(engine, settings, requests)
        return settings, True
    finally:
        engine.dispose()


class Server:
    """One `illbridge serve --no-worker` process on the bench database."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        env = {key: value for key, value in os.environ.items() if not key.startswith("ILLBRIDGE_")}
        env |= {
            "ILLBRIDGE_DATABASE_URL": settings.database_url,
            "ILLBRIDGE_SECRET_KEY": settings.secret_key.get_secret_value(),
            "ILLBRIDGE_SANDBOX": "false",
            "ILLBRIDGE_LOG_LEVEL": "WARNING",
        }
        command = [sys.executable, "-m", "app.cli", "serve", "--no-worker", "--port"]
        self.popen = subprocess.Popen([*command, str(self.port)], cwd=ROOT, env=env)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        self.close()
        raise SystemExit("the service did not start")

    def close(self) -> None:
        self.popen.terminate()
        self.popen.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], required=True)
    parser.add_argument("--requests", type=int)
    parser.add_argument("--calls", type=int, default=200, help="calls per query")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--postgres-url", default=os.environ.get("ILLBRIDGE_TEST_POSTGRES_URL"))
    parser.add_argument("--reseed", action="store_true")
    args = parser.parse_args()
    requests = args.requests or (1_000_000 if args.backend == "postgres" else 100_000)
    var = ROOT / "var"
    var.mkdir(exist_ok=True)
    key_file = var / SECRET_KEY_FILE
    if not key_file.exists():
        key_file.write_text(Fernet.generate_key().decode())
    key = key_file.read_text().strip()
    if args.backend == "postgres":
        if not args.postgres_url:
            raise SystemExit("set ILLBRIDGE_TEST_POSTGRES_URL or --postgres-url")
        url = postgres_database(args.postgres_url, "illbridge_bench_lists", args.reseed)
    else:
        path = var / f"bench-lists-{requests}.db"
        if args.reseed and path.exists():
            path.unlink()
        url = f"sqlite:///{path}"
    settings, _ = prepare(url, key, requests, args.reseed)
    engine = create_db_engine(url)
    with read_session(engine) as session:
        fsu = session.exec(select(Institution).where(Institution.code == "FSU")).one()
    admin = {"Authorization": f"Bearer {make_token(engine, ['admin'], name='bench-admin')}"}
    fsu_token = make_token(engine, ["requests:read"], institution=fsu, name="bench-fsu")
    member = {"Authorization": f"Bearer {fsu_token}"}

    rng = random.Random(7)
    now = datetime.now(UTC)

    def some_id() -> int:
        return rng.randint(1, requests)

    def since(days: float) -> str:
        return (now - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S")

    server = Server(settings)
    queries: list[tuple[str, Callable[[], tuple[str, dict[str, str]]]]] = [
        ("requests (newest first)", lambda: ("/api/v1/requests", admin)),
        (
            "requests ?institution=FSU&state=on_loan",
            lambda: ("/api/v1/requests?institution=FSU&state=on_loan", admin),
        ),
        ("requests ?state=exported", lambda: ("/api/v1/requests?state=exported", admin)),
        (
            "requests ?state=closed, a page deep",
            lambda: (f"/api/v1/requests?state=closed&cursor={_cursor(some_id())}", admin),
        ),
        ("requests ?institution=FSU", lambda: ("/api/v1/requests?institution=FSU", admin)),
        (
            "requests FSU token ?state=in_library",
            lambda: ("/api/v1/requests?state=in_library", member),
        ),
        (
            "requests ?needs_attention=true",
            lambda: ("/api/v1/requests?needs_attention=true", admin),
        ),
        (
            "requests ?institution=FSU&needs_attention=true",
            lambda: ("/api/v1/requests?institution=FSU&needs_attention=true", admin),
        ),
        (
            "requests ?alma_request_id=…",
            lambda: (f"/api/v1/requests?alma_request_id=A{some_id()}", admin),
        ),
        (
            "requests ?worldshare_request_id=…",
            lambda: (f"/api/v1/requests?worldshare_request_id={90_000_000 + some_id()}", admin),
        ),
        (
            "requests ?item_barcode=…",
            lambda: (f"/api/v1/requests?item_barcode=ILL{some_id():09d}", admin),
        ),
        (
            "requests ?updated_since=1 day ago",
            lambda: (f"/api/v1/requests?updated_since={since(1)}", admin),
        ),
        (
            "requests ?updated_since=30 days ago",
            lambda: (f"/api/v1/requests?updated_since={since(30)}", admin),
        ),
        ("request by id (with timeline)", lambda: (f"/api/v1/requests/{some_id()}", admin)),
        ("stats (admin)", lambda: ("/api/v1/stats", admin)),
        ("stats (FSU token)", lambda: ("/api/v1/stats", member)),
        ("jobs ?status=dead", lambda: ("/api/v1/jobs?status=dead", admin)),
        ("jobs ?status=queued", lambda: ("/api/v1/jobs?status=queued", admin)),
        ("jobs ?kind=alma.notify", lambda: ("/api/v1/jobs?kind=alma.notify", admin)),
        ("jobs FSU token ?status=dead", lambda: ("/api/v1/jobs?status=dead", member)),
        ("metrics", lambda: ("/metrics", {})),
        ("tasks, oldest first (admin)", lambda: ("/api/v1/tasks", admin)),
        ("tasks, FSU token", lambda: ("/api/v1/tasks", member)),
        ("tasks ?kind=dead_job", lambda: ("/api/v1/tasks?kind=dead_job", admin)),
    ]
    try:
        print(
            f"{engine.dialect.name}, {requests} requests, {requests // 5} jobs, "
            f"{requests // 50} tasks; {args.calls} calls per query at concurrency "
            f"{args.concurrency}; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
        )
        print(f"| {'query':<50} | {'p50 ms':>7} | {'p95 ms':>7} |")
        print(f"|{'-' * 52}|{'-' * 9}|{'-' * 9}|")
        for name, make in queries:
            requests_ = [get(*make(), server.port) for _ in range(args.calls)]
            load(server.port, requests_[:1], 1)  # warm-up (and the first read of a cached count)
            result = load(server.port, requests_, args.concurrency)
            if result.count(200, 300) != len(result.statuses):
                raise SystemExit(f"{name}: statuses {sorted(set(result.statuses))}")
            _row(name, [1000 * latency for latency in result.latencies])
        database_only(engine, fsu.id, requests)
    finally:
        server.close()
        engine.dispose()


def database_only(engine: Engine, fsu_id: int | None, requests: int) -> None:
    """The same lists' SQL alone, one at a time on one thread: what the indexes decide,
    apart from HTTP, the ORM and the other processes on the machine's cores."""
    from sqlalchemy import select as core_select

    from app.jobs.queue import JOBS

    table = BorrowingRequest.__table__  # type: ignore[attr-defined]
    newest = table.c.id.desc()
    statements = {
        "requests ?institution=FSU&state=on_loan": core_select(table).where(
            table.c.institution_id == fsu_id, table.c.state == "on_loan"
        ),
        "requests ?state=exported": core_select(table).where(table.c.state == "exported"),
        "requests ?state=closed, a page deep": core_select(table).where(
            table.c.state == "closed", table.c.id < requests // 2
        ),
        "requests ?institution=FSU&needs_attention=true": core_select(table).where(
            table.c.institution_id == fsu_id, table.c.needs_attention.is_(True)
        ),
        "requests ?alma_request_id=…": core_select(table).where(
            table.c.alma_request_id == f"A{requests // 3}"
        ),
        "requests ?item_barcode=…": core_select(table).where(
            table.c.item_barcode == f"ILL{requests // 3:09d}"
        ),
        "jobs ?status=dead": core_select(JOBS).where(JOBS.c.status == "dead"),
        "jobs ?kind=alma.notify": core_select(JOBS).where(JOBS.c.kind == "alma.notify"),
    }
    print(f"\n| {'the SQL alone, one thread':<50} | {'p50 ms':>7} | {'p95 ms':>7} |")
    print(f"|{'-' * 52}|{'-' * 9}|{'-' * 9}|")
    with engine.connect() as connection:
        for name, statement in statements.items():
            order = JOBS.c.id.desc() if name.startswith("jobs") else newest
            query = statement.order_by(order).limit(51)
            latencies = []
            for _ in range(50):
                started = time.perf_counter()
                connection.execute(query).all()
                latencies.append((time.perf_counter() - started) * 1000)
            _row(name, latencies)
        count = core_select(table.c.state, func.count()).group_by(table.c.state)
        latencies = []
        for _ in range(5):
            started = time.perf_counter()
            connection.execute(count).all()
            latencies.append((time.perf_counter() - started) * 1000)
        _row("count by state, uncached (what stats avoids)", latencies)


def _cursor(before: int) -> str:
    from app.api.pagination import encode_cursor

    return encode_cursor(before)


def _row(name: str, latencies: list[float]) -> None:
    p50 = statistics.median(latencies)
    p95 = statistics.quantiles(latencies, n=20)[18]
    print(f"| {name:<50} | {p50:>7.1f} | {p95:>7.1f} |", flush=True)


if __name__ == "__main__":
    main()
