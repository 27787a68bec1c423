"""Indexes that match the lists' filters and their order (newest first by id), so every list,
search and count of the API and the dashboard reads a page in index order at 1,000,000 requests

Replaces the single-column indexes on borrowing_request.institution_id and .needs_attention and
on job.kind and .institution_id by composite ones that lead with the same column.

Revision ID: 0013
Revises: 0011
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW = [
    ("ix_borrowing_request_institution_id_id", "borrowing_request", ["institution_id", "id"]),
    (
        "ix_borrowing_request_institution_id_state_id",
        "borrowing_request",
        ["institution_id", "state", "id"],
    ),
    ("ix_borrowing_request_state_id", "borrowing_request", ["state", "id"]),
    ("ix_borrowing_request_needs_attention_id", "borrowing_request", ["needs_attention", "id"]),
    (
        "ix_borrowing_request_institution_id_needs_attention_id",
        "borrowing_request",
        ["institution_id", "needs_attention", "id"],
    ),
    ("ix_borrowing_request_alma_request_id", "borrowing_request", ["alma_request_id"]),
    ("ix_job_status_id", "job", ["status", "id"]),
    ("ix_job_kind_id", "job", ["kind", "id"]),
    ("ix_job_institution_id_id", "job", ["institution_id", "id"]),
    ("ix_job_institution_id_status_id", "job", ["institution_id", "status", "id"]),
    ("ix_staff_task_closed_at_opened_at", "staff_task", ["closed_at", "opened_at"]),
]

REPLACED = [
    ("ix_borrowing_request_institution_id", "borrowing_request", ["institution_id"]),
    ("ix_borrowing_request_needs_attention", "borrowing_request", ["needs_attention"]),
    ("ix_job_kind", "job", ["kind"]),
    ("ix_job_institution_id", "job", ["institution_id"]),
]


def upgrade() -> None:
    for name, table, columns in NEW:
        op.create_index(op.f(name), table, columns, unique=False)
    for name, table, _columns in REPLACED:
        op.drop_index(op.f(name), table_name=table)


def downgrade() -> None:
    for name, table, columns in REPLACED:
        op.create_index(op.f(name), table, columns, unique=False)
    for name, table, _columns in reversed(NEW):
        op.drop_index(op.f(name), table_name=table)
