"""Engine and session factories.

The caller that opens a session owns its transaction: services only `flush()`, and the route or
worker step that opened the session commits. SQLite runs in WAL with a busy timeout; sessions that
write begin with `BEGIN IMMEDIATE` so two writers queue on the lock instead of failing on upgrade.
Engines that serve (`engine_for`) bound every wait: connecting, one statement, a pooled connection.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from sqlalchemy import Enum, MetaData, event
from sqlalchemy.engine import Connection, Engine, Result, make_url
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session, SQLModel, create_engine

if TYPE_CHECKING:
    from app.config import Settings

# Engines built without timeouts (migrations, tools) keep the waits they always had.
SQLITE_BUSY_TIMEOUT_MS = 30_000

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLModel.metadata.naming_convention = NAMING_CONVENTION
metadata: MetaData = SQLModel.metadata


def StrEnumType(enum: type[StrEnum], length: int) -> Enum:
    """A VARCHAR column read and written as `enum`'s values (no database enum type)."""
    return Enum(
        enum,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


@dataclass(frozen=True)
class DatabaseTimeouts:
    """How long a database call may wait before it fails (and a route answers 503)."""

    connect_seconds: int
    # PostgreSQL's statement_timeout; on SQLite, the wait for the write lock (busy timeout).
    statement_ms: int
    pool_seconds: float


@dataclass(frozen=True)
class _WriteLock:
    """The write lock of one SQLite engine, and how long a writer waits for it (None: forever)."""

    lock: threading.Lock
    timeout: float | None


# One lock per SQLite engine, taken by write sessions (see `write_session`).
_write_locks: WeakKeyDictionary[Engine, _WriteLock] = WeakKeyDictionary()


def engine_for(settings: Settings) -> Engine:
    """The engine a process serves with: every wait bounded by the settings."""
    timeouts = DatabaseTimeouts(
        connect_seconds=settings.db_connect_timeout_seconds,
        statement_ms=settings.db_statement_timeout_ms,
        pool_seconds=settings.db_pool_timeout_seconds,
    )
    return create_db_engine(settings.database_url, timeouts=timeouts)


def create_db_engine(
    url: str, *, timeouts: DatabaseTimeouts | None = None, **kwargs: Any
) -> Engine:
    parsed = make_url(url)
    # Pool sizing unless the caller chose a pool class of its own (a probe's NullPool).
    pool: dict[str, Any] = {} if "poolclass" in kwargs else {"pool_size": 20, "max_overflow": 20}
    if timeouts is not None and pool:
        pool["pool_timeout"] = timeouts.pool_seconds
    if parsed.get_backend_name() != "sqlite":
        connect_args: dict[str, Any] = {}
        if timeouts is not None:
            # Beside, not instead of, any options the URL carries (connect_args would win).
            given = parsed.query.get("options", "")
            options = " ".join([given] if isinstance(given, str) else given)
            connect_args = {
                "connect_timeout": timeouts.connect_seconds,
                "options": f"{options} -c statement_timeout={timeouts.statement_ms}".strip(),
            }
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args, **pool, **kwargs)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    busy_ms = timeouts.statement_ms if timeouts is not None else SQLITE_BUSY_TIMEOUT_MS
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": busy_ms / 1000},
        # Enough pooled connections for the worker's threads: a new one costs its pragmas.
        **pool,
        **kwargs,
    )
    _write_locks[engine] = _WriteLock(
        threading.Lock(), busy_ms / 1000 if timeouts is not None else None
    )

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself, so writers can ask for IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(connection: Any) -> None:
        options = connection.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":  # each statement on its own
            return
        connection.exec_driver_sql(f"BEGIN {options.get('sqlite_begin', 'DEFERRED')}")

    return engine


def is_sqlite(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "sqlite"


def as_dicts(result: Result[Any]) -> list[dict[str, Any]]:
    """Rows as plain dicts, the input pydantic validates fastest (a row's mapping is read
    through Python-level calls)."""
    columns = list(result.keys())
    return [dict(zip(columns, row, strict=True)) for row in result.all()]


def new_read_session(engine: Engine) -> Session:
    """A session for reading, which its caller closes (rolling back). Opening it does no I/O:
    it takes a connection at its first statement."""
    return Session(engine, expire_on_commit=False)


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    """A session for reading; rolled back on exit."""
    with new_read_session(engine) as session:
        yield session


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A session whose caller commits; on SQLite it takes the write lock at its first statement.

    SQLite has one writer at a time: threads of this process queue on a lock of their own
    rather than in SQLite's busy handler, whose back-off sleeps waste most of a contended wait.
    """
    write_lock = _write_locks.get(engine)
    if write_lock is None:
        with Session(engine, expire_on_commit=False) as session:
            yield session
        return
    timeout = -1 if write_lock.timeout is None else write_lock.timeout
    if not write_lock.lock.acquire(timeout=timeout):
        raise PoolTimeout(f"the SQLite write lock was not free within {timeout:g} s")
    try:
        immediate = engine.execution_options(sqlite_begin="IMMEDIATE")
        with Session(immediate, expire_on_commit=False) as session:
            yield session
    finally:
        write_lock.lock.release()
