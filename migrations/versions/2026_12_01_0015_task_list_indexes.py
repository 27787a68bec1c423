"""task list: each source read in order from an index of its own rows

Open staff tasks, flagged requests and lost exports get partial indexes (only their rows, in the list's order);
dead jobs an index by status then the list's order. Without them a page joined and sorted every
open task, or walked every request without a WorldShare id.

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = sa.text("closed_at IS NULL")
LOST_EXPORT = sa.text("worldshare_request_id IS NULL AND export_attempted_at IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_staff_task_open", table_name="staff_task")
    op.drop_index("ix_staff_task_closed_at_opened_at", table_name="staff_task")
    op.create_index(
        "ix_staff_task_open_institution_id_opened_at_id",
        "staff_task",
        ["institution_id", "opened_at", "id"],
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )
    op.create_index(
        "ix_staff_task_open_opened_at_id",
        "staff_task",
        ["opened_at", "id"],
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )
    op.create_index("ix_job_status_updated_at_id", "job", ["status", "updated_at", "id"])
    op.create_index(
        "ix_borrowing_request_flagged_updated_at_id",
        "borrowing_request",
        ["updated_at", "id"],
        postgresql_where=sa.text("needs_attention IS true"),
        sqlite_where=sa.text("needs_attention IS 1"),
    )
    op.create_index(
        "ix_borrowing_request_lost_export_attempted_at_id",
        "borrowing_request",
        ["export_attempted_at", "id"],
        postgresql_where=LOST_EXPORT,
        sqlite_where=LOST_EXPORT,
    )


def downgrade() -> None:
    op.drop_index("ix_borrowing_request_flagged_updated_at_id", table_name="borrowing_request")
    op.drop_index("ix_borrowing_request_lost_export_attempted_at_id", table_name="borrowing_request")
    op.drop_index("ix_job_status_updated_at_id", table_name="job")
    op.drop_index("ix_staff_task_open_opened_at_id", table_name="staff_task")
    op.drop_index("ix_staff_task_open_institution_id_opened_at_id", table_name="staff_task")
    op.create_index("ix_staff_task_closed_at_opened_at", "staff_task", ["closed_at", "opened_at"])
    op.create_index(
        "ix_staff_task_open", "staff_task", ["institution_id", "closed_at", "opened_at"]
    )
