"""A URL stored before the allowed hosts were narrowed is refused when the worker calls it."""

from __future__ import annotations

from tests.e2e.test_export_pipeline import register, worldshare
from tests.support.bridge import running_system, wait_for


def test_the_worker_never_sends_credentials_to_a_host_outside_the_list(fast_settings, engine):
    # The sandboxes listen on 127.0.0.1; only "localhost" is allowed.
    narrowed = fast_settings.model_copy(update={"outbound_allowed_hosts": "localhost"})
    with running_system(narrowed, engine) as system:
        created = register(system, "HOSTS-1")
        flagged = wait_for(
            lambda: (r := system.request(created["id"]))["needs_attention"] and r, timeout=20
        )
        assert flagged["state"] == "received"
        assert "ILLBRIDGE_OUTBOUND_ALLOWED_HOSTS" in flagged["attention_reason"]
        [job] = system.api("GET", "/api/v1/jobs", params={"status": "dead"}).json()["items"]
        assert job["kind"] == "worldshare.export" and job["attempts"] == 1
        assert job["last_error"] == (
            "outbound call refused: host '127.0.0.1' is not in ILLBRIDGE_OUTBOUND_ALLOWED_HOSTS"
        )
        stats = worldshare(system, "/_sandbox/stats")
        assert (stats["token_requests"], stats["creates"]) == (0, 0)
