"""The ISO 18626 life cycle over real HTTP: Alma sandbox → bridge → WorldShare sandbox → Alma."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import httpx
import pytest

from app.sandbox.alma_requester import send_action, send_request
from app.sandbox.alma_vocabulary import Action, MessageStatus, ServiceType
from tests.support.bridge import (
    ALMA_AGENCY,
    BRIDGE_AGENCY,
    SECURITY_CODE,
    System,
    running_system,
    wait_for,
)

CITATION = {"title": "Outwitting Squirrels", "author": "Bill Adler", "isbn": "9781556523021"}
ARTICLE = {
    "title": "Molecular structure of nucleic acids",
    "author": "Watson, J. D.",
    "journal_title": "Nature",
    "issn": "0028-0836",
}
PATRON = {"patron_id": "P-778899", "surname": "Quimby", "given_name": "Ramona", "email": None}


def alma_says(
    system: System,
    alma_request_id: str,
    action: Action | None = None,
    *,
    requesting_agency: tuple[str, str] = ALMA_AGENCY,
    security_code: str | None = SECURITY_CODE,
    citation: dict[str, Any] = CITATION,
    service_type: ServiceType | None = None,
    note: str | None = None,
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
                    http,
                    system.alma_url,
                    citation=citation,
                    patron=PATRON,
                    service_type=service_type,
                    **sender,
                )
            return await send_action(http, system.alma_url, action=action, note=note, **sender)

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
    policy = {"close_on": "shipped_return"}  # an institution without the LOAN webhooks
    with running_system(fast_settings, engine, policy=policy) as system:
        confirmation = alma_says(system, "ALMA-1")
        assert confirmation.message_status is MessageStatus.OK

        exported = wait_for(lambda: in_state(system, "ALMA-1", "exported"), what="export")
        ws_id = exported["worldshare_request_id"]
        assert ws_id
        wait_for(lambda: notices(system, "ALMA-1"), what="WillSupply")
        # Alma ignores ExpectToSupply: the bridge says WillSupply.
        assert notices(system, "ALMA-1") == [("RequestResponse", "WillSupply", None)]

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
        assert shipped["item_barcode"].startswith("ILL-")  # the institution's default prefix

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
        returned = system.find("ALMA-1")
        assert returned["state"] == "returned"
        # WorldShare's API cannot mark it returned: staff are asked to, polling goes on.
        assert [t["kind"] for t in returned["tasks"]] == ["mark_returned_in_worldshare"]
        wait_for(
            lambda: ("RequestResponse", "LoanCompleted", None) in notices(system, "ALMA-1"),
            what="LoanCompleted on ShippedReturn (close_on shipped_return)",
        )
        assert system.find("ALMA-1")["state"] == "returned"
        system.lender(ws_id, "close")
        closed = wait_for(lambda: in_state(system, "ALMA-1", "closed"), what="close")
        assert closed["closed_at"]
        assert closed["tasks"] == []
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


def test_cancel_is_answered_yes_once_worldshare_shows_it_cancelled(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        alma_says(system, "ALMA-C")
        exported = wait_for(lambda: in_state(system, "ALMA-C", "exported"))
        ws_id = exported["worldshare_request_id"]
        assert alma_says(system, "ALMA-C", Action.CANCEL).message_status is MessageStatus.OK
        held = system.find("ALMA-C")
        # Held: the lender may already have shipped; Alma is answered from WorldShare's truth.
        assert held["state"] == "exported"
        # WorldShare's API cannot cancel: staff are told to, with the WorldShare id.
        [task] = held["tasks"]
        assert task["kind"] == "cancel_in_worldshare"
        assert ws_id in task["reason"]
        # A repeat of the Cancel (new timestamp) changes nothing and is no error.
        assert alma_says(system, "ALMA-C", Action.CANCEL).message_status is MessageStatus.OK
        time.sleep(2.5)  # two poll cycles: still pending at the lender, nothing answered
        assert not [n for n in notices(system, "ALMA-C") if n[0] == "CancelResponse"]
        system.lender(ws_id, "cancel")
        cancelled = wait_for(lambda: in_state(system, "ALMA-C", "cancelled"), what="cancel")
        assert cancelled["tasks"] == []
        wait_for(lambda: ("CancelResponse", "Cancelled", "Y") in notices(system, "ALMA-C"))
        assert system.alma_request("ALMA-C")["cancelAnswer"] == "Y"
        # Cancel again once cancelled: a business answer with today's status, not an ERROR.
        assert alma_says(system, "ALMA-C", Action.CANCEL).message_status is MessageStatus.OK
        wait_for(
            lambda: (
                notices(system, "ALMA-C").count(("CancelResponse", "Cancelled", "Y")) == 2 or None
            )
        )


def test_cancel_is_answered_no_when_the_lender_shipped_first(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        alma_says(system, "ALMA-CN")
        ws_id = wait_for(lambda: in_state(system, "ALMA-CN", "exported"))["worldshare_request_id"]
        alma_says(system, "ALMA-CN", Action.CANCEL)
        system.lender(ws_id, "ship", due_date="2027-04-01")
        shipped = wait_for(lambda: in_state(system, "ALMA-CN", "shipped"), what="shipment")
        # The held cancel is settled in the poll that saw the shipment: the task is withdrawn.
        assert shipped["tasks"] == []
        wait_for(lambda: ("CancelResponse", "Loaned", "N") in notices(system, "ALMA-CN"))
        assert notices(system, "ALMA-CN")[:2] == [
            ("RequestResponse", "WillSupply", None),
            ("StatusChange", "Loaned", None),
        ]


def test_a_copy_ends_with_copy_completed_and_cannot_be_renewed(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        alma_says(system, "ALMA-COPY", citation=ARTICLE, service_type=ServiceType.COPY)
        ws_id = wait_for(lambda: in_state(system, "ALMA-COPY", "exported"))["worldshare_request_id"]
        system.lender(ws_id, "ship")
        closed = wait_for(lambda: in_state(system, "ALMA-COPY", "closed"), what="copy delivered")
        assert closed["service_kind"] == "copy"
        wait_for(lambda: len(notices(system, "ALMA-COPY")) >= 2 or None, what="CopyCompleted")
        copy = system.alma_messages("ALMA-COPY")[1]
        assert (copy["reasonForMessage"], copy["status"]) == ("StatusChange", "CopyCompleted")
        # A copy has no due date and no item to send back.
        assert copy["dueDate"] is None and copy["itemId"] is None
        renew = alma_says(system, "ALMA-COPY", Action.RENEW)
        assert renew.message_status is MessageStatus.OK
        wait_for(lambda: ("RenewResponse", "CopyCompleted", "N") in notices(system, "ALMA-COPY"))
        assert system.alma_request("ALMA-COPY")["status"] == "CopyCompleted"


def test_worldshare_complete_on_a_copy_closes_it(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        alma_says(system, "ALMA-CC", citation=ARTICLE, service_type=ServiceType.COPY)
        ws_id = wait_for(lambda: in_state(system, "ALMA-CC", "exported"))["worldshare_request_id"]
        system.lender(ws_id, "status", status="COMPLETE")
        wait_for(lambda: in_state(system, "ALMA-CC", "closed"), what="copy closed")
        wait_for(lambda: ("StatusChange", "CopyCompleted", None) in notices(system, "ALMA-CC"))


def test_a_second_renewal_is_never_approved_by_the_first(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        alma_says(system, "ALMA-2R")
        ws_id = wait_for(lambda: in_state(system, "ALMA-2R", "exported"))["worldshare_request_id"]
        system.lender(ws_id, "ship", due_date="2027-01-15")
        wait_for(lambda: in_state(system, "ALMA-2R", "shipped"))
        alma_says(system, "ALMA-2R", Action.RECEIVED)
        alma_says(system, "ALMA-2R", Action.RENEW)
        first_renew_sent_by = time.time()
        system.lender(ws_id, "renewal", approve=True, due_date="2027-02-15")
        wait_for(lambda: in_state(system, "ALMA-2R", "in_library"), what="first renewal")
        # Alma stamps a message to the second, and a Renew stamped like the first is the same
        # message sent again (README, ISO 18626). Staff asking again take longer than that.
        time.sleep(max(0.0, math.floor(first_renew_sent_by) + 1.05 - time.time()))
        assert alma_says(system, "ALMA-2R", Action.RENEW).message_status is MessageStatus.OK
        time.sleep(2.5)  # polls see the first renewal's APPROVED and due date: no answer
        second = system.find("ALMA-2R")
        assert second["state"] == "renewal_requested"
        assert [t["kind"] for t in second["tasks"]] == ["renew_in_worldshare"]
        system.lender(ws_id, "renewal", approve=True, due_date="2027-03-15")
        renewed = wait_for(lambda: in_state(system, "ALMA-2R", "in_library"), what="second")
        assert renewed["lender_due_date"] == "2027-03-15"
        wait_for(lambda: len(system.alma_request("ALMA-2R")["renewals"]) == 2 or None)
        answers = system.alma_request("ALMA-2R")["renewals"]
        assert [(r["answerYesNo"], r["dueDate"][:10]) for r in answers] == [
            ("Y", "2027-02-15"),
            ("Y", "2027-03-15"),
        ]


def test_an_unasked_extension_is_told_as_loaned_with_the_new_due_date(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        alma_says(system, "ALMA-X")
        ws_id = wait_for(lambda: in_state(system, "ALMA-X", "exported"))["worldshare_request_id"]
        system.lender(ws_id, "ship", due_date="2027-01-15")
        wait_for(lambda: in_state(system, "ALMA-X", "shipped"))
        alma_says(system, "ALMA-X", Action.RECEIVED)
        system.lender(ws_id, "renewal", approve=True, due_date="2027-02-28")
        wait_for(lambda: len(notices(system, "ALMA-X")) >= 3 or None, what="Loaned again")
        assert notices(system, "ALMA-X") == [
            ("RequestResponse", "WillSupply", None),
            ("StatusChange", "Loaned", None),
            ("StatusChange", "Loaned", None),
        ]
        assert system.alma_request("ALMA-X")["dueDate"].startswith("2027-02-28")
        assert system.find("ALMA-X")["state"] == "in_library"


def test_received_before_a_poll_saw_the_shipment_still_tells_alma_the_due_date(
    fast_settings, engine
):
    with running_system(fast_settings, engine) as system:
        alma_says(system, "ALMA-EARLY")
        ws_id = wait_for(lambda: in_state(system, "ALMA-EARLY", "exported"))[
            "worldshare_request_id"
        ]
        assert alma_says(system, "ALMA-EARLY", Action.RECEIVED).message_status is MessageStatus.OK
        system.lender(ws_id, "ship", due_date="2027-05-05")
        known = wait_for(
            lambda: (r := system.find("ALMA-EARLY")) and r["lender_due_date"] and r,
            what="the due date",
        )
        assert known["state"] == "in_library"
        wait_for(lambda: ("StatusChange", "Loaned", None) in notices(system, "ALMA-EARLY"))
        alma = system.alma_request("ALMA-EARLY")
        assert alma["dueDate"].startswith("2027-05-05")
        assert alma["itemId"] == known["item_barcode"]


def test_lender_checkin_policy_tells_alma_loan_completed_when_the_lender_has_it(
    fast_settings, engine
):
    with running_system(fast_settings, engine, policy={"close_on": "lender_checkin"}) as system:
        alma_says(system, "ALMA-LC")
        ws_id = wait_for(lambda: in_state(system, "ALMA-LC", "exported"))["worldshare_request_id"]
        system.lender(ws_id, "ship", due_date="2027-01-15")
        wait_for(lambda: in_state(system, "ALMA-LC", "shipped"))
        alma_says(system, "ALMA-LC", Action.RECEIVED)
        alma_says(system, "ALMA-LC", Action.SHIPPED_RETURN)
        time.sleep(2.5)
        assert system.find("ALMA-LC")["state"] == "returned"
        assert ("RequestResponse", "LoanCompleted", None) not in notices(system, "ALMA-LC")
        system.lender(ws_id, "close")
        closed = wait_for(lambda: in_state(system, "ALMA-LC", "closed"), what="checked in")
        assert closed["tasks"] == []
        wait_for(lambda: ("RequestResponse", "LoanCompleted", None) in notices(system, "ALMA-LC"))


def test_business_refusals_are_ok_then_a_negative_answer(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        alma_says(system, "ALMA-B")
        wait_for(lambda: in_state(system, "ALMA-B", "exported"))
        # Nothing to renew yet: OK, then RenewResponse N with the current status.
        assert alma_says(system, "ALMA-B", Action.RENEW).message_status is MessageStatus.OK
        wait_for(lambda: ("RenewResponse", "WillSupply", "N") in notices(system, "ALMA-B"))
        assert not system.find("ALMA-B")["needs_attention"]


def test_a_repeated_received_with_a_new_timestamp_is_a_repeat(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        alma_says(system, "ALMA-RR")
        wait_for(lambda: in_state(system, "ALMA-RR", "exported"))
        assert alma_says(system, "ALMA-RR", Action.RECEIVED).message_status is MessageStatus.OK
        time.sleep(1.1)  # a new timestamp, to the second
        again = alma_says(system, "ALMA-RR", Action.RECEIVED)
        assert again.message_status is MessageStatus.OK
        request = system.find("ALMA-RR")
        assert request["state"] == "in_library" and not request["needs_attention"]


def test_a_request_id_already_used_is_refused(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        alma_says(system, "ALMA-USED")
        ws_id = wait_for(lambda: in_state(system, "ALMA-USED", "exported"))["worldshare_request_id"]
        # A re-send while the request is live is a duplicate, confirmed OK.
        assert alma_says(system, "ALMA-USED").message_status is MessageStatus.OK
        system.lender(ws_id, "unfill")
        wait_for(lambda: in_state(system, "ALMA-USED", "unfilled"))
        used = alma_says(system, "ALMA-USED")
        assert used.message_status is MessageStatus.ERROR
        assert used.error_type.value == "UnrecognisedDataValue"
        assert used.error_value == "request id already used"


def test_alma_notification_is_kept_without_patron_data_and_flags(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        alma_says(system, "ALMA-N")
        wait_for(lambda: in_state(system, "ALMA-N", "exported"))
        note = "Patron P-778899 (ramona@example.edu) asks: is it coming before the 20th?"
        told = alma_says(system, "ALMA-N", Action.NOTIFICATION, note=note)
        assert told.message_status is MessageStatus.OK
        request = system.find("ALMA-N")
        assert request["needs_attention"]
        assert "is it coming before the 20th?" in request["attention_reason"]
        [event] = [e for e in request["events"] if e["kind"] == "alma_notification"]
        kept = event["detail"]["note"]
        assert "is it coming before the 20th?" in kept
        assert "P-778899" not in repr(request) and "ramona@example.edu" not in repr(request)


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
        wait_for(lambda: notices(system, "ALMA-503"), timeout=20, what="WillSupply")
        assert notices(system, "ALMA-503") == [("RequestResponse", "WillSupply", None)]

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


def test_loaned_carries_the_lenders_return_address(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        alma_says(system, "ALMA-RA")
        ws_id = wait_for(lambda: in_state(system, "ALMA-RA", "exported"))["worldshare_request_id"]
        address = {
            "attention": "ILL Lending",
            "address1": "1 Library Walk",
            "locality": "Gainesville",
            "postal": "32611",
        }
        system.lender(ws_id, "ship", due_date="2027-06-01", return_address=address)
        wait_for(lambda: len(system.alma_messages("ALMA-RA")) >= 2 or None, what="Loaned")
        loaned = system.alma_messages("ALMA-RA")[1]
        assert loaned["status"] == "Loaned"
        assert loaned["returnTo"] == "1 Library Walk, Gainesville, 32611"


def test_the_item_id_alma_gets_has_the_institutions_prefix(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        changed = system.api(
            "PATCH",
            "/api/v1/institutions/UNIV",
            json={"alma": {"item_barcode_prefix": "FLVC-ILL-"}},
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["alma"]["item_barcode_prefix"] == "FLVC-ILL-"
        alma_says(system, "ALMA-PFX")
        ws_id = wait_for(lambda: in_state(system, "ALMA-PFX", "exported"))["worldshare_request_id"]
        system.lender(ws_id, "ship", due_date="2027-06-01")
        shipped = wait_for(lambda: in_state(system, "ALMA-PFX", "shipped"))
        assert shipped["item_barcode"] == f"FLVC-ILL-{shipped['id']:09d}"
        wait_for(lambda: len(system.alma_messages("ALMA-PFX")) >= 2 or None, what="Loaned")
        assert system.alma_messages("ALMA-PFX")[1]["itemId"] == shipped["item_barcode"]


def test_a_held_cancel_is_answered_no_when_alma_receives_the_item(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        alma_says(system, "ALMA-CR")
        wait_for(lambda: in_state(system, "ALMA-CR", "exported"))
        alma_says(system, "ALMA-CR", Action.CANCEL)
        assert alma_says(system, "ALMA-CR", Action.RECEIVED).message_status is MessageStatus.OK
        received = system.find("ALMA-CR")
        assert received["state"] == "in_library" and received["tasks"] == []
        wait_for(lambda: ("CancelResponse", "Loaned", "N") in notices(system, "ALMA-CR"))
