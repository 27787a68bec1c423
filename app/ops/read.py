"""What the operators' pages read: counts for the overview and per-institution news.

The task list is the REST API's own (`app.workflows.task_list.list_tasks`).

Every function takes the operator's `institution_id` (None: every institution) and never
returns a patron identifier.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, tuple_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from app.borrowing import queries
from app.borrowing.models import BorrowingRequest, InboundMessage, InboxSource
from app.borrowing.tasks import StaffTask
from app.institutions.models import Institution
from app.institutions.secrets import SecretBox
from app.institutions.service import list_institutions
from app.jobs import queue
from app.jobs.models import Job, JobStatus
from app.timeutil import utcnow
from app.worldshare import budget

MAX_ID = 2**31 - 1

POLL_JOB_KIND = "worldshare.poll"


@dataclass
class InstitutionNews:
    code: str
    name: str
    requests: int = 0
    last_poll: datetime | None = None
    # Last message received per inbox source (ISO 18626, REST, webhook …).
    last_inbound: dict[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class KeyUse:
    """One WSKey's calls in the last 24 hours against its daily budget, named by a hash prefix."""

    label: str
    institutions: list[str]
    calls: int
    budget: int

    @property
    def share(self) -> float:
        return self.calls / self.budget if self.budget else 0.0


@dataclass
class Overview:
    by_state: list[tuple[str, int]]
    institutions: list[InstitutionNews]
    flagged: int
    open_tasks: int
    queue_depth: int
    oldest_job_age_seconds: float | None
    jobs_by_status: dict[str, int]
    worldshare_keys: list[KeyUse] = field(default_factory=list)
    read_at: datetime = field(default_factory=utcnow)

    @property
    def dead_jobs(self) -> int:
        return self.jobs_by_status.get(JobStatus.DEAD.value, 0)


class OverviewCache:
    """The overview's counts, per institution scope, reused for `max_age_seconds` (the page says
    how old they are), so a dashboard left open or many operators do not count every load."""

    def __init__(self, max_age_seconds: float) -> None:
        self.max_age_seconds = max_age_seconds
        self._kept: dict[int | None, tuple[float, Overview]] = {}
        self._lock = threading.Lock()

    def get(self, session: Session, box: SecretBox, institution_id: int | None) -> Overview:
        now = time.monotonic()
        with self._lock:
            kept = self._kept.get(institution_id)
        if kept is not None and now - kept[0] < self.max_age_seconds:
            return kept[1]
        fresh = overview(session, box, institution_id)
        with self._lock:
            self._kept[institution_id] = (now, fresh)
        return fresh


def _where_institution(query: Any, column: Any, institution_id: int | None) -> Any:
    return query if institution_id is None else query.where(column == institution_id)


def overview(session: Session, box: SecretBox, institution_id: int | None) -> Overview:
    by_state = sorted(queries.counts_by_state(session, institution_id).items())
    depth, oldest = queue.queue_depth(session, institution_id)
    age = (utcnow() - oldest).total_seconds() if oldest is not None else None
    return Overview(
        by_state=by_state,
        institutions=institution_news(session, institution_id),
        flagged=queries.count_needing_attention(session, institution_id),
        open_tasks=count_open_tasks(session, institution_id),
        queue_depth=depth,
        oldest_job_age_seconds=age,
        jobs_by_status=queue.counts_by_status(session, institution_id),
        worldshare_keys=worldshare_key_use(session, box, institution_id),
    )


def worldshare_key_use(
    session: Session, box: SecretBox, institution_id: int | None
) -> list[KeyUse]:
    """Each WSKey the institutions in scope use, with the calls counted for it (shared by every
    worker) in the last 24 hours; a key shared by institutions is shown once, with the smallest
    of their budgets."""
    users: dict[str, list[Institution]] = {}
    for institution in list_institutions(session):
        if institution.worldshare_key_encrypted is None:
            continue
        if institution_id is not None and institution.id != institution_id:
            continue
        key = budget.key_id(box.decrypt(institution.worldshare_key_encrypted))
        users.setdefault(key, []).append(institution)
    calls = budget.calls_by_key(session, utcnow())
    return [
        KeyUse(
            label=budget.key_label(key),
            institutions=sorted(i.code for i in sharing),
            calls=calls.get(budget.key_label(key), 0),
            budget=min(i.worldshare_daily_call_budget for i in sharing),
        )
        for key, sharing in sorted(users.items())
    ]


def count_open_tasks(session: Session, institution_id: int | None) -> int:
    query = select(func.count()).select_from(StaffTask).where(col(StaffTask.closed_at).is_(None))
    query = _where_institution(query, StaffTask.institution_id, institution_id)
    return int(session.exec(query).one())


def institution_news(session: Session, institution_id: int | None) -> list[InstitutionNews]:
    """Per institution: its request count, last successful poll, last message per source.

    The "last" ones are newest-first lookups of one row each, not aggregates over the tables.
    """
    news = []
    totals = _requests_per_institution(session, institution_id)
    for institution in list_institutions(session, only_id=institution_id):
        assert institution.id is not None
        item = InstitutionNews(code=institution.code, name=institution.name)
        item.requests = totals.get(institution.id, 0)
        item.last_poll = _newest(
            session,
            Job.finished_at,
            (Job.institution_id, Job.kind, Job.status),
            (institution.id, POLL_JOB_KIND, JobStatus.SUCCEEDED.value),
            Job.id,
        )
        for source in InboxSource:
            at = _newest(
                session,
                InboundMessage.received_at,
                (InboundMessage.institution_id, InboundMessage.source),
                (institution.id, source.value),
                InboundMessage.id,
            )
            if at is not None:
                item.last_inbound[source.value] = at
        news.append(item)
    return sorted(news, key=lambda n: n.code)


def _requests_per_institution(session: Session, institution_id: int | None) -> dict[int, int]:
    if institution_id is not None:  # one institution: its state counts, shared with the chart
        return {institution_id: sum(queries.counts_by_state(session, institution_id).values())}
    query = select(BorrowingRequest.institution_id, func.count()).group_by(
        col(BorrowingRequest.institution_id)
    )
    return {inst_id: int(count) for inst_id, count in session.exec(query)}


def _newest(
    session: Session, wanted: Any, keys: tuple[Any, ...], values: tuple[Any, ...], id_column: Any
) -> Any:
    """`wanted` of the newest row (by id) whose `keys` equal `values`, or None.

    Asked as "the last row at or below (values…, MAX_ID) in the order of the index on (keys…,
    id)" — a row-value range only that index can answer, read backwards for one row — rather
    than `WHERE keys = values ORDER BY id DESC LIMIT 1`, which PostgreSQL may answer by walking
    the primary key through every row when no row matches (an institution that never sent a
    REST request). The keys' leading columns must have that index; the first is checked here.
    """
    key_columns = [col(k) for k in keys]
    bound = (*values[: len(keys) - 1], values[len(keys) - 1], MAX_ID)
    query = (
        sa_select(*key_columns, wanted)
        .where(tuple_(*key_columns, col(id_column)) <= tuple_(*bound))
        .order_by(*[c.desc() for c in key_columns], col(id_column).desc())
        .limit(1)
    )
    row = session.execute(query).first()
    if row is None or tuple(row[: len(keys)]) != tuple(values):
        return None
    return row[len(keys)]


def institutions_for(session: Session, institution_id: int | None) -> list[Institution]:
    return list_institutions(session, only_id=institution_id)
