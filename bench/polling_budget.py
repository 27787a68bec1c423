"""Budgeted polling over simulated weeks: N open requests on one WSKey, the WorldShare sandbox's
lender life cycle (`app.sandbox.worldshare.LenderLifeCycle`) on a simulated clock, and the
bridge's own cadence and budget (`app.worldshare.cadence`: `next_poll_delay`, `choose_polls`,
`hourly_allowance`) — the pure functions the dispatcher runs, without the database.

Prints the calls made each simulated day (reads, creates, tokens) against the budget, the
most spent in any 24 hours, and, per kind of lender change, the median and 95th percentile of
the delay between the change and the read that saw it.

    .venv/bin/python -m bench.polling_budget                       # 10,000 requests, 30 days
    .venv/bin/python -m bench.polling_budget --budget 10000        # a short budget stretches

Each request lives as a library's would: the lender ships (or cannot fill, or staff cancel),
Alma receives and loans the item (Alma tells the bridge at once, over ISO 18626 and webhooks),
some patrons ask for a renewal the lender answers, the item goes back and the lender checks it
in; some lenders extend a loan unasked. Closed requests are replaced by new exports, so N stay
open. Only what polling must find out is measured.
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from app.borrowing.states import RequestState as S
from app.sandbox.worldshare import LenderLifeCycle, WorldShareSandboxSettings
from app.worldshare.cadence import (
    DuePoll,
    PollSubject,
    choose_polls,
    hourly_allowance,
    next_poll_delay,
)

START = datetime(2026, 1, 5, tzinfo=UTC)
DISPATCH_EVERY = timedelta(minutes=5)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
LOAN_DAYS = 28


def _days(rng: random.Random, median: float, low: float, high: float) -> timedelta:
    """A lognormal wait in days around `median`, clipped."""
    return timedelta(days=min(high, max(low, rng.lognormvariate(0, 0.6) * median)))


@dataclass
class Plan:
    """One request's life, drawn up front: (when, what) in time order."""

    created: datetime
    steps: list[tuple[datetime, str]]

    @property
    def ends(self) -> datetime:
        return self.steps[-1][0]


def draw_plan(rng: random.Random, created: datetime) -> Plan:
    steps: list[tuple[datetime, str]] = []
    fate = rng.random()
    if fate < 0.10:
        return Plan(created, [(created + _days(rng, 3, 0.2, 14), "lender_unfilled")])
    if fate < 0.15:
        asked = created + _days(rng, 2, 0.1, 10)
        cancelled = asked + _days(rng, 0.5, 0.05, 4)
        return Plan(created, [(asked, "alma_cancel_asked"), (cancelled, "lender_cancelled")])
    shipped = created + _days(rng, 1.5, 0.1, 10)
    due = shipped.date() + timedelta(days=LOAN_DAYS)
    steps.append((shipped, "lender_shipped"))
    received = shipped + _days(rng, 4, 1, 10)
    steps.append((received, "alma_received"))
    steps.append((received + _days(rng, 1, 0.1, 4), "alma_loaned"))
    due_at = datetime.combine(due, datetime.min.time(), tzinfo=UTC)
    if rng.random() < 0.05:
        steps.append((received + _days(rng, 8, 2, 20), "lender_extended"))
        due_at += timedelta(days=LOAN_DAYS)
    if rng.random() < 0.30:
        asked = due_at - timedelta(days=rng.uniform(2, 7))
        steps.append((asked, "alma_renewal_asked"))
        approved = rng.random() < 0.85
        steps.append(
            (asked + _days(rng, 1, 0.1, 5), "lender_renewed" if approved else "lender_refused")
        )
        if approved:
            due_at += timedelta(days=LOAN_DAYS)
    returned = due_at - timedelta(days=rng.uniform(0, 7))
    steps.append((returned, "alma_returned"))
    steps.append((returned + _days(rng, 5, 2, 15), "lender_checked_in"))
    steps.sort()
    return Plan(created, steps)


@dataclass
class Tracked:
    lender_id: int
    plan: Plan
    state: S = S.EXPORTED
    due: date | None = None
    cancel_pending: bool = False
    next_poll_at: datetime = START
    version: int = 0
    unseen: list[tuple[str, datetime]] = field(default_factory=list)


@dataclass
class Result:
    budget: int
    calls_by_day: list[Counter[str]]
    most_in_24h: int
    delays: dict[str, list[float]]


