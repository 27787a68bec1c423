"""Real processes for tests and the benchmark: the WorldShare sandbox served by uvicorn in a process
of its own, worker processes whose JSON log lines land in a file, and an institution whose
registered requests they export.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import Engine

from app.borrowing.citation import Citation
from app.borrowing.models import InboxSource, RequestOrigin
from app.config import Settings
from app.db import write_session
from app.institutions.models import Institution
from app.workflows import intake
from tests.support.factories import make_institution, sandbox_worldshare

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
ILLBRIDGE_WORKER = (sys.executable, "-m", "app.cli", "worker")
CREATE_PATH = "/ILL/request/data"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SandboxProcess:
    """The WorldShare sandbox served by uvicorn in a process of its own."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        code = (
            "import uvicorn; from app.sandbox.worldshare import create_worldshare_sandbox; "
            f"uvicorn.run(create_worldshare_sandbox(), host='127.0.0.1', port={self.port}, "
            "log_level='warning', access_log=False)"
        )
        self.popen = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.get("/_sandbox/stats")
                return
            except httpx.HTTPError:
                if self.popen.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the WorldShare sandbox did not start") from None
                time.sleep(0.1)

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.url}{path}", timeout=10)
        response.raise_for_status()
        return response.json()

    def set_faults(self, **faults: Any) -> None:
        httpx.post(f"{self.url}/_sandbox/faults", json=faults, timeout=10).raise_for_status()

    def stats(self) -> dict[str, int]:
        return dict(self.get("/_sandbox/stats"))

    def creates_received(self) -> Counter[str]:
        """How many creates reached the sandbox per referenceId (the Alma request id)."""
        return Counter(
            json.loads(call["body"])["illRequest"]["referenceId"]
            for call in self.get("/_sandbox/calls")
            if call["method"] == "POST" and call["url"].endswith(CREATE_PATH)
        )

    def created(self) -> dict[str, list[str]]:
        """The WorldShare request ids that exist, per referenceId (the Alma request id)."""
        found: dict[str, list[str]] = {}
        for request in self.get("/_sandbox/requests"):
            found.setdefault(request["referenceId"], []).append(str(request["requestId"]))
        return found

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


def sandbox_institution(
    engine: Engine, settings: Settings, sandbox_url: str, code: str = "UNIV"
) -> Institution:
    return make_institution(engine, settings, code, worldshare=sandbox_worldshare(sandbox_url))


def register_requests(
    engine: Engine,
    institution: Institution,
    alma_request_ids: Iterable[str],
    citation: Citation | None = None,
) -> None:
    """Register requests as the REST intake does, each with its export job, in one commit."""
    citation = citation or Citation(title="The Book of Tea", author="Okakura Kakuzo")
    with write_session(engine) as session:
        for alma_request_id in alma_request_ids:
            intake.take_request(
                session,
                institution,
                intake.NewRequest(
                    alma_request_id=alma_request_id,
                    citation=citation,
                    requester_user_id=None,
                    origin=RequestOrigin.API,
                    inbox=InboxSource.REST,
                ),
            )
        session.commit()


def worker_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment of a worker process on `settings`' database: no ILLBRIDGE_* inherited."""
    assert settings.secret_key is not None
    env = {key: value for key, value in os.environ.items() if not key.startswith("ILLBRIDGE_")}
    return env | {
        "ILLBRIDGE_DATABASE_URL": settings.database_url,
        "ILLBRIDGE_SECRET_KEY": settings.secret_key.get_secret_value(),
        "ILLBRIDGE_SANDBOX": "false",
        "ILLBRIDGE_LOG_LEVEL": "INFO",
        **overrides,
    }


class WorkerProcess:
    """A worker process (`command`) whose stderr, one JSON log line each, goes to a file."""

    def __init__(self, command: Sequence[str], env: dict[str, str], stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        self._stderr = stderr_path.open("wb")
        self.popen = subprocess.Popen(
            list(command), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self._stderr
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.stderr_path.read_text(errors="replace").splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                entries.append({"level": "raw", "event": line})
        return entries

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [entry for entry in self.log() if entry.get("event") == event]

    def problems(self) -> list[dict[str, Any]]:
        """Anything not an info line: warnings, errors, tracebacks."""
        return [entry for entry in self.log() if entry.get("level") not in ("info", "debug")]

    def stderr_tail(self, lines: int = 30) -> str:
        return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)
        self._stderr.close()


def wait_for(
    check: Callable[[], Any], timeout: float, what: str, workers: Sequence[WorkerProcess]
) -> None:
    """Poll `check` until truthy; on time-out fail with the tail of every worker's log."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            logs = "\n".join(f"pid {w.pid}:\n{w.stderr_tail()}" for w in workers)
            raise AssertionError(f"{what}: not within {timeout} s\n{logs}")
        time.sleep(0.05)


def wait_started(workers: Sequence[WorkerProcess]) -> None:
    """Until every worker logged `worker_started`; fails at once if one exited."""

    def ready() -> bool:
        if exited := [w for w in workers if w.popen.poll() is not None]:
            raise AssertionError(f"a worker process exited early:\n{exited[0].stderr_tail()}")
        return all(w.logged("worker_started") for w in workers)

    wait_for(ready, START_TIMEOUT, "worker processes started", workers)
