"""`make run` + `illbridge demo`: the seeded DEMO institution and the demo's Alma agree on the
ISO 18626 security code, and a demo the bridge refuses says why at once."""

from __future__ import annotations

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
        run_demo(url, read_demo_token(), alma_request_id="DEMO-T1")
    printed = capsys.readouterr().out
    assert "bridge: closed" in printed
    loan, copy = printed.split("what Alma was told about ")[1:]
    told = [line.strip() for line in loan.splitlines()[1:] if line.strip()]
    assert told[0] == "RequestResponse WillSupply"
    assert told[1].startswith("StatusChange Loaned due ") and " item ILL-" in told[1]
    assert told[2].startswith("RenewResponse Loaned Y due ")
    assert told[3] == "RequestResponse LoanCompleted"
    assert [line.strip() for line in copy.splitlines()[1:] if line.strip()] == [
        "RequestResponse WillSupply",
        "StatusChange CopyCompleted",
    ]
    assert "refused by Alma" not in printed
    # The patron's loan: linked by LOAN_CREATED, moved by the renewal, closed by the return scan.
    assert "bridge: on_loan" in printed
    put = next(line for line in printed.splitlines() if "PUT loan" in line)
    assert "patron due" in put
    assert "staff task: mark_returned_in_worldshare" in printed
    assert "ShippedReturn" not in printed


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
