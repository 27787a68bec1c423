"""The webhook intake: a batch of deliveries, each answered for itself; the loan's match."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from app.alma.webhooks import LoanFacts, sign
from app.api.webhook_intake import (
    _LINKED,
    Delivery,
    IntakeReader,
    Linked,
    Listener,
    Match,
    NotStored,
    Taken,
    WebhookIntake,
    WebhookStatus,
    match_loan,
    take_batch,
)
from app.borrowing.models import BorrowingRequest, InboundMessage
from app.borrowing.tasks import StaffTask, TaskKind
from app.config import Settings
from app.db import create_db_engine, write_session
from app.errors import AppError
from app.institutions.models import Institution
from app.institutions.secrets import load_secret_box
from app.jobs.models import Job
from app.migrations import upgrade
from tests.support.factories import make_institution

SECRET = "intake-secret"
UNIV = Listener(id=1, webhook_secrets=None, resource_sharing_libraries=("ILL",))


def loan(**given: str | None) -> LoanFacts:
    facts: dict[str, str | None] = {
        "loan_id": "L1",
        "user_id": None,
        "item_barcode": None,
        "item_id": None,
        "library": "MAIN",
        "request_id": None,
        **given,
    }
    return LoanFacts(due_date=None, loan_status="ACTIVE", **facts)  # type: ignore[arg-type]


def linked(request_id: int, institution_id: int = 1, **ids: str) -> Linked:
    return Linked(
        request_id,
        institution_id,
        ids.get("barcode"),
        ids.get("item_id"),
        ids.get("loan_id"),
        ids.get("alma_request_id"),
    )


def test_a_loan_matches_its_own_institutions_newest_request_on_any_linked_id():
    requests = [
        linked(3, barcode="ILL-3"),
        linked(7, item_id="I7"),
        linked(9, institution_id=2, barcode="ILL-3"),  # another institution's
        linked(5, alma_request_id="R5"),
    ]
    cases = [
        (loan(item_barcode="ILL-3"), Match(1, 3, unmatched=False)),
        (loan(item_barcode="ILL-3", item_id="I7"), Match(1, 7, unmatched=False)),
        (loan(loan_id="L9", request_id="R5"), Match(1, 5, unmatched=False)),
        (loan(item_barcode="OTHER", library="ILL"), Match(1, None, unmatched=True)),
        (loan(item_barcode="OTHER"), None),
        (loan(item_barcode=None, item_id=None), None),
    ]
    for facts, expected in cases:
        assert match_loan(UNIV, facts, requests) == expected, facts


def test_the_match_reads_the_linked_id_indexes_and_scans_no_institution(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'plan.db'}"
    upgrade(url)
    params = {"item_barcodes": ["B"], "item_ids": ["I"], "loan_ids": ["L"], "request_ids": ["R"]}
    expanded = (
        _LINKED["sqlite"]
        .params(params)
        .compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
    )
    with sqlite3.connect(tmp_path / "plan.db") as connection:
        plan = " | ".join(row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {expanded}"))
    assert "MULTI-INDEX OR" in plan, plan
    assert "SCAN" not in plan, plan


def event(event_id: str, barcode: str, *, library: str = "MAIN", action: str = "LOAN") -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "action": action,
            "event": {"value": "LOAN_CREATED"},
            "item_loan": {
                "loan_id": f"L-{event_id}",
                "user_id": "patron-7",
                "item_barcode": barcode,
                "library": {"value": library},
                "due_date": "2027-01-08T23:59:00Z",
            },
        }
    ).encode()


def delivery(body: bytes, *, code: str = "UNIV", secret: str = SECRET) -> Delivery:
    return Delivery(code, body, sign(secret, body))


def stored(engine: Engine) -> tuple[list[InboundMessage], list[Job], list[StaffTask]]:
    with Session(engine) as session:
        return (
            list(session.exec(select(InboundMessage))),
            list(session.exec(select(Job))),
            list(session.exec(select(StaffTask))),
        )


def test_one_batch_answers_each_delivery_for_itself(settings: Settings, engine: Engine):
    make_institution(
        engine,
        settings,
        alma={"webhook_secrets": [SECRET], "resource_sharing_libraries": ["ILL"]},
    )
    with write_session(engine) as session:
        request = BorrowingRequest(
            institution_id=1,
            alma_request_id="ALMA-1",
            citation={"title": "T"},
            state="in_library",
            item_barcode="ILL-000000001",
        )
        session.add(request)
        session.commit()
    box = load_secret_box(settings)
    reader = IntakeReader(engine)
    earlier = delivery(event("E0", "ILL-000000001"))
    assert take_batch(engine, reader, box, [earlier])[0] == Taken(
        WebhookStatus.ACCEPTED, "LOAN_CREATED", queued=True
    )

    batch = [
        delivery(event("E1", "ILL-000000001")),  # relevant
        delivery(event("E1", "ILL-000000001")),  # the same event, twice in one batch
        earlier,  # stored by an earlier batch
        delivery(event("E2", "ILL-000000001"), secret="wrong"),
        delivery(event("E3", "ILL-000000001"), code="NOPE"),
        delivery(event("E4", "39031000000004")),  # an ordinary loan
        delivery(event("E5", "X", action="REQUEST")),  # another family
        delivery(event("E6", "39031000000006", library="ILL")),  # unmatched, in the RS library
        delivery(b"not json"),
    ]
    outcomes = take_batch(engine, reader, box, batch)

    def answer(outcome: Taken | AppError) -> str:
        return outcome.status.value if isinstance(outcome, Taken) else outcome.code

    assert [answer(o) for o in outcomes] == [
        "accepted",
        "duplicate",
        "duplicate",
        "bad_signature",
        "not_found",
        "ignored",
        "ignored",
        "accepted",
        "bad_request",
    ]
    inbox, jobs, tasks = stored(engine)
    assert sorted(m.external_id for m in inbox) == ["1:E0", "1:E1", "1:E6"]
    assert sorted(j.dedupe_key or "" for j in jobs if j.kind == "alma.loan_event") == [
        "webhook:1:E0",
        "webhook:1:E1",
    ]
    assert [(t.kind, t.request_id) for t in tasks] == [(TaskKind.UNMATCHED_LOAN, None)]
    with Session(engine) as session:
        assert session.get(BorrowingRequest, request.id).requester_user_id == "patron-7"  # type: ignore[union-attr]


def test_deliveries_arriving_together_are_each_answered(settings: Settings, engine: Engine):
    make_institution(engine, settings, alma={"webhook_secrets": [SECRET]})
    intake = WebhookIntake(engine, load_secret_box(settings), max_batch=4)

    async def deliver_all() -> list[WebhookStatus | str]:
        deliveries = [delivery(event(f"E{n}", f"3903{n:09d}")) for n in range(10)]
        deliveries.append(delivery(event("E99", "3903"), secret="wrong"))
        answers = await asyncio.gather(
            *(intake.take(d) for d in deliveries), return_exceptions=True
        )
        return [a.status if isinstance(a, Taken) else getattr(a, "code", "?") for a in answers]

    assert asyncio.run(deliver_all()) == [WebhookStatus.IGNORED] * 10 + ["bad_signature"]
    intake.close()


def test_a_database_that_fails_the_batch_answers_not_stored(settings: Settings, tmp_path: Path):
    no_schema = create_db_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    intake = WebhookIntake(no_schema, load_secret_box(settings))

    async def deliver() -> list[object]:
        deliveries = [delivery(event(f"E{n}", "ILL-1")) for n in range(3)]
        return await asyncio.gather(*(intake.take(d) for d in deliveries), return_exceptions=True)

    answers = asyncio.run(deliver())
    intake.close()
    assert [type(a) for a in answers] == [NotStored] * 3


def test_listener_settings_are_read_again_for_a_refused_delivery_and_once_a_second(
    settings: Settings, engine: Engine, caplog: pytest.LogCaptureFixture
):
    """A secret added for a rotation is good at once; a secret dropped, or an institution
    deactivated, no longer is once the settings in hand are a second old."""
    make_institution(engine, settings, alma={"webhook_secrets": [SECRET]})
    box = load_secret_box(settings)
    now = [0.0]
    reader = IntakeReader(engine, max_age=1.0, clock=lambda: now[0])

    def answer(*deliveries: Delivery) -> list[str]:
        outcomes = take_batch(engine, reader, box, list(deliveries))
        return [o.status.value if isinstance(o, Taken) else o.code for o in outcomes]

    def institution(**values: object) -> None:
        with write_session(engine) as session:
            row = session.exec(select(Institution)).one()
            for name, value in values.items():
                setattr(row, name, value)
            session.add(row)
            session.commit()

    assert answer(delivery(event("E1", "3903"))) == ["ignored"]
    institution(alma_webhook_secrets_encrypted=box.encrypt_list(["next-secret"]))
    # Signed with the new secret: refused by the settings in hand, accepted on a fresh read.
    assert answer(delivery(event("E2", "3903"), secret="next-secret")) == ["ignored"]
    refusals = [r for r in caplog.records if r.getMessage() == "webhook_signature_refused"]
    assert refusals == []  # only a final refusal is logged
    now[0] = 0.5
    assert answer(delivery(event("E3", "3903"))) == ["bad_signature"]  # dropped by that read
    refusals = [r for r in caplog.records if r.getMessage() == "webhook_signature_refused"]
    assert len(refusals) == 1
    institution(active=False)
    now[0] = 1.0  # E3's refusal had the settings read again at 0.5
    assert answer(delivery(event("E4", "3903"), secret="next-secret")) == ["ignored"]
    now[0] = 1.6
    assert answer(delivery(event("E5", "3903"), secret="next-secret")) == ["not_found"]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_the_readers_connection_lost_with_a_restart_costs_no_event(
    settings: Settings, engine: Engine
):
    """The intake keeps one connection for its reads. When PostgreSQL drops it (a restart,
    an administrator's kill), the batch is read again on a new one and answered as usual."""
    make_institution(engine, settings, alma={"webhook_secrets": [SECRET]})
    intake = WebhookIntake(engine, load_secret_box(settings))

    async def deliver(event_id: str) -> Taken:
        return await intake.take(delivery(event(event_id, "3903")))

    assert asyncio.run(deliver("E1")).status is WebhookStatus.IGNORED
    with engine.connect() as connection:
        killed = connection.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    assert killed >= 1
    assert asyncio.run(deliver("E2")).status is WebhookStatus.IGNORED
    intake.close()
