"""Lists at scale (issue 12, point 5): every list reads its page in the order of an index that
matches its filters (no sort of the matching rows), pages stay stable while requests are added,
and the counts of /api/v1/stats are read once per window yet follow writes."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select, update

from app.api.health import RecentReads
from app.borrowing import queries
from app.borrowing.models import BorrowingRequest
from app.jobs import queue
from app.main import create_app
from tests.api.test_operations import counted_statements
from tests.support.api_checks import citation_body
from tests.support.factories import bearer, make_institution, make_token


@pytest.fixture
def admin(engine, settings) -> dict[str, str]:
    make_institution(engine, settings, "A")
    make_institution(engine, settings, "B")
    return bearer(make_token(engine, ["admin"]))


@pytest.fixture
def client(settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def _create(client, admin, institution: str, alma_id: str) -> int:
    response = client.post(
        "/api/v1/requests", json=citation_body(institution, alma_id), headers=admin
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


ROWS = 20_000
_STATES = ["closed", "on_loan", "exported", "shipped", "returned", "unfilled", "cancelled"]


def _series(dialect: str) -> str:
    if dialect == "sqlite":
        return f"WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {ROWS})"  # noqa: S608
    return f"WITH s(g) AS (SELECT generate_series(1, {ROWS}))"


def _case(values: list[str]) -> str:
    arms = " ".join(f"WHEN {i} THEN '{v}'" for i, v in enumerate(values))
    return f"CASE g % {len(values)} {arms} END"


@pytest.fixture
def seeded(engine: Engine, settings) -> tuple[Engine, int]:
    """20,000 requests and jobs over two institutions, with the planner's statistics."""
    a = make_institution(engine, settings, "A").id
    b = make_institution(engine, settings, "B").id
    series = _series(engine.dialect.name)
    at = "'2026-01-01 00:00:00'"
    with engine.begin() as connection:
        connection.execute(
            text(
                f"{series} INSERT INTO borrowing_request (institution_id, alma_request_id, origin,"  # noqa: S608
                " citation, state, worldshare_request_id, item_barcode, needs_attention,"
                " created_at, updated_at)"
                f" SELECT CASE WHEN g % 3 = 0 THEN {b} ELSE {a} END, 'A-' || g, 'api', '{{}}',"
                f" {_case(_STATES)}, 'W' || g, 'ILL' || g, g % 100 = 0, {at}, {at} FROM s"
            )
        )
        statuses = _case(["succeeded"] * 97 + ["queued", "dead", "running"])
        connection.execute(
            text(
                f"{series} INSERT INTO job (kind, payload, status, institution_id, attempts,"  # noqa: S608
                " max_attempts, run_at, created_at, updated_at)"
                f" SELECT {_case(['worldshare.export', 'worldshare.poll', 'alma.notify'])}, '{{}}',"
                f" {statuses}, CASE WHEN g % 3 = 0 THEN {b} ELSE {a} END, 1, 8, {at}, {at}, {at}"
                " FROM s"
            )
        )
        connection.execute(text("ANALYZE"))
    assert a is not None
    return engine, a


def _lists(institution_id: int) -> dict[str, queries.RequestFilter]:
    """Each list the API and the dashboard offer, as the query the API runs."""
    return {
        "all": queries.RequestFilter(),
        "institution": queries.RequestFilter(institution_id=institution_id),
        "institution+state": queries.RequestFilter(institution_id=institution_id, state="on_loan"),
        "state": queries.RequestFilter(state="exported"),
        "needs_attention": queries.RequestFilter(needs_attention=True),
        "institution+needs_attention": queries.RequestFilter(
            institution_id=institution_id, needs_attention=True
        ),
        "alma_request_id": queries.RequestFilter(alma_request_id="A-77"),
        "worldshare_request_id": queries.RequestFilter(worldshare_request_id="W77"),
        "item_barcode": queries.RequestFilter(item_barcode="ILL77"),
    }


