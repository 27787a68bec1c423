"""institution worldshare_*: the library's billing and delivery addresses, lenders, billing terms
and a user-context refresh token, so a create carries what OCLC requires

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.timeutil

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_COLUMNS = (
    "worldshare_billing_address",
    "worldshare_delivery_address",
    "worldshare_lenders",
    "worldshare_max_cost",
    "worldshare_billing_types",
)


def upgrade() -> None:
    # All nullable: an institution from before has no billing address and shows as incomplete.
    with op.batch_alter_table("institution", schema=None) as batch_op:
        for name in JSON_COLUMNS:
            batch_op.add_column(sa.Column(name, sa.JSON(none_as_null=True), nullable=True))
        batch_op.add_column(
            sa.Column(
                "worldshare_delivery_email",
                sqlmodel.sql.sqltypes.AutoString(length=254),
                nullable=True,
            )
        )
        batch_op.add_column(
            sa.Column(
                "worldshare_refresh_token_encrypted",
                sqlmodel.sql.sqltypes.AutoString(),
                nullable=True,
            )
        )
        batch_op.add_column(
            sa.Column(
                "worldshare_refresh_token_expires_at",
                app.timeutil.UTCDateTime(timezone=True),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("institution", schema=None) as batch_op:
        batch_op.drop_column("worldshare_refresh_token_expires_at")
        batch_op.drop_column("worldshare_refresh_token_encrypted")
        batch_op.drop_column("worldshare_delivery_email")
        for name in reversed(JSON_COLUMNS):
            batch_op.drop_column(name)
