"""Fixtures: a fresh database per run built by the migrations, on SQLite and on PostgreSQL.

PostgreSQL tests run when ILLBRIDGE_TEST_POSTGRES_URL is set (CI sets it); under CI=true a
run that skipped them fails. Each xdist worker gets a database of its own.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

from app.config import Settings
from app.db import create_db_engine
from app.migrations import upgrade
from app.models import metadata

POSTGRES_URL = os.environ.get("ILLBRIDGE_TEST_POSTGRES_URL")
IN_CI = os.environ.get("CI", "").lower() == "true"
# Set once per process: this module is imported both as `conftest` and as `tests.conftest`.
SECRET_KEY = os.environ.setdefault("ILLBRIDGE_TEST_SECRET_KEY", Fernet.generate_key().decode())

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def _worker_id(request: pytest.FixtureRequest) -> str:
    return str(getattr(request.config, "workerinput", {}).get("workerid", "main"))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file migrated to head once; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@contextmanager
def throwaway_postgres_database(prefix: str) -> Iterator[str]:
    """A new, empty database on the test PostgreSQL server, dropped afterwards."""
    assert POSTGRES_URL is not None
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_db_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of this run's own on the PostgreSQL server, migrated to head."""
    if not POSTGRES_URL:
        pytest.skip("ILLBRIDGE_TEST_POSTGRES_URL is not set")
    with throwaway_postgres_database(f"illbridge_test_{_worker_id(request)}") as url:
        upgrade(url)
        yield url


def _truncate_all(url: str) -> None:
    engine = create_db_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database: a fresh SQLite file, or the run's PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path / "illbridge.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_database")
    _truncate_all(url)
    return url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        secret_key=SECRET_KEY,
        worker_poll_seconds=0.05,
        periodic_tick_seconds=0.2,
        job_backoff_base_seconds=0.05,
        job_backoff_cap_seconds=0.5,
    )


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = create_db_engine(settings.database_url)
    yield engine
    engine.dispose()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IN_CI and not POSTGRES_URL:
        raise pytest.UsageError("CI=true but ILLBRIDGE_TEST_POSTGRES_URL is not set")


_executed = {"sqlite": 0, "postgres": 0}
_skipped_postgres: list[str] = []


def _backend(nodeid: str) -> str | None:
    for backend in _executed:
        if f"[{backend}" in nodeid or f"-{backend}]" in nodeid or f"-{backend}-" in nodeid:
            return backend
    return None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Runs on the xdist controller too, so the counts cover every worker."""
    backend = _backend(report.nodeid)
    if backend is None:
        return
    if report.when == "call" and not report.skipped:
        _executed[backend] += 1
    elif report.skipped and backend == "postgres":
        _skipped_postgres.append(report.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_line(
        f"database tests executed: sqlite={_executed['sqlite']} "
        f"postgres={_executed['postgres']} (postgres skipped: {len(_skipped_postgres)})"
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):
        return
    if IN_CI and (_skipped_postgres or _executed["postgres"] == 0):
        print("\nFAIL: PostgreSQL tests were skipped or not run under CI=true")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def fast_settings(settings: Settings) -> Settings:
    """Settings for end-to-end runs: polls dispatched often."""
    return settings.model_copy(update={"poll_dispatch_seconds": 0.2})
