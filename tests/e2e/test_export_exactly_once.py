"""Exactly one WorldShare request per Alma request, through stalls, crashes and lost answers.

WorldShare has no idempotency key, so a create whose answer is lost must never be replayed: the
request is flagged for staff instead, and staff link what they find or ask for a new export.
The slow tests run real `illbridge worker` processes against the WorldShare sandbox served in a
process of its own; the others run the bridge in-process, over real HTTP to the sandbox.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, or_, text
from sqlalchemy.engine import Engine, make_url
from sqlmodel import col, select

from app.borrowing.models import BorrowingRequest, RequestEvent
from app.borrowing.states import RequestState
from app.config import Settings
from app.db import is_sqlite, read_session
from app.jobs.models import Job
from app.main import create_app
from app.sandbox.worldshare import create_worldshare_sandbox
from app.workflows.kinds import EXPORT_TO_WORLDSHARE
from tests.support.bridge import System, running_system, wait_for
from tests.support.factories import bearer, make_token
from tests.support.processes import (
    ILLBRIDGE_WORKER,
    SandboxProcess,
    WorkerProcess,
    free_port,
    register_requests,
    sandbox_institution,
    wait_started,
    worker_env,
)
from tests.support.processes import wait_for as wait_for_workers
from tests.support.servers import run_asgi_in_thread

UNKNOWN = "the WorldShare create may have succeeded; look for reference"
DUPLICATE = "two WorldShare requests exist"
TERMINAL = ("succeeded", "dead")

# Worker processes: a short lease so a takeover comes quickly, no status polling to compete.
WORKER_ENV = {
    "ILLBRIDGE_JOB_LEASE_SECONDS": "2",
    "ILLBRIDGE_JOB_DEADLINE_SECONDS": "1.5",
    "ILLBRIDGE_WORKER_POLL_SECONDS": "0.1",
    "ILLBRIDGE_POLL_DISPATCH_SECONDS": "3600",
    "ILLBRIDGE_JOB_BACKOFF_BASE_SECONDS": "0.1",
    "ILLBRIDGE_JOB_BACKOFF_CAP_SECONDS": "1",
}
# Long enough to stop the sender, check it holds no transaction and see the answer still unsent.
STALL_LATENCY_MS = 2500


# --- reading what the bridge recorded --------------------------------------------------------


def request_row(engine: Engine, alma_request_id: str) -> BorrowingRequest:
    with read_session(engine) as session:
        return session.exec(
            select(BorrowingRequest).where(BorrowingRequest.alma_request_id == alma_request_id)
        ).one()


def event_kinds(engine: Engine, request_id: int | None) -> list[str]:
    with read_session(engine) as session:
        return list(
            session.exec(
                select(RequestEvent.kind)
                .where(RequestEvent.request_id == request_id)
                .order_by(col(RequestEvent.id))
            )
        )


def export_jobs(engine: Engine, request_id: int | None = None) -> list[Job]:
    query = select(Job).where(Job.kind == EXPORT_TO_WORLDSHARE.name)
    if request_id is not None:
        query = query.where(Job.request_id == request_id)
    with read_session(engine) as session:
        return list(session.exec(query.order_by(col(Job.id))))


def exports_settled(engine: Engine, request_id: int | None = None) -> bool:
    jobs = export_jobs(engine, request_id)
    return bool(jobs) and all(job.status in TERMINAL for job in jobs)


def flagged_unknown(request: BorrowingRequest) -> bool:
    reason = request.attention_reason or ""
    return request.needs_attention and reason.startswith(f"{UNKNOWN} {request.alma_request_id} ")


def in_order(kinds: list[str], expected: list[str]) -> bool:
    """`expected` appears in `kinds` in this order, other events between allowed."""
    remaining = iter(kinds)
    return all(kind in remaining for kind in expected)


# --- real processes -------------------------------------------------------------------------


@pytest.fixture
def worldshare_process() -> Iterator[SandboxProcess]:
    sandbox = SandboxProcess()
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start an `illbridge worker` on the test's database; every one is killed at the end."""
    started: list[WorkerProcess] = []

    def start(**env: str) -> WorkerProcess:
        worker = WorkerProcess(
            ILLBRIDGE_WORKER,
            worker_env(settings, **WORKER_ENV | env),
            tmp_path / f"worker-{len(started)}.log",
        )
        started.append(worker)
        wait_started([worker])
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.close()


