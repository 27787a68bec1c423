"""Taking Alma's webhook events into the database, a batch at a time.

Every event costs the same small work: the institution's webhook secrets, the signature, the
loan's match against the ids the bridge linked, and for a relevant event an inbox row and a job.
Done per event on its own thread and connection, the hops and round trips cost many times the
work. So the events that arrive while one batch is in the database wait for the next, and a batch
runs on one thread: one read of the institutions, one query matching every loan, one transaction
that stores every relevant event (one statement for their inbox lines, which skips the repeats,
one for their jobs), one commit.

Nothing is cached between batches: an event is judged on what the database held after it arrived,
as when each event read for itself. An event is answered only after the commit that stored it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col

from app.alma.webhooks import AlmaEvent, BadEvent, LoanFacts, parse_event, signature_valid
from app.borrowing import service
from app.borrowing.models import BorrowingRequest, InboxOutcome, InboxSource
from app.borrowing.tasks import TaskKind, open_institution_task
from app.db import write_session
from app.errors import AppError, NotFound, Unauthorized
from app.institutions.models import Institution
from app.institutions.secrets import SecretBox
from app.jobs.queue import NewJob, enqueue_many
from app.workflows.kinds import HANDLE_LOAN_EVENT, LoanEventPayload

log = logging.getLogger("illbridge.webhooks")

# Enough to empty the queue of a busy listener in one go, few enough that a batch stays short.
MAX_BATCH = 64


class WebhookStatus(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"


class NotStored(AppError):
    """The event could not be stored: Alma will send it again."""

    status_code = 503
    code = "not_stored"


@dataclass(frozen=True)
class Delivery:
    """One POST as received: the institution's code, the raw body and its signature header."""

    code: str
    body: bytes
    signature: str | None


@dataclass(frozen=True)
class Taken:
    status: WebhookStatus
    event: str
    queued: bool = False


@dataclass(frozen=True)
class Listener:
    """What the listener needs of an institution."""

    id: int
    webhook_secrets: str | None
    resource_sharing_libraries: tuple[str, ...]


@dataclass(frozen=True)
class Linked:
    """A borrowing request with the Alma ids the bridge linked to it."""

    id: int
    institution_id: int
    item_barcode: str | None
    item_id: str | None
    loan_id: str | None
    alma_request_id: str | None


@dataclass(frozen=True)
class Match:
    institution_id: int
    request_id: int | None
    unmatched: bool  # a resource-sharing library's loan that matches no request


class WebhookIntake:
    """The process's queue of deliveries waiting for a batch (one batch in the database at once).

    `take` answers what the batch decided for one delivery: a `Taken`, or raises the `AppError`
    to answer with (401, 404, 400, or `NotStored` when the database failed).
    """

    def __init__(self, engine: Engine, box: SecretBox, *, max_batch: int = MAX_BATCH) -> None:
        self._engine = engine
        self._box = box
        self._max_batch = max_batch
        self._waiting: deque[tuple[Delivery, asyncio.Future[Taken]]] = deque()
        self._draining: asyncio.Task[None] | None = None

    async def take(self, delivery: Delivery) -> Taken:
        future: asyncio.Future[Taken] = asyncio.get_running_loop().create_future()
        self._waiting.append((delivery, future))
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                count = min(len(self._waiting), self._max_batch)
                batch = [self._waiting.popleft() for _ in range(count)]
                try:
                    outcomes = await run_in_threadpool(
                        take_batch, self._engine, self._box, [d for d, _ in batch]
                    )
                except Exception as exc:  # the database failed (or a fault): Alma retries
                    log.warning("webhook_batch_failed", extra={"error": type(exc).__name__})
                    outcomes = [_not_stored() for _ in batch]
                except BaseException:  # cancelled at shutdown: nobody is left waiting
                    for _, future in [*batch, *self._waiting]:
                        if not future.done():
                            future.set_exception(_not_stored())
                    raise
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():  # the client went away
                        continue
                    if isinstance(outcome, Taken):
                        future.set_result(outcome)
                    else:
                        future.set_exception(outcome)
        finally:
            self._draining = None


def _not_stored() -> NotStored:
    return NotStored("the event could not be stored; retry later")


