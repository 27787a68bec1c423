"""Typed settings, read from the environment (prefix ILLBRIDGE_) and never at import time."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

VAR_DIR = Path("var")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ILLBRIDGE_", extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{VAR_DIR / 'illbridge.db'}",
        description="sqlite:///path or postgresql+psycopg://user@host/db",
    )
    secret_key: SecretStr | None = Field(
        default=None, description="Fernet key that encrypts institution secrets at rest"
    )
    secret_keys: SecretStr | None = Field(
        default=None,
        description="Fernet keys, comma-separated, newest first (key rotation); "
        "ILLBRIDGE_SECRET_KEY, if also set, is tried after them",
    )
    sandbox: bool = Field(
        default=False, description="Mount the simulated Alma and WorldShare and seed a demo"
    )
    public_url: str = Field(
        default="http://127.0.0.1:8000", description="Where this service is reachable"
    )
    log_level: str = "INFO"
    metrics_token: SecretStr | None = Field(
        default=None,
        min_length=1,
        description="When set, /metrics needs `Authorization: Bearer <it>`",
    )
    metrics_cache_seconds: float = Field(
        default=15.0, ge=0, description="How long /metrics reuses its database gauges"
    )
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    opentelemetry: bool = Field(
        default=False,
        description="FastAPI's native OpenTelemetry spans, metrics and logs (off: /metrics and"
        " the JSON logs are the service's observability, and the per-request checks cost)",
    )
    stats_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long /api/v1/stats reuses its counts (per institution and process)",
    )

    # Bounded by the connection pool (40) and the thread pool handlers' database steps use.
    worker_concurrency: int = Field(default=16, ge=1, le=32)
    worker_prefetch: int = Field(
        default=8, ge=0, le=32, description="Jobs claimed ahead of free slots, claimed in batches"
    )
    worker_poll_seconds: float = Field(default=0.5, gt=0)
    job_lease_seconds: float = Field(default=60.0, gt=0)
    job_deadline_seconds: float = Field(
        default=45.0,
        gt=0,
        description="How long one run of a handler may take; shorter than the lease",
    )
    worker_drain_seconds: float = Field(
        default=30.0,
        ge=0,
        description="On SIGTERM, how long running handlers may finish before their jobs go back",
    )
    job_max_attempts: int = Field(default=8, ge=1)
    job_backoff_base_seconds: float = Field(default=2.0, gt=0)
    job_backoff_cap_seconds: float = Field(default=900.0, gt=0)
    periodic_tick_seconds: float = Field(
        default=5.0, gt=0, description="How often workers check for due periodic jobs"
    )
    finished_job_retention_days: int = Field(default=14, ge=1)
    retention_purge_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="How often patron links of requests past policy.retention_days are purged",
    )
    poll_dispatch_seconds: float = Field(
        default=10.0, gt=0, description="How often due WorldShare polls are queued"
    )
    outbound_timeout_seconds: float = Field(default=10.0, gt=0)
    outbound_allowed_hosts: str = Field(
        default="",
        description="Host patterns the bridge may call, comma-separated, fnmatch-style "
        "(*.oclc.org); empty allows any host",
    )

    @field_validator("outbound_allowed_hosts")
    @classmethod
    def _hosts_not_urls(cls, value: str) -> str:
        for pattern in value.split(","):
            if any(mark in pattern for mark in ("/", "@", ":")):
                raise ValueError(
                    f"{pattern.strip()!r} is not a host pattern (no scheme, port, path)"
                )
        return value

    # psycopg counts the connect timeout in whole seconds and waits at least 2.
    db_connect_timeout_seconds: int = Field(default=5, ge=2, le=60)
    db_statement_timeout_ms: int = Field(
        default=5_000,
        ge=100,
        description="PostgreSQL's statement_timeout; SQLite's wait for the write lock",
    )
    db_pool_timeout_seconds: float = Field(
        default=5.0, gt=0, description="How long to wait for a free pooled connection"
    )

    @model_validator(mode="after")
    def _deadline_within_lease(self) -> Settings:
        if self.job_deadline_seconds >= self.job_lease_seconds:
            raise ValueError(
                f"job_deadline_seconds ({self.job_deadline_seconds:g}) must be shorter than "
                f"job_lease_seconds ({self.job_lease_seconds:g})"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
