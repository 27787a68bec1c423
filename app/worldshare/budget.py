"""OCLC's daily limit, counted in the database so every worker shares it.

OCLC allows a WSKey about 50,000 calls in a rolling 24 hours and answers 429 past it. Each
call (token, create, read) adds one to its key's count for the current UTC hour; the last 24
hours' counts are what the key has spent. A 429 pauses the key until the window allows.
Keys are stored as a hash: the WSKey itself stays encrypted on the institution.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import Column, String, delete, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, Session, SQLModel

from app.db import is_sqlite
from app.timeutil import UTCDateTime

HOUR = timedelta(hours=1)
WINDOW = timedelta(hours=24)
# When OCLC gives no Retry-After, a paused key waits this long before trying again.
DEFAULT_PAUSE = timedelta(hours=1)


class WorldShareCallCount(SQLModel, table=True):
    """Calls made with one WSKey in one UTC hour."""

    __tablename__ = "worldshare_call_count"

    key_id: str = Field(sa_column=Column(String(64), primary_key=True))
    hour: datetime = Field(sa_column=Column(UTCDateTime, primary_key=True))
    calls: int = Field(default=0)


class WorldShareKeyPause(SQLModel, table=True):
    """A key OCLC refused with 429: no call with it before `paused_until`."""

    __tablename__ = "worldshare_key_pause"

    key_id: str = Field(sa_column=Column(String(64), primary_key=True))
    paused_until: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


COUNTS = WorldShareCallCount.metadata.tables["worldshare_call_count"]
PAUSES = WorldShareKeyPause.metadata.tables["worldshare_key_pause"]


def key_id(wskey: str) -> str:
    """The stored name of a WSKey: a hash, so the key never sits in a plain column."""
    return hashlib.sha256(wskey.encode("utf-8")).hexdigest()


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def count_call(session: Session, key: str, now: datetime, calls: int = 1) -> None:
    """Add `calls` to the key's count for this hour, atomically among all workers."""
    insert = sqlite.insert if is_sqlite(session.get_bind()) else postgresql.insert
    statement = insert(COUNTS).values(key_id=key, hour=hour_of(now), calls=calls)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["key_id", "hour"], set_={"calls": COUNTS.c.calls + calls}
        )
    )


def calls_spent(session: Session, key: str, now: datetime) -> tuple[int, int]:
    """(calls this hour, calls in the 24 hours ending with this hour)."""
    this_hour = hour_of(now)
    rows = session.execute(
        select(COUNTS.c.hour, COUNTS.c.calls).where(
            COUNTS.c.key_id == key, COUNTS.c.hour > this_hour - WINDOW
        )
    ).all()
    in_hour = sum(calls for hour, calls in rows if hour == this_hour)
    return in_hour, sum(calls for _, calls in rows)


def calls_by_key(session: Session, now: datetime) -> dict[str, int]:
    """Calls in the 24 hours ending with this hour, per key, named by `key_label`."""
    rows = session.execute(
        select(COUNTS.c.key_id, func.sum(COUNTS.c.calls))
        .where(COUNTS.c.hour > hour_of(now) - WINDOW)
        .group_by(COUNTS.c.key_id)
    ).all()
    return {key_label(key): int(calls) for key, calls in rows}


def key_label(key: str) -> str:
    """A stored key id short enough for a page or a metric label (a hash prefix, not the key)."""
    return key[:12]


def paused_until(session: Session, key: str, now: datetime) -> datetime | None:
    pause = session.get(WorldShareKeyPause, key)
    if pause is None or pause.paused_until <= now:
        return None
    return pause.paused_until


def pause_key(session: Session, key: str, now: datetime, retry_after: float | None) -> datetime:
    """Pause the key after a 429: until OCLC's Retry-After, else an hour. Never shortens a pause
    another worker stored."""
    until = now + (timedelta(seconds=retry_after) if retry_after else DEFAULT_PAUSE)
    insert = sqlite.insert if is_sqlite(session.get_bind()) else postgresql.insert
    later = func.max if is_sqlite(session.get_bind()) else func.greatest
    statement = insert(PAUSES).values(key_id=key, paused_until=until)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["key_id"],
            set_={"paused_until": later(PAUSES.c.paused_until, literal(until, UTCDateTime()))},
        )
    )
    return paused_until(session, key, now) or until


def forget_old_counts(session: Session, now: datetime) -> int:
    """Counts older than two windows are of no use to anyone."""
    result = session.execute(delete(COUNTS).where(COUNTS.c.hour < now - 2 * WINDOW))
    return int(result.rowcount)  # type: ignore[attr-defined]
