"""The ISO 18626 life cycle over real HTTP: Alma sandbox → bridge → WorldShare sandbox → Alma."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from app.sandbox.alma_requester import send_action, send_request
from app.sandbox.alma_vocabulary import Action, MessageStatus
from tests.support.bridge import (
    ALMA_AGENCY,
    BRIDGE_AGENCY,
    SECURITY_CODE,
    System,
    running_system,
    wait_for,
)

CITATION = {"title": "Outwitting Squirrels", "author": "Bill Adler", "isbn": "9781556523021"}
PATRON = {"patron_id": "P-778899", "surname": "Quimby", "given_name": "Ramona", "email": None}


def alma_says(
    system: System,
    alma_request_id: str,
    action: Action | None = None,
    *,
    requesting_agency: tuple[str, str] = ALMA_AGENCY,
    security_code: str | None = SECURITY_CODE,
) -> Any:
    """Alma's `request` (no action) or requestingAgencyMessage; the confirmation it got."""
    sender = {
        "bridge_url": system.iso_url,
        "request_id": alma_request_id,
        "requesting_agency": requesting_agency,
        "supplying_agency": BRIDGE_AGENCY,
        "security_code": security_code,
    }

    async def send() -> Any:
        async with httpx.AsyncClient(timeout=10.0) as http:
            if action is None:
                return await send_request(
                    http, system.alma_url, citation=CITATION, patron=PATRON, **sender
                )
            return await send_action(http, system.alma_url, action=action, **sender)

    return asyncio.run(send())


def in_state(system: System, alma_request_id: str, state: str) -> dict[str, Any] | None:
    found = system.find(alma_request_id)
    return found if found and found["state"] == state else None


def notices(system: System, alma_request_id: str) -> list[tuple[str, str, str | None]]:
    return [
        (m["reasonForMessage"], m["status"], m["answerYesNo"])
        for m in system.alma_messages(alma_request_id)
    ]