def _plan(session: Session, statement) -> str:
    compiled = statement.compile(
        dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True}
    )
    if session.get_bind().dialect.name == "sqlite":
        rows = session.execute(text(f"EXPLAIN QUERY PLAN {compiled}")).all()
        return "\n".join(str(row[-1]) for row in rows)
    return "\n".join(row[0] for row in session.execute(text(f"EXPLAIN {compiled}")))


class _Captured(Exception):
    """Stops a list query at its statement, which a fake session caught."""


class _Capture:
    def __init__(self) -> None:
        self.statements: list = []

    def execute(self, statement):
        self.statements.append(statement)
        raise _Captured


def _list_statement(where: queries.RequestFilter):
    capture = _Capture()
    with pytest.raises(_Captured):
        queries.list_requests(capture, where, before_id=ROWS, limit=51)  # type: ignore[arg-type]
    return capture.statements[0]


@pytest.mark.parametrize(
    "name",
    [
        "all",
        "institution",
        "institution+state",
        "state",
        "needs_attention",
        "institution+needs_attention",
        "alma_request_id",
        "worldshare_request_id",
        "item_barcode",
    ],
)
def test_request_lists_read_their_page_from_a_matching_index(seeded, name: str):
    """A page is read from an index on the filter's columns, in the list's order (no sort of
    the matching rows, no scan of the table): it costs its rows, not the table's."""
    engine, institution_id = seeded
    where = _lists(institution_id)[name]
    with Session(engine) as session:
        plan = _plan(session, _list_statement(where))
    if engine.dialect.name == "postgresql":
        _assert_page_costs_its_rows(plan, lookup=name in _LOOKUPS)
        return
    assert "TEMP B-TREE" not in plan, plan
    assert "SCAN borrowing_request\n" not in plan + "\n", plan
    for column in ("state", "needs_attention", *_LOOKUPS):
        if getattr(where, column) is not None:
            assert f"{column}=?" in plan, plan


# Lookups by an identifier match a row or two: sorting those is free.
_LOOKUPS = ("alma_request_id", "worldshare_request_id", "item_barcode")


def _assert_page_costs_its_rows(plan: str, *, lookup: bool) -> None:
    """PostgreSQL picks by cost: for a filter matching many rows, reading the primary key
    backwards and filtering is as good as a composite index. Either way the page must cost
    about its own rows (the Limit's estimate: 51 rows fetched at random, against the 800 or so
    of scanning 20,000), with no scan of the table and no sort of the matching rows. (The
    institutions, a handful of rows joined for their codes, may be read whole.)"""
    assert not re.search(r"Seq Scan on (borrowing_request|job)\b", plan), plan
    assert lookup or "Sort" not in plan, plan
    limit = re.search(r"^Limit  \(cost=[\d.]+\.\.([\d.]+)", plan)
    assert limit is not None and float(limit.group(1)) < 250, plan


@pytest.mark.parametrize(
    "filters",
    [{"status": "dead"}, {"kind": "alma.notify"}, {"status": "queued", "institution_id": 0}],
    ids=lambda f: "+".join(f),
)
def test_job_lists_read_their_page_from_a_matching_index(seeded, filters):
    engine, institution_id = seeded
    capture = _Capture()
    arguments = {"status": None, "kind": None, "request_id": None, "institution_id": None}
    if "institution_id" in filters:
        filters = filters | {"institution_id": institution_id}
    with pytest.raises(_Captured):
        queue.list_jobs(capture, **(arguments | filters), before_id=ROWS, limit=51)  # type: ignore[arg-type]
    with Session(engine) as session:
        plan = _plan(session, capture.statements[0])
    if engine.dialect.name == "postgresql":
        _assert_page_costs_its_rows(plan, lookup=False)
        return
    assert "TEMP B-TREE" not in plan and "SCAN job\n" not in plan + "\n", plan
    for column in ("status", "kind"):
        if column in filters:
            assert f"{column}=?" in plan, plan


