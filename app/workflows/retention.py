"""Retention: `retention_days` after a request closed, was cancelled or went unfilled, what
links it to the patron is purged. The timeline, the state, the dates and the counts stay.

A periodic job purges; `illbridge purge --dry-run` shows what would go.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, or_
from sqlmodel import Session, col, select

from app.borrowing import service
from app.borrowing.models import BorrowingRequest
from app.borrowing.states import TERMINAL_STATES
from app.institutions.models import Institution
from app.jobs.kinds import Payload
from app.jobs.queue import ClaimedJob
from app.jobs.registry import Finish
from app.runtime import Runtime
from app.timeutil import utcnow

SOURCE = "retention"
# The request's columns that identify the patron or the patron's own Alma records. Every other
# column (ids of the Alma request and the WorldShare request, the temporary item's barcode,
# dates, state) describes the library's business and stays.
PATRON_LINKED_COLUMNS: tuple[str, ...] = ("requester_user_id", "alma_loan_id")
# The inbox (`inbound_message`) keeps no raw body, only a PII-free summary: nothing to purge.
PURGE_BATCH = 1000


@dataclass(frozen=True)
class Purge:
    """One request past its institution's retention window and what of it goes."""

    request_id: int
    institution: str
    state: str
    closed_at: datetime
    fields: tuple[str, ...]


def _ended_at() -> ColumnElement[datetime]:
    return func.coalesce(col(BorrowingRequest.closed_at), col(BorrowingRequest.updated_at))


def _has_patron_data() -> ColumnElement[bool]:
    return or_(*(getattr(BorrowingRequest, name).is_not(None) for name in PATRON_LINKED_COLUMNS))


def purge_plan(
    session: Session,
    *,
    now: datetime | None = None,
    institution_code: str | None = None,
    limit: int = PURGE_BATCH,
) -> list[Purge]:
    """The requests whose patron links are due to go, oldest first; nothing is changed."""
    now = now or utcnow()
    query = select(Institution)
    if institution_code is not None:
        query = query.where(Institution.code == institution_code)
    plan: list[Purge] = []
    for institution in session.exec(query.order_by(col(Institution.id))).all():
        cutoff = now - timedelta(days=institution.retention_days)
        ended = _ended_at()
        rows = session.exec(
            select(BorrowingRequest)
            .where(
                BorrowingRequest.institution_id == institution.id,
                col(BorrowingRequest.state).in_(TERMINAL_STATES),
                ended <= cutoff,
                _has_patron_data(),
            )
            .order_by(col(BorrowingRequest.id))
            .limit(limit - len(plan))
        ).all()
        for request in rows:
            assert request.id is not None
            fields = tuple(
                name for name in PATRON_LINKED_COLUMNS if getattr(request, name) is not None
            )
            plan.append(
                Purge(
                    request_id=request.id,
                    institution=institution.code,
                    state=request.state.value,
                    closed_at=request.closed_at or request.updated_at,
                    fields=fields,
                )
            )
        if len(plan) >= limit:
            break
    return plan


def purge_patron_data(
    session: Session,
    *,
    now: datetime | None = None,
    institution_code: str | None = None,
    limit: int = PURGE_BATCH,
) -> list[Purge]:
    """Purge what `purge_plan` lists, each with a `retention_purged` event naming the fields
    (never their values). The caller commits."""
    plan = purge_plan(session, now=now, institution_code=institution_code, limit=limit)
    for item in plan:
        request = session.get(BorrowingRequest, item.request_id)
        assert request is not None
        for name in item.fields:
            setattr(request, name, None)
        session.add(request)
        service.record_event(
            session,
            request,
            "retention_purged",
            SOURCE,
            detail={"fields": list(item.fields)},
        )
    return plan


async def purge_expired_patron_data(ctx: Runtime, _job: ClaimedJob, _payload: Payload) -> Finish:
    return lambda session: purge_patron_data(session)
