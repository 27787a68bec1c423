"""Serving engines carry the configured timeouts, beside whatever the database URL asks for."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.config import Settings
from app.db import engine_for


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_the_statement_timeout_joins_the_urls_own_options(settings: Settings) -> None:
    url = make_url(settings.database_url).update_query_dict({"options": "-c search_path=public"})
    configured = settings.model_copy(
        update={
            "database_url": url.render_as_string(hide_password=False),
            "db_statement_timeout_ms": 1234,
        }
    )
    engine = engine_for(configured)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SHOW statement_timeout")).scalar() == "1234ms"
            assert connection.execute(text("SHOW search_path")).scalar() == "public"
    finally:
        engine.dispose()