def process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def holds_a_transaction(engine: Engine) -> bool:
    """Does another client hold a write lock (SQLite) or an open transaction (PostgreSQL)?"""
    if is_sqlite(engine):
        connection = sqlite3.connect(str(make_url(engine.url).database), timeout=0.2)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            connection.close()
    with engine.connect() as connection:
        busy = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND state <> 'idle'"
            )
        ).scalar_one()
    return bool(busy)


def pause_outside_transaction(worker: WorkerProcess, engine: Engine) -> None:
    """SIGSTOP `worker` at a moment it holds no transaction, so other workers are not blocked."""
    for _ in range(200):
        worker.popen.send_signal(signal.SIGSTOP)
        while process_state(worker.pid) not in ("T", "t"):
            time.sleep(0.001)
        if not holds_a_transaction(engine):
            return
        worker.popen.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError("the worker always held a transaction when stopped")


def stop_gracefully(workers: list[WorkerProcess]) -> None:
    for worker in workers:
        worker.popen.send_signal(signal.SIGTERM)
    codes = [worker.popen.wait(timeout=30) for worker in workers]
    assert codes == [0] * len(workers), "\n".join(w.stderr_tail() for w in workers)


def resolve(settings: Settings, engine: Engine, request_id: int, body: dict[str, Any]) -> Any:
    """What staff do in the API: POST /api/v1/requests/{id}/resolve; the answer's JSON."""
    token = make_token(engine, ["admin"], name="staff")
    with TestClient(create_app(settings)) as client:
        response = client.post(
            f"/api/v1/requests/{request_id}/resolve", json=body, headers=bearer(token)
        )
    assert response.status_code == 200, response.text
    return response.json()


def stall_past_the_lease(
    engine: Engine,
    settings: Settings,
    sandbox: SandboxProcess,
    start_worker: Callable[..., WorkerProcess],
    alma_request_id: str,
    *,
    answer: str = "created",
) -> tuple[WorkerProcess, WorkerProcess]:
    """Worker A sends the create and is stopped before the answer reaches it; worker B takes the
    job over once A's lease has run out. Returns (A, still stopped; B) once B has settled the job
    and the sandbox has answered A (`created`, or `refused` with an HTTP 503)."""
    faults: dict[str, Any] = {"latency_ms": STALL_LATENCY_MS}
    if answer == "refused":
        faults["fail_next"] = [{"status": 503, "path": "request"}]
    sandbox.set_faults(**faults)
    institution = sandbox_institution(engine, settings, sandbox.url)
    # A must outlive the stall without timing out: it is the one to learn the answer.
    a = start_worker(ILLBRIDGE_OUTBOUND_TIMEOUT_SECONDS="120")
    register_requests(engine, institution, [alma_request_id])
    wait_for_workers(
        lambda: sandbox.creates_received()[alma_request_id] == 1, 30, "A's create sent", [a]
    )
    sent = time.monotonic()
    pause_outside_transaction(a, engine)
    assert sandbox.stats()["creates"] == 0, "the answer left before A was stopped"

    b = start_worker()
    request_id = request_row(engine, alma_request_id).id
    wait_for_workers(
        lambda: exports_settled(engine, request_id), 30, "B settled the export job", [a, b]
    )
    if answer == "created":
        wait_for_workers(lambda: sandbox.stats()["creates"] == 1, 30, "the sandbox answered", [b])
    else:
        time.sleep(max(0.0, sent + STALL_LATENCY_MS / 1000 + 0.5 - time.monotonic()))
    assert sandbox.creates_received() == Counter({alma_request_id: 1}), "B sent a create"
    [job] = export_jobs(engine, request_id)
    assert (job.status, job.attempts) == ("succeeded", 2)  # B's attempt, after A's
    assert flagged_unknown(request_row(engine, alma_request_id))
    return a, b


