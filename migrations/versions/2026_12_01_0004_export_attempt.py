"""export attempt marker: a WorldShare create is never sent twice for one request

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.timeutil

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("borrowing_request") as batch:
        batch.add_column(
            sa.Column("export_attempted_at", app.timeutil.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("borrowing_request") as batch:
        batch.drop_column("export_attempted_at")
