"""A small world for the operators' pages: two institutions, a request of each carrying a patron
id, an open staff task and a dead job on A's request, and tokens to sign in with."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import select

from app.borrowing import tasks
from app.borrowing.citation import Citation
from app.borrowing.models import BorrowingRequest, InboxSource, RequestOrigin
from app.config import Settings
from app.db import write_session
from app.jobs.models import Job, JobStatus
from app.workflows import intake
from tests.support.factories import make_institution, make_token

PATRON_ID = "patron-SECRET-4711"


@dataclass(frozen=True)
class OpsWorld:
    admin_token: str  # every institution
    a_token: str  # bound to UNIV, may read, write and retry
    a_reader_token: str  # bound to UNIV, read only
    a_request_id: int
    a_alma_id: str
    a_worldshare_id: str
    a_barcode: str
    b_request_id: int
    b_alma_id: str
    dead_job_id: int


def _take(engine: Engine, code: str, alma_id: str, title: str) -> BorrowingRequest:
    with write_session(engine) as session:
        institution = intake.intake_institution(session, code)
        request, _ = intake.take_request(
            session,
            institution,
            intake.NewRequest(
                alma_request_id=alma_id,
                citation=Citation.model_validate({"title": title, "author": "Ada Author"}),
                requester_user_id=PATRON_ID,
                origin=RequestOrigin.API,
                inbox=InboxSource.REST,
            ),
        )
        session.commit()
        session.refresh(request)
        session.expunge(request)
    return request


def seed_ops_world(engine: Engine, settings: Settings) -> OpsWorld:
    univ = make_institution(engine, settings, "UNIV")
    make_institution(engine, settings, "OTHER")
    a = _take(engine, "UNIV", "ALMA-A-1001", "Tidal patterns of the North Sea")
    b = _take(engine, "OTHER", "ALMA-B-2002", "Hidden title of institution B")
    assert a.id is not None and b.id is not None
    with write_session(engine) as session:
        request = session.get(BorrowingRequest, a.id)
        assert request is not None
        request.worldshare_request_id = "987654"
        request.item_barcode = "39015000123456"
        session.add(request)
        tasks.open_task(
            session,
            request,
            tasks.TaskKind.CANCEL_IN_WORLDSHARE,
            "Alma cancelled the request; WorldShare cannot be told by API",
            source="test",
        )
        # A's export job failed for good: a dead letter for the operator to retry.
        session.execute(
            update(Job)
            .where(Job.request_id == a.id)  # type: ignore[arg-type]
            .values(status=JobStatus.DEAD.value, last_error="HTTP 500 from WorldShare", attempts=8)
        )
        dead = session.exec(select(Job).where(Job.request_id == a.id)).one()
        session.commit()
        dead_id = dead.id
    assert dead_id is not None
    return OpsWorld(
        admin_token=make_token(engine, ["admin"], name="consortium-admin"),
        a_token=make_token(engine, ["admin"], univ, name="univ-staff"),
        a_reader_token=make_token(engine, ["requests:read"], univ, name="univ-reader"),
        a_request_id=a.id,
        a_alma_id=a.alma_request_id,
        a_worldshare_id="987654",
        a_barcode="39015000123456",
        b_request_id=b.id,
        b_alma_id=b.alma_request_id,
        dead_job_id=dead_id,
    )


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)
