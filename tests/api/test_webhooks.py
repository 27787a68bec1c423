"""The Alma webhook listener: signatures on the real bytes, challenge, refusals, what is stored."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, select

from app.borrowing.models import BorrowingRequest, InboundMessage
from app.borrowing.tasks import StaffTask, TaskKind
from app.config import Settings
from app.db import write_session
from app.jobs.models import Job
from app.main import create_app
from tests.support.factories import make_institution
from tests.support.servers import run_asgi_in_thread

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "alma-webhooks"
LOAN_CREATED = (REFERENCE / "loan_created.json").read_bytes()
REQUEST_CREATED = json.loads((REFERENCE / "request_created.json").read_text())["body"].encode()
SECRET = "alma-webhook-secret"
NEXT_SECRET = "alma-webhook-secret-2"
URL = "/webhooks/alma/UNIV"


def alma_signature(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"X-Exl-Signature": alma_signature(secret, body), "Content-Type": "application/json"}


def setup(engine: Engine, settings: Settings, *, secrets: list[str] | None = None) -> None:
    make_institution(
        engine,
        settings,
        alma={"webhook_secrets": secrets or [SECRET], "resource_sharing_libraries": ["ILL"]},
    )


def ill_request(engine: Engine, barcode: str = "HM00007496") -> int:
    """A request whose temporary item carries `barcode` (the reference loan's item)."""
    with write_session(engine) as session:
        request = BorrowingRequest(
            institution_id=1,
            alma_request_id=f"ALMA-{barcode}",
            citation={"title": "T"},
            state="in_library",
            item_barcode=barcode,
        )
        session.add(request)
        session.commit()
        assert request.id is not None
        return request.id


def stored(engine: Engine) -> tuple[int, int, int]:
    """Inbox rows, jobs and staff tasks."""
    with Session(engine) as session:
        return (
            len(session.exec(select(InboundMessage)).all()),
            len(session.exec(select(Job)).all()),
            len(session.exec(select(StaffTask)).all()),
        )


def loan_body(**changes: object) -> bytes:
    document = json.loads(LOAN_CREATED)
    document["item_loan"].update(changes.pop("item_loan", {}))  # type: ignore[call-overload]
    document.update(changes)
    return json.dumps(document).encode()


def test_challenge_is_echoed_without_signature_and_needs_its_parameter(settings, engine):
    setup(engine, settings)
    with TestClient(create_app(settings)) as client:
        answer = client.get(URL, params={"challenge": "XYZ-123"})
        assert (answer.status_code, answer.json()) == (200, {"challenge": "XYZ-123"})
        missing = client.get(URL)
        assert missing.status_code == 400
        assert missing.json()["error"] == "bad_request"
        assert client.get("/webhooks/alma/NOPE", params={"challenge": "x"}).status_code == 404
    assert stored(engine) == (0, 0, 0)


def test_the_reference_payload_as_alma_sent_it_is_accepted_once(settings, engine):
    setup(engine, settings)
    request_id = ill_request(engine)
    with TestClient(create_app(settings)) as client:
        first = client.post(URL, content=LOAN_CREATED, headers=signed(LOAN_CREATED))
        again = client.post(URL, content=LOAN_CREATED, headers=signed(LOAN_CREATED))
    assert (first.status_code, first.json()) == (200, {"status": "accepted"})
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    with Session(engine) as session:
        inbox = session.exec(select(InboundMessage)).one()
        job = session.exec(select(Job)).one()
    assert (inbox.source, inbox.external_id, inbox.request_id) == (
        "webhook",
        "1:4716072711972883959",
        request_id,
    )
    assert job.kind == "alma.loan_event" and job.request_id == request_id
    # The patron's id is in the event; it is kept nowhere but the request's one column.
    assert "868256628995" not in json.dumps(inbox.summary) + json.dumps(job.payload)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Exl-Signature": "not base64!"},
        {"X-Exl-Signature": base64.b64encode(b"short").decode()},
        {"X-Exl-Signature": alma_signature("another secret", LOAN_CREATED)},
    ],
    ids=["missing", "malformed", "wrong-length", "wrong-secret"],
)
def test_a_bad_signature_is_401_and_nothing_is_stored(settings, engine, headers):
    setup(engine, settings)
    ill_request(engine)
    with TestClient(create_app(settings)) as client:
        answer = client.post(URL, content=LOAN_CREATED, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"] == "bad_signature"
    assert stored(engine) == (0, 0, 0)


def test_one_changed_byte_or_a_reserialised_body_fails_the_signature(settings, engine):
    setup(engine, settings)
    ill_request(engine)
    changed = LOAN_CREATED.replace(b"HM00007496", b"HM00007497")
    reserialised = json.dumps(json.loads(LOAN_CREATED)).encode()
    assert reserialised != LOAN_CREATED
    with TestClient(create_app(settings)) as client:
        # Signed over the bytes Alma sent, delivered with one byte changed.
        tampered = client.post(URL, content=changed, headers=signed(LOAN_CREATED))
        # Signed over a re-serialisation of the same JSON, as naive listeners verify.
        naive = client.post(URL, content=LOAN_CREATED, headers=signed(reserialised))
    assert (tampered.status_code, naive.status_code) == (401, 401)
    assert stored(engine) == (0, 0, 0)


def test_both_secrets_of_a_rotation_are_valid(settings, engine):
    setup(engine, settings, secrets=[SECRET, NEXT_SECRET])
    ill_request(engine)
    first = loan_body(id="1")
    second = loan_body(id="2")
    with TestClient(create_app(settings)) as client:
        old = client.post(URL, content=first, headers=signed(first, SECRET))
        new = client.post(URL, content=second, headers=signed(second, NEXT_SECRET))
    assert [old.json(), new.json()] == [{"status": "accepted"}] * 2


def test_size_media_type_json_and_institution_refusals(settings, engine):
    setup(engine, settings)
    huge = b'{"id": "1", "pad": "' + b"x" * 70_000 + b'"}'
    not_object = b'["LOAN"]'
    not_json = b"action=LOAN"
    with TestClient(create_app(settings)) as client:
        assert client.post(URL, content=huge, headers=signed(huge)).status_code == 413
        assert client.post(URL, content=not_object, headers=signed(not_object)).status_code == 400
        assert client.post(URL, content=not_json, headers=signed(not_json)).status_code == 400
        unknown = client.post("/webhooks/alma/NOPE", content=LOAN_CREATED, headers=signed(b""))
        assert unknown.status_code == 404
        # A profile set to XML: refused for its media type, whatever the body.
        as_xml = {**signed(LOAN_CREATED), "Content-Type": "application/xml"}
        xml = client.post(URL, content=LOAN_CREATED, headers=as_xml)
        assert (xml.status_code, xml.json()["error"]) == (415, "unsupported_media_type")
        with_charset = {**signed(LOAN_CREATED), "Content-Type": "application/json; charset=UTF-8"}
        assert client.post(URL, content=LOAN_CREATED, headers=with_charset).status_code == 200
        # Too large comes first, and closes the connection, whatever the media type.
        huge_xml = client.post(URL, content=huge, headers={**signed(huge), **as_xml})
        assert (huge_xml.status_code, huge_xml.headers["connection"]) == (413, "close")
    assert stored(engine) == (0, 0, 0)


def test_a_body_streamed_past_the_limit_is_413_and_its_connection_closed(settings, engine):
    """Without a Content-Length the limit is kept as the body comes in."""
    setup(engine, settings)

    def chunks() -> Iterator[bytes]:
        yield b'{"id": "1", "pad": "'
        for _ in range(20):
            yield b"x" * 4096

    with TestClient(create_app(settings)) as client:
        answer = client.post(URL, content=chunks(), headers=signed(b""))
    assert answer.status_code == 413
    assert answer.json()["error"] == "payload_too_large"
    assert answer.headers["connection"] == "close"
    assert stored(engine) == (0, 0, 0)


def test_a_client_gone_mid_body_is_counted_499_and_nothing_is_stored(settings, engine):
    setup(engine, settings)
    head = (
        f"POST {URL} HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
        f"X-Exl-Signature: {alma_signature(SECRET, LOAN_CREATED)}\r\n"
        f"Content-Length: {len(LOAN_CREATED)}\r\n\r\n"
    ).encode()
    counted = (
        'illbridge_http_request_duration_seconds_count{method="POST",'
        'route="/webhooks/alma/{institution}",status="499"} 1.0'
    )
    with run_asgi_in_thread(create_app(settings)) as url, httpx.Client(timeout=5) as http:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(head + LOAN_CREATED[:100])
        deadline = time.monotonic() + 5
        while counted not in (metrics := http.get(f"{url}/metrics").text):
            assert time.monotonic() < deadline, "the dropped request was not counted"
            time.sleep(0.05)
    assert 'status="500"' not in metrics
    assert stored(engine) == (0, 0, 0)


def test_loans_that_are_not_interlibrary_loans_and_other_families_are_ignored(settings, engine):
    setup(engine, settings)
    ill_request(engine, barcode="ILL000000001")
    ordinary = loan_body(id="7", item_loan={"library": {"value": "MAIN", "desc": "Main"}})
    with TestClient(create_app(settings)) as client:
        loan = client.post(URL, content=ordinary, headers=signed(ordinary))
        family = client.post(URL, content=REQUEST_CREATED, headers=signed(REQUEST_CREATED))
    assert loan.json() == {"status": "ignored"} and family.json() == {"status": "ignored"}
    assert stored(engine) == (0, 0, 0)


def test_an_unmatched_loan_in_a_resource_sharing_library_is_kept_for_staff(settings, engine):
    setup(engine, settings)
    body = loan_body(id="8", item_loan={"library": {"value": "ILL", "desc": "ILL office"}})
    with TestClient(create_app(settings)) as client:
        answer = client.post(URL, content=body, headers=signed(body))
    assert answer.json() == {"status": "accepted"}
    with Session(engine) as session:
        inbox = session.exec(select(InboundMessage)).one()
        task = session.exec(select(StaffTask)).one()
    assert inbox.outcome == "unmatched" and inbox.request_id is None
    assert task.kind is TaskKind.UNMATCHED_LOAN and task.request_id is None
    assert task.detail["item_barcode"] == "HM00007496" and "HM00007496" in task.reason
    assert "868256628995" not in task.reason + json.dumps(task.detail)
    assert stored(engine)[1] == 0  # nothing to handle until staff match it


def test_one_event_delivered_25_times_is_stored_and_handled_once(settings, engine):
    setup(engine, settings)
    ill_request(engine)
    with run_asgi_in_thread(create_app(settings)) as url, httpx.Client(timeout=15) as http:

        def deliver(_: int) -> httpx.Response:
            return http.post(f"{url}{URL}", content=LOAN_CREATED, headers=signed(LOAN_CREATED))

        with ThreadPoolExecutor(20) as pool:
            at_once = list(pool.map(deliver, range(20)))
        in_turn = [deliver(i) for i in range(5)]
    answers = at_once + in_turn
    assert [a.status_code for a in answers] == [200] * 25
    statuses = [a.json()["status"] for a in answers]
    assert statuses.count("accepted") == 1 and statuses.count("duplicate") == 24
    assert stored(engine) == (1, 1, 0)


def test_a_database_that_cannot_store_the_event_is_503_and_nothing_is_accepted(settings, engine):
    setup(engine, settings)
    ill_request(engine)
    slow = settings.model_copy(update={"db_statement_timeout_ms": 300})
    url = make_url(settings.database_url)
    with TestClient(create_app(slow)) as client:
        if url.get_backend_name() == "sqlite":
            blocker = sqlite3.connect(str(url.database))
            blocker.execute("BEGIN IMMEDIATE")
        else:
            connection = engine.connect()
            connection.execute(text("LOCK TABLE inbound_message IN ACCESS EXCLUSIVE MODE"))
        try:
            answer = client.post(URL, content=LOAN_CREATED, headers=signed(LOAN_CREATED))
        finally:
            if url.get_backend_name() == "sqlite":
                blocker.rollback()
                blocker.close()
            else:
                connection.rollback()
                connection.close()
        assert answer.status_code == 503
        assert answer.json()["error"] == "not_stored"
        metrics = client.get("/metrics").text
        assert 'outcome="not_stored",source="webhook"} 1.0' in metrics
        assert 'outcome="accepted",source="webhook"' not in metrics
        # Alma's retry, once the database is back, is stored.
        retry = client.post(URL, content=LOAN_CREATED, headers=signed(LOAN_CREATED))
        assert retry.json() == {"status": "accepted"}
    assert stored(engine) == (1, 1, 0)
