"""The operators' Tasks page on the shared task list, and the Clean-up pages (issue 12 point 1)."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from app.borrowing import service, tasks
from app.borrowing.citation import Citation
from app.borrowing.cleanup import CleanupBatch
from app.borrowing.models import BorrowingRequest, RequestEvent, RequestOrigin
from app.borrowing.states import Trigger
from app.db import write_session
from app.institutions.models import Institution
from app.jobs.models import Job
from app.main import create_app
from app.observability import Metrics
from app.ops import routes
from app.runtime import open_runtime
from app.timeutil import utcnow
from app.workflows import cleanup
from app.workflows.export import UNKNOWN_CREATE
from app.workflows.kinds import RUN_CLEANUP
from tests.support.ops import PATRON_ID, OpsWorld, csrf_of, seed_ops_world


@pytest.fixture
def world(engine, settings) -> OpsWorld:
    return seed_ops_world(engine, settings)


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client


def sign_in(client: TestClient, token: str) -> None:
    page = client.get("/ops/sign-in")
    answer = client.post("/ops/sign-in", data={"token": token, "csrf": csrf_of(page.text)})
    assert answer.status_code == 303, answer.text[:300]


def stale_exports(engine, code: str, statuses: list[str | None]) -> list[str]:
    """Requests of `code` exported 90 days ago, each with the WorldShare status last polled."""
    alma_ids = []
    with write_session(engine) as session:
        institution = session.exec(select(Institution).where(Institution.code == code)).one()
        assert institution.id is not None
        for n, status in enumerate(statuses):
            alma_id = f"STALE-{code}-{n}"
            request, _ = service.register_request(
                session,
                institution.id,
                alma_request_id=alma_id,
                citation=Citation(title="An old request"),
                requester_user_id=PATRON_ID,
                origin=RequestOrigin.API,
            )
            request.worldshare_request_id = f"77{n}{len(code)}"
            request.lender_status = status
            service.apply_trigger(session, request, Trigger.EXPORTED, "test")
            alma_ids.append(alma_id)
        session.flush()
        for event in session.exec(select(RequestEvent)).all():
            event.at -= timedelta(days=90)
            session.add(event)
        session.commit()
    return alma_ids


def count(engine, model, *where) -> int:
    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(model).where(*where)).one())


def states(engine, alma_ids: list[str]) -> set[str]:
    with Session(engine) as session:
        found = session.exec(
            select(BorrowingRequest).where(BorrowingRequest.alma_request_id.in_(alma_ids))  # type: ignore[attr-defined]
        ).all()
        return {r.state.value for r in found}


@pytest.fixture
def outbound(monkeypatch) -> list[str]:
    """Every request the service sends out through httpx's async client."""
    sent: list[str] = []
    real_send = httpx.AsyncClient.send

    async def record(self, request, *args, **kwargs):
        sent.append(str(request.url))
        return await real_send(self, request, *args, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "send", record)
    return sent


def test_a_dry_run_preview_shows_the_plan_and_sends_nothing(client, world, engine, outbound):
    closed, unknown = stale_exports(engine, "UNIV", ["CLOSED", None])
    [other] = stale_exports(engine, "OTHER", ["CLOSED"])
    jobs_before = count(engine, Job)
    sign_in(client, world.a_token)
    page = client.get("/ops/cleanup")
    assert page.status_code == 200
    assert 'href="/ops/cleanup" aria-current="page"' in page.text  # in the nav
    # A bound token chooses among its own institution only.
    assert 'value="UNIV"' in page.text and "OTHER" not in page.text
    preview = client.post(
        "/ops/cleanup/preview", data={"csrf": csrf_of(page.text), "institution": "UNIV"}
    )
    assert preview.status_code == 200, preview.text[:500]
    plan = preview.text
    rows = {
        alma_id: row
        for row in re.findall(r"<tr class=[^>]*>(.*?)</tr>", plan, re.S)
        for alma_id in re.findall(r">(STALE-[A-Z]+-[0-9])<", row)
    }
    assert set(rows) == {closed, unknown}  # B's request is not in A's plan
    assert "7704" in rows[closed] and "CLOSED" in rows[closed]
    assert "alma_rest_cancel" in rows[closed]
    assert "leave" in rows[unknown] and "not known yet" in rows[unknown]
    assert other not in plan and PATRON_ID not in plan
    assert 'name="confirm"' in plan and 'action="/ops/cleanup/run"' in plan
    # Nothing went out, nothing was queued, nothing changed.
    assert outbound == []
    assert count(engine, Job) == jobs_before
    assert states(engine, [closed, unknown]) == {"exported"}
    assert count(engine, CleanupBatch, CleanupBatch.dry_run == False) == 0  # noqa: E712


