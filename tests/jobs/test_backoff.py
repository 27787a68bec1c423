"""Retry delays: capped exponential backoff with full jitter, floored by Retry-After."""

from __future__ import annotations

import random

import pytest

from app.jobs.backoff import MAX_RETRY_AFTER_SECONDS, retry_delay

SAMPLES = 2000


def _delays(attempt: int, *, base: float = 2.0, cap: float = 900.0, **kwargs: float) -> list[float]:
    rng = random.Random(attempt)
    return [retry_delay(attempt, base=base, cap=cap, rng=rng, **kwargs) for _ in range(SAMPLES)]


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 2.0), (2, 4.0), (3, 8.0), (6, 64.0)])
def test_delay_is_full_jitter_below_the_exponential_ceiling(attempt: int, ceiling: float) -> None:
    delays = _delays(attempt)
    assert all(0.0 <= delay <= ceiling for delay in delays)
    # Full jitter: the whole range [0, ceiling] is used, not just its top.
    assert min(delays) < 0.05 * ceiling
    assert max(delays) > 0.95 * ceiling


def test_ceiling_doubles_per_attempt() -> None:
    assert max(_delays(5)) > 2 * 0.95 * 8.0
    assert max(_delays(4)) <= 16.0


@pytest.mark.parametrize("attempt", [10, 64, 1100, 10**6])
def test_delay_never_exceeds_the_cap(attempt: int) -> None:
    delays = _delays(attempt, cap=900.0)
    assert all(0.0 <= delay <= 900.0 for delay in delays)
    assert max(delays) > 0.95 * 900.0


def test_jitter_spreads_workers_that_fail_together() -> None:
    rng = random.Random(1)
    delays = {retry_delay(4, base=2.0, cap=900.0, rng=rng) for _ in range(50)}
    assert len(delays) == 50


def test_retry_after_is_a_floor() -> None:
    delays = _delays(1, base=2.0, cap=900.0, retry_after=120.0)
    assert all(delay >= 120.0 for delay in delays)


def test_retry_after_beyond_the_cap_is_still_honoured() -> None:
    delays = _delays(3, base=1.0, cap=10.0, retry_after=3600.0)
    assert all(delay == 3600.0 for delay in delays)


def test_retry_after_below_the_jitter_does_not_shorten_it() -> None:
    delays = _delays(6, base=2.0, cap=900.0, retry_after=1.0)
    assert all(delay >= 1.0 for delay in delays)
    assert max(delays) > 0.95 * 64.0


def test_retry_after_is_capped_at_six_hours() -> None:
    week = 7 * 24 * 3600.0
    assert MAX_RETRY_AFTER_SECONDS == 6 * 3600.0
    assert all(delay == 6 * 3600.0 for delay in _delays(2, retry_after=week))


def test_zero_retry_after_leaves_the_backoff_alone() -> None:
    delays = _delays(3, retry_after=0.0)
    assert all(0.0 <= delay <= 8.0 for delay in delays)
    assert min(delays) < 0.05 * 8.0
