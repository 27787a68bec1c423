"""Who may talk to `POST /iso18626/{institution}`: the configured Alma with its security code.

Every sender the bridge will not take gets one and the same answer, so a caller cannot tell an
unknown institution from an inactive one, a wrong code from a wrong agency id.
"""

from __future__ import annotations

import asyncio
import hmac
import logging

import pytest
from fastapi.testclient import TestClient
from lxml import etree

from app.config import Settings
from app.db import write_session
from app.institutions import service
from app.institutions.secrets import SecretBox
from app.main import create_app
from app.observability import Metrics
from app.runtime import open_runtime
from tests.support.api_checks import row_counts
from tests.support.factories import bearer, make_institution, make_token
from tests.support.iso_messages import (
    ALMA_AGENCY,
    BRIDGE_AGENCY,
    NS,
    SECURITY_CODE,
    SENDER_REFUSED,
    XML,
    confirmation,
    iso_message,
    without_timestamps,
)

AGENCIES = {
    "agency_id": {"type": "ISIL", "value": ALMA_AGENCY},
    "bridge_agency_id": {"type": "ISIL", "value": BRIDGE_AGENCY},
}
WARNING_EVENT = "iso18626_security_code_not_required"


def add_institutions(engine, settings: Settings) -> None:
    """UNIV has a code; SLEEPY too but is inactive; BARE has none; OPEN opted out of it."""
    make_institution(
        engine, settings, "UNIV", alma={**AGENCIES, "iso18626_security_code": SECURITY_CODE}
    )
    make_institution(
        engine, settings, "SLEEPY", alma={**AGENCIES, "iso18626_security_code": SECURITY_CODE}
    )
    make_institution(engine, settings, "BARE", alma=AGENCIES)
    make_institution(
        engine, settings, "OPEN", alma={**AGENCIES, "iso18626_allow_without_code": True}
    )
    with write_session(engine) as session:
        service.get_by_code(session, "SLEEPY").active = False
        session.commit()


@pytest.fixture
def client(settings, engine):
    add_institutions(engine, settings)
    with TestClient(create_app(settings)) as client:
        yield client


def stored(engine) -> tuple[int, int, int]:
    counts = row_counts(engine)
    return counts["BorrowingRequest"], counts["InboundMessage"], counts["Job"]


REFUSED_SENDERS = {
    "unknown-institution": ("NOPE", {}),
    "inactive-institution": ("SLEEPY", {}),
    "missing-code": ("UNIV", {"security_code": None}),
    "wrong-code": ("UNIV", {"security_code": "alma-sesame-4c1e"}),
    "empty-code": ("UNIV", {"security_code": ""}),
    "wrong-requesting-agency": ("UNIV", {"requesting_agency": "US-OTHER"}),
    "wrong-supplying-agency": ("UNIV", {"supplying_agency": "US-OTHER"}),
    "no-code-configured": ("BARE", {"security_code": None}),
    "no-code-configured-code-sent": ("BARE", {}),
}


@pytest.mark.parametrize(
    ("institution", "sender"), REFUSED_SENDERS.values(), ids=REFUSED_SENDERS.keys()
)
@pytest.mark.parametrize("action", [None, "StatusRequest"], ids=["request", "action"])
def test_every_refused_sender_gets_one_answer_and_nothing_is_stored(
    client, engine, institution, sender, action
):
    body = iso_message(action=action, **sender)
    response = client.post(f"/iso18626/{institution}", content=body, headers=XML)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/xml"
    assert confirmation(response.content) == SENDER_REFUSED
    assert stored(engine) == (0, 0, 0)


def test_the_answer_is_byte_for_byte_the_same_whatever_the_reason(client):
    """One body, four reasons to refuse it: unknown, inactive, wrong code, no code configured."""
    body = iso_message(security_code="guessed")
    answers = {
        without_timestamps(client.post(f"/iso18626/{code}", content=body, headers=XML).content)
        for code in ("NOPE", "SLEEPY", "UNIV", "BARE")
    }
    assert len(answers) == 1


def test_every_refusal_takes_the_same_steps(client, monkeypatch):
    """One decryption and one constant-time comparison, found institution or not."""
    steps: list[str] = []
    decrypt, compare = SecretBox.decrypt, hmac.compare_digest

    def counted_decrypt(self: SecretBox, ciphertext: str) -> str:
        steps.append("decrypt")
        return decrypt(self, ciphertext)

    def counted_compare(a, b) -> bool:  # type: ignore[no-untyped-def]
        steps.append("compare")
        return compare(a, b)

    monkeypatch.setattr(SecretBox, "decrypt", counted_decrypt)
    monkeypatch.setattr(hmac, "compare_digest", counted_compare)
    taken = {}
    for name, (institution, sender) in REFUSED_SENDERS.items():
        steps.clear()
        client.post(f"/iso18626/{institution}", content=iso_message(**sender), headers=XML)
        taken[name] = sorted(steps)
    assert len(set(map(tuple, taken.values()))) == 1, taken
    assert taken["unknown-institution"], "no constant-time comparison at all"


