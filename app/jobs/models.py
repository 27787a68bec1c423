"""The durable job table: the transactional outbox every outbound call goes through."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index, String
from sqlmodel import Field, SQLModel

from app.timeutil import UTCDateTime, utcnow


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DEAD = "dead"


class Job(SQLModel, table=True):
    __tablename__ = "job"
    __table_args__ = (
        Index("ix_job_status_run_at", "status", "run_at"),
        # Operators' lists, newest first by status or kind (and per institution).
        Index("ix_job_status_id", "status", "id"),
        # The task list's dead jobs, oldest first.
        Index("ix_job_status_updated_at_id", "status", "updated_at", "id"),
        Index("ix_job_kind_id", "kind", "id"),
        Index("ix_job_institution_id_id", "institution_id", "id"),
        Index("ix_job_institution_id_status_id", "institution_id", "status", "id"),
        # The newest job of a kind per institution (e.g. the last poll, on the overview).
        Index("ix_job_institution_id_kind_status_id", "institution_id", "kind", "status", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=64)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(
        default=JobStatus.QUEUED.value, sa_column=Column(String(16), nullable=False)
    )
    # Same key, same job: makes "at most once per transition" and "once per period" hold.
    dedupe_key: str | None = Field(
        default=None, sa_column=Column(String(255), unique=True, nullable=True)
    )
    # Jobs with one serial key run one at a time, oldest first (one request's Alma notices).
    serial_key: str | None = Field(default=None, max_length=128, index=True)
    institution_id: int | None = Field(default=None, foreign_key="institution.id")
    request_id: int | None = Field(default=None, foreign_key="borrowing_request.id", index=True)
    attempts: int = Field(default=0)
    # The kind's limit, written when a worker claims the job.
    max_attempts: int = Field(default=8)
    run_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    lease_token: str | None = Field(default=None, max_length=64)
    lease_expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    last_error: str | None = Field(default=None, max_length=1000)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    finished_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