def test_a_page_is_stable_while_requests_are_added(client, admin):
    """Keyset pages: requests created between two page reads neither repeat nor hide a row."""
    first_batch = [_create(client, admin, "A", f"R-{i}") for i in range(7)]
    page = client.get("/api/v1/requests?limit=3", headers=admin).json()
    seen = [item["id"] for item in page["items"]]
    newer = [_create(client, admin, "A", f"N-{i}") for i in range(4)]
    while page["next_cursor"]:
        page = client.get(
            f"/api/v1/requests?limit=3&cursor={page['next_cursor']}", headers=admin
        ).json()
        seen += [item["id"] for item in page["items"]]
    assert seen == sorted(first_batch, reverse=True)
    fresh = client.get("/api/v1/requests?limit=3", headers=admin).json()
    assert [item["id"] for item in fresh["items"]] == sorted(newer, reverse=True)[:3]


def test_search_by_item_barcode(client, admin, engine):
    wanted = _create(client, admin, "A", "A-1")
    _create(client, admin, "A", "A-2")
    with Session(engine) as session:
        session.exec(
            update(BorrowingRequest)
            .where(col(BorrowingRequest.id) == wanted)
            .values(item_barcode="ILL000000042")
        )
        session.commit()
    found = client.get("/api/v1/requests?item_barcode=ILL000000042", headers=admin).json()
    assert [item["id"] for item in found["items"]] == [wanted]
    assert client.get("/api/v1/requests?item_barcode=nope", headers=admin).json()["items"] == []


def test_stats_are_counted_once_per_window(settings, engine, admin):
    cached = settings.model_copy(update={"stats_cache_seconds": 3600})
    with TestClient(create_app(cached)) as client:
        _create(client, admin, "A", "A-1")
        first = client.get("/api/v1/stats", headers=admin).json()
        _create(client, admin, "A", "A-2")
        with counted_statements() as statements:
            second = client.get("/api/v1/stats", headers=admin).json()
    assert second == first  # the same figures, and their time
    assert first["requests_by_state"] == {"received": 1}
    counting = [s for s in statements if "count(" in s.lower()]
    assert counting == []


def test_stats_follow_writes_once_the_window_has_passed(settings, engine, admin):
    uncached = settings.model_copy(update={"stats_cache_seconds": 0})
    with TestClient(create_app(uncached)) as client:
        a1 = _create(client, admin, "A", "A-1")
        _create(client, admin, "B", "B-1")
        before = client.get("/api/v1/stats", headers=admin).json()
        with Session(engine) as session:
            session.exec(
                update(BorrowingRequest)
                .where(col(BorrowingRequest.id) == a1)
                .values(state="exported", needs_attention=True)
            )
            session.commit()
        after = client.get("/api/v1/stats", headers=admin).json()
        scoped = bearer(make_token(engine, ["requests:read"], institution=_institution(engine)))
        only_b = client.get("/api/v1/stats", headers=scoped).json()
    assert before["requests_by_state"] == {"received": 2}
    assert after["requests_by_state"] == {"received": 1, "exported": 1}
    assert after["requests_needing_attention"] == 1
    assert after["counted_at"] > before["counted_at"]
    assert only_b["requests_by_state"] == {"received": 1}
    assert only_b["requests_needing_attention"] == 0


def _institution(engine):
    from app.institutions.models import Institution

    with Session(engine) as session:
        return session.exec(select(Institution).where(Institution.code == "B")).one()


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_recent_reads_reread_after_the_window_and_per_key():
    clock = FakeClock()
    counts = {"A": 1, "B": 10}
    reads: list[str] = []
    recent: RecentReads[int] = RecentReads(5.0, clock=clock)

    def read(key: str):
        def run() -> int:
            reads.append(key)
            return counts[key]

        return run

    assert recent.get("A", read("A")) == 1
    counts["A"] = 2
    clock.now += 4.9
    assert recent.get("A", read("A")) == 1  # within the window: the figure of the last read
    assert recent.get("B", read("B")) == 10  # another institution has its own
    clock.now += 0.1
    assert recent.get("A", read("A")) == 2  # the window passed: the write shows
    assert reads == ["A", "B", "A"]
