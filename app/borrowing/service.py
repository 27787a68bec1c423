"""Service functions of the borrowing domain. They `flush()`; their caller commits.

Every change of state goes through `apply_trigger`, which checks the state machine and appends to
the timeline; what must follow (the Alma notice of the transition) is the workflows' business.
A trigger that does not fit is recorded, not applied, and the request is flagged.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, select

from app.borrowing.citation import Citation
from app.borrowing.models import (
    BorrowingRequest,
    InboundMessage,
    InboxOutcome,
    InboxSource,
    RequestEvent,
    RequestOrigin,
)
from app.borrowing.states import (
    TERMINAL_STATES,
    RequestState,
    ServiceKind,
    TransitionRefused,
    Trigger,
    next_state,
)
from app.db import is_sqlite
from app.errors import Conflict
from app.timeutil import utcnow

log = logging.getLogger("illbridge.borrowing")

ATTENTION_MAX_CHARS = 1000


def find_request(
    session: Session,
    institution_id: int,
    *,
    alma_request_id: str | None = None,
    idempotency_key: str | None = None,
) -> BorrowingRequest | None:
    query = select(BorrowingRequest).where(BorrowingRequest.institution_id == institution_id)
    if alma_request_id is not None:
        found = session.exec(
            query.where(BorrowingRequest.alma_request_id == alma_request_id)
        ).first()
        if found is not None:
            return found
    if idempotency_key is not None:
        return session.exec(
            query.where(BorrowingRequest.idempotency_key == idempotency_key)
        ).first()
    return None


def register_request(
    session: Session,
    institution_id: int,
    *,
    alma_request_id: str,
    citation: Citation,
    requester_user_id: str | None,
    origin: RequestOrigin,
    idempotency_key: str | None = None,
    service_kind: ServiceKind = ServiceKind.LOAN,
) -> tuple[BorrowingRequest, bool]:
    """Store an unfilled Alma borrowing request; (request, created)."""
    existing = find_request(
        session,
        institution_id,
        alma_request_id=alma_request_id,
        idempotency_key=idempotency_key,
    )
    if existing is not None:
        if existing.alma_request_id != alma_request_id:
            raise Conflict("this Idempotency-Key was already used for another Alma request")
        return existing, False
    request = BorrowingRequest(
        institution_id=institution_id,
        alma_request_id=alma_request_id,
        idempotency_key=idempotency_key,
        requester_user_id=requester_user_id,
        citation=citation.model_dump(mode="json", exclude_none=True),
        origin=origin,
        service_kind=service_kind,
    )
    session.add(request)
    session.flush()
    record_event(session, request, "received", origin, to_state=RequestState.RECEIVED)
    return request, True


def record_inbound(
    session: Session,
    *,
    source: InboxSource,
    external_id: str,
    kind: str,
    outcome: InboxOutcome,
    institution_id: int | None,
    request_id: int | None,
    **summary: Any,
) -> None:
    """Keep a PII-free line in the inbox for a message received (unique per source + id)."""
    session.add(
        InboundMessage(
            institution_id=institution_id,
            source=source,
            external_id=external_id,
            kind=kind,
            outcome=outcome,
            request_id=request_id,
            summary=summary,
        )
    )
    session.flush()


@dataclass(frozen=True)
class InboundLine:
    """One message for `record_inbound_many`: what `record_inbound` keeps, but its source."""

    external_id: str
    kind: str
    outcome: InboxOutcome
    institution_id: int | None
    request_id: int | None
    summary: dict[str, Any]


_INBOX = InboundMessage.metadata.tables["inbound_message"]


def record_inbound_many(
    session: Session, source: InboxSource, lines: Sequence[InboundLine]
) -> set[str]:
    """Keep the lines of messages not kept before, in one statement; the external ids newly
    kept. A message received before is skipped, not an error."""
    if not lines:
        return set()
    insert = sqlite.insert if is_sqlite(session.get_bind()) else postgresql.insert
    statement = (
        insert(_INBOX)
        .on_conflict_do_nothing(index_elements=["source", "external_id"])
        .returning(_INBOX.c.external_id)
    )
    now = utcnow()
    rows = session.execute(
        statement,
        [
            {
                "source": source,
                "external_id": line.external_id,
                "kind": line.kind,
                "outcome": line.outcome,
                "institution_id": line.institution_id,
                "request_id": line.request_id,
                "summary": line.summary,
                "received_at": now,
            }
            for line in lines
        ],
    )
    return set(rows.scalars())


def find_inbound(session: Session, source: InboxSource, external_id: str) -> InboundMessage | None:
    return session.exec(
        select(InboundMessage).where(
            InboundMessage.source == source, InboundMessage.external_id == external_id
        )
    ).first()


def record_event(
    session: Session,
    request: BorrowingRequest,
    kind: str,
    source: str,
    *,
    from_state: str | None = None,
    to_state: str | None = None,
    applied: bool = True,
    detail: dict[str, Any] | None = None,
) -> RequestEvent:
    """Append to the timeline. `detail` must never carry patron data."""
    assert request.id is not None
    event = RequestEvent(
        request_id=request.id,
        kind=kind,
        source=source,
        from_state=from_state,
        to_state=to_state,
        applied=applied,
        detail=detail or {},
    )
    session.add(event)
    session.flush()
    return event


def flag(session: Session, request: BorrowingRequest, reason: str, *, source: str) -> None:
    """Ask a human to look, with a readable reason."""
    request.needs_attention = True
    request.attention_reason = reason[:ATTENTION_MAX_CHARS]
    request.updated_at = utcnow()
    session.add(request)
    record_event(session, request, "flagged", source, detail={"reason": request.attention_reason})
    log.warning(
        "request_flagged",
        extra={"borrowing_request_id": request.id, "reason": request.attention_reason},
    )


def clear_flag(session: Session, request: BorrowingRequest, *, source: str, why: str) -> None:
    """Withdraw a flag whose cause has gone (a staff task that got done)."""
    if not request.needs_attention:
        return
    request.needs_attention = False
    request.attention_reason = None
    session.add(request)
    record_event(session, request, "flag_cleared", source, detail={"why": why})


def apply_trigger(
    session: Session,
    request: BorrowingRequest,
    trigger: Trigger,
    source: str,
    *,
    detail: dict[str, Any] | None = None,
) -> RequestEvent | None:
    """Move the request along; its timeline event, or None (recorded and flagged, not applied)
    when the trigger does not fit the request's state."""
    current = request.state
    try:
        target = next_state(current, trigger, resume_state=request.resume_state)
    except TransitionRefused as refused:
        record_event(
            session,
            request,
            trigger.value,
            source,
            from_state=current,
            applied=False,
            detail=detail,
        )
        flag(session, request, str(refused), source=source)
        return None
    if trigger is Trigger.RENEWAL_REQUESTED:
        request.resume_state = current
    elif current is RequestState.RENEWAL_REQUESTED:
        request.resume_state = None
    request.state = target
    request.updated_at = utcnow()
    if target in TERMINAL_STATES:
        request.closed_at = request.updated_at
        request.next_poll_at = None
    session.add(request)
    event = record_event(
        session, request, trigger.value, source, from_state=current, to_state=target, detail=detail
    )
    log.info(
        "request_transition",
        extra={
            "borrowing_request_id": request.id,
            "trigger": trigger.value,
            "from_state": current.value,
            "to_state": target.value,
        },
    )
    return event


def schedule_first_poll(request: BorrowingRequest, interval_seconds: int) -> None:
    """Spread the polls of many requests over the interval instead of bunching them."""
    request.next_poll_at = utcnow() + timedelta(seconds=random.uniform(0, interval_seconds))


def set_lender_due_date(
    request: BorrowingRequest, due: date | None, *, patron_offset_days: int
) -> None:
    """Record the lender due date and derive the patron's, `patron_offset_days` earlier."""
    request.lender_due_date = due
    request.patron_due_date = due - timedelta(days=patron_offset_days) if due else None


def temporary_item_barcode(request: BorrowingRequest, prefix: str) -> str:
    """The barcode Alma's temporary item should carry; LOAN webhooks are matched on it.

    `prefix` is the institution's, so the barcode cannot collide with its own items'."""
    return f"{prefix}{request.id:09d}"
