"""Whatever patron data a request carries, none of it reaches WorldShare or a log line."""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.observability import JsonFormatter
from app.sandbox.alma_requester import send_request
from tests.support.bridge import (
    ALMA_AGENCY,
    BRIDGE_AGENCY,
    SECURITY_CODE,
    running_system,
    wait_for,
)

# Every generated value starts with a mark no log line or id can hold (ids are hex, and "Pq"
# begins no English word), so a hit means the value leaked, not that a common word matched.
letters = st.text(
    alphabet="ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz", min_size=6, max_size=20
)
names = letters.map(lambda text: f"Pq{text}")
patrons = st.fixed_dictionaries(
    {
        "patron_id": st.from_regex(r"PqID[0-9A-Z]{8,16}", fullmatch=True),
        "surname": names,
        "given_name": names,
        "email": st.builds(lambda local, host: f"{local}@{host}.edu", names, names),
    }
)


class Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_patron_data_reaches_neither_worldshare_nor_logs(fast_settings, engine):
    collector = Collector()
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(collector)
    root.setLevel(logging.DEBUG)
    numbers = itertools.count()
    try:
        with running_system(fast_settings, engine) as system:

            @settings(
                max_examples=12,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            )
            @given(patron=patrons)
            def check(patron: dict[str, str]) -> None:
                alma_request_id = f"PRIV-{next(numbers)}"
                collector.lines.clear()

                async def send() -> None:
                    async with httpx.AsyncClient(timeout=10.0) as http:
                        await send_request(
                            http,
                            system.alma_url,
                            bridge_url=system.iso_url,
                            request_id=alma_request_id,
                            citation={"title": "A Study in Scarlet", "author": "Doyle"},
                            patron=patron,
                            requesting_agency=ALMA_AGENCY,
                            supplying_agency=BRIDGE_AGENCY,
                            security_code=SECURITY_CODE,
                        )

                asyncio.run(send())
                found = wait_for(
                    lambda: (r := system.find(alma_request_id)) and r["state"] == "exported" and r
                )
                outbound = repr(system.http.get(f"{system.worldshare_url}/_sandbox/calls").json())
                logged = "\n".join(collector.lines)
                assert "iso_message_taken" in logged and "job_succeeded" in logged
                public = repr(found)
                for value in patron.values():
                    assert value not in outbound, "patron data sent to WorldShare"
                    assert value not in logged, "patron data written to the log"
                    assert value not in public, "patron data in the API's request record"

            check()
    finally:
        root.removeHandler(collector)
        root.setLevel(previous_level)


def test_the_patrons_loan_leaves_their_id_in_no_log_event_task_error_or_metric(
    fast_settings, engine
):
    from app.sandbox.alma_requester import send_action
    from app.sandbox.alma_vocabulary import Action

    patron_id = "PqIDLOAN4242XYZ"
    collector = Collector()
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(collector)
    root.setLevel(logging.DEBUG)
    sender = {
        "bridge_url": "",
        "request_id": "PRIV-LOAN",
        "requesting_agency": ALMA_AGENCY,
        "supplying_agency": BRIDGE_AGENCY,
        "security_code": SECURITY_CODE,
    }
    try:
        with running_system(fast_settings, engine) as system:
            sender["bridge_url"] = system.iso_url

            async def alma(action: Action | None) -> None:
                async with httpx.AsyncClient(timeout=10.0) as http:
                    if action is None:
                        await send_request(
                            http,
                            system.alma_url,
                            citation={"title": "A Study in Scarlet"},
                            patron={"patron_id": patron_id, "surname": "PqSurname"},
                            **sender,  # type: ignore[arg-type]
                        )
                    else:
                        await send_action(http, system.alma_url, action=action, **sender)  # type: ignore[arg-type]

            asyncio.run(alma(None))

            def reached(state: str) -> dict[str, Any]:
                def check() -> dict[str, Any] | None:
                    found = system.find("PRIV-LOAN")
                    return found if found and found["state"] == state else None

                return wait_for(check, what=state)

            exported = reached("exported")
            system.lender(exported["worldshare_request_id"], "ship", due_date="2027-01-15")
            shipped = reached("shipped")
            asyncio.run(alma(Action.RECEIVED))
            loan = system.loan(shipped["item_barcode"], "2027-01-20", user_id=patron_id)
            # A patron date past the lender's: a drift task, with its message.
            reached("on_loan")
            asyncio.run(alma(Action.RENEW))
            system.api(
                "POST",
                f"/api/v1/requests/{shipped['id']}/renewal",
                json={"approved": True, "due_date": "2027-02-15"},
            )
            wait_for(lambda: system.alma_loan(loan["loan_id"])["puts"] == 1 or None)
            system.loan_event(loan["loan_id"], "LOAN_LOST")
            system.loan_event(loan["loan_id"], "LOAN_RETURNED")
            reached("returned")
            system.lender(exported["worldshare_request_id"], "close")
            closed = reached("closed")
            # An unmatched loan in the resource-sharing library: kept for staff.
            system.loan("PqUNMATCHED1", "2027-03-01", user_id=patron_id, library="ILL")
            metrics = system.http.get(f"{system.bridge_url}/metrics").text
            jobs = system.api("GET", "/api/v1/jobs").text
            logged = "\n".join(collector.lines)
            assert "webhook_taken" in logged
            assert {"due_date_drift", "lost"} <= {t["kind"] for t in closed["tasks"]} | {
                e["detail"].get("task") for e in closed["events"]
            }
            for where, text in {
                "log": logged,
                "timeline and tasks": repr(closed),
                "metrics": metrics,
                "jobs": jobs,
            }.items():
                hits = [line for line in text.splitlines() if patron_id in line]
                assert not hits, f"the patron's id is in the {where}: {hits[:3]}"
    finally:
        root.removeHandler(collector)
        root.setLevel(previous_level)
