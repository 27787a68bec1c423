"""The migrations build exactly the models' schema, and tear it down again, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from app.db import create_db_engine
from app.migrations import downgrade, upgrade
from app.models import metadata
from tests.conftest import BACKENDS, POSTGRES_URL, throwaway_postgres_database


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all: a new SQLite file, or a throw-away PostgreSQL one."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip("ILLBRIDGE_TEST_POSTGRES_URL is not set")
    with throwaway_postgres_database("illbridge_migrations") as url:
        yield url


def _tables(url: str) -> set[str]:
    engine = create_db_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _differences(url: str) -> list[object]:
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(empty_database):
    assert _tables(empty_database) == set()

    upgrade(empty_database)
    assert _tables(empty_database) == {*metadata.tables, "alembic_version"}
    assert _differences(empty_database) == []

    downgrade(empty_database, "base")
    assert _tables(empty_database) == {"alembic_version"}

    upgrade(empty_database)
    assert _differences(empty_database) == []


def test_institutions_from_before_the_opt_out_must_send_the_security_code(empty_database):
    upgrade(empty_database, "0001")
    engine = create_db_engine(empty_database)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO institution (code, name, active, cancel_reason, stale_after_days,"
                    " patron_due_date_offset_days, retention_days, poll_interval_seconds,"
                    " status_map, created_at, updated_at) VALUES ('OLD', 'Old', true, 'X', 1, 1,"
                    " 1, 1, '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
        upgrade(empty_database, "0003")
        with engine.connect() as connection:
            opted_out = connection.execute(
                text("SELECT alma_iso18626_allow_without_code FROM institution")
            ).scalar_one()
        assert opted_out is not None and not opted_out  # SQLite answers 0, PostgreSQL False
        downgrade(empty_database, "0001")
        with engine.connect() as connection:
            assert connection.execute(text("SELECT code FROM institution")).scalar_one() == "OLD"
    finally:
        engine.dispose()


def test_0002_keeps_the_tokens_it_extends(empty_database):
    """Upgrading to and downgrading from 0002 keeps existing rows (SQLite rebuilds api_token)."""
    upgrade(empty_database, "0001")
    engine = create_db_engine(empty_database)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO institution (code, name, active, cancel_reason, stale_after_days,"
                    " patron_due_date_offset_days, retention_days, poll_interval_seconds,"
                    " status_map, created_at, updated_at) VALUES ('UNIV', 'U', true, 'R', 1, 1,"
                    " 1, 1, '{}', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO api_token (name, token_hash, scopes, institution_id, created_at)"
                    " VALUES ('ops', 'h1', '[\"admin\"]', 1, '2026-01-01 00:00:00')"
                )
            )
        upgrade(empty_database)
        with engine.begin() as connection:
            assert connection.execute(
                text("SELECT name, expires_at, last_used_at FROM api_token")
            ).all() == [("ops", None, None)]
            connection.execute(
                text(
                    "INSERT INTO institution_audit (institution_id, at, actor, token_id, action,"
                    " fields) VALUES (1, '2026-01-02 00:00:00', 'ops', 1, 'updated', '[\"name\"]')"
                )
            )
        downgrade(empty_database, "0001")
        with engine.connect() as connection:
            tokens = connection.execute(text("SELECT name, token_hash FROM api_token")).all()
        assert tokens == [("ops", "h1")]
        assert "institution_audit" not in _tables(empty_database)
    finally:
        engine.dispose()
    upgrade(empty_database)
    assert _differences(empty_database) == []


def test_institutions_from_before_the_library_settings_are_incomplete_and_survive(empty_database):
    upgrade(empty_database, "0004")
    engine = create_db_engine(empty_database)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO institution (code, name, active, cancel_reason, stale_after_days,"
                    " patron_due_date_offset_days, retention_days, poll_interval_seconds,"
                    " status_map, alma_iso18626_allow_without_code, created_at, updated_at)"
                    " VALUES ('OLD', 'Old', true, 'X', 1, 1, 1, 1, '{}', false,"
                    " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
        upgrade(empty_database, "0005")
        with engine.connect() as connection:
            row = connection.execute(
                text(
                    "SELECT worldshare_billing_address, worldshare_lenders,"
                    " worldshare_refresh_token_encrypted FROM institution"
                )
            ).one()
        assert tuple(row) == (None, None, None)
        downgrade(empty_database, "0004")
        with engine.connect() as connection:
            assert connection.execute(text("SELECT code FROM institution")).scalar_one() == "OLD"
            columns = {c["name"] for c in inspect(connection).get_columns("institution")}
        assert not {c for c in columns if c.startswith("worldshare_billing")}
    finally:
        engine.dispose()
