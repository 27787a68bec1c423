"""Whatever patron data a request carries, none of it reaches WorldShare or a log line."""

from __future__ import annotations

import asyncio
import itertools
import logging

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
