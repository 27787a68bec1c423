"""Alma webhooks: the patron loan on a request, resource-sharing libraries, policy.close_on

Revision ID: 0008
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008"
down_revision: str | None = "0006"
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
        batch.add_column(
            sa.Column(
                "close_on",
                sa.Enum(
                    "patron_return",
                    "shipped_return",
                    "lender_checkin",
                    name="closeon",
                    native_enum=False,
                    create_constraint=False,
                    length=32,
                ),
                nullable=False,
                server_default="patron_return",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("institution") as batch:
        batch.drop_column("close_on")
        batch.drop_column("alma_resource_sharing_libraries")
    with op.batch_alter_table("borrowing_request") as batch:
        batch.drop_index("ix_borrowing_request_alma_item_id")
        batch.drop_index("ix_borrowing_request_alma_loan_id")
        batch.drop_column("alma_item_id")
        batch.drop_column("alma_loan_id")
