"""The patron's loan over real HTTP: Alma's LOAN webhooks, due dates that follow an approved
renewal (RenewResponse + the loan PUT), and the close on the patron's return scan."""

from __future__ import annotations

import time
from typing import Any

from sqlmodel import Session, select

from app.borrowing.models import BorrowingRequest, InboundMessage, RequestEvent
from app.borrowing.tasks import StaffTask
from app.db import write_session
from app.jobs.models import Job
from app.sandbox.alma_vocabulary import Action, MessageStatus
from tests.e2e.test_iso_lifecycle import alma_says, in_state, notices
from tests.support.bridge import PATRON_ID, System, running_system, wait_for


def on_loan(system: System, alma_request_id: str) -> tuple[dict[str, Any], str]:
    """Alma sends the request, the lender ships, Alma receives and loans it to the patron."""
    assert alma_says(system, alma_request_id).message_status is MessageStatus.OK
    exported = wait_for(lambda: in_state(system, alma_request_id, "exported"), what="export")
    system.lender(exported["worldshare_request_id"], "ship", due_date="2027-01-15")
    shipped = wait_for(lambda: in_state(system, alma_request_id, "shipped"), what="shipment")
    assert alma_says(system, alma_request_id, Action.RECEIVED).message_status is MessageStatus.OK
    loan = system.loan(shipped["item_barcode"], "2027-01-08", request_id=alma_request_id)
    assert loan["sent"]["answer"] == {"status": "accepted"}
    loaned = wait_for(lambda: in_state(system, alma_request_id, "on_loan"), what="on loan")
    assert loaned["alma_loan_id"] == loan["loan_id"]
    assert loaned["patron_due_date"] == "2027-01-08"
    return loaned, loan["loan_id"]