def test_full_loan_life_cycle(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        confirmation = alma_says(system, "ALMA-1")
        assert confirmation.message_status is MessageStatus.OK

        exported = wait_for(lambda: in_state(system, "ALMA-1", "exported"), what="export")
        ws_id = exported["worldshare_request_id"]
        assert ws_id
        wait_for(lambda: notices(system, "ALMA-1"), what="ExpectToSupply")
        assert notices(system, "ALMA-1") == [("RequestResponse", "ExpectToSupply", None)]

        system.lender(ws_id, "ship", due_date="2027-01-15")
        shipped = wait_for(lambda: in_state(system, "ALMA-1", "shipped"), what="shipment")
        assert shipped["lender_due_date"] == "2027-01-15"
        assert shipped["patron_due_date"] == "2027-01-08"  # 7 days earlier by default
        loaned = wait_for(lambda: len(system.alma_messages("ALMA-1")) >= 2 or None)
        assert loaned
        message = system.alma_messages("ALMA-1")[1]
        assert (message["reasonForMessage"], message["status"]) == ("StatusChange", "Loaned")
        assert message["dueDate"].startswith("2027-01-15")
        assert message["itemId"] == shipped["item_barcode"]

        assert alma_says(system, "ALMA-1", Action.RECEIVED).message_status is MessageStatus.OK
        assert system.find("ALMA-1")["state"] == "in_library"

        assert alma_says(system, "ALMA-1", Action.RENEW).message_status is MessageStatus.OK
        asked = system.find("ALMA-1")
        assert asked["state"] == "renewal_requested"
        assert [t["kind"] for t in asked["tasks"]] == ["renew_in_worldshare"]
        assert ws_id in asked["tasks"][0]["reason"]

        system.lender(ws_id, "renewal", approve=True, due_date="2027-02-15")
        renewed = wait_for(lambda: in_state(system, "ALMA-1", "in_library"), what="renewal")
        assert renewed["lender_due_date"] == "2027-02-15"
        assert renewed["patron_due_date"] == "2027-02-08"
        assert not renewed["needs_attention"] and renewed["tasks"] == []
        wait_for(lambda: len(system.alma_messages("ALMA-1")) >= 3 or None, what="RenewResponse")
        renew = system.alma_messages("ALMA-1")[2]
        assert (renew["reasonForMessage"], renew["answerYesNo"]) == ("RenewResponse", "Y")
        assert renew["dueDate"].startswith("2027-02-15")

        assert alma_says(system, "ALMA-1", Action.SHIPPED_RETURN).message_status.value == "OK"
        closed = wait_for(lambda: in_state(system, "ALMA-1", "closed"), what="close")
        assert closed["closed_at"]
        assert notices(system, "ALMA-1")[-1] == ("RequestResponse", "LoanCompleted", None)
        kinds = [e["kind"] for e in closed["events"] if e["applied"]]
        for step in ("received", "exported", "lender_shipped", "item_received"):
            assert step in kinds
        # Each transition told Alma once: no notice was sent twice.
        assert len(notices(system, "ALMA-1")) == 4
        alma = system.alma_request("ALMA-1")
        assert (alma["status"], alma["itemId"]) == ("LoanCompleted", shipped["item_barcode"])
        assert alma["dueDate"].startswith("2027-02-15")
        assert [r["answerYesNo"] for r in alma["renewals"]] == ["Y"]


def test_refused_renewal_answers_no(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        alma_says(system, "ALMA-R")
        ws_id = wait_for(lambda: in_state(system, "ALMA-R", "exported"))["worldshare_request_id"]
        system.lender(ws_id, "ship", due_date="2027-03-01")
        wait_for(lambda: in_state(system, "ALMA-R", "shipped"))
        alma_says(system, "ALMA-R", Action.RECEIVED)
        alma_says(system, "ALMA-R", Action.RENEW)
        system.lender(ws_id, "renewal", approve=False)
        refused = wait_for(lambda: in_state(system, "ALMA-R", "in_library"), what="refusal")
        assert refused["lender_due_date"] == "2027-03-01"
        wait_for(lambda: ("RenewResponse", "Loaned", "N") in notices(system, "ALMA-R"))


def test_cancel_before_the_lender_ships(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        alma_says(system, "ALMA-C")
        exported = wait_for(lambda: in_state(system, "ALMA-C", "exported"))
        assert alma_says(system, "ALMA-C", Action.CANCEL).message_status is MessageStatus.OK
        cancelled = system.find("ALMA-C")
        assert cancelled["state"] == "cancelled"
        # WorldShare's API cannot cancel: staff are told to, with the WorldShare id.
        [task] = cancelled["tasks"]
        assert task["kind"] == "cancel_in_worldshare"
        assert exported["worldshare_request_id"] in task["reason"]
        wait_for(lambda: ("CancelResponse", "Cancelled", "Y") in notices(system, "ALMA-C"))


def test_unfilled_by_the_network(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        alma_says(system, "ALMA-U")
        ws_id = wait_for(lambda: in_state(system, "ALMA-U", "exported"))["worldshare_request_id"]
        system.lender(ws_id, "unfill")
        wait_for(lambda: in_state(system, "ALMA-U", "unfilled"), what="unfilled")
        wait_for(lambda: ("RequestResponse", "Unfilled", None) in notices(system, "ALMA-U"))


def test_duplicate_request_is_exported_once(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        assert alma_says(system, "ALMA-D").message_status is MessageStatus.OK
        assert alma_says(system, "ALMA-D").message_status is MessageStatus.OK
        wait_for(lambda: in_state(system, "ALMA-D", "exported"))
        stats = system.http.get(f"{system.worldshare_url}/_sandbox/stats").json()
        assert stats["creates"] == 1
        listed = system.api("GET", "/api/v1/requests", params={"alma_request_id": "ALMA-D"})
        assert len(listed.json()["items"]) == 1


def test_out_of_order_action_is_recorded_and_flagged(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        alma_says(system, "ALMA-O")
        wait_for(lambda: in_state(system, "ALMA-O", "exported"))
        confirmation = alma_says(system, "ALMA-O", Action.SHIPPED_RETURN)
        assert confirmation.message_status is MessageStatus.ERROR
        assert confirmation.error_type.value == "UnrecognisedDataValue"
        request = system.find("ALMA-O")
        assert request["state"] == "exported"
        assert request["needs_attention"]
        refused = [e for e in request["events"] if not e["applied"]]
        assert [e["kind"] for e in refused] == ["shipped_return"]


def test_unknown_request_and_wrong_agency_are_refused(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        unknown = alma_says(system, "NEVER-SENT", Action.RECEIVED)
        assert unknown.message_status is MessageStatus.ERROR
        assert unknown.error_value == "requestingAgencyRequestId"
        refused = alma_says(system, "ALMA-W", requesting_agency=("ISIL", "SOMEONE-ELSE"))
        assert refused.message_status is MessageStatus.ERROR
        assert refused.error_value == "sender not recognised"
        assert system.find("ALMA-W") is None


def test_patron_data_never_reaches_worldshare(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        alma_says(system, "ALMA-P")
        found = wait_for(lambda: in_state(system, "ALMA-P", "exported"))
        calls = system.http.get(f"{system.worldshare_url}/_sandbox/calls").json()
        assert calls
        text = repr(calls)
        for value in ("P-778899", "Quimby", "Ramona"):
            assert value not in text
        # Nor into the request's public record or its timeline.
        assert "Quimby" not in repr(found) and "P-778899" not in repr(found)


def test_alma_refusing_a_notice_flags_the_request(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        system.http.post(f"{system.alma_url}/_sandbox/faults", json={"confirm_error": True})
        alma_says(system, "ALMA-E")
        flagged = wait_for(
            lambda: (r := system.find("ALMA-E")) and r["needs_attention"] and r, timeout=20
        )
        assert flagged["state"] == "exported"
        assert "Telling Alma failed" in flagged["attention_reason"]
        assert "UnrecognisedDataValue" in flagged["attention_reason"]
        dead = system.api("GET", "/api/v1/jobs", params={"status": "dead"}).json()["items"]
        assert [job["kind"] for job in dead] == ["alma.notify"]


def test_alma_unavailable_is_retried_until_it_answers(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        system.http.post(
            f"{system.alma_url}/_sandbox/faults", json={"fail_status": 503, "times": 2}
        )
        alma_says(system, "ALMA-503")
        wait_for(lambda: notices(system, "ALMA-503"), timeout=20, what="ExpectToSupply")
        assert notices(system, "ALMA-503") == [("RequestResponse", "ExpectToSupply", None)]

        def notify_jobs() -> list[tuple[str, int]]:
            listed = system.api("GET", "/api/v1/jobs", params={"kind": "alma.notify"})
            return [(job["status"], job["attempts"]) for job in listed.json()["items"]]

        # Alma has the notice a moment before the worker records that the job succeeded.
        wait_for(lambda: notify_jobs()[0][0] != "running", what="the notice job to finish")
        assert notify_jobs() == [("succeeded", 3)]
        assert not system.find("ALMA-503")["needs_attention"]


def test_staff_close_a_task_once_it_is_done(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        alma_says(system, "ALMA-T")
        wait_for(lambda: in_state(system, "ALMA-T", "exported"))
        alma_says(system, "ALMA-T", Action.CANCEL)
        tasked = system.find("ALMA-T")
        assert [t["kind"] for t in tasked["tasks"]] == ["cancel_in_worldshare"]
        path = f"/api/v1/requests/{tasked['id']}/resolve"
        wrong = system.api("POST", path, json={"task": "renew_in_worldshare"})
        assert (wrong.status_code, wrong.json()["error"]) == (409, "conflict")
        resolved = system.api("POST", path, json={"task": "cancel_in_worldshare"})
        assert resolved.status_code == 200, resolved.text
        assert system.find("ALMA-T")["tasks"] == []
        again = system.api("POST", path)
        assert (again.status_code, again.json()["error"]) == (409, "conflict")
        closed = [e for e in system.find("ALMA-T")["events"] if e["kind"] == "task_closed"]
        assert closed[-1]["source"] == "operator"
        assert closed[-1]["detail"]["task"] == "cancel_in_worldshare"


@pytest.mark.parametrize("code", [None, "guessed-code"], ids=["missing", "wrong"])
def test_a_message_without_the_institutions_security_code_is_refused(fast_settings, engine, code):
    with running_system(fast_settings, engine) as system:
        refused = alma_says(system, "ALMA-X", security_code=code)
        assert refused.message_status is MessageStatus.ERROR
        assert refused.error_value == "sender not recognised"
        assert system.find("ALMA-X") is None
        exports = system.api("GET", "/api/v1/jobs", params={"kind": "worldshare.export"})
        assert exports.json()["items"] == []