@pytest.mark.slow
@pytest.mark.xdist_group("processes")
def test_worker_stopped_past_its_lease_records_its_id_and_no_second_create_is_sent(
    engine: Engine,
    settings: Settings,
    worldshare_process: SandboxProcess,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    a, b = stall_past_the_lease(engine, settings, worldshare_process, start_worker, "STOP-1")

    a.popen.send_signal(signal.SIGCONT)
    wait_for_workers(
        lambda: request_row(engine, "STOP-1").state == "exported", 30, "exported", [a, b]
    )

    request = request_row(engine, "STOP-1")
    assert worldshare_process.created() == {"STOP-1": [request.worldshare_request_id]}
    assert worldshare_process.creates_received() == Counter({"STOP-1": 1})
    assert (request.needs_attention, request.attention_reason) == (False, None)
    kinds = event_kinds(engine, request.id)
    assert in_order(
        kinds,
        [
            "worldshare_create_unknown",  # B found the attempt marked and sent nothing
            "flagged",
            "worldshare_request_linked",  # A, its lease long gone, kept the id it was given
            "flag_cleared",
            "exported",
        ],
    ), kinds
    assert a.logged("job_lease_lost")
    stop_gracefully([a, b])


@pytest.mark.slow
@pytest.mark.xdist_group("processes")
def test_staff_link_before_the_stalled_answer_lands_and_no_false_alarm_follows(
    engine: Engine,
    settings: Settings,
    worldshare_process: SandboxProcess,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    a, b = stall_past_the_lease(engine, settings, worldshare_process, start_worker, "STOP-2")
    flagged = request_row(engine, "STOP-2")
    [found] = worldshare_process.created()["STOP-2"]
    resolved = resolve(settings, engine, flagged.id, {"worldshare_request_id": found})
    assert (resolved["state"], resolved["needs_attention"]) == ("exported", False)

    a.popen.send_signal(signal.SIGCONT)
    wait_for_workers(lambda: a.logged("job_lease_lost"), 30, "A finished its run", [a, b])

    request = request_row(engine, "STOP-2")
    assert (request.state, request.worldshare_request_id) == ("exported", found)
    # The answer A brings back is the request staff linked: nothing to cancel, no task.
    assert (request.needs_attention, request.attention_reason) == (False, None)
    kinds = event_kinds(engine, request.id)
    assert kinds.count("flagged") == 1, kinds
    assert worldshare_process.creates_received() == Counter({"STOP-2": 1})
    stop_gracefully([a, b])


@pytest.mark.slow
@pytest.mark.xdist_group("processes")
def test_stalled_create_refused_with_an_error_leaves_a_task_staff_can_resolve(
    engine: Engine,
    settings: Settings,
    worldshare_process: SandboxProcess,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    a, b = stall_past_the_lease(
        engine, settings, worldshare_process, start_worker, "STOP-3", answer="refused"
    )

    a.popen.send_signal(signal.SIGCONT)
    wait_for_workers(lambda: a.logged("job_lease_lost"), 30, "A finished its run", [a, b])
    request = request_row(engine, "STOP-3")
    assert flagged_unknown(request)
    assert worldshare_process.stats()["creates"] == 0

    # Staff find nothing in WorldShare and ask for a new export: it is sent once.
    resolved = resolve(settings, engine, request.id, {"export_again": True})
    assert (resolved["state"], resolved["needs_attention"]) == ("received", False)
    wait_for_workers(
        lambda: request_row(engine, "STOP-3").state == "exported", 30, "exported", [a, b]
    )
    request = request_row(engine, "STOP-3")
    assert worldshare_process.created() == {"STOP-3": [request.worldshare_request_id]}
    assert not request.needs_attention
    stop_gracefully([a, b])


@pytest.mark.slow
@pytest.mark.xdist_group("processes")
def test_kill_9_during_200_exports_leaves_no_silent_or_duplicate_worldshare_request(
    engine: Engine,
    settings: Settings,
    worldshare_process: SandboxProcess,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    seed = int(os.environ.get("ILLBRIDGE_TEST_KILL_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    total = 200
    alma_ids = [f"KILL-{n:03d}" for n in range(total)]
    worldshare_process.set_faults(latency_ms=250)
    institution = sandbox_institution(engine, settings, worldshare_process.url)
    register_requests(engine, institution, alma_ids)
    env = {
        "ILLBRIDGE_WORKER_CONCURRENCY": "4",
        "ILLBRIDGE_JOB_LEASE_SECONDS": "3",
        "ILLBRIDGE_JOB_DEADLINE_SECONDS": "2.5",
    }
    slots = [start_worker(**env), start_worker(**env)]
    everyone = list(slots)

    def settled_requests() -> int:
        """Requests exported or flagged: no longer waiting for anything but staff."""
        settled = or_(
            col(BorrowingRequest.state) == RequestState.EXPORTED,
            col(BorrowingRequest.needs_attention),
        )
        with read_session(engine) as session:
            return session.exec(select(func.count()).where(settled)).one()

    # Kill at random points of the run: when a random share of the requests is settled, plus a
    # random fraction of a second, so a kill lands anywhere in an export's steps.
    kills = sorted(rng.sample(range(20, 160), rng.randint(2, 3)))
    for threshold in kills:
        wait_for_workers(lambda t=threshold: settled_requests() >= t, 60, "progress", everyone)
        time.sleep(rng.uniform(0, 0.3))
        slot = rng.randrange(len(slots))
        slots[slot].popen.send_signal(signal.SIGKILL)
        assert slots[slot].popen.wait(timeout=10) == -signal.SIGKILL
        slots[slot] = start_worker(**env)
        everyone.append(slots[slot])
    wait_for_workers(
        lambda: exports_settled(engine) and settled_requests() == total, 90, "all settled", everyone
    )

    created = worldshare_process.created()
    received = worldshare_process.creates_received()
    assert {ref: len(ids) for ref, ids in created.items()} == dict(received)
    counts: Counter[str] = Counter()
    problems = []
    for alma_id in alma_ids:
        request = request_row(engine, alma_id)
        ids = created.get(alma_id, [])
        linked = request.worldshare_request_id
        unknown_to_bridge = [i for i in ids if i != linked]
        if linked is not None and linked not in ids:
            problems.append(f"{alma_id}: linked to {linked}, which WorldShare does not have")
        if len(unknown_to_bridge) > 1:
            problems.append(f"{alma_id}: {len(unknown_to_bridge)} creates the bridge lost")
        if len(ids) > 1:
            counts["duplicates"] += 1
            if not (request.attention_reason or "").startswith(DUPLICATE):
                problems.append(f"{alma_id}: {len(ids)} creates, not flagged as duplicated")
        elif unknown_to_bridge or linked is None:
            counts["flagged unknown, created" if ids else "flagged unknown, not created"] += 1
            if not flagged_unknown(request):
                problems.append(f"{alma_id}: {len(ids)} create(s), none linked, not flagged")
        else:
            counts["exported"] += 1
            if request.state != "exported" or request.needs_attention:
                problems.append(
                    f"{alma_id}: linked but {request.state}, flag {request.needs_attention}"
                )
    attempts = Counter(job.attempts for job in export_jobs(engine))
    print(
        f"\nkill -9 test, seed {seed} (rerun: ILLBRIDGE_TEST_KILL_SEED={seed}), "
        f"{make_url(settings.database_url).get_backend_name()}: killed at "
        f"{kills} requests settled; {dict(counts)}; export job attempts {dict(attempts)}"
    )
    assert problems == []
    assert max(attempts) >= 2, "no kill interrupted an export"
    errors = [entry for w in everyone for entry in w.log() if entry.get("level") == "error"]
    assert errors == []
    stop_gracefully(slots)


# --- in-process bridge, real HTTP to the sandbox ---------------------------------------------


def register(system: System, alma_request_id: str) -> dict[str, Any]:
    body = {
        "institution": "UNIV",
        "alma_request_id": alma_request_id,
        "citation": {"title": "The Book of Tea", "author": "Okakura Kakuzo"},
    }
    response = system.api("POST", "/api/v1/requests", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def sandbox_get(system: System, path: str) -> Any:
    response = system.http.get(f"{system.worldshare_url}{path}")
    response.raise_for_status()
    return response.json()


def worldshare_ids(system: System, alma_request_id: str) -> list[str]:
    """What staff find in WorldShare: the requests carrying the Alma id as their reference."""
    return [
        str(found["requestId"])
        for found in sandbox_get(system, "/_sandbox/requests")
        if found["referenceId"] == alma_request_id
    ]


def resolve_api(system: System, request_id: int, body: dict[str, Any]) -> httpx.Response:
    return system.api("POST", f"/api/v1/requests/{request_id}/resolve", json=body)


def lose_the_answer(system: System, engine: Engine, alma_request_id: str) -> dict[str, Any]:
    """Export with the sandbox slower than the client's timeout: WorldShare creates the request
    after the bridge gave up waiting. Returns the flagged request once the create exists."""
    system.http.post(f"{system.worldshare_url}/_sandbox/faults", json={"latency_ms": 1500})
    created = register(system, alma_request_id)
    wait_for(lambda: exports_settled(engine, created["id"]), timeout=20, what="export settled")
    wait_for(lambda: worldshare_ids(system, alma_request_id), timeout=10, what="the late create")
    system.http.delete(f"{system.worldshare_url}/_sandbox/faults")
    request = system.request(created["id"])
    return request


@pytest.fixture
def lost_answer_settings(fast_settings: Settings) -> Settings:
    return fast_settings.model_copy(update={"outbound_timeout_seconds": 0.5})


def test_lost_answer_is_flagged_not_replayed_and_staff_link_the_request_found(
    lost_answer_settings: Settings, engine: Engine
) -> None:
    with running_system(lost_answer_settings, engine) as system:
        request = lose_the_answer(system, engine, "LOST-1")

        assert request["state"] == "received"
        assert request["attention_reason"].startswith(f"{UNKNOWN} LOST-1 (WorldShare: timeout")
        [job] = export_jobs(engine, request["id"])
        assert (job.status, job.attempts) == ("succeeded", 1)  # not retried: not replayed
        [found] = worldshare_ids(system, "LOST-1")
        assert sandbox_get(system, "/_sandbox/stats")["creates"] == 1

        resolved = resolve_api(system, request["id"], {"worldshare_request_id": found})
        assert resolved.status_code == 200, resolved.text
        body = resolved.json()
        assert (body["state"], body["worldshare_request_id"]) == ("exported", found)
        assert (body["needs_attention"], body["attention_reason"]) == (False, None)
        events = system.request(request["id"])["events"]
        linked = next(e for e in events if e["kind"] == "worldshare_request_linked")
        assert (linked["source"], linked["detail"]) == (
            "operator",
            {"worldshare_request_id": found},
        )
        assert in_order([e["kind"] for e in events], ["flagged", "flag_cleared", "exported"])
        # Polling has started: the lender's status is read from WorldShare.
        wait_for(lambda: system.request(request["id"])["lender_status"] == "PRODUCED")
        assert sandbox_get(system, "/_sandbox/stats")["creates"] == 1

        again = resolve_api(system, request["id"], {"worldshare_request_id": found})
        assert again.status_code == 409
        assert again.json()["error"] == "conflict"


def test_export_again_after_a_lost_answer_sends_one_new_create(
    lost_answer_settings: Settings, engine: Engine
) -> None:
    with running_system(lost_answer_settings, engine) as system:
        request = lose_the_answer(system, engine, "LOST-2")
        [lost] = worldshare_ids(system, "LOST-2")

        resolved = resolve_api(system, request["id"], {"export_again": True})
        assert resolved.status_code == 200, resolved.text
        assert (resolved.json()["state"], resolved.json()["needs_attention"]) == ("received", False)
        wait_for(lambda: system.request(request["id"])["state"] == "exported")
        wait_for(lambda: exports_settled(engine, request["id"]))

        ids = worldshare_ids(system, "LOST-2")
        assert len(ids) == 2  # the lost one (staff said none was found) and the new one
        exported = system.request(request["id"])
        assert exported["worldshare_request_id"] == next(i for i in ids if i != lost)
        assert not exported["needs_attention"]
        assert "export_requested_again" in [e["kind"] for e in exported["events"]]


def test_resolve_refuses_what_does_not_fit(fast_settings: Settings, engine: Engine) -> None:
    with running_system(fast_settings, engine) as system:
        created = register(system, "FINE-1")
        wait_for(lambda: system.request(created["id"])["state"] == "exported")

        for body in ({"worldshare_request_id": "167513999"}, {"export_again": True}):
            refused = resolve_api(system, created["id"], body)
            assert refused.status_code == 409, refused.text
            assert refused.json() == {
                "error": "conflict",
                "detail": f"request {created['id']} has no export whose outcome is unknown",
            }

        both = resolve_api(
            system, created["id"], {"worldshare_request_id": "167513999", "export_again": True}
        )
        assert both.status_code == 422
        assert both.json()["error"] == "validation_error"
        assert "give one of" in both.json()["detail"]
        assert system.request(created["id"])["state"] == "exported"
        assert sandbox_get(system, "/_sandbox/stats")["creates"] == 1


@pytest.fixture
def refuse_worldshare_ids(engine: Engine) -> Iterator[None]:
    """A database that refuses to store any WorldShare id, as a failing disk or a column too
    short for the id WorldShare sent would."""
    if is_sqlite(engine):
        create = [
            "CREATE TRIGGER refuse_worldshare_id BEFORE UPDATE OF worldshare_request_id "
            "ON borrowing_request WHEN NEW.worldshare_request_id IS NOT NULL "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        ]
        drop = ["DROP TRIGGER refuse_worldshare_id"]
    else:
        create = [
            "CREATE FUNCTION refuse_worldshare_id() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'injected failure'; END $$",
            "CREATE TRIGGER refuse_worldshare_id BEFORE UPDATE OF worldshare_request_id "
            "ON borrowing_request FOR EACH ROW WHEN (NEW.worldshare_request_id IS NOT NULL) "
            "EXECUTE FUNCTION refuse_worldshare_id()",
        ]
        drop = [
            "DROP TRIGGER refuse_worldshare_id ON borrowing_request",
            "DROP FUNCTION refuse_worldshare_id()",
        ]
    with engine.begin() as connection:
        for statement in create:
            connection.execute(text(statement))
    try:
        yield
    finally:
        with engine.begin() as connection:
            for statement in drop:
                connection.execute(text(statement))


@pytest.mark.usefixtures("refuse_worldshare_ids")
def test_failing_to_record_the_id_sends_no_second_create(
    fast_settings: Settings, engine: Engine
) -> None:
    with running_system(fast_settings, engine) as system:
        created = register(system, "DBFAIL-1")
        wait_for(lambda: exports_settled(engine, created["id"]), timeout=30, what="settled")

        # Before the attempt was marked, each retry created one more (8 for one Alma request).
        assert len(worldshare_ids(system, "DBFAIL-1")) == 1
        request = system.request(created["id"])
        assert request["state"] == "received"
        assert request["attention_reason"].startswith(f"{UNKNOWN} DBFAIL-1 ")
        [job] = export_jobs(engine, created["id"])
        assert (job.status, job.attempts) == ("succeeded", 2)


def test_refused_connection_is_retried_then_creates_once(
    fast_settings: Settings, engine: Engine
) -> None:
    sandbox = create_worldshare_sandbox()
    port = free_port()
    # Room for as many retries as the sandbox takes to come back.
    settings = fast_settings.model_copy(update={"job_max_attempts": 50})
    with running_system(settings, engine, worldshare_url=f"http://127.0.0.1:{port}") as system:
        with run_asgi_in_thread(sandbox, port=port):
            first = register(system, "UP-1")  # leaves a token cached: the create itself fails
            wait_for(lambda: system.request(first["id"])["state"] == "exported")

        created = register(system, "DOWN-1")

        def refused_twice() -> bool:
            [job] = export_jobs(engine, created["id"])
            return job.attempts >= 2 and "connection error" in (job.last_error or "")

        wait_for(refused_twice, timeout=20, what="the create refused twice")
        with run_asgi_in_thread(sandbox, port=port):
            wait_for(lambda: system.request(created["id"])["state"] == "exported")
            assert len(worldshare_ids(system, "DOWN-1")) == 1

        request = system.request(created["id"])
        assert (request["needs_attention"], request["attention_reason"]) == (False, None)
        assert "worldshare_create_unknown" not in [e["kind"] for e in request["events"]]
