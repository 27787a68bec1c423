"""Alma over ISO 18626: service kind, renewal and cancel asks, close_on, barcode prefix, serial jobs

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.timeutil

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REQUEST_COLUMNS = (
    "service_kind",
    "lender_renewals",
    "lender_renewal_status",
    "renewal_asked_at",
    "renewal_asked_renewals",
    "renewal_asked_due_date",
    "renewal_asked_status",
    "cancel_asked_at",
    "lender_return_address",
)


def upgrade() -> None:
    with op.batch_alter_table("borrowing_request", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("service_kind", sa.String(length=8), server_default="loan", nullable=False)
        )
        batch_op.add_column(sa.Column("lender_renewals", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "lender_renewal_status",
                sqlmodel.sql.sqltypes.AutoString(length=64),
                nullable=True,
            )
        )
        batch_op.add_column(
            sa.Column(
                "renewal_asked_at", app.timeutil.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch_op.add_column(sa.Column("renewal_asked_renewals", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("renewal_asked_due_date", sa.Date(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "renewal_asked_status",
                sqlmodel.sql.sqltypes.AutoString(length=64),
                nullable=True,
            )
        )
        batch_op.add_column(
            sa.Column("cancel_asked_at", app.timeutil.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("lender_return_address", sa.JSON(), nullable=True))
    with op.batch_alter_table("institution", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "alma_iso18626_profile",
                sa.String(length=32),
                server_default="alma",
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column(
                "alma_item_barcode_prefix",
                sa.String(length=32),
                server_default="ILL-",
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column(
                "close_on", sa.String(length=32), server_default="shipped_return", nullable=False
            )
        )
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("serial_key", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True)
        )
        batch_op.create_index(batch_op.f("ix_job_serial_key"), ["serial_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_serial_key"))
        batch_op.drop_column("serial_key")
    with op.batch_alter_table("institution", schema=None) as batch_op:
        batch_op.drop_column("close_on")
        batch_op.drop_column("alma_item_barcode_prefix")
        batch_op.drop_column("alma_iso18626_profile")
    with op.batch_alter_table("borrowing_request", schema=None) as batch_op:
        for column in reversed(_REQUEST_COLUMNS):
            batch_op.drop_column(column)
