"""Hostile and malformed ISO 18626 bodies: an ERROR confirmation or 413, nothing stored."""

from __future__ import annotations

import resource

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from app.borrowing.models import BorrowingRequest, InboundMessage
from app.jobs.models import Job
from app.main import create_app
from tests.support.factories import make_institution
from tests.support.iso_messages import (
    ALMA_AGENCY,
    BRIDGE_AGENCY,
    SECURITY_CODE,
    XML,
    confirmation,
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
