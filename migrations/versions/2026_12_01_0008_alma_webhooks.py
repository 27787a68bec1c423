"""Alma webhooks: the patron loan on a request, resource-sharing libraries, policy.close_on

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("borrowing_request") as batch:
        batch.add_column(
            sa.Column("alma_loan_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
        batch.add_column(
            sa.Column("alma_item_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
        batch.create_index("ix_borrowing_request_alma_loan_id", ["alma_loan_id"])
        batch.create_index("ix_borrowing_request_alma_item_id", ["alma_item_id"])
    with op.batch_alter_table("institution") as batch:
        batch.add_column(
            sa.Column(
                "alma_resource_sharing_libraries",
                sa.JSON(),
                nullable=False,
                server_default=sa.text("'[]'"),
            )
        )
        # Institutions from before keep shipped_return; new ones close on the patron's return.
        batch.alter_column(
            "close_on",
            existing_type=sa.String(length=32),
            server_default="patron_return",
            existing_nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("institution") as batch:
        batch.alter_column(
            "close_on",
            existing_type=sa.String(length=32),
            server_default="shipped_return",
            existing_nullable=False,
        )
        batch.drop_column("alma_resource_sharing_libraries")
    with op.batch_alter_table("borrowing_request") as batch:
        batch.drop_index("ix_borrowing_request_alma_item_id")
        batch.drop_index("ix_borrowing_request_alma_loan_id")
        batch.drop_column("alma_item_id")
        batch.drop_column("alma_loan_id")
