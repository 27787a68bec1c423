"""Settings that could not work together are refused at start-up, with what to change."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import Settings


def test_a_job_deadline_must_be_shorter_than_the_lease() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(job_lease_seconds=30, job_deadline_seconds=30)
    assert "job_deadline_seconds (30) must be shorter than job_lease_seconds (30)" in str(
        refused.value
    )
    assert Settings(job_lease_seconds=30, job_deadline_seconds=29).job_deadline_seconds == 29
