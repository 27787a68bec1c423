"""Taking Alma's webhook events into the database, a batch at a time.

Every event costs the same small work: the institution's webhook secrets, the signature, the
loan's match against the ids the bridge linked, and for a relevant event an inbox row and a job.
Done per event on its own thread and connection, the hops and round trips cost many times the
work. So the events that arrive while one batch is in the database wait for the next, and a batch
runs on one thread: one query matching every loan, and one transaction that stores every relevant
event (one statement for their inbox lines, which skips the repeats, one for their jobs), one
commit.

The match reads, on one connection the intake keeps (`IntakeReader`), what the database holds
after the event arrived. The institutions' listener settings are the one thing read ahead: at
most a second old, and read again at once for a delivery they refuse. An event is answered only
after the commit that stored it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any

from sqlalchemy import String, any_, bindparam, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.sql import Executable
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
# How old the listener settings a delivery is judged by may be. A secret added for a rotation
# is good at once (a refused delivery is judged again on a fresh read); a secret removed, an
# institution deactivated or a resource-sharing library added takes effect within this.
LISTENERS_MAX_AGE_SECONDS = 1.0


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
        self._reader = IntakeReader(engine)
        # The batches' own thread: they never wait behind the routes' thread pool.
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="webhook-intake")
        self._waiting: deque[tuple[Delivery, asyncio.Future[Taken]]] = deque()
        self._draining: asyncio.Task[None] | None = None

    async def take(self, delivery: Delivery) -> Taken:
        future: asyncio.Future[Taken] = asyncio.get_running_loop().create_future()
        self._waiting.append((delivery, future))
        if self._draining is None:
            # In a context of its own: the batches are no one request's.
            self._draining = asyncio.create_task(self._drain(), context=contextvars.Context())
        return await future

    def close(self) -> None:
        """Give back the reader's connection and end the thread (at shutdown, once no batch
        runs)."""
        self._thread.shutdown()
        self._reader.close()

    async def _drain(self) -> None:
        try:
            while self._waiting:
                count = min(len(self._waiting), self._max_batch)
                batch = [self._waiting.popleft() for _ in range(count)]
                try:
                    outcomes = await asyncio.get_running_loop().run_in_executor(
                        self._thread, self._take_batch, [d for d, _ in batch]
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

    def _take_batch(self, deliveries: list[Delivery]) -> list[Taken | AppError]:
        try:
            return take_batch(self._engine, self._reader, self._box, deliveries)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        # The kept connection was lost (the database restarted): nothing was written, so the
        # batch is read again once on a new one.
        return take_batch(self._engine, self._reader, self._box, deliveries)


class IntakeReader:
    """The intake's reads, on one connection it keeps in autocommit: no pool checkout, ping,
    BEGIN or ROLLBACK per batch, and each statement sees what was committed before it ran.
    Used by one batch at a time. A failed read drops the connection; the next opens another.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_age: float = LISTENERS_MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._max_age = max_age
        self._clock = clock
        self._connection: Connection | None = None
        self._listeners: dict[str, Listener] = {}
        self._listeners_read_at: float | None = None

    def listeners(self, *, fresh: bool = False) -> tuple[dict[str, Listener], bool]:
        """Every active institution's listener settings by code, and whether they were read
        just now (else they are at most `max_age` seconds old)."""
        now = self._clock()
        read_at = self._listeners_read_at
        if not fresh and read_at is not None and now - read_at <= self._max_age:
            return self._listeners, False
        listeners = {}
        for code, institution_id, secrets, libraries in self._execute(_LISTENERS, {}):
            assert institution_id is not None  # a primary key
            listeners[code] = Listener(institution_id, secrets, tuple(libraries or ()))
        self._listeners, self._listeners_read_at = listeners, now
        return listeners, True

    def linked(self, loans: list[LoanFacts]) -> list[Linked]:
        """The requests sharing an id with any of `loans`, whatever their institution."""
        if not loans:
            return []

        def ids(field: str) -> list[str]:
            return sorted({value for loan in loans if (value := getattr(loan, field)) is not None})

        rows = self._execute(
            _LINKED[self._engine.dialect.name],
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

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _execute(self, statement: Executable, parameters: dict[str, Any]) -> list[Any]:
        if self._connection is None:
            self._connection = self._engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            )
        try:
            return list(self._connection.execute(statement, parameters))
        except SQLAlchemyError:
            self._connection.invalidate()
            self.close()
            raise


def _not_stored() -> NotStored:
    return NotStored("the event could not be stored; retry later")


