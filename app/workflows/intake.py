"""Intake of an unfilled Alma borrowing request, the same whether it came over ISO 18626 or
through the REST API: the institution, the request, its inbox line and its export job.

Runs in the caller's transaction (the ingress route commits). Two identical requests at once
end in one row: the loser's commit fails on a unique key and it reads the winner's request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from app.borrowing import service
from app.borrowing.citation import Citation
from app.borrowing.models import BorrowingRequest, InboxOutcome, InboxSource, RequestOrigin
from app.borrowing.states import ServiceKind
from app.db import read_session
from app.errors import NotFound
from app.institutions.models import Institution
from app.jobs.queue import enqueue
from app.workflows.kinds import EXPORT_TO_WORLDSHARE


@dataclass(frozen=True)
class NewRequest:
    alma_request_id: str
    citation: Citation
    requester_user_id: str | None
    origin: RequestOrigin
    inbox: InboxSource
    idempotency_key: str | None = None
    # PII-free facts kept on the inbox line (e.g. the ISO service type).
    summary: dict[str, Any] = field(default_factory=dict)
    service_kind: ServiceKind = ServiceKind.LOAN


def intake_institution(session: Session, code: str) -> Institution:
    """The institution a new request is for; an unknown or inactive one takes none."""
    institution = session.exec(select(Institution).where(Institution.code == code)).first()
    if institution is None or not institution.active:
        raise NotFound(f"no institution {code!r}")
    return institution


def take_request(
    session: Session, institution: Institution, new: NewRequest
) -> tuple[BorrowingRequest, bool]:
    """Register the request and queue its export; (request, created). A repeat changes nothing."""
    assert institution.id is not None
    request, created = service.register_request(
        session,
        institution.id,
        alma_request_id=new.alma_request_id,
        citation=new.citation,
        requester_user_id=new.requester_user_id,
        origin=new.origin,
        idempotency_key=new.idempotency_key,
        service_kind=new.service_kind,
    )
    if not created:
        return request, False
    service.record_inbound(
        session,
        source=new.inbox,
        external_id=f"request:{institution.id}:{new.alma_request_id}",
        kind="borrowing_request",
        outcome=InboxOutcome.ACCEPTED,
        institution_id=institution.id,
        request_id=request.id,
        **new.summary,
    )
    enqueue(
        session,
        EXPORT_TO_WORLDSHARE,
        dedupe_key=f"export:{request.id}",
        institution_id=institution.id,
        request_id=request.id,
    )
    return request, True


def race_winner(engine: Engine, institution_id: int, new: NewRequest) -> BorrowingRequest | None:
    """After a unique-key failure: the identical request that committed first."""
    with read_session(engine) as session:
        return service.find_request(
            session,
            institution_id,
            alma_request_id=new.alma_request_id,
            idempotency_key=new.idempotency_key,
        )
