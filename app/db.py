"""Engine and session factories.

The caller that opens a session owns its transaction: services only `flush()`, and the route or
worker step that opened the session commits. SQLite runs in WAL with a busy timeout; sessions that
write begin with `BEGIN IMMEDIATE` so two writers queue on the lock instead of failing on upgrade.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Enum, MetaData, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlmodel import Session, SQLModel, create_engine

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


# One lock per SQLite engine, taken by write sessions (see `write_session`).
_write_locks: WeakKeyDictionary[Engine, threading.Lock] = WeakKeyDictionary()


def create_db_engine(url: str, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=20, max_overflow=20, **kwargs)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        # Enough pooled connections for the worker's threads: a new one costs its pragmas.
        pool_size=20,
        max_overflow=20,
        **kwargs,
    )
    _write_locks[engine] = threading.Lock()

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself, so writers can ask for IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def is_sqlite(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "sqlite"


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    """A session for reading; rolled back on exit."""
    with Session(engine, expire_on_commit=False) as session:
        yield session


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A session whose caller commits; on SQLite it takes the write lock at its first statement.

    SQLite has one writer at a time: threads of this process queue on a lock of their own
    rather than in SQLite's busy handler, whose back-off sleeps waste most of a contended wait.
    """
    lock = _write_locks.get(engine)
    if lock is None:
        with Session(engine, expire_on_commit=False) as session:
            yield session
        return
    immediate = engine.execution_options(sqlite_begin="IMMEDIATE")
    with lock, Session(immediate, expire_on_commit=False) as session:
        yield session
