"""staff_task: what only a human can do, one row per task, opened and closed on the timeline

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.timeutil

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "staff_task",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=48), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("opened_at", app.timeutil.UTCDateTime(timezone=True), nullable=False),
        sa.Column("closed_at", app.timeutil.UTCDateTime(timezone=True), nullable=True),
        sa.Column("resolution", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institution.id"],
            name=op.f("fk_staff_task_institution_id_institution"),
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["borrowing_request.id"],
            name=op.f("fk_staff_task_request_id_borrowing_request"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_task")),
    )
    op.create_index(
        "ix_staff_task_open", "staff_task", ["institution_id", "closed_at", "opened_at"]
    )
    op.create_index("ix_staff_task_request_kind", "staff_task", ["request_id", "kind"])


def downgrade() -> None:
    op.drop_index("ix_staff_task_request_kind", table_name="staff_task")
    op.drop_index("ix_staff_task_open", table_name="staff_task")
    op.drop_table("staff_task")
