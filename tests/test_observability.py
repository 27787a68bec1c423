"""Repeated warnings: one line per interval with a count, on a fake clock."""

from __future__ import annotations

import logging

import pytest

from app.observability import RepeatedWarnings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, int, bool]]:
    return [
        (
            entry.getMessage(),
            entry.__dict__["error_type"],
            entry.__dict__["count"],
            entry.__dict__.get("resolved", False),
        )
        for entry in caplog.records
    ]


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> tuple[RepeatedWarnings, FakeClock]:
    caplog.set_level(logging.WARNING, logger="test.repeated")
    clock = FakeClock()
    return RepeatedWarnings(logging.getLogger("test.repeated"), 30.0, clock=clock), clock


def test_a_failure_every_half_second_is_one_line_per_interval_with_its_count(
    warnings: tuple[RepeatedWarnings, FakeClock], caplog: pytest.LogCaptureFixture
) -> None:
    repeated, clock = warnings
    for _ in range(120):  # a minute of claim failures, one every 0.5 s
        repeated.warning("claim_failed", error_type="OperationalError")
        clock.now += 0.5
    repeated.resolved("claim_failed")
    assert lines(caplog) == [
        ("claim_failed", "OperationalError", 1, False),  # the first, at once
        ("claim_failed", "OperationalError", 60, False),  # 30 s later: the 60 since
        ("claim_failed", "OperationalError", 59, True),  # the rest, when it is over
    ]
    assert sum(count for _, _, count, _ in lines(caplog)) == 120


def test_another_error_type_or_event_is_logged_at_once(
    warnings: tuple[RepeatedWarnings, FakeClock], caplog: pytest.LogCaptureFixture
) -> None:
    repeated, _clock = warnings
    repeated.warning("claim_failed", error_type="OperationalError")
    repeated.warning("claim_failed", error_type="TimeoutError")
    repeated.warning("periodic_failed", error_type="OperationalError")
    repeated.warning("lease_renewal_failed", error_type="OperationalError", job_id=7)
    assert [line[:3] for line in lines(caplog)] == [
        ("claim_failed", "OperationalError", 1),
        ("claim_failed", "TimeoutError", 1),
        ("periodic_failed", "OperationalError", 1),
        ("lease_renewal_failed", "OperationalError", 1),
    ]
    assert caplog.records[-1].__dict__["job_id"] == 7


def test_after_resolved_the_next_failure_is_logged_at_once(
    warnings: tuple[RepeatedWarnings, FakeClock], caplog: pytest.LogCaptureFixture
) -> None:
    repeated, clock = warnings
    repeated.warning("claim_failed", error_type="OperationalError")
    repeated.resolved("claim_failed")  # nothing unlogged: no line
    clock.now += 1
    repeated.resolved("claim_failed")
    repeated.warning("claim_failed", error_type="OperationalError")
    assert lines(caplog) == [
        ("claim_failed", "OperationalError", 1, False),
        ("claim_failed", "OperationalError", 1, False),
    ]