def take_batch(
    engine: Engine, box: SecretBox, deliveries: Sequence[Delivery]
) -> list[Taken | AppError]:
    """Verify, read and store a batch of deliveries; nothing is written for an ignored event."""
    outcomes: list[Taken | AppError | None] = [None] * len(deliveries)
    loans: list[tuple[int, Listener, AlmaEvent, LoanFacts]] = []
    with engine.connect() as connection:
        listeners = _listeners(connection, {d.code for d in deliveries})
        for n, delivery in enumerate(deliveries):
            try:
                listener, event = _verified(listeners, box, delivery)
            except AppError as refusal:
                outcomes[n] = refusal
                continue
            if event.loan_event is None or event.loan is None:
                outcomes[n] = Taken(WebhookStatus.IGNORED, event.event)
            else:
                loans.append((n, listener, event, event.loan))
        linked = _linked(connection, [loan for _, _, _, loan in loans])
        connection.rollback()
    relevant: list[tuple[int, Match, AlmaEvent]] = []
    for n, listener, event, loan in loans:
        match = match_loan(listener, loan, linked)
        if match is None:
            outcomes[n] = Taken(WebhookStatus.IGNORED, event.event)
        else:
            relevant.append((n, match, event))
    if relevant:
        _store_all(engine, relevant, outcomes)
    assert all(outcome is not None for outcome in outcomes)
    return [outcome for outcome in outcomes if outcome is not None]


def _store_all(
    engine: Engine,
    relevant: list[tuple[int, Match, AlmaEvent]],
    outcomes: list[Taken | AppError | None],
) -> None:
    """Store the batch's relevant events in one transaction: their inbox lines in one
    statement, then the patron ids, the jobs that handle them, and a task per unmatched loan."""
    firsts: dict[str, tuple[int, Match, AlmaEvent]] = {}
    for n, match, event in relevant:
        external_id = f"{match.institution_id}:{event.id}"
        if external_id in firsts:  # Alma sent it twice at once
            outcomes[n] = Taken(WebhookStatus.DUPLICATE, event.event)
        else:
            firsts[external_id] = (n, match, event)
    try:
        with write_session(engine) as session:
            kept = service.record_inbound_many(
                session,
                InboxSource.WEBHOOK,
                [_inbox_line(external_id, m, e) for external_id, (_, m, e) in firsts.items()],
            )
            new = [(key, match, event) for key, (_, match, event) in firsts.items() if key in kept]
            _link_patrons(session, [(m, e) for _, m, e in new if not m.unmatched])
            enqueue_many(
                session,
                HANDLE_LOAN_EVENT,
                [_handling(key, m, e) for key, m, e in new if not m.unmatched],
            )
            for _, match, event in new:
                if match.unmatched:
                    _open_unmatched_loan_task(session, match, event)
            session.commit()
    except SQLAlchemyError as exc:
        log.warning("webhook_not_stored", extra={"error": type(exc).__name__})
        for n, _, _ in firsts.values():
            outcomes[n] = _not_stored()
        return
    for external_id, (n, _, event) in firsts.items():
        if external_id in kept:
            outcomes[n] = Taken(WebhookStatus.ACCEPTED, event.event, queued=True)
        else:  # received before, by an earlier batch or another process
            outcomes[n] = Taken(WebhookStatus.DUPLICATE, event.event)


# Built once: the two reads of every batch skip the ORM and reuse their compiled SQL.
_LISTENERS = select(
    col(Institution.code),
    col(Institution.id),
    col(Institution.alma_webhook_secrets_encrypted),
    col(Institution.alma_resource_sharing_libraries),
).where(
    col(Institution.code).in_(bindparam("codes", expanding=True)),
    col(Institution.active).is_(True),
)
# A loan matches on any id the bridge linked: the barcode it gave Alma's temporary item, the
# item or loan id already seen, or the Alma request id. Read through those four ids' indexes
# alone; a filter on the institution here would lead SQLite to scan all its requests instead,
# so `match_loan` keeps each loan to its institution's requests.
_LINKED = select(
    col(BorrowingRequest.id),
    col(BorrowingRequest.institution_id),
    col(BorrowingRequest.item_barcode),
    col(BorrowingRequest.alma_item_id),
    col(BorrowingRequest.alma_loan_id),
    col(BorrowingRequest.alma_request_id),
).where(
    or_(
        col(BorrowingRequest.item_barcode).in_(bindparam("item_barcodes", expanding=True)),
        col(BorrowingRequest.alma_item_id).in_(bindparam("item_ids", expanding=True)),
        col(BorrowingRequest.alma_loan_id).in_(bindparam("loan_ids", expanding=True)),
        col(BorrowingRequest.alma_request_id).in_(bindparam("request_ids", expanding=True)),
    ),
)


def _listeners(connection: Connection, codes: set[str]) -> dict[str, Listener]:
    listeners = {}
    for code, institution_id, secrets, libraries in connection.execute(
        _LISTENERS, {"codes": sorted(codes)}
    ):
        assert institution_id is not None  # a primary key
        listeners[code] = Listener(institution_id, secrets, tuple(libraries or ()))
    return listeners


