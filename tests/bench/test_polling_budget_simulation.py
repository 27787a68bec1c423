"""The polling simulation, shortened: the budget is never exceeded, even when it is far too
short for what the cadence would like, and lender changes are still seen."""

from bench.polling_budget import simulate


def test_the_budget_is_never_exceeded_and_changes_are_still_seen():
    result = simulate(requests=1500, days=3, budget=4000)
    assert result.most_in_24h <= 4000
    assert all(sum(day.values()) <= 4000 for day in result.calls_by_day)
    # The budget is short (1,500 requests would like ~4,500 reads a day): it is spent, not idle.
    assert sum(result.calls_by_day[-1].values()) > 3500
    assert result.delays["shipped"] and result.delays["checked_in"]


def test_a_renewal_answer_is_seen_within_hours_when_the_budget_suffices():
    result = simulate(requests=1500, days=3, budget=40_000)
    renewed = sorted(result.delays["renewed"])
    assert renewed and renewed[len(renewed) // 2] <= 1.0
    assert result.most_in_24h < 40_000
