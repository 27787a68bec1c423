"""The `illbridge` command, run as an operator would: a subprocess configured by environment."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import inspect

from app.db import create_db_engine
from app.institutions.secrets import hash_api_token
from app.main import create_app
from app.models import metadata
from tests.support.api_checks import citation_body
from tests.support.cli import illbridge, no_traceback
from tests.support.factories import bearer, make_token


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
    no_traceback(unknown_scope)

    unknown_institution = illbridge(
        database_url, "token", "create", "--name", "x", "--scope", "admin", "--institution", "NO"
    )
    assert unknown_institution.returncode != 0
    assert "no institution 'NO'" in unknown_institution.stderr
    no_traceback(unknown_institution)

    bad_json = illbridge(
        database_url, "institution", "add", "--code", "X", "--name", "X", "--config", "{oops"
    )
    assert bad_json.returncode != 0 and "not valid JSON" in bad_json.stderr
    no_traceback(bad_json)

    invalid = illbridge(
        database_url, "institution", "add", "--code", "X", "--name", "X",
        "--config", '{"policy": {"status_map": {"A": "nonsense"}}}',
    )  # fmt: skip
    assert invalid.returncode != 0 and "invalid institution configuration" in invalid.stderr
    no_traceback(invalid)

    no_key = illbridge(database_url, "institution", "list", secret_key=None)
    assert no_key.returncode != 0 and "ILLBRIDGE_SECRET_KEY" in no_key.stderr
    no_traceback(no_key)


def test_migrate_builds_a_fresh_sqlite_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh' / 'illbridge.db'}"
    before = illbridge(url, "token", "create", "--name", "x", "--scope", "admin")
    assert before.returncode != 0 and "illbridge migrate" in before.stderr
    no_traceback(before)

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


def test_a_validation_error_never_prints_a_secret(sqlite_template, tmp_path):
    database_url = f"sqlite:///{tmp_path / 'cli.db'}"
    shutil.copyfile(sqlite_template, tmp_path / "cli.db")
    secret = "cli-secret-4f2a"
    # Pydantic's own message would echo the list, the whole object, the other field's value.
    configs = {
        "alma.api_key: Input should be a valid string": {"alma": {"api_key": [secret]}},
        "configuration: Value error, text must not contain NUL characters": {
            "worldshare": {"scope": "bad\u0000scope", "key": secret}
        },
        "worldshare.institution_id: String should match pattern": {
            "worldshare": {"institution_id": "abc", "secret": secret}
        },
    }
    for problem, config in configs.items():
        refused = illbridge(
            database_url, "institution", "add", "--code", "X", "--name", "X",
            "--config", json.dumps(config),
        )  # fmt: skip
        assert secret not in refused.stderr + refused.stdout
        assert "input_value" not in refused.stderr
        assert refused.returncode != 0 and "invalid institution configuration" in refused.stderr
        assert problem in refused.stderr
        no_traceback(refused)


def test_tokens_listed_revoked_and_expiring(database_url, settings):
    created = illbridge(
        database_url, "token", "create", "--name", "short", "--scope", "admin",
        "--expires-in-days", "2",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "expires " in created.stdout
    plain = created.stdout.strip().splitlines()[-1]

    listed = illbridge(database_url, "token", "list")
    assert listed.returncode == 0, listed.stderr
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (row["name"], row["revoked_at"]) == ("short", None)
    expires = datetime.fromisoformat(row["expires_at"])
    assert timedelta(days=1, hours=23) < expires - datetime.now(UTC) <= timedelta(days=2)
    assert plain not in listed.stdout and hash_api_token(plain) not in listed.stdout

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.get("/api/v1/tokens", headers=bearer(plain)).status_code == 200
        revoked = illbridge(database_url, "token", "revoke", str(row["id"]))
        assert revoked.returncode == 0, revoked.stderr
        assert revoked.stdout.strip() == f"token {row['id']} (short) revoked"
        assert client.get("/api/v1/tokens", headers=bearer(plain)).status_code == 401

    unknown = illbridge(database_url, "token", "revoke", "4242")
    assert unknown.returncode != 0 and "no token 4242" in unknown.stderr
    no_traceback(unknown)
    never = illbridge(
        database_url, "token", "create", "--name", "x", "--scope", "admin",
        "--expires-in-days", "0",
    )  # fmt: skip
    assert never.returncode != 0 and "a whole number from 1 to 36500" in never.stderr


def test_cli_changes_follow_the_same_rules_and_are_logged(database_url, settings, engine):
    config = {
        "worldshare": {"token_url": "https://oauth.oclc.org/token", "key": "k", "secret": "s"}
    }
    added = illbridge(
        database_url, "institution", "add", "--code", "CLI", "--name", "CLI Library",
        "--config", json.dumps(config),
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    moved = illbridge(
        database_url, "institution", "update", "--code", "CLI",
        "--config", json.dumps({"worldshare": {"token_url": "https://evil.example/t"}}),
    )  # fmt: skip
    assert moved.returncode != 0
    assert "requires worldshare.key, worldshare.secret" in moved.stderr
    outside = illbridge(
        database_url, "institution", "update", "--code", "CLI", "--inactive",
        "--config", json.dumps({"alma": {"api_base_url": "https://evil.example/almaws"}}),
        env={"ILLBRIDGE_OUTBOUND_ALLOWED_HOSTS": "*.oclc.org"},
    )  # fmt: skip
    assert outside.returncode != 0 and "'evil.example' is not in" in outside.stderr
    renamed = illbridge(database_url, "institution", "update", "--code", "CLI", "--name", "New")
    assert renamed.returncode == 0, renamed.stderr

    admin = bearer(make_token(engine, ["admin"]))
    with TestClient(create_app(settings)) as client:
        items = client.get("/api/v1/institutions/CLI/audit", headers=admin).json()["items"]
    assert [(i["actor"], i["action"], i["fields"]) for i in items] == [
        ("cli", "updated", ["name"]),
        ("cli", "created", ["code", "name", "worldshare.key", "worldshare.secret",
                            "worldshare.token_url"]),
    ]  # fmt: skip