def test_loan_renewal_and_return_scan_close_the_request(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        loaned, loan_id = on_loan(system, "ALMA-L1")
        request_id = loaned["id"]

        assert alma_says(system, "ALMA-L1", Action.RENEW).message_status is MessageStatus.OK
        assert system.find("ALMA-L1")["state"] == "renewal_requested"
        answer = {"approved": True, "due_date": "2027-02-15"}
        reported = system.api("POST", f"/api/v1/requests/{request_id}/renewal", json=answer)
        assert reported.status_code == 200, reported.text
        # Alma is told RenewResponse Y with the lender's new date …
        wait_for(lambda: ("RenewResponse", "Loaned", "Y") in notices(system, "ALMA-L1"))
        renew = next(m for m in system.alma_messages("ALMA-L1") if m["answerYesNo"] == "Y")
        assert renew["dueDate"].startswith("2027-02-15")
        # … and the patron's loan moves to that date less the 7-day offset, read back.
        wait_for(lambda: system.alma_loan(loan_id)["due_date"].startswith("2027-02-08"))
        updated = wait_for(
            lambda: [
                e for e in system.find("ALMA-L1")["events"] if e["kind"] == "patron_loan_updated"
            ]
        )
        assert updated[0]["detail"] == {"patron_due_date": "2027-02-08", "read_back": "2027-02-08"}

        # Reported again: no second RenewResponse, no second PUT.
        again = system.api("POST", f"/api/v1/requests/{request_id}/renewal", json=answer)
        assert again.status_code == 200

        sent = system.loan_event(loan_id, "LOAN_RETURNED")
        assert sent["sent"]["answer"] == {"status": "accepted"}
        returned = wait_for(lambda: in_state(system, "ALMA-L1", "returned"), what="return")
        wait_for(
            lambda: notices(system, "ALMA-L1")[-1] == ("RequestResponse", "LoanCompleted", None),
            what="LoanCompleted on the return scan",
        )
        assert system.alma_request("ALMA-L1")["status"] == "LoanCompleted"
        assert [t["kind"] for t in returned["tasks"]] == ["mark_returned_in_worldshare"]
        assert returned["worldshare_request_id"] in returned["tasks"][0]["reason"]
        # The bridge's side closes when WorldShare does: the lender checked the item in.
        system.lender(returned["worldshare_request_id"], "close")
        closed = wait_for(lambda: in_state(system, "ALMA-L1", "closed"), what="close")
        assert closed["tasks"] == []
        applied = [e["kind"] for e in closed["events"] if e["applied"]]
        for step in ("patron_loaned", "renewal_approved", "patron_returned", "loan_completed"):
            assert step in applied
        assert system.alma_loan(loan_id)["puts"] == 1
        assert [n[2] for n in notices(system, "ALMA-L1") if n[0] == "RenewResponse"] == ["Y"]
        # The patron's id went to Alma (their own loan), never onto the timeline.
        assert PATRON_ID not in str(closed["events"]) + str(closed["tasks"])


def test_a_refused_renewal_changes_no_date(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        loaned, loan_id = on_loan(system, "ALMA-L2")
        assert alma_says(system, "ALMA-L2", Action.RENEW).message_status is MessageStatus.OK
        answer = {"approved": False}
        reported = system.api("POST", f"/api/v1/requests/{loaned['id']}/renewal", json=answer)
        assert reported.status_code == 200, reported.text
        wait_for(lambda: ("RenewResponse", "Loaned", "N") in notices(system, "ALMA-L2"))
        after = wait_for(lambda: in_state(system, "ALMA-L2", "on_loan"))
        assert (after["lender_due_date"], after["patron_due_date"]) == ("2027-01-15", "2027-01-08")
        assert system.alma_loan(loan_id)["puts"] == 0
        assert system.alma_loan(loan_id)["due_date"].startswith("2027-01-08")


def test_a_loan_that_is_not_an_interlibrary_loan_leaves_no_row(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        with Session(engine) as session:
            before = {
                table.__name__: len(session.exec(select(table)).all())
                for table in (BorrowingRequest, InboundMessage, RequestEvent, StaffTask, Job)
            }
        sent = system.loan("39031031234567", "2027-03-01", library="MAIN")
        assert sent["sent"] == {
            "event_id": sent["sent"]["event_id"],
            "http_status": 200,
            "answer": {"status": "ignored"},
        }
        returned = system.loan_event(sent["loan_id"], "LOAN_RETURNED")
        assert returned["sent"]["answer"] == {"status": "ignored"}
        with Session(engine) as session:
            after = {
                table.__name__: len(session.exec(select(table)).all())
                for table in (BorrowingRequest, InboundMessage, RequestEvent, StaffTask)
            }
        # Periodic jobs may come and go; none is about the loan.
        before.pop("Job")
        assert after == before


def test_a_renewal_seen_by_polling_and_reported_by_the_api_has_its_effects_once(
    fast_settings, engine
):
    with running_system(fast_settings, engine) as system:
        loaned, loan_id = on_loan(system, "ALMA-L3")
        assert alma_says(system, "ALMA-L3", Action.RENEW).message_status is MessageStatus.OK
        system.lender(
            loaned["worldshare_request_id"], "renewal", approve=True, due_date="2027-03-01"
        )
        wait_for(lambda: system.alma_loan(loan_id)["due_date"].startswith("2027-02-22"))
        answer = {"approved": True, "due_date": "2027-03-01"}
        for _ in range(2):
            reported = system.api("POST", f"/api/v1/requests/{loaned['id']}/renewal", json=answer)
            assert reported.status_code == 200
        wait_for(lambda: in_state(system, "ALMA-L3", "on_loan"))
        # Give a second PUT or RenewResponse, if any were queued, time to go out.
        wait_for(
            lambda: any(
                e["kind"] == "patron_loan_updated" for e in system.find("ALMA-L3")["events"]
            )
        )
        system.lender(
            loaned["worldshare_request_id"], "renewal", approve=True, due_date="2027-03-01"
        )
        refused_late = system.api(
            "POST", f"/api/v1/requests/{loaned['id']}/renewal", json={"approved": False}
        )
        assert refused_late.status_code == 200
        time.sleep(1.5)  # several poll cycles: none may move the loan or answer again
        assert system.alma_loan(loan_id)["puts"] == 1
        renew_answers = [n[2] for n in notices(system, "ALMA-L3") if n[0] == "RenewResponse"]
        assert renew_answers == ["Y"]
        assert system.find("ALMA-L3")["lender_due_date"] == "2027-03-01"


def test_alma_refusing_the_loan_update_is_on_the_timeline_with_code_and_tracking_id(
    fast_settings, engine
):
    with running_system(fast_settings, engine) as system:
        loaned, loan_id = on_loan(system, "ALMA-L4")
        with write_session(engine) as session:  # BEGIN IMMEDIATE: the workers write too
            # Alma no longer knows the loan under this user: it answers 400 with its error list.
            request = session.get(BorrowingRequest, loaned["id"])
            assert request is not None
            request.requester_user_id = "someone-else"
            session.add(request)
            session.commit()
        assert alma_says(system, "ALMA-L4", Action.RENEW).message_status is MessageStatus.OK
        answer = {"approved": True, "due_date": "2027-02-15"}
        system.api("POST", f"/api/v1/requests/{loaned['id']}/renewal", json=answer)
        flagged = wait_for(lambda: (r := system.find("ALMA-L4")) and r["needs_attention"] and r)
        reason = flagged["attention_reason"]
        assert "Updating the patron's loan in Alma failed" in reason
        assert "HTTP 400" in reason and "code 401890" in reason and "tracking id E01-" in reason
        assert "someone-else" not in reason
        assert system.alma_loan(loan_id)["puts"] == 0
