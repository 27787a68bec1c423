"""Retry delays: capped exponential backoff with full jitter, never sooner than Retry-After."""

from __future__ import annotations

import random

# A Retry-After further out than this is treated as this; the job can be replayed by hand.
MAX_RETRY_AFTER_SECONDS = 6 * 3600.0
# Past this many doublings every sane cap is reached; stops 2**n overflowing a float.
MAX_DOUBLINGS = 64


def retry_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before attempt `attempt + 1`, where `attempt` counts from 1."""
    ceiling = min(cap, base * 2.0 ** min(max(0, attempt - 1), MAX_DOUBLINGS))
    delay = (rng or random).uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_SECONDS))
    return delay
