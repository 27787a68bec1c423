"""`make run` + `illbridge demo`: the seeded DEMO institution and the demo's Alma agree on the
ISO 18626 security code, and a demo the bridge refuses says why at once."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from app.db import write_session
from app.institutions import service
from app.institutions.schemas import InstitutionUpdate
from app.institutions.secrets import load_secret_box
from app.main import create_app
from app.sandbox.demo import DEMO_CODE, read_demo_token, run_demo, seed_demo
from tests.support.servers import run_asgi_in_thread

# The life cycle takes seconds of polling; SQLite alone shows the seed and the demo agree.
ONLY_SQLITE = pytest.mark.parametrize(
    "database_url", [pytest.param("sqlite", id="sqlite")], indirect=True
)


@pytest.fixture
def sandbox_settings(fast_settings, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the seed keeps its token under ./var
    return fast_settings.model_copy(update={"sandbox": True})


def told_about(printed: str, request_id: str) -> list[str]:
    """The lines of "what Alma was told about <request_id>"."""
    block = printed.split(f"what Alma was told about {request_id}:\n")[1]
    lines = []
    for line in block.splitlines():
        if not line.startswith("  "):
            break
        lines.append(line.strip())
    return lines


@ONLY_SQLITE
def test_the_seeded_sandbox_plays_the_whole_demo(sandbox_settings, engine, capsys):
    with run_asgi_in_thread(create_app(sandbox_settings, run_worker=True)) as url:
        seed_demo(sandbox_settings, public_url=url)
        with write_session(engine) as session:
            public = service.to_public(
                service.get_by_code(session, DEMO_CODE), load_secret_box(sandbox_settings)
            )
        assert public.alma.iso18626_security_code_set
        assert not public.alma.iso18626_allow_without_code
        with write_session(engine) as session:  # fast settings: poll each second, not each 5
            service.update_institution(
                session,
                load_secret_box(sandbox_settings),
                service.get_by_code(session, DEMO_CODE),
                InstitutionUpdate.model_validate({"policy": {"poll_interval_seconds": 1}}),
                actor=service.Actor(name="test"),
            )
            session.commit()
        started = time.monotonic()
        run_demo(url, read_demo_token(), alma_request_id="DEMO-T1", step_seconds=30)
        took = time.monotonic() - started
        token = read_demo_token()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:

            def end_state(alma_id: str) -> dict:
                found = http.get("/api/v1/requests", params={"alma_request_id": alma_id})
                [item] = found.json()["items"]
                return http.get(f"/api/v1/requests/{item['id']}").json()

            ends = {
                alma_id: end_state(alma_id)
                for alma_id in (
                    "DEMO-T1",
                    "DEMO-T1-COPY",
                    "DEMO-T1-REFUSED",
                    "DEMO-T1-CANCEL",
                    "DEMO-T1-STALE",
                )
            }
            batches = [http.get(f"/api/v1/cleanup/{batch_id}").json() for batch_id in (1, 2)]
    printed = capsys.readouterr().out
    assert took < 60, f"the demo took {took:.1f} s"
    # Every scenario's end state, as the bridge keeps it.
    assert {alma_id: detail["state"] for alma_id, detail in ends.items()} == {
        "DEMO-T1": "closed",
        "DEMO-T1-COPY": "closed",
        "DEMO-T1-REFUSED": "in_library",
        "DEMO-T1-CANCEL": "cancelled",
        "DEMO-T1-STALE": "cancelled",
    }
    refused = ends["DEMO-T1-REFUSED"]
    assert [e["kind"] for e in refused["events"] if e["to_state"] == "in_library"]
    assert refused["lender_due_date"] is not None
    assert ends["DEMO-T1-CANCEL"]["tasks"] == []
    stale = ends["DEMO-T1-STALE"]
    assert [e["source"] for e in stale["events"] if e["to_state"] == "cancelled"] == ["cleanup"]
    dry, real = batches
    assert (dry["dry_run"], real["dry_run"]) == (True, False)
    assert [(i["alma_request_id"], i["action"], i["outcome"]) for i in dry["items"]] == [
        ("DEMO-T1-STALE", "iso_notice", "planned")
    ]
    assert [(i["alma_request_id"], i["action"], i["outcome"]) for i in real["items"]] == [
        ("DEMO-T1-STALE", "iso_notice", "done")
    ]
    # The progress display: every step ticked, none crossed, and the closing line.
    ticks = [line for line in printed.splitlines() if line.startswith("✓ ")]
    assert len(ticks) == 18
    assert "✗" not in printed
    assert f"demo: all {len(ticks)} steps happened as expected" in printed
    # What Alma was told, scenario by scenario.
    loan = told_about(printed, "DEMO-T1")
    assert loan[0] == "RequestResponse WillSupply"
    assert loan[1].startswith("StatusChange Loaned due ") and " item ILL-" in loan[1]
    assert loan[2].startswith("RenewResponse Loaned Y due ")
    assert loan[3] == "RequestResponse LoanCompleted"
    assert told_about(printed, "DEMO-T1-COPY") == [
        "RequestResponse WillSupply",
        "StatusChange CopyCompleted",
    ]
    refused_told = told_about(printed, "DEMO-T1-REFUSED")
    assert refused_told[1].startswith("StatusChange Loaned due ")
    assert refused_told[2].startswith("RenewResponse Loaned N")
    assert told_about(printed, "DEMO-T1-CANCEL") == [
        "RequestResponse WillSupply",
        "CancelResponse Cancelled Y",
    ]
    assert told_about(printed, "DEMO-T1-STALE") == [
        "RequestResponse WillSupply",
        "StatusChange Cancelled",
    ]
    assert "refused by Alma" not in printed
    # The patron's loan: linked by LOAN_CREATED, moved by the renewal, closed by the return scan.
    assert "bridge: on_loan" in printed
    put = next(line for line in printed.splitlines() if "PUT loan" in line)
    assert "patron due" in put
    assert "staff task: mark_returned_in_worldshare" in printed
    assert "staff task: cancel_in_worldshare" in printed
    assert "ShippedReturn" not in printed
    # A readable timeline per request with its /ops page, and no patron data anywhere.
    for alma_id, detail in ends.items():
        assert f"timeline of {alma_id}: {detail['state']} — {url}/ops/requests/{detail['id']}" in (
            printed
        )
    assert "  clean-up dry run (batch " in printed
    assert "DEMO-T1-STALE: iso_notice (WorldShare shows CLOSED) → done" in printed
    for patron_data in ("demo-patron", "Pat", "Demo, "):
        assert patron_data not in printed.split("timelines (no patron data")[1]


@ONLY_SQLITE
def test_a_demo_step_that_does_not_happen_fails_with_the_step(sandbox_settings, engine, capsys):
    """Without a worker nothing is exported: the first step fails in time, named, non-zero."""
    with run_asgi_in_thread(create_app(sandbox_settings, run_worker=False)) as url:
        seed_demo(sandbox_settings, public_url=url)
        with pytest.raises(SystemExit, match="demo failed at step 'DEMO-T3: a loan requested"):
            run_demo(url, read_demo_token(), alma_request_id="DEMO-T3", step_seconds=1)
    printed = capsys.readouterr().out
    assert "✗ DEMO-T3: a loan requested and exported to WorldShare: DEMO-T3 reaching exported" in (
        printed
    )
    assert "✓" not in printed


@ONLY_SQLITE
def test_a_demo_the_bridge_refuses_stops_at_once_with_the_reason(sandbox_settings, engine):
    with run_asgi_in_thread(create_app(sandbox_settings)) as url:
        seed_demo(sandbox_settings, public_url=url)
        with write_session(engine) as session:
            service.update_institution(
                session,
                load_secret_box(sandbox_settings),
                service.get_by_code(session, DEMO_CODE),
                InstitutionUpdate.model_validate({"alma": {"iso18626_security_code": "other"}}),
                actor=service.Actor(name="test"),
            )
            session.commit()
        with pytest.raises(SystemExit, match="sender not recognised"):
            run_demo(url, read_demo_token(), alma_request_id="DEMO-T2")


@ONLY_SQLITE
def test_the_sandbox_clock_is_admin_only_and_absent_outside_sandbox_mode(
    sandbox_settings, fast_settings, engine
):
    age = "/sandbox/bridge/requests/1/age?days=61"
    with run_asgi_in_thread(create_app(fast_settings)) as url:
        assert httpx.post(f"{url}{age}").status_code == 404
    with run_asgi_in_thread(create_app(sandbox_settings)) as url:
        seed_demo(sandbox_settings, public_url=url)
        assert httpx.post(f"{url}{age}").status_code == 401
        admin = {"Authorization": f"Bearer {read_demo_token()}"}
        missing = httpx.post(f"{url}{age}", headers=admin)
        assert missing.status_code == 404
        assert missing.json()["error"] == "not_found"


def test_a_demo_without_a_service_says_so_and_exits_non_zero(unused_port_url, capsys):
    with pytest.raises(SystemExit, match=r"cannot reach .*is the service running in sandbox mode"):
        run_demo(unused_port_url, "no-token", alma_request_id="DEMO-T4", step_seconds=1)
    assert "✗ DEMO-T4: a loan requested" in capsys.readouterr().out


@pytest.fixture
def unused_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