class Simulation:
    def __init__(self, requests: int, days: int, budget: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = START
        self.lender = LenderLifeCycle(
            WorldShareSandboxSettings(loan_period_days=LOAN_DAYS),
            now=lambda: self.now,
            clock=lambda: self.now.timestamp(),
        )
        self.requests_wanted = requests
        self.days = days
        self.budget = budget
        self.tracked: dict[int, Tracked] = {}
        self.steps: list[tuple[datetime, int, int, str]] = []
        self.polls: list[tuple[datetime, int, int]] = []
        self.calls_by_hour: Counter[datetime] = Counter()
        self.calls_by_day = [Counter[str]() for _ in range(days)]
        self.delays: dict[str, list[float]] = defaultdict(list)
        self.sequence = 0

    # --- the lender and Alma ---------------------------------------------------------------
    def export(self, created: datetime, plan: Plan | None = None, *, counted: bool) -> None:
        self.now = created
        lender_request = self.lender.add_request({"referenceId": f"SIM-{self.sequence}"})
        plan = plan or draw_plan(self.rng, created)
        tracked = Tracked(lender_id=lender_request.request_id, plan=plan)
        self.tracked[tracked.lender_id] = tracked
        for when, what in plan.steps:
            self.sequence += 1
            heapq.heappush(self.steps, (when, self.sequence, tracked.lender_id, what))
        if counted:
            self.count("creates")
            self.schedule(tracked, created + self.delay(tracked))

    def act(self, lender_id: int, what: str) -> None:
        tracked = self.tracked.get(lender_id)
        if tracked is None:
            return
        found = self.lender.requests[lender_id]
        if what.startswith("lender_"):
            if what == "lender_shipped":
                self.lender.ship(found, None)
            elif what == "lender_unfilled":
                self.lender.set_status(found, "UNFILLED")
            elif what == "lender_cancelled":
                self.lender.set_status(found, "CANCELLED")
            elif what in ("lender_renewed", "lender_extended"):
                self.lender.answer_renewal(found, approve=True, due_date=None)
            elif what == "lender_refused":
                self.lender.answer_renewal(found, approve=False, due_date=None)
            elif what == "lender_checked_in":
                self.lender.set_status(found, "COMPLETE")
            tracked.unseen.append((what.removeprefix("lender_"), self.now))
            return
        # Alma tells the bridge at once; the cadence is worked out again from the change.
        if what == "alma_cancel_asked":
            tracked.cancel_pending = True
        elif what == "alma_received":
            tracked.state = S.IN_LIBRARY
        elif what == "alma_loaned":
            tracked.state = S.ON_LOAN
        elif what == "alma_renewal_asked":
            tracked.state = S.RENEWAL_REQUESTED
        elif what == "alma_returned":
            tracked.state = S.RETURNED
        soonest = self.now + self.delay(tracked)
        if soonest < tracked.next_poll_at:
            self.schedule(tracked, soonest)

    # --- the bridge ------------------------------------------------------------------------
    def delay(self, tracked: Tracked) -> timedelta:
        subject = PollSubject(
            state=tracked.state,
            exported_at=tracked.plan.created,
            lender_due_date=tracked.due,
            cancel_pending=tracked.cancel_pending,
        )
        return next_poll_delay(subject, self.now)

    def schedule(self, tracked: Tracked, when: datetime) -> None:
        tracked.version += 1
        tracked.next_poll_at = when
        heapq.heappush(self.polls, (when, tracked.version, tracked.lender_id))

    def count(self, kind: str, calls: int = 1) -> None:
        self.calls_by_hour[self.now.replace(minute=0, second=0, microsecond=0)] += calls
        day = (self.now - START).days
        if 0 <= day < self.days:
            self.calls_by_day[day][kind] += calls

    def spent(self) -> tuple[int, int]:
        hour = self.now.replace(minute=0, second=0, microsecond=0)
        window = sum(self.calls_by_hour[hour - n * HOUR] for n in range(24))
        return self.calls_by_hour[hour], window

    def dispatch(self) -> None:
        due: list[DuePoll] = []
        while self.polls and self.polls[0][0] <= self.now:
            when, version, lender_id = heapq.heappop(self.polls)
            tracked = self.tracked.get(lender_id)
            if tracked is None or tracked.version != version:
                continue
            due.append(DuePoll(request_id=lender_id, due_at=when, delay=self.delay(tracked)))
        in_hour, in_window = self.spent()
        chosen = choose_polls(due, self.now, hourly_allowance(self.budget, in_hour, in_window))
        picked = {poll.request_id for poll in chosen}
        for poll in due:
            if poll.request_id not in picked:
                heapq.heappush(self.polls, (poll.due_at, self.tracked[poll.request_id].version,
                                            poll.request_id))  # fmt: skip
        for poll in chosen:
            self.read(self.tracked[poll.request_id])

    def read(self, tracked: Tracked) -> None:
        self.count("reads")
        found = self.lender.requests[tracked.lender_id]
        view = found.view()
        answered = False
        for kind, at in tracked.unseen:
            self.delays[kind].append((self.now - at).total_seconds() / 3600)
            answered = answered or kind in ("renewed", "refused")
        tracked.unseen.clear()
        status = view["requestStatus"]
        if status in ("UNFILLED", "CANCELLED", "COMPLETE"):
            del self.tracked[tracked.lender_id]
            self.export(self.now, counted=True)
            return
        if found.due_date is not None:
            tracked.due = found.due_date
        if status == "IN_TRANSIT" and tracked.state is S.EXPORTED:
            tracked.state = S.SHIPPED
        if tracked.state is S.RENEWAL_REQUESTED and answered:
            tracked.state = S.ON_LOAN
        self.schedule(tracked, self.now + self.delay(tracked))

    # --- the run ---------------------------------------------------------------------------
    def populate(self) -> None:
        """N requests open at the start, in every stage of their lives (the past replayed)."""
        while len(self.tracked) < self.requests_wanted:
            created = START - timedelta(days=self.rng.uniform(0, 60))
            plan = draw_plan(self.rng, created)
            if plan.ends > START:
                self.export(created, plan, counted=False)
        while self.steps and self.steps[0][0] < START:
            when, _, lender_id, what = heapq.heappop(self.steps)
            self.now = when
            self.act(lender_id, what)
        self.now = START
        for tracked in self.tracked.values():
            found = self.lender.requests[tracked.lender_id]
            tracked.unseen.clear()
            tracked.due = found.due_date
            if found.status == "IN_TRANSIT" and tracked.state is S.EXPORTED:
                tracked.state = S.SHIPPED
            if tracked.state is S.RENEWAL_REQUESTED and found.renewal_status:
                answered_before = any(
                    what in ("lender_renewed", "lender_refused") and when < START
                    for when, what in tracked.plan.steps
                )
                if answered_before:
                    tracked.state = S.ON_LOAN
            if found.status in ("UNFILLED", "CANCELLED", "COMPLETE"):
                tracked.state = S.RETURNED  # seen at the first read, which closes it
            spread = timedelta(seconds=self.rng.uniform(0, self.delay(tracked).total_seconds()))
            self.schedule(tracked, START + spread)

    def run(self) -> Result:
        self.populate()
        end = START + self.days * DAY
        tick = START
        while tick < end:
            while self.steps and self.steps[0][0] <= tick:
                when, _, lender_id, what = heapq.heappop(self.steps)
                self.now = when
                self.act(lender_id, what)
            self.now = tick
            if tick.minute == 0 and tick.second == 0:
                self.count("tokens")  # an access token lives an hour
            self.dispatch()
            tick += DISPATCH_EVERY
        hours = sorted(self.calls_by_hour)
        most = max(
            sum(self.calls_by_hour[hour - n * HOUR] for n in range(24))
            for hour in hours
            if hour >= START
        )
        return Result(self.budget, self.calls_by_day, most, dict(self.delays))


def simulate(*, requests: int, days: int, budget: int, seed: int = 11) -> Result:
    return Simulation(requests, days, budget, seed).run()


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(result: Result, requests: int) -> str:
    lines = [
        f"{requests} open requests on one WSKey, budget {result.budget} calls / 24 h",
        "",
        "day  reads  creates  tokens  total  under budget",
    ]
    for day, calls in enumerate(result.calls_by_day, start=1):
        total = sum(calls.values())
        lines.append(
            f"{day:>3}  {calls['reads']:>5}  {calls['creates']:>7}  {calls['tokens']:>6}  "
            f"{total:>5}  {'yes' if total <= result.budget else 'NO'}"
        )
    lines += [
        "",
        f"most calls in any 24 hours: {result.most_in_24h}",
        "",
        "change seen by polling   count  median h  p95 h",
    ]
    for kind in sorted(result.delays):
        delays = result.delays[kind]
        lines.append(
            f"{kind:<23}  {len(delays):>5}  {statistics.median(delays):>8.1f}  "
            f"{_quantile(delays, 0.95):>5.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--budget", type=int, default=40_000)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    result = simulate(requests=args.requests, days=args.days, budget=args.budget, seed=args.seed)
    print(report(result, args.requests))


if __name__ == "__main__":
    main()
