"""Page latency of the operators' view (`/ops`) over N bulk-seeded requests.

Seeds N requests over 10 institutions (one inbox row and one finished job each), signs in with
an admin token and times each page through the app (TestClient, in process), printing p50 and
the worst of `--rounds` loads. The overview's counts are kept for ILLBRIDGE_METRICS_CACHE_SECONDS
(15 s here), so its p50 is the kept answer and its worst the counting one.

    .venv/bin/python -m bench.ops --requests 200000 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/ops_bench
    .venv/bin/python -m bench.ops --requests 100000            # a temporary SQLite file

The database must be empty (it is migrated here).
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from app.borrowing.models import BorrowingRequest, InboundMessage
from app.config import Settings
from app.db import create_db_engine, write_session
from app.institutions import service
from app.institutions.models import Institution
from app.jobs.models import Job
from app.main import create_app
from app.migrations import upgrade
from app.timeutil import utcnow

STATES = ["received", "exported", "shipped", "in_library", "on_loan", "returned", "closed"]
INSTITUTIONS = 10
CHUNK = 5000


def seed(engine: Engine, count: int) -> None:
    now = utcnow()
    with engine.begin() as connection:
        for number in range(INSTITUTIONS):
            connection.execute(
                insert(Institution).values(
                    code=f"I{number}", name=f"Library {number}", created_at=now, updated_at=now
                )
            )
        ids = list(connection.execute(select(Institution.id).order_by(Institution.id)).scalars())  # type: ignore[arg-type]
    for start in range(0, count, CHUNK):
        numbers = range(start, min(count, start + CHUNK))
        with engine.begin() as connection:
            request_ids = (
                connection.execute(
                    insert(BorrowingRequest).returning(
                        BorrowingRequest.id,  # type: ignore[arg-type]
                        sort_by_parameter_order=True,
                    ),
                    [
                        {
                            "institution_id": ids[n % INSTITUTIONS],
                            "alma_request_id": f"A{n}",
                            "origin": "api",
                            "citation": {"title": f"Title {n}"},
                            "state": STATES[(n // INSTITUTIONS) % len(STATES)],
                            "needs_attention": n % 997 == 0,
                            "item_barcode": f"B{n}",
                            "created_at": now,
                            "updated_at": now,
                        }
                        for n in numbers
                    ],
                )
                .scalars()
                .all()
            )
            pairs = list(zip(numbers, request_ids, strict=True))
            connection.execute(
                insert(InboundMessage),
                [
                    {
                        "institution_id": ids[n % INSTITUTIONS],
                        "source": "iso18626",
                        "external_id": f"m{n}",
                        "kind": "request",
                        "outcome": "accepted",
                        "request_id": rid,
                        "summary": {},
                        "received_at": now,
                    }
                    for n, rid in pairs
                ],
            )
            connection.execute(
                insert(Job),
                [
                    {
                        "kind": "worldshare.poll" if n % 3 else "alma.notify",
                        "payload": {},
                        "status": "dead" if n % 5003 == 0 else "succeeded",
                        "institution_id": ids[n % INSTITUTIONS],
                        "request_id": rid,
                        "attempts": 1,
                        "max_attempts": 3,
                        "run_at": now,
                        "created_at": now,
                        "updated_at": now,
                        "finished_at": now,
                    }
                    for n, rid in pairs
                ],
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--database-url")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'ops-bench.db'}"
    upgrade(url)
    engine = create_db_engine(url)
    started = time.monotonic()
    seed(engine, args.requests)
    if url.startswith("postgresql"):
        with engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
    print(f"seeded {args.requests} requests in {time.monotonic() - started:.0f} s on {engine.name}")
    with write_session(engine) as session:
        _token, plain = service.create_token(
            session, name="bench", scopes=["admin"], institution=None
        )
        session.commit()
    settings = Settings(database_url=url, secret_key=Fernet.generate_key().decode(), sandbox=False)
    middle = args.requests // 2
    pages = [
        "/ops",
        "/ops/tasks",
        "/ops/requests",
        "/ops/requests?state=on_loan",
        "/ops/requests?institution=I3&state=on_loan",
        f"/ops/requests?institution=I{middle % INSTITUTIONS}&alma_request_id=A{middle}",
        f"/ops/requests?institution=I{middle % INSTITUTIONS}&item_barcode=B{middle}",
        "/ops/jobs?status=dead",
        "/ops/jobs",
    ]
    with TestClient(create_app(settings), follow_redirects=False) as client:
        form = client.get("/ops/sign-in").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf is not None
        signed_in = client.post("/ops/sign-in", data={"token": plain, "csrf": csrf.group(1)})
        assert signed_in.status_code == 303
        print(f"| page ({args.requests:,} requests, {engine.name}) | p50 ms | worst ms |")
        print("| --- | --- | --- |")
        for page in pages:
            times = []
            for _ in range(args.rounds):
                begun = time.perf_counter()
                answer = client.get(page)
                times.append((time.perf_counter() - begun) * 1000)
                assert answer.status_code == 200, (page, answer.status_code)
            print(f"| `{page}` | {statistics.median(times):.1f} | {max(times):.1f} |")


if __name__ == "__main__":
    main()