def test_a_run_needs_the_confirmation_and_its_batch_page_shows_the_outcomes(
    client, world, engine, settings
):
    closed, unknown = stale_exports(engine, "UNIV", ["CLOSED", None])
    sign_in(client, world.a_token)
    csrf = csrf_of(client.get("/ops/cleanup").text)
    form = {"csrf": csrf, "institution": "UNIV", "limit": "10"}
    refused = client.post("/ops/cleanup/run", data=form)
    assert refused.status_code == 422 and "confirm" in refused.text
    assert client.post("/ops/cleanup/run", data={**form, "confirm": "no"}).status_code == 422
    no_csrf = client.post("/ops/cleanup/run", data={**form, "csrf": "", "confirm": "yes"})
    assert no_csrf.status_code == 403
    wrong_csrf = client.post("/ops/cleanup/run", data={**form, "csrf": "x", "confirm": "yes"})
    assert wrong_csrf.status_code == 403
    assert client.post("/ops/cleanup/preview", data={"institution": "UNIV"}).status_code == 403
    assert count(engine, CleanupBatch) == 0

    started = client.post("/ops/cleanup/run", data={**form, "confirm": "yes"})
    assert started.status_code == 303
    batch_id = int(started.headers["location"].rsplit("/", 1)[1])
    assert started.headers["location"] == f"/ops/cleanup/{batch_id}"
    # Queued for the workers, as `POST /api/v1/cleanup` queues it.
    assert count(engine, Job, Job.kind == RUN_CLEANUP.name) == 1
    queued = client.get(f"/ops/cleanup/{batch_id}").text
    assert re.search(r'id="batch-status">queued<', queued)
    assert f'href="/ops/cleanup/{batch_id}">Refresh' in queued
    # A second run while this one is queued is refused.
    again = client.post("/ops/cleanup/run", data={**form, "confirm": "yes"})
    assert again.status_code == 409

    async def run() -> bool:
        async with open_runtime(settings, Metrics()) as runtime:
            return await cleanup.run_batch(runtime, batch_id)

    assert asyncio.run(run())
    page = client.get(f"/ops/cleanup/{batch_id}").text
    assert re.search(r'id="batch-status">done<', page)
    outcomes = dict(
        re.findall(r">(STALE-UNIV-[0-9])</a>.*?<span class=\"badge\">(\w+)<", page, re.S)
    )
    # This institution has no WorldShare settings: each request fails on its own, and says so.
    assert outcomes == {closed: "failed", unknown: "failed"}
    assert "WorldShare" in page and PATRON_ID not in page
    assert (
        "run" in client.get("/ops/cleanup").text
        and f"/ops/cleanup/{batch_id}" in client.get("/ops/cleanup").text
    )


def test_a_token_of_institution_a_cannot_preview_run_or_see_b(client, world, engine):
    stale_exports(engine, "OTHER", ["CLOSED"])
    with write_session(engine) as session:
        other = session.exec(select(Institution).where(Institution.code == "OTHER")).one()
        b_batch = cleanup.dry_run(session, other, limit=5, requested_by="test")
        session.commit()
        b_batch_id = b_batch.id
    sign_in(client, world.a_token)
    page = client.get("/ops/cleanup").text
    assert f"/ops/cleanup/{b_batch_id}" not in page
    csrf = csrf_of(page)
    for action in ("preview", "run"):
        answer = client.post(
            f"/ops/cleanup/{action}",
            data={"csrf": csrf, "institution": "OTHER", "limit": "5", "confirm": "yes"},
        )
        assert answer.status_code == 404, action
        assert "STALE-OTHER" not in answer.text
    assert client.get(f"/ops/cleanup/{b_batch_id}").status_code == 404
    assert count(engine, CleanupBatch) == 1
    assert count(engine, Job, Job.kind == RUN_CLEANUP.name) == 0
    # A read-only token sees the page but may not post.
    client.cookies.clear()
    sign_in(client, world.a_reader_token)
    page = client.get("/ops/cleanup").text
    assert 'action="/ops/cleanup/preview"' not in page
    refused = client.post(
        "/ops/cleanup/preview", data={"csrf": csrf_of(page), "institution": "UNIV"}
    )
    assert refused.status_code == 403
    # The consortium's admin sees B's batch.
    client.cookies.clear()
    sign_in(client, world.admin_token)
    assert "STALE-OTHER-0" in client.get(f"/ops/cleanup/{b_batch_id}").text


