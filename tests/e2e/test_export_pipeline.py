"""Export and polling through the real worker against the WorldShare sandbox over HTTP."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from sqlalchemy import text

from app.institutions.secrets import load_secret_box
from app.jobs.kinds import Payload
from app.jobs.queue import ClaimedJob
from app.observability import Metrics
from app.runtime import open_runtime
from app.sandbox.worldshare import WorldShareSandboxSettings
from app.workflows.export import export_citation
from tests.support.bridge import System, running_system, wait_for


def register(system: System, alma_request_id: str, **citation: Any) -> dict[str, Any]:
    body = {
        "institution": "UNIV",
        "alma_request_id": alma_request_id,
        "requester_user_id": "patron-0042",
        "citation": {"title": "The Book of Tea", "author": "Okakura Kakuzo", **citation},
    }
    response = system.api("POST", "/api/v1/requests", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def state_of(system: System, request_id: int) -> str:
    return str(system.request(request_id)["state"])


def worldshare(system: System, path: str, method: str = "GET", **body: Any) -> Any:
    response = system.http.request(method, f"{system.worldshare_url}{path}", json=body or None)
    response.raise_for_status()
    return response.json() if response.content else None


def creates_sent(system: System) -> list[dict[str, Any]]:
    calls = worldshare(system, "/_sandbox/calls")
    return [json.loads(c["body"]) for c in calls if c["url"].endswith("/ILL/request/data")]


def test_hundred_concurrent_exports_share_one_token(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        ids = [register(system, f"BULK-{n}")["id"] for n in range(100)]
        wait_for(
            lambda: (
                all(state_of(system, i) == "exported" for i in ids[-5:])
                and system.api("GET", "/api/v1/stats").json()["requests_by_state"].get("exported")
                == 100
            ),
            timeout=60,
            what="100 exports",
        )
        stats = worldshare(system, "/_sandbox/stats")
        assert stats["creates"] == 100
        assert stats["token_requests"] == 1


def test_expired_token_is_refreshed_once(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        first = register(system, "TOK-1")
        wait_for(lambda: state_of(system, first["id"]) == "exported")
        worldshare(system, "/_sandbox/faults", "POST", expire_tokens=True)
        second = register(system, "TOK-2")
        wait_for(lambda: state_of(system, second["id"]) == "exported")
        assert worldshare(system, "/_sandbox/stats")["token_requests"] == 2


def test_throttling_is_retried_after_retry_after(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        worldshare(
            system,
            "/_sandbox/faults",
            "POST",
            fail_next=[
                {"status": 429, "retry_after": 1, "path": "request"},
                {"status": 503, "retry_after": 1, "path": "request"},
            ],
        )
        created = register(system, "RETRY-1")
        wait_for(lambda: state_of(system, created["id"]) == "exported", timeout=20)

        def export_job() -> dict[str, Any]:
            jobs = system.api("GET", "/api/v1/jobs", params={"request_id": created["id"]}).json()
            return next(j for j in jobs["items"] if j["kind"] == "worldshare.export")

        # The request is marked exported in its own transaction, just before the job ends.
        export = wait_for(lambda: (job := export_job())["status"] == "succeeded" and job)
        # The 429 paused the key and deferred the job without spending an attempt; the 503 did.
        assert export["attempts"] == 2
        # Retry-After (1 s) was honoured twice although the backoff cap is 0.5 s.
        detail = system.request(created["id"])
        exported_at = next(e["at"] for e in detail["events"] if e["kind"] == "exported")
        assert _seconds_between(created["created_at"], exported_at) >= 2.0


def _seconds_between(earlier: str, later: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def test_validation_error_is_dead_and_flagged(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        worldshare(
            system,
            "/_sandbox/faults",
            "POST",
            validation_error={"failureCode": 30001, "fieldName": "item.title"},
        )
        created = register(system, "BAD-1")
        flagged = wait_for(
            lambda: (r := system.request(created["id"]))["needs_attention"] and r, timeout=20
        )
        assert flagged["state"] == "received"
        assert "30001" in flagged["attention_reason"]
        assert "item.title" in flagged["attention_reason"]
        jobs = system.api("GET", "/api/v1/jobs", params={"status": "dead"}).json()["items"]
        assert [j["kind"] for j in jobs] == ["worldshare.export"]
        assert jobs[0]["attempts"] == 1  # permanent: not retried

        # Once the cause is fixed, an operator replays the dead job.
        worldshare(system, "/_sandbox/faults", "DELETE")
        replay = system.api("POST", f"/api/v1/jobs/{jobs[0]['id']}/retry")
        assert replay.status_code == 200, replay.text
        wait_for(lambda: state_of(system, created["id"]) == "exported")


def test_an_institution_without_a_billing_address_exports_nothing(fast_settings, engine):
    with running_system(fast_settings, engine, library={"billing_address": None}) as system:
        created = register(system, "NOBILL-1")
        flagged = wait_for(
            lambda: (r := system.request(created["id"]))["needs_attention"] and r, timeout=20
        )
        assert flagged["state"] == "received"
        assert (
            "WorldShare configuration incomplete: worldshare.billing_address"
            in flagged["attention_reason"]
        )
        assert worldshare(system, "/_sandbox/stats")["creates"] == 0
        assert not creates_sent(system)
        with engine.connect() as connection:
            attempted = connection.execute(
                text("SELECT export_attempted_at FROM borrowing_request")
            ).scalar_one()
        assert attempted is None  # no attempt mark: nothing can have been created
        shown = system.api("GET", "/api/v1/institutions/UNIV").json()["worldshare"]
        assert (shown["complete"], shown["missing"]) == (False, ["worldshare.billing_address"])

        # Once the library's address is set, the dead export is replayed and carries it.
        address = {"attention": "ILL Office", "address1": "1 University Ave"}
        patched = system.api(
            "PATCH", "/api/v1/institutions/UNIV", json={"worldshare": {"billing_address": address}}
        )
        assert patched.json()["worldshare"]["complete"] is True
        dead = system.api("GET", "/api/v1/jobs", params={"status": "dead"}).json()["items"]
        assert system.api("POST", f"/api/v1/jobs/{dead[0]['id']}/retry").status_code == 200
        exported = wait_for(
            lambda: (r := system.request(created["id"]))["state"] == "exported" and r
        )
        assert not exported["needs_attention"]
        [create] = creates_sent(system)
        sent = create["illRequest"]["requester"]["requesterBilling"]
        assert sent["address"] == address


def test_export_running_twice_creates_one_worldshare_request(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        created = register(system, "TWICE-1")
        wait_for(lambda: state_of(system, created["id"]) == "exported")
        job = ClaimedJob(
            id=0,
            kind="worldshare.export",
            payload={},
            attempts=1,
            max_attempts=1,
            lease_token="replayed",
            institution_id=None,
            request_id=created["id"],
        )

        async def replay() -> None:
            async with open_runtime(fast_settings, Metrics()) as ctx:
                await export_citation(ctx, job, Payload())
                await export_citation(ctx, job, Payload())

        asyncio.run(replay())
        assert worldshare(system, "/_sandbox/stats")["creates"] == 1
        assert system.request(created["id"])["state"] == "exported"


def test_polling_applies_lender_changes_and_flags_unknown_status(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        shipped = register(system, "POLL-1")
        lost = register(system, "POLL-2")
        for request in (shipped, lost):
            wait_for(lambda r=request: state_of(system, r["id"]) == "exported")
        ws_shipped = system.request(shipped["id"])["worldshare_request_id"]
        ws_lost = system.request(lost["id"])["worldshare_request_id"]
        worldshare(system, f"/_sandbox/requests/{ws_shipped}/ship", "POST", due_date="2027-05-20")
        worldshare(system, f"/_sandbox/requests/{ws_lost}/status", "POST", status="LOST")

        done = wait_for(lambda: state_of(system, shipped["id"]) == "shipped", timeout=20)
        assert done
        record = system.request(shipped["id"])
        assert record["lender_due_date"] == "2027-05-20"
        assert record["lender_status"] == "IN_TRANSIT"

        flagged = wait_for(lambda: (r := system.request(lost["id"]))["needs_attention"] and r)
        assert flagged["state"] == "exported"  # recorded and flagged, never guessed
        assert "LOST" in flagged["attention_reason"]
        assert "lender_status_unknown" in [e["kind"] for e in flagged["events"]]


def test_status_map_override_from_the_institution_policy(fast_settings, engine):
    policy = {"status_map": {"LOST": "cancelled"}}
    with running_system(fast_settings, engine, policy=policy) as system:
        created = register(system, "MAP-1")
        wait_for(lambda: state_of(system, created["id"]) == "exported")
        ws_id = system.request(created["id"])["worldshare_request_id"]
        worldshare(system, f"/_sandbox/requests/{ws_id}/status", "POST", status="Lost")
        wait_for(lambda: state_of(system, created["id"]) == "cancelled", timeout=20)


def test_a_poll_answer_about_another_request_is_not_applied(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        created = register(system, "MIX-1")
        ws_id = wait_for(lambda: (r := system.request(created["id"]))["state"] == "exported" and r)[
            "worldshare_request_id"
        ]
        worldshare(system, "/_sandbox/faults", "POST", misdirect_reads=True)
        worldshare(system, f"/_sandbox/requests/{ws_id}/ship", "POST", due_date="2027-05-20")

        flagged = wait_for(lambda: (r := system.request(created["id"]))["needs_attention"] and r)
        assert flagged["attention_reason"] == (
            "WorldShare poll answer not applied: requestId mismatch: the poll of WorldShare "
            f"request {ws_id} was answered for request {int(ws_id) + 1_000_000}"
        )
        reads = worldshare(system, "/_sandbox/stats")["reads"]
        wait_for(lambda: worldshare(system, "/_sandbox/stats")["reads"] >= reads + 2, timeout=10)
        record = system.request(created["id"])
        assert (record["state"], record["lender_due_date"], record["lender_status"]) == (
            "exported",
            None,
            None,
        )
        kinds = [e["kind"] for e in record["events"]]
        assert (kinds.count("lender_answer_mismatch"), kinds.count("flagged")) == (1, 1)

        worldshare(system, "/_sandbox/faults", "DELETE")
        wait_for(lambda: state_of(system, created["id"]) == "shipped", timeout=20)


def test_a_worldshare_request_carrying_another_reference_is_not_applied(fast_settings, engine):
    with running_system(fast_settings, engine) as system:
        created = register(system, "REF-1")
        ws_id = wait_for(lambda: (r := system.request(created["id"]))["state"] == "exported" and r)[
            "worldshare_request_id"
        ]
        # WorldShare staff typed something else into the Reference ID, a patron's name even.
        worldshare(system, f"/_sandbox/requests/{ws_id}/edit", "POST", reference_id="Jane Roe")
        worldshare(system, f"/_sandbox/requests/{ws_id}/ship", "POST")

        flagged = wait_for(lambda: (r := system.request(created["id"]))["needs_attention"] and r)
        assert flagged["state"] == "exported"
        assert flagged["attention_reason"] == (
            "WorldShare poll answer not applied: referenceId mismatch: WorldShare request "
            f"{ws_id} does not carry this request's Alma id REF-1 as its referenceId"
        )
        assert "Jane Roe" not in system.api("GET", f"/api/v1/requests/{created['id']}").text


def test_a_staff_users_refresh_token_is_used_and_its_rotations_kept(fast_settings, engine):
    sandbox = WorldShareSandboxSettings(refresh_tokens={"rt_signed_in": "sandbox-key"})
    library = {"refresh_token": "rt_signed_in"}
    box = load_secret_box(fast_settings)

    def stored_refresh_token() -> str:
        with engine.connect() as connection:
            encrypted = connection.execute(
                text("SELECT worldshare_refresh_token_encrypted FROM institution")
            ).scalar_one()
        return box.decrypt(encrypted)

    def refresh_tokens_sent() -> list[str]:
        calls = worldshare(system, "/_sandbox/calls")
        forms = [parse_qs(c["body"]) for c in calls if c["url"].endswith("/oauth/token")]
        assert all(form["grant_type"] == ["refresh_token"] for form in forms)
        return [form["refresh_token"][0] for form in forms]

    with running_system(fast_settings, engine, worldshare=sandbox, library=library) as system:
        first = register(system, "USER-1")
        wait_for(lambda: state_of(system, first["id"]) == "exported")
        rotated = stored_refresh_token()
        assert refresh_tokens_sent() == ["rt_signed_in"]
        assert rotated.startswith("rt_") and rotated != "rt_signed_in"
        shown = system.api("GET", "/api/v1/institutions/UNIV")
        assert shown.json()["worldshare"]["refresh_token_set"] is True
        assert shown.json()["worldshare"]["refresh_token_expires_at"] is not None
        assert rotated not in shown.text

        # The access token expires: the next one is got with the rotated refresh token, since
        # OCLC now refuses the first one.
        worldshare(system, "/_sandbox/faults", "POST", expire_tokens=True)
        second = register(system, "USER-2")
        wait_for(lambda: state_of(system, second["id"]) == "exported")
        assert refresh_tokens_sent() == ["rt_signed_in", rotated]
        assert stored_refresh_token() not in ("rt_signed_in", rotated)
