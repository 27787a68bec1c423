"""Hostile and malformed ISO 18626 bodies: an ERROR confirmation or 413, nothing stored."""

from __future__ import annotations

import logging
import resource

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from app.borrowing.models import BorrowingRequest, InboundMessage
from app.jobs.models import Job
from app.main import create_app
from app.observability import JsonFormatter
from tests.support.factories import make_institution
from tests.support.iso_messages import (
    ALMA_AGENCY,
    BRIDGE_AGENCY,
    SECURITY_CODE,
    XML,
    confirmation,
    echoed_request_id,
    iso_message,
)

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
""" + iso_message("&xxe;").split(b"?>", 1)[1]

LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'.encode()
        for i in range(1, 10)
    )
    + b"]>"
    + iso_message("&lol9;").split(b"?>", 1)[1]
)


@pytest.fixture
def client(settings, engine):
    make_institution(
        engine,
        settings,
        alma={
            "iso18626_security_code": SECURITY_CODE,
            "agency_id": {"type": "ISIL", "value": ALMA_AGENCY},
            "bridge_agency_id": {"type": "ISIL", "value": BRIDGE_AGENCY},
        },
    )
    with TestClient(create_app(settings)) as client:
        yield client


def stored(engine) -> tuple[int, int, int]:
    with Session(engine) as session:
        return (
            session.exec(select(func.count()).select_from(BorrowingRequest)).one(),
            session.exec(select(func.count()).select_from(InboundMessage)).one(),
            session.exec(select(func.count()).select_from(Job)).one(),
        )


def test_a_good_request_is_stored_and_confirmed(client, engine):
    response = client.post("/iso18626/UNIV", content=iso_message(), headers=XML)
    assert response.status_code == 200
    assert confirmation(response.content)[0] == "OK"
    assert stored(engine) == (1, 1, 1)


@pytest.mark.parametrize(
    ("body", "error_type"),
    [
        (XXE, "BadlyFormedMessage"),
        (LAUGHS, "BadlyFormedMessage"),
        (b"<not-closed", "BadlyFormedMessage"),
        (b"", "BadlyFormedMessage"),
        (iso_message(ns="http://example.org/other"), "BadlyFormedMessage"),
        (iso_message(version="2.0"), "BadlyFormedMessage"),
        ("\u00e9t\u00e9".encode("latin-1"), "BadlyFormedMessage"),
    ],
    ids=["xxe", "billion-laughs", "not-xml", "empty", "wrong-namespace", "wrong-version", "bytes"],
)
def test_hostile_bodies_get_an_error_confirmation_and_store_nothing(
    client, engine, body, error_type
):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    response = client.post("/iso18626/UNIV", content=body, headers=XML)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert response.status_code == 200
    status, kind, _value = confirmation(response.content)
    assert (status, kind) == ("ERROR", error_type)
    assert b"root:" not in response.content  # /etc/passwd was not read
    assert stored(engine) == (0, 0, 0)
    assert grown_kib < 50 * 1024  # no entity expansion into memory


def test_ten_megabyte_body_is_refused_before_it_is_read(client, engine):
    body = iso_message("x" * (10 * 1024 * 1024))
    response = client.post("/iso18626/UNIV", content=body, headers=XML)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert stored(engine) == (0, 0, 0)


def test_streamed_oversized_body_is_refused_too(client, engine):
    def chunks():
        for _ in range(40):
            yield b"<a>" + b"x" * 16384 + b"</a>"

    response = client.post("/iso18626/UNIV", content=chunks(), headers=XML)
    assert response.status_code == 413
    assert stored(engine) == (0, 0, 0)


def test_wrong_content_type_is_415_with_an_iso_error(client, engine):
    response = client.post(
        "/iso18626/UNIV", content=iso_message(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 415
    assert confirmation(response.content)[:2] == ("ERROR", "BadlyFormedMessage")
    assert stored(engine) == (0, 0, 0)


def test_overlong_citation_field_is_refused_naming_the_field(client, engine):
    response = client.post("/iso18626/UNIV", content=iso_message("t" * 5000), headers=XML)
    status, kind, value = confirmation(response.content)
    assert (status, kind) == ("ERROR", "UnrecognisedDataValue")
    assert value == "citation title"
    assert stored(engine) == (0, 0, 0)


def logged(caplog) -> str:
    """Every log record as the service writes it, extras included."""
    return "\n".join(JsonFormatter().format(record) for record in caplog.records)


ODD_REQUEST_IDS = {
    "100k-chars": "A" * 100_000,
    "129-chars": "A" * 129,
    "non-ascii-letter": "ÄLMA-1",
    "arabic-indic-digits": "\u0661\u0662\u0663",
    "space": "ALMA 1",
    "slash": "ALMA/1",
    "markup": "<b>1</b>",
    "zero-width-space": "ALMA-1\u200b",
}


@pytest.mark.parametrize("request_id", ODD_REQUEST_IDS.values(), ids=ODD_REQUEST_IDS.keys())
@pytest.mark.parametrize("action", [None, "Received"], ids=["request", "action"])
def test_an_odd_request_id_is_refused_unechoed_and_nothing_stored(
    client, engine, caplog, request_id, action
):
    caplog.set_level(logging.DEBUG)
    body = iso_message(request_id=request_id, action=action)
    response = client.post("/iso18626/UNIV", content=body, headers=XML)
    assert response.status_code == 200
    expected = ("ERROR", "UnrecognisedDataValue", "requestingAgencyRequestId")
    assert confirmation(response.content) == expected
    assert echoed_request_id(response.content) is None
    assert request_id not in response.content.decode()
    assert request_id not in logged(caplog)
    assert stored(engine) == (0, 0, 0)


def test_a_request_id_of_128_safe_characters_is_taken(client, engine):
    request_id = "Az09-_.:" * 16
    response = client.post(
        "/iso18626/UNIV", content=iso_message(request_id=request_id), headers=XML
    )
    assert confirmation(response.content)[0] == "OK"
    assert stored(engine) == (1, 1, 1)


@pytest.mark.parametrize(
    "patron_id", ["P" * 256, "P" * 100_000, "P-1\tP-2"], ids=["256-chars", "100k-chars", "tab"]
)
def test_an_odd_patron_id_is_refused_unechoed_and_nothing_stored(client, engine, caplog, patron_id):
    caplog.set_level(logging.DEBUG)
    response = client.post("/iso18626/UNIV", content=iso_message(patron_id=patron_id), headers=XML)
    assert response.status_code == 200
    assert confirmation(response.content) == ("ERROR", "UnrecognisedDataValue", "patronId")
    assert patron_id not in response.content.decode()
    assert patron_id not in logged(caplog)
    assert stored(engine) == (0, 0, 0)


def test_a_patron_id_of_255_characters_is_taken(client, engine):
    response = client.post("/iso18626/UNIV", content=iso_message(patron_id="P" * 255), headers=XML)
    assert confirmation(response.content)[0] == "OK"
    assert stored(engine) == (1, 1, 1)
