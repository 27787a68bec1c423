"""token expiry and last use; the institution change log

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.timeutil

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("expires_at", app.timeutil.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("last_used_at", app.timeutil.UTCDateTime(timezone=True), nullable=True)
        )

    op.create_table(
        "institution_audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("at", app.timeutil.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institution.id"],
            name=op.f("fk_institution_audit_institution_id_institution"),
        ),
        sa.ForeignKeyConstraint(
            ["token_id"], ["api_token.id"], name=op.f("fk_institution_audit_token_id_api_token")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_institution_audit")),
    )
    with op.batch_alter_table("institution_audit", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_institution_audit_institution_id"), ["institution_id"], unique=False
        )


def downgrade() -> None:
    # The change log goes first: it refers to api_token, which SQLite's batch mode rebuilds.
    with op.batch_alter_table("institution_audit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_institution_audit_institution_id"))
    op.drop_table("institution_audit")

    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
        batch_op.drop_column("expires_at")