def seed_task_kinds(engine, world: OpsWorld) -> tuple[str, str]:
    """A stale-request task on A's request, and a lost export (a possible duplicate) of A's."""
    with write_session(engine) as session:
        a = session.get(BorrowingRequest, world.a_request_id)
        assert a is not None
        tasks.open_task(
            session,
            a,
            tasks.TaskKind.STALE_REQUEST,
            "exported 40 days ago and no lender has moved",
            source="test",
        )
        institution_id = a.institution_id
        lost, _ = service.register_request(
            session,
            institution_id,
            alma_request_id="ALMA-LOST-3003",
            citation=Citation(title="Lost answer"),
            requester_user_id=PATRON_ID,
            origin=RequestOrigin.API,
        )
        lost.export_attempted_at = utcnow() - timedelta(days=3)
        lost.needs_attention = True
        lost.attention_reason = f"{UNKNOWN_CREATE} ALMA-LOST-3003"
        session.add(lost)
        session.commit()
    return "ALMA-LOST-3003", world.a_alma_id


def test_the_tasks_page_lists_a_stale_task_and_a_possible_duplicate(
    client, world, engine, monkeypatch
):
    lost_alma_id, _ = seed_task_kinds(engine, world)
    sign_in(client, world.a_token)
    page = client.get("/ops/tasks").text
    assert "stale_request" in page and "no lender has moved" in page
    assert "possible_duplicate" in page and lost_alma_id in page
    assert "dead_job" in page and f"Retry job {world.dead_job_id}" in page
    assert world.b_alma_id not in page and PATRON_ID not in page
    # The possible duplicate is settled with the WorldShare id found; the stale task by its kind.
    assert 'name="worldshare_request_id" required' in page
    assert 'name="task" value="stale_request"' in page
    # The API's filters: by kind, by age.
    only = client.get("/ops/tasks?kind=possible_duplicate").text
    assert lost_alma_id in only and "no lender has moved" not in only
    aged = client.get("/ops/tasks?older_than_days=2").text
    assert lost_alma_id in aged and "no lender has moved" not in aged
    assert client.get("/ops/tasks?kind=nonsense").status_code == 400
    assert client.get("/ops/tasks?institution=OTHER").status_code == 404
    # Keyset pages: one entry a page, following the link reaches every entry once.
    monkeypatch.setattr(routes, "PAGE_SIZE", 1)
    seen, link = [], "/ops/tasks"
    while link:
        answer = client.get(link).text
        seen += re.findall(r'<tr class="([a-z-]+)">', answer)
        found = re.search(r'<a href="([^"]+)" rel="next">', answer)
        link = found.group(1).replace("&amp;", "&") if found else ""
    assert sorted(seen) == sorted(
        ["cancel-in-worldshare", "stale-request", "possible-duplicate", "dead-job"]
    )
    # Resolving the duplicate from the task list links the WorldShare id.
    csrf = csrf_of(page)
    with Session(engine) as session:
        lost_id = session.exec(
            select(BorrowingRequest.id).where(BorrowingRequest.alma_request_id == lost_alma_id)
        ).one()
    done = client.post(
        f"/ops/requests/{lost_id}/resolve",
        data={"csrf": csrf, "next": "/ops/tasks", "worldshare_request_id": "55501"},
    )
    assert done.status_code == 303 and done.headers["location"] == "/ops/tasks?notice=resolved"
    assert lost_alma_id not in client.get("/ops/tasks").text


def test_the_consortium_sees_every_institution_and_filters_by_one(client, world, engine):
    with write_session(engine) as session:
        b = session.get(BorrowingRequest, world.b_request_id)
        assert b is not None
        tasks.open_task(session, b, tasks.TaskKind.LOST, "the patron lost the item", source="test")
        session.commit()
    sign_in(client, world.admin_token)
    every = client.get("/ops/tasks").text
    assert world.b_alma_id in every and world.a_alma_id in every
    only_b = client.get("/ops/tasks?institution=OTHER").text
    assert world.b_alma_id in only_b and world.a_alma_id not in only_b
