"""stale detection (reason on the request, policy thresholds) and clean-up batches

Revision ID: 0010
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.timeutil

revision: str = "0010"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cleanup_batch",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("max_requests", sa.Integer(), nullable=False),
        sa.Column("requested_by", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", app.timeutil.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", app.timeutil.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institution.id"],
            name=op.f("fk_cleanup_batch_institution_id_institution"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cleanup_batch")),
    )
    op.create_index(
        op.f("ix_cleanup_batch_institution_id"), "cleanup_batch", ["institution_id"]
    )
    op.create_table(
        "cleanup_item",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("why", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("lender_status", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
        sa.Column("at", app.timeutil.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["cleanup_batch.id"], name=op.f("fk_cleanup_item_batch_id_cleanup_batch")
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["borrowing_request.id"],
            name=op.f("fk_cleanup_item_request_id_borrowing_request"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cleanup_item")),
    )
    op.create_index("ix_cleanup_item_batch_request", "cleanup_item", ["batch_id", "request_id"])

    with op.batch_alter_table("borrowing_request", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "alma_internal_request_id",
                sqlmodel.sql.sqltypes.AutoString(length=128),
                nullable=True,
            )
        )
        batch_op.add_column(
            sa.Column("stale_reason", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True)
        )
        batch_op.add_column(
            sa.Column("stale_since", app.timeutil.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            batch_op.f("ix_borrowing_request_stale_reason"), ["stale_reason"], unique=False
        )

    # Existing institutions get the defaults: two weeks for a renewal answer, no automatic run.
    with op.batch_alter_table("institution", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("renewal_answer_days", sa.Integer(), nullable=False, server_default="14")
        )
        batch_op.add_column(
            sa.Column("auto_cleanup", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("institution", schema=None) as batch_op:
        batch_op.drop_column("auto_cleanup")
        batch_op.drop_column("renewal_answer_days")

    with op.batch_alter_table("borrowing_request", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_borrowing_request_stale_reason"))
        batch_op.drop_column("stale_since")
        batch_op.drop_column("stale_reason")
        batch_op.drop_column("alma_internal_request_id")

    op.drop_index("ix_cleanup_item_batch_request", table_name="cleanup_item")
    op.drop_table("cleanup_item")
    op.drop_index(op.f("ix_cleanup_batch_institution_id"), table_name="cleanup_batch")
    op.drop_table("cleanup_batch")