def take_batch(
    engine: Engine, reader: IntakeReader, box: SecretBox, deliveries: Sequence[Delivery]
) -> list[Taken | AppError]:
    """Verify, read and store a batch of deliveries; nothing is written for an ignored event."""
    outcomes: list[Taken | AppError | None] = [None] * len(deliveries)
    loans: list[tuple[int, Listener, AlmaEvent, LoanFacts]] = []
    for n, judged in enumerate(_judged_all(reader, box, deliveries)):
        if isinstance(judged, AppError):
            outcomes[n] = judged
            continue
        listener, event = judged
        if event.loan_event is None or event.loan is None:
            outcomes[n] = Taken(WebhookStatus.IGNORED, event.event)
        else:
            loans.append((n, listener, event, event.loan))
    linked = reader.linked([loan for _, _, _, loan in loans])
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


def _judged_all(
    reader: IntakeReader, box: SecretBox, deliveries: Sequence[Delivery]
) -> list[tuple[Listener, AlmaEvent] | AppError]:
    """Each delivery verified and parsed, or the refusal to answer it with. A delivery the
    listener settings in hand refuse (an unknown institution, a signature none of its secrets
    makes) is judged again on settings read now: it may be the first signed with a new secret."""
    listeners, fresh = reader.listeners()
    judged = [_judged(listeners, box, delivery) for delivery in deliveries]
    if not fresh and any(isinstance(j, NotFound | Unauthorized) for j in judged):
        listeners, _ = reader.listeners(fresh=True)
        judged = [
            _judged(listeners, box, delivery) if isinstance(j, NotFound | Unauthorized) else j
            for delivery, j in zip(deliveries, judged, strict=True)
        ]
    for delivery, j in zip(deliveries, judged, strict=True):
        if isinstance(j, Unauthorized):
            log.warning("webhook_signature_refused", extra={"institution": delivery.code})
    return judged


def _judged(
    listeners: dict[str, Listener], box: SecretBox, delivery: Delivery
) -> tuple[Listener, AlmaEvent] | AppError:
    try:
        return _verified(listeners, box, delivery)
    except AppError as refusal:
        return refusal


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


# Built once: the intake's reads skip the ORM and reuse their compiled SQL.
_LISTENERS = select(
    col(Institution.code),
    col(Institution.id),
    col(Institution.alma_webhook_secrets_encrypted),
    col(Institution.alma_resource_sharing_libraries),
).where(col(Institution.active).is_(True))
# A loan matches on any id the bridge linked: the barcode it gave Alma's temporary item, the
# item or loan id already seen, or the Alma request id. Read through those four ids' indexes
# alone; a filter on the institution here would lead SQLite to scan all its requests instead,
# so `match_loan` keeps each loan to its institution's requests.
_LINKED_IDS = (
    ("item_barcodes", col(BorrowingRequest.item_barcode)),
    ("item_ids", col(BorrowingRequest.alma_item_id)),
    ("loan_ids", col(BorrowingRequest.alma_loan_id)),
    ("request_ids", col(BorrowingRequest.alma_request_id)),
)


def _linked_query(dialect: str) -> Executable:
    """On PostgreSQL each list is one array parameter (`= ANY`): the statement's text stays
    the same whatever the batch, so it is prepared once, not planned again per batch (912 →
    392 us a query). SQLite has no arrays: its lists are expanded (`IN (?, ?, …)`)."""
    if dialect == "postgresql":
        matches = [
            column == any_(bindparam(name, type_=ARRAY(String))) for name, column in _LINKED_IDS
        ]
    else:
        matches = [column.in_(bindparam(name, expanding=True)) for name, column in _LINKED_IDS]
    return select(
        col(BorrowingRequest.id),
        col(BorrowingRequest.institution_id),
        col(BorrowingRequest.item_barcode),
        col(BorrowingRequest.alma_item_id),
        col(BorrowingRequest.alma_loan_id),
        col(BorrowingRequest.alma_request_id),
    ).where(or_(*matches))


_LINKED = {dialect: _linked_query(dialect) for dialect in ("postgresql", "sqlite")}


def _verified(
    listeners: dict[str, Listener], box: SecretBox, delivery: Delivery
) -> tuple[Listener, AlmaEvent]:
    listener = listeners.get(delivery.code)
    if listener is None:
        raise NotFound(f"no institution {delivery.code}")
    secrets = _decrypted(box, listener.webhook_secrets) if listener.webhook_secrets else ()
    if not signature_valid(delivery.body, delivery.signature, secrets):
        raise Unauthorized("missing or wrong X-Exl-Signature", code="bad_signature")
    try:
        return listener, parse_event(delivery.body)
    except BadEvent as exc:
        raise AppError(str(exc), code="bad_request") from None


@lru_cache(maxsize=256)
def _decrypted(box: SecretBox, ciphertext: str) -> tuple[str, ...]:
    return tuple(box.decrypt_list(ciphertext))


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
