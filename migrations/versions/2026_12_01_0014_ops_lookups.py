"""ops: newest-first lookups per institution (last message per source, last poll)

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_inbound_message_institution_id_source_id",
        "inbound_message",
        ["institution_id", "source", "id"],
    )
    op.create_index(
        "ix_job_institution_id_kind_status_id", "job", ["institution_id", "kind", "status", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_job_institution_id_kind_status_id", table_name="job")
    op.drop_index("ix_inbound_message_institution_id_source_id", table_name="inbound_message")
