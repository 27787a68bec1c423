"""A database that does not answer in time: ingress answers 503 with the error envelope within
bounds (never a 500, never a hang), and /readyz answers at once, even behind stuck requests."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

from app.config import Settings
from app.db import write_session
from app.main import create_app
from tests.conftest import SECRET_KEY
from tests.support.api_checks import assert_envelope, citation_body
from tests.support.factories import bearer, make_institution, make_token
from tests.support.servers import run_asgi_in_thread, silent_tcp_server

XML = {"Content-Type": "text/xml"}
NS = "http://illtransactions.org/2013/iso18626"
SECURITY_CODE = "waits-shared-code"


def iso_request(alma_request_id: str) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<ISO18626Message xmlns="{NS}" xmlns:ill="{NS}" ill:version="1.2">
 <request>
  <header>
   <supplyingAgencyId><agencyIdType>ISIL</agencyIdType>
    <agencyIdValue>US-ILLBRIDGE</agencyIdValue></supplyingAgencyId>
   <requestingAgencyId><agencyIdType>ISIL</agencyIdType>
    <agencyIdValue>US-UNIV</agencyIdValue></requestingAgencyId>
   <multipleItemRequestId/>
   <timestamp>2026-11-29T10:00:00Z</timestamp>
   <requestingAgencyRequestId>{alma_request_id}</requestingAgencyRequestId>
   <requestingAgencyAuthentication><securityCode>{SECURITY_CODE}</securityCode>
   </requestingAgencyAuthentication>
  </header>
  <bibliographicInfo><title>Title of {alma_request_id}</title></bibliographicInfo>
  <serviceInfo><serviceType>Loan</serviceType></serviceInfo>
 </request>
</ISO18626Message>""".encode()


@contextmanager
def serving(app: object) -> Iterator[httpx.Client]:
    """The app over real HTTP; a client timeout, so a hang fails the test instead of stalling it."""
    with run_asgi_in_thread(app) as url, httpx.Client(base_url=url, timeout=15.0) as client:
        yield client


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def assert_database_unavailable(response: httpx.Response, took: float, within: float) -> None:
    assert assert_envelope(response, 503)["error"] == "database_unavailable"
    assert took < within, f"{response.request.url.path} answered after {took:.1f} s"


def test_a_silent_database_is_503_in_bounded_time_and_readyz_does_not_wait_behind_it() -> None:
    with silent_tcp_server() as port:
        settings = Settings(
            database_url=f"postgresql+psycopg://illbridge@127.0.0.1:{port}/illbridge",
            secret_key=SECRET_KEY,
            db_connect_timeout_seconds=2,
        )
        with serving(create_app(settings)) as client, ThreadPoolExecutor(48) as pool:
            # More stuck writes than the server has threads for its routes (40).
            writes = [
                pool.submit(
                    timed,
                    lambda n=n: client.post(
                        "/api/v1/requests",
                        json=citation_body("UNIV", f"A-{n}"),
                        headers=bearer("ilb_x"),
                    ),
                )
                for n in range(44)
            ]
            iso = pool.submit(
                timed,
                lambda: client.post("/iso18626/UNIV", content=iso_request("I-1"), headers=XML),
            )
            time.sleep(0.5)
            ready, ready_took = timed(lambda: client.get("/readyz"))
            answers = [write.result() for write in [*writes, iso]]
    assert assert_envelope(ready, 503)["error"] == "not_ready"
    assert ready_took < 2.0, f"/readyz answered after {ready_took:.1f} s"
    for response, took in answers:
        assert_database_unavailable(response, took, within=10.0)


@contextmanager
def holding_the_write_lock(database_url: str, engine: Engine) -> Iterator[None]:
    """Another connection holds what every write needs, for as long as the block runs."""
    if engine.dialect.name == "sqlite":
        other = sqlite3.connect(str(make_url(database_url).database), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.rollback()
            other.close()
        return
    with engine.connect() as connection:
        connection.execute(
            text("LOCK TABLE borrowing_request, inbound_message IN ACCESS EXCLUSIVE MODE")
        )
        try:
            yield
        finally:
            connection.rollback()


def test_a_lock_held_past_the_statement_timeout_is_503_then_writes_go_through(
    settings: Settings, engine: Engine
) -> None:
    make_institution(
        engine,
        settings,
        alma={
            "agency_id": {"type": "ISIL", "value": "US-UNIV"},
            "bridge_agency_id": {"type": "ISIL", "value": "US-ILLBRIDGE"},
            "iso18626_security_code": SECURITY_CODE,
        },
    )
    token = bearer(make_token(engine, ["admin"]))
    impatient = settings.model_copy(update={"db_statement_timeout_ms": 500})

    def register() -> httpx.Response:
        return client.post("/api/v1/requests", json=citation_body("UNIV", "A-1"), headers=token)

    def take_iso() -> httpx.Response:
        return client.post("/iso18626/UNIV", content=iso_request("I-1"), headers=XML)

    with serving(create_app(impatient)) as client:
        with holding_the_write_lock(settings.database_url, engine):
            for call in (register, take_iso):
                assert_database_unavailable(*timed(call), within=0.5 + 3.0)
        # A wait that ran out, nothing broken: the same writes succeed once the lock is free.
        assert register().status_code == 201
        assert take_iso().status_code == 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_no_pooled_connection_or_write_lock_free_in_time_is_503(
    settings: Settings, engine: Engine
) -> None:
    make_institution(engine, settings)
    token = bearer(make_token(engine, ["admin"]))
    impatient = settings.model_copy(
        update={"db_pool_timeout_seconds": 0.5, "db_statement_timeout_ms": 500}
    )
    app = create_app(impatient)
    with serving(app) as client:
        shared = app.state.services.runtime.engine
        # Every pooled connection (20 + 20 overflow) held, as by requests stuck on a slow database.
        held = [shared.connect() for _ in range(40)]
        try:
            listing = timed(lambda: client.get("/api/v1/requests", headers=token))
        finally:
            for connection in held:
                connection.close()
        assert_database_unavailable(*listing, within=0.5 + 3.0)

        # Another thread of this process holds SQLite's write lock.
        with write_session(shared) as session:
            session.execute(text("SELECT 1"))
            write = timed(
                lambda: client.post(
                    "/api/v1/requests", json=citation_body("UNIV", "A-1"), headers=token
                )
            )
        assert_database_unavailable(*write, within=0.5 + 3.0)