def _verified(
    listeners: dict[str, Listener], box: SecretBox, delivery: Delivery
) -> tuple[Listener, AlmaEvent]:
    listener = listeners.get(delivery.code)
    if listener is None:
        raise NotFound(f"no institution {delivery.code}")
    secrets = _decrypted(box, listener.webhook_secrets) if listener.webhook_secrets else ()
    if not signature_valid(delivery.body, delivery.signature, secrets):
        log.warning("webhook_signature_refused", extra={"institution": delivery.code})
        raise Unauthorized("missing or wrong X-Exl-Signature", code="bad_signature")
    try:
        return listener, parse_event(delivery.body)
    except BadEvent as exc:
        raise AppError(str(exc), code="bad_request") from None


@lru_cache(maxsize=256)
def _decrypted(box: SecretBox, ciphertext: str) -> tuple[str, ...]:
    return tuple(box.decrypt_list(ciphertext))


def _linked(connection: Connection, loans: list[LoanFacts]) -> list[Linked]:
    """The requests sharing an id with any of `loans`, whatever their institution."""
    if not loans:
        return []

    def ids(field: str) -> list[str]:
        return sorted({value for loan in loans if (value := getattr(loan, field)) is not None})

    rows = connection.execute(
        _LINKED,
        {
            "item_barcodes": ids("item_barcode"),
            "item_ids": ids("item_id"),
            "loan_ids": ids("loan_id"),
            "request_ids": ids("request_id"),
        },
    )
    linked = []
    for request_id, institution_id, barcode, item_id, loan_id, alma_request_id in rows:
        assert request_id is not None  # a primary key
        linked.append(
            Linked(request_id, institution_id, barcode, item_id, loan_id, alma_request_id)
        )
    return linked


def match_loan(listener: Listener, loan: LoanFacts, linked: Iterable[Linked]) -> Match | None:
    """The request a LOAN event is about (the newest of those sharing an id with the loan), an
    unmatched loan to keep, or None to ignore it.

    A loan in one of the institution's resource-sharing libraries is kept even when it matches
    nothing: staff look at it.
    """
    found = [
        request.id
        for request in linked
        if request.institution_id == listener.id
        and (
            _same(request.item_barcode, loan.item_barcode)
            or _same(request.item_id, loan.item_id)
            or _same(request.loan_id, loan.loan_id)
            or _same(request.alma_request_id, loan.request_id)
        )
    ]
    if found:
        return Match(listener.id, max(found), unmatched=False)
    if loan.library and loan.library in listener.resource_sharing_libraries:
        return Match(listener.id, None, unmatched=True)
    return None


def _same(linked: str | None, given: str | None) -> bool:
    return linked is not None and linked == given


def _summary(event: AlmaEvent) -> dict[str, str | None]:
    """Ids staff and the handler need; never the patron's."""
    loan = event.loan
    assert loan is not None
    return {
        "event": event.event,
        "loan_id": loan.loan_id,
        "item_barcode": loan.item_barcode,
        "library": loan.library,
    }


def _inbox_line(external_id: str, match: Match, event: AlmaEvent) -> service.InboundLine:
    return service.InboundLine(
        external_id=external_id,
        kind=event.event,
        outcome=InboxOutcome.UNMATCHED if match.unmatched else InboxOutcome.ACCEPTED,
        institution_id=match.institution_id,
        request_id=match.request_id,
        summary=_summary(event),
    )


# The patron's Alma id, needed to update their loan, kept in its one column (never replaced).
_LINK_PATRON = (
    update(BorrowingRequest)
    .where(
        col(BorrowingRequest.id) == bindparam("linked_request"),
        col(BorrowingRequest.requester_user_id).is_(None),
    )
    .values(requester_user_id=bindparam("patron"))
)


def _link_patrons(session: Session, matched: list[tuple[Match, AlmaEvent]]) -> None:
    patrons = [
        {"linked_request": match.request_id, "patron": event.loan.user_id}
        for match, event in matched
        if event.loan is not None and event.loan.user_id is not None
    ]
    if patrons:
        session.connection().execute(_LINK_PATRON, patrons)


def _handling(external_id: str, match: Match, event: AlmaEvent) -> NewJob[LoanEventPayload]:
    loan = event.loan
    assert loan is not None and event.loan_event is not None
    return NewJob(
        LoanEventPayload(
            event_id=event.id,
            event=event.loan_event,
            loan_id=loan.loan_id,
            item_barcode=loan.item_barcode,
            item_id=loan.item_id,
            due_date=loan.due_date,
        ),
        dedupe_key=f"webhook:{external_id}",
        institution_id=match.institution_id,
        request_id=match.request_id,
    )


def _open_unmatched_loan_task(session: Session, match: Match, event: AlmaEvent) -> None:
    loan = event.loan
    assert loan is not None
    open_institution_task(
        session,
        match.institution_id,
        TaskKind.UNMATCHED_LOAN,
        f"Alma sent {event.event} for item {loan.item_barcode or loan.item_id} in "
        f"resource-sharing library {loan.library}, which matches no borrowing request",
        {**_summary(event), "item_id": loan.item_id, "alma_request_id": loan.request_id},
    )
