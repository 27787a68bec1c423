"""API shapes of jobs and of the service's vital statistics."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class JobPublic(BaseModel):
    id: int
    kind: str
    status: str
    payload: dict[str, Any]
    request_id: int | None
    attempts: int
    max_attempts: int
    run_at: datetime
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class JobPage(BaseModel):
    items: list[JobPublic]
    next_cursor: str | None


class Stats(BaseModel):
    requests_by_state: dict[str, int]
    requests_needing_attention: int
    jobs_by_status: dict[str, int]
    queue_depth: int = Field(description="Queued jobs that are due now")
    oldest_queued_job_age_seconds: float | None = Field(
        description="How long the oldest due job has waited; null when none waits"
    )
    dead_jobs: int
    worldshare_calls_last_24h: dict[str, int] = Field(
        default_factory=dict,
        description="WorldShare calls in the last 24 hours per WSKey, named by the first 12 "
        "characters of the key's SHA-256 (never the key); for an admin token only",
    )
    counted_at: datetime = Field(
        description="When these figures were read: they are reused for up to"
        " ILLBRIDGE_STATS_CACHE_SECONDS (5 s by default) rather than counted on every call"
    )
