"""Secrets and tokens never reach the log, even at DEBUG with the database's own logging on."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.observability import configure_logging
from tests.conftest import SECRET_KEY
from tests.support.factories import bearer, make_token

ALMA_KEY = "l8xx-never-log-alma-4e1f"
WEBHOOK_SECRETS = ["whsec-never-log-a9", "whsec-never-log-b7"]
WS_KEY = "wskey-never-log-3c"
WS_SECRET = "wssecret-never-log-5d"


@pytest.fixture
def app_log() -> Iterator[io.StringIO]:
    """The app's own JSON logging at DEBUG, with SQL logging on too; restored afterwards."""
    root = logging.getLogger()
    sql = logging.getLogger("sqlalchemy.engine")
    saved = (root.handlers[:], root.level, sql.level, logging.getLogger("uvicorn.access").disabled)
    configure_logging("DEBUG")
    sql.setLevel(logging.INFO)
    buffer = io.StringIO()
    for handler in root.handlers:
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(buffer)
    yield buffer
    root.handlers[:], root.level = saved[0], saved[1]
    sql.setLevel(saved[2])
    logging.getLogger("uvicorn.access").disabled = saved[3]


def _lines(captured: str) -> list[dict[str, object]]:
    lines = [line for line in captured.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def test_institution_writes_and_token_use_leave_no_secret_in_the_log(app_log, settings, engine):
    admin = make_token(engine, ["admin"])
    forged = "ilb_forged0000000000000000000000000000000000"
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        created = client.post(
            "/api/v1/institutions",
            json={
                "code": "LOG",
                "name": "Logged",
                "alma": {"api_key": ALMA_KEY, "webhook_secrets": WEBHOOK_SECRETS},
                "worldshare": {"key": WS_KEY, "secret": WS_SECRET},
            },
            headers=bearer(admin),
        )
        assert created.status_code == 201, created.text
        updated = client.patch(
            "/api/v1/institutions/LOG",
            json={"alma": {"api_key": ALMA_KEY + "-rotated"}, "worldshare": {"secret": WS_SECRET}},
            headers=bearer(admin),
        )
        assert updated.status_code == 200, updated.text
        assert client.get("/api/v1/requests", headers=bearer(forged)).status_code == 401
        refused = client.post(
            "/api/v1/institutions",
            json={"code": "BAD", "name": "x", "alma": {"api_key": ALMA_KEY, "bogus": 1}},
            headers=bearer(admin),
        )
        assert refused.status_code == 422
    logged = app_log.getvalue()
    entries = _lines(logged)
    # The capture works: the SQL of these very writes is in it, with their parameters.
    assert any("INSERT INTO institution" in str(entry["event"]) for entry in entries)
    assert any("UPDATE institution" in str(entry["event"]) for entry in entries)
    assert "gAAAA" in logged  # the secrets' parameters, in their encrypted (Fernet) form
    for value in [ALMA_KEY, *WEBHOOK_SECRETS, WS_KEY, WS_SECRET, admin, forged, SECRET_KEY]:
        assert value not in logged


def test_cli_token_create_prints_the_token_once_and_logs_nothing_of_it(database_url, engine):
    env = {
        **os.environ,
        "ILLBRIDGE_DATABASE_URL": database_url,
        "ILLBRIDGE_SECRET_KEY": SECRET_KEY,
        "ILLBRIDGE_LOG_LEVEL": "DEBUG",
    }
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "token", "create", "--name", "ops", "--scope", "admin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("ilb_")
    assert result.stdout.count(token) == 1
    assert token not in result.stderr
