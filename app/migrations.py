"""Run the Alembic migrations programmatically (the CLI, the tests and `make run`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

_SOURCE_TREE = Path(__file__).resolve().parent.parent
# From a source checkout the scripts sit beside the package; in an image, in the working directory.
ROOT = _SOURCE_TREE if (_SOURCE_TREE / "alembic.ini").exists() else Path.cwd()


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)
