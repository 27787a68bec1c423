"""Lists at scale (issue 12, point 5): every list reads its page in the order of an index that
matches its filters (no sort of the matching rows), pages stay stable while requests are added,
and the counts of /api/v1/stats are read once per window yet follow writes."""

from __future__ import annotations

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


# Each list the API and the dashboard offer, as the query the API runs.
LISTS = {
    "all": queries.RequestFilter(),
    "institution": queries.RequestFilter(institution_id=1),
    "institution+state": queries.RequestFilter(institution_id=1, state="on_loan"),
    "state": queries.RequestFilter(state="exported"),
    "needs_attention": queries.RequestFilter(needs_attention=True),
    "institution+needs_attention": queries.RequestFilter(institution_id=1, needs_attention=True),
    "alma_request_id": queries.RequestFilter(alma_request_id="A-1"),
    "worldshare_request_id": queries.RequestFilter(worldshare_request_id="166917929"),
    "item_barcode": queries.RequestFilter(item_barcode="ILL000000001"),
}


def _plan(session: Session, statement) -> str:
    compiled = statement.compile(
        dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True}
    )
    if session.get_bind().dialect.name == "sqlite":
        rows = session.execute(text(f"EXPLAIN QUERY PLAN {compiled}")).all()
        return "\n".join(str(row[-1]) for row in rows)
    # The tables are tiny here: forbid the scans and sorts the planner would rightly prefer, so
    # a Sort left in the plan means no index can deliver the rows in the list's order.
    for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
        session.execute(text(f"SET LOCAL {setting} = off"))
    return "\n".join(row[0] for row in session.execute(text(f"EXPLAIN {compiled}")))


def _list_statement(where: queries.RequestFilter):
    captured = []

    class Capture:
        def exec(self, statement):
            captured.append(statement)
            return []

    queries.list_requests(Capture(), where, before_id=1000, limit=51)  # type: ignore[arg-type]
    return captured[0]


@pytest.mark.parametrize("name", list(LISTS))
def test_request_lists_read_in_index_order(engine: Engine, name: str):
    """No sort step over the matching rows: a page costs its rows, not the table's."""
    with Session(engine) as session:
        plan = _plan(session, _list_statement(LISTS[name]))
    if engine.dialect.name == "sqlite":
        assert "TEMP B-TREE" not in plan, plan
        assert "SCAN borrowing_request\n" not in plan + "\n" or name == "all", plan
    else:
        assert "Sort" not in plan or name in _LOOKUPS, plan
        assert "Seq Scan" not in plan, plan


# Lookups by an identifier match a row or two: a sort of those is free.
_LOOKUPS = {"alma_request_id", "worldshare_request_id", "item_barcode"}


@pytest.mark.parametrize(
    "filters",
    [
        {"status": "dead"},
        {"kind": "alma.notify"},
        {"institution_id": 1},
        {"institution_id": 1, "status": "dead"},
    ],
    ids=lambda f: "+".join(f),
)
def test_job_lists_read_in_index_order(engine: Engine, filters):
    captured = []

    class Capture:
        def scalars(self, statement):
            captured.append(statement)
            return []

    arguments = {"status": None, "kind": None, "request_id": None, "institution_id": None}
    queue.list_jobs(Capture(), **(arguments | filters), before_id=1000, limit=51)  # type: ignore[arg-type]
    with Session(engine) as session:
        plan = _plan(session, captured[0])
    assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan
    assert "Seq Scan" not in plan, plan


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