def test_refusals_are_logged_for_operators_with_the_reason(client, caplog):
    caplog.set_level(logging.INFO)
    client.post("/iso18626/NOPE", content=iso_message(), headers=XML)
    client.post("/iso18626/UNIV", content=iso_message(security_code="x"), headers=XML)
    reasons = [
        (r.institution, r.reason) for r in caplog.records if r.getMessage() == "iso_sender_refused"
    ]
    assert reasons == [("NOPE", "unknown_institution"), ("UNIV", "security_code")]


def test_the_right_code_and_agencies_are_taken(client, engine):
    response = client.post("/iso18626/UNIV", content=iso_message(), headers=XML)
    assert confirmation(response.content) == ("OK", None, None)
    assert stored(engine) == (1, 1, 1)


def test_an_institution_that_opted_out_takes_messages_without_a_code(client, engine):
    response = client.post("/iso18626/OPEN", content=iso_message(security_code=None), headers=XML)
    assert confirmation(response.content) == ("OK", None, None)
    assert stored(engine) == (1, 1, 1)


def test_opting_out_does_not_admit_a_wrong_code(settings, engine):
    make_institution(
        engine,
        settings,
        "OPEN",
        alma={
            **AGENCIES,
            "iso18626_security_code": SECURITY_CODE,
            "iso18626_allow_without_code": True,
        },
    )
    with TestClient(create_app(settings)) as client:
        wrong = client.post("/iso18626/OPEN", content=iso_message(security_code="x"), headers=XML)
        assert confirmation(wrong.content) == SENDER_REFUSED
        right = client.post("/iso18626/OPEN", content=iso_message(), headers=XML)
        assert confirmation(right.content)[0] == "OK"
        without = client.post(
            "/iso18626/OPEN",
            content=iso_message(request_id="HOSTILE-2", security_code=None),
            headers=XML,
        )
        assert confirmation(without.content)[0] == "OK"


def test_the_opt_out_is_shown_and_can_be_changed(client, engine):
    admin = bearer(make_token(engine, ["admin"]))
    shown = client.get("/api/v1/institutions/OPEN", headers=admin).json()["alma"]
    assert shown["iso18626_allow_without_code"] is True
    assert (
        client.get("/api/v1/institutions/UNIV", headers=admin).json()["alma"][
            "iso18626_allow_without_code"
        ]
        is False
    )
    closed = client.patch(
        "/api/v1/institutions/OPEN",
        json={"alma": {"iso18626_allow_without_code": False}},
        headers=admin,
    )
    assert closed.json()["alma"]["iso18626_allow_without_code"] is False
    response = client.post("/iso18626/OPEN", content=iso_message(security_code=None), headers=XML)
    assert confirmation(response.content) == SENDER_REFUSED


def _opt_out_warnings(caplog) -> list[str]:
    return [r.institution for r in caplog.records if r.getMessage() == WARNING_EVENT]


def test_the_api_warns_at_start_up_of_each_institution_that_opted_out(settings, engine, caplog):
    add_institutions(engine, settings)
    caplog.clear()
    caplog.set_level(logging.WARNING)
    with TestClient(create_app(settings)):
        pass
    assert _opt_out_warnings(caplog) == ["OPEN"]
    assert all(
        r.levelno == logging.WARNING for r in caplog.records if r.getMessage() == WARNING_EVENT
    )


def test_a_worker_warns_at_start_up_too(settings, engine, caplog):
    add_institutions(engine, settings)
    caplog.clear()
    caplog.set_level(logging.WARNING)

    async def start_a_worker_process() -> None:
        async with open_runtime(settings, Metrics()):
            pass

    asyncio.run(start_a_worker_process())
    assert _opt_out_warnings(caplog) == ["OPEN"]


def test_the_confirmation_echoes_the_senders_timestamp_as_timestamp_received(client):
    response = client.post("/iso18626/UNIV", content=iso_message(), headers=XML)
    assert confirmation(response.content)[0] == "OK"
    received = etree.fromstring(response.content).findtext(f".//{{{NS}}}timestampReceived")
    # The message's own header timestamp: how Alma pairs the answer with what it sent.
    assert received == "2026-11-29T10:00:00Z"


def test_a_message_without_a_version_attribute_is_taken(client, engine):
    body = iso_message().replace(b' ill:version="1.2"', b"")
    assert b"version=" not in body.split(b"?>", 1)[1]
    response = client.post("/iso18626/UNIV", content=body, headers=XML)
    assert (response.status_code, confirmation(response.content)[0]) == (200, "OK")
    assert stored(engine)[0] == 1
