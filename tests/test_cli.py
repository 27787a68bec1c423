"""The `illbridge` command, run as an operator would: a subprocess configured by environment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import inspect

from app.db import create_db_engine
from app.main import create_app
from app.models import metadata
from tests.conftest import SECRET_KEY
from tests.support.api_checks import citation_body
from tests.support.factories import bearer

ROOT = Path(__file__).resolve().parent.parent


def illbridge(database_url: str, *args: str, secret_key: str | None = SECRET_KEY):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ILLBRIDGE_")}
    env["ILLBRIDGE_DATABASE_URL"] = database_url
    env["PYTHONPATH"] = str(ROOT)
    if secret_key is not None:
        env["ILLBRIDGE_SECRET_KEY"] = secret_key
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _no_traceback(result) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


def test_institutions_and_a_token_that_works(database_url, settings):
    config = {"alma": {"api_key": "cli-alma-key"}, "policy": {"stale_after_days": 45}}
    added = illbridge(
        database_url, "institution", "add", "--code", "CLI", "--name", "CLI Library",
        "--config", json.dumps(config),
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    shown = json.loads(added.stdout)
    assert (shown["code"], shown["alma"]["api_key_set"]) == ("CLI", True)
    assert "cli-alma-key" not in added.stdout

    updated = illbridge(
        database_url, "institution", "update", "--code", "CLI", "--name", "Renamed", "--inactive"
    )
    assert updated.returncode == 0, updated.stderr
    listed = illbridge(database_url, "institution", "list")
    assert listed.returncode == 0, listed.stderr
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (row["name"], row["active"], row["policy"]["stale_after_days"]) == ("Renamed", False, 45)

    created = illbridge(
        database_url, "token", "create", "--name", "ops", "--scope", "requests:read",
        "--scope", "requests:write", "--institution", "CLI",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert created.stdout.count(token) == 1

    with TestClient(create_app(settings)) as client:
        # An inactive institution takes no new request, on this path as over ISO 18626.
        response = client.post(
            "/api/v1/requests", json=citation_body("CLI", "A-1"), headers=bearer(token)
        )
        assert response.status_code == 404, response.text
        reactivated = illbridge(database_url, "institution", "update", "--code", "CLI", "--active")
        assert reactivated.returncode == 0, reactivated.stderr
        response = client.post(
            "/api/v1/requests", json=citation_body("CLI", "A-1"), headers=bearer(token)
        )
        assert response.status_code == 201, response.text
        # Bound to CLI and without admin: institutions are out of its reach.
        assert client.get("/api/v1/institutions", headers=bearer(token)).status_code == 403


def test_operator_mistakes_end_cleanly(sqlite_template, tmp_path):
    # The command's error handling does not depend on the database: SQLite alone.
    database_url = f"sqlite:///{tmp_path / 'cli.db'}"
    shutil.copyfile(sqlite_template, tmp_path / "cli.db")
    unknown_scope = illbridge(database_url, "token", "create", "--name", "x", "--scope", "root")
    assert unknown_scope.returncode != 0
    assert "invalid choice: 'root'" in unknown_scope.stderr
    _no_traceback(unknown_scope)

    unknown_institution = illbridge(
        database_url, "token", "create", "--name", "x", "--scope", "admin", "--institution", "NO"
    )
    assert unknown_institution.returncode != 0
    assert "no institution 'NO'" in unknown_institution.stderr
    _no_traceback(unknown_institution)

    bad_json = illbridge(
        database_url, "institution", "add", "--code", "X", "--name", "X", "--config", "{oops"
    )
    assert bad_json.returncode != 0 and "not valid JSON" in bad_json.stderr
    _no_traceback(bad_json)

    invalid = illbridge(
        database_url, "institution", "add", "--code", "X", "--name", "X",
        "--config", '{"policy": {"status_map": {"A": "nonsense"}}}',
    )  # fmt: skip
    assert invalid.returncode != 0 and "invalid institution configuration" in invalid.stderr
    _no_traceback(invalid)

    no_key = illbridge(database_url, "institution", "list", secret_key=None)
    assert no_key.returncode != 0 and "ILLBRIDGE_SECRET_KEY" in no_key.stderr
    _no_traceback(no_key)


def test_migrate_builds_a_fresh_sqlite_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh' / 'illbridge.db'}"
    before = illbridge(url, "token", "create", "--name", "x", "--scope", "admin")
    assert before.returncode != 0 and "illbridge migrate" in before.stderr
    _no_traceback(before)

    migrated = illbridge(url, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    engine = create_db_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) == {*metadata.tables, "alembic_version"}
    finally:
        engine.dispose()
    again = illbridge(url, "migrate")
    assert again.returncode == 0, again.stderr
    assert illbridge(url, "token", "create", "--name", "x", "--scope", "admin").returncode == 0
