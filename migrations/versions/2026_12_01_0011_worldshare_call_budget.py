"""worldshare call budget: per-key hourly call counts, 429 pauses, the institution's daily
budget, and when a request's next poll was scheduled

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.timeutil

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "worldshare_call_count",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("hour", app.timeutil.UTCDateTime(timezone=True), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "hour", name=op.f("pk_worldshare_call_count")),
    )
    op.create_table(
        "worldshare_key_pause",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("paused_until", app.timeutil.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_worldshare_key_pause")),
    )
    with op.batch_alter_table("institution") as batch:
        batch.add_column(
            sa.Column(
                "worldshare_daily_call_budget",
                sa.Integer(),
                nullable=False,
                server_default="40000",
            )
        )
    with op.batch_alter_table("borrowing_request") as batch:
        batch.add_column(
            sa.Column("poll_scheduled_at", app.timeutil.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("borrowing_request") as batch:
        batch.drop_column("poll_scheduled_at")
    with op.batch_alter_table("institution") as batch:
        batch.drop_column("worldshare_daily_call_budget")
    op.drop_table("worldshare_key_pause")
    op.drop_table("worldshare_call_count")
