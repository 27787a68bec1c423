"""The operators' pages through the real app: sessions, CSRF, institution walls, no patron data."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from app.borrowing.tasks import StaffTask
from app.db import write_session
from app.institutions import service
from app.jobs.models import Job
from app.main import create_app
from app.ops.session import SESSION_COOKIE
from tests.support.factories import make_institution, make_token, sandbox_worldshare
from tests.support.ops import PATRON_ID, OpsWorld, csrf_of, seed_ops_world

PAGES = [
    "/ops",
    "/ops/tasks",
    "/ops/requests",
    "/ops/jobs",
    "/ops/requests/1",
    "/ops/cleanup",
    "/ops/cleanup/1",
]


@pytest.fixture
def world(engine, settings) -> OpsWorld:
    return seed_ops_world(engine, settings)


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client


def sign_in(client: TestClient, token: str, next_page: str = "/ops"):
    page = client.get("/ops/sign-in")
    assert page.status_code == 200, (page.headers, page.text[:300])
    return client.post(
        "/ops/sign-in", data={"token": token, "csrf": csrf_of(page.text), "next": next_page}
    )


def open_task_count(engine, request_id: int) -> int:
    with Session(engine) as session:
        found = session.exec(
            select(StaffTask).where(StaffTask.request_id == request_id, StaffTask.closed_at == None)  # noqa: E711
        ).all()
    return len(found)


def job_status(engine, job_id: int) -> str:
    with Session(engine) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.status


def test_every_page_without_a_session_redirects_to_sign_in(client, world):
    for page in PAGES:
        answer = client.get(page)
        assert answer.status_code == 303, page
        assert answer.headers["location"].startswith("/ops/sign-in?next=")
    for form in (
        f"/ops/requests/{world.a_request_id}/resolve",
        "/ops/jobs/1/retry",
        "/ops/cleanup/preview",
        "/ops/cleanup/run",
    ):
        answer = client.post(form, data={"csrf": "x"})
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/ops/sign-in")
    # A cookie that was not signed by us is no session either.
    client.cookies.set(SESSION_COOKIE, f"1.9999999999.abc.{'A' * 43}")
    assert client.get("/ops").headers["location"].startswith("/ops/sign-in")


def test_landing_page_then_redirect_once_signed_in(client, world):
    landing = client.get("/")
    assert landing.status_code == 200
    for link in ('href="/ops"', 'href="/docs"', 'href="/redoc"', 'href="/healthz"', "Quick start"):
        assert link in landing.text
    sign_in(client, world.admin_token)
    answer = client.get("/")
    assert answer.status_code == 302
    assert answer.headers["location"] == "/ops"


def test_sign_in_sets_a_signed_reference_not_the_token(client, world):
    assert sign_in(client, "ilb_not-a-token").status_code == 401
    answer = sign_in(client, world.admin_token, next_page="/ops/jobs")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ops/jobs"
    set_cookie = next(
        h for h in answer.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE)
    )
    assert "HttpOnly" in set_cookie
    assert "SameSite=strict" in set_cookie or "SameSite=Strict" in set_cookie
    assert "Secure" not in set_cookie  # plain HTTP here; see the HTTPS test
    assert world.admin_token not in set_cookie
    assert world.admin_token.removeprefix("ilb_")[:12] not in set_cookie
    assert client.get("/ops").status_code == 200
    # An off-site `next` is not followed.
    client.cookies.clear()
    assert (
        sign_in(client, world.admin_token, next_page="//evil.example/").headers["location"]
        == "/ops"
    )


def test_the_cookie_is_secure_over_https(settings, world):
    with TestClient(
        create_app(settings), base_url="https://testserver", follow_redirects=False
    ) as client:
        answer = sign_in(client, world.admin_token)
        set_cookie = next(
            h for h in answer.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE)
        )
        assert "Secure" in set_cookie


def test_a_revoked_token_signs_the_session_out(client, world, engine):
    sign_in(client, world.a_token)
    assert client.get("/ops").status_code == 200
    with write_session(engine) as session:
        token = next(
            t for t in service.list_tokens(session, institution_id=None) if t.name == "univ-staff"
        )
        service.revoke_token(session, token.id, institution_id=None)
        session.commit()
    answer = client.get("/ops/tasks")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/ops/sign-in")


def test_sign_out(client, world):
    sign_in(client, world.admin_token)
    page = client.get("/ops")
    assert client.post("/ops/sign-out", data={}).status_code == 403
    answer = client.post("/ops/sign-out", data={"csrf": csrf_of(page.text)})
    assert answer.status_code == 303
    assert client.get("/ops").status_code == 303


def test_a_token_of_institution_a_never_sees_b(client, world):
    sign_in(client, world.a_token)
    overview = client.get("/ops").text
    assert "UNIV" in overview and "OTHER" not in overview
    assert client.get(f"/ops/requests/{world.b_request_id}").status_code == 404
    assert client.get("/ops/requests?institution=OTHER").status_code == 404
    search = client.get(f"/ops/requests?alma_request_id={world.b_alma_id}")
    assert search.status_code == 200 and "No request matches." in search.text
    assert f'href="/ops/requests/{world.b_request_id}"' not in search.text
    for page in ("/ops/requests", "/ops/tasks", "/ops/jobs?status=queued", "/ops/jobs"):
        text = client.get(page).text
        assert world.b_alma_id not in text and "Hidden title" not in text, page
        assert f'href="/ops/requests/{world.b_request_id}"' not in text, page
    csrf = csrf_of(overview)
    resolve_b = client.post(f"/ops/requests/{world.b_request_id}/resolve", data={"csrf": csrf})
    assert resolve_b.status_code == 404
    # The admin token of the consortium sees both.
    client.cookies.clear()
    sign_in(client, world.admin_token)
    overview = client.get("/ops").text
    assert "UNIV" in overview and "OTHER" in overview
    assert client.get(f"/ops/requests/{world.b_request_id}").status_code == 200


def test_forms_refuse_a_missing_or_wrong_csrf_token(client, world, engine):
    # The sign-in form: without the double-submit cookie and field.
    refused = client.post("/ops/sign-in", data={"token": world.a_token})
    assert refused.status_code == 403
    assert SESSION_COOKIE not in refused.headers.get("set-cookie", "")
    sign_in(client, world.a_token)
    resolve = f"/ops/requests/{world.a_request_id}/resolve"
    retry = f"/ops/jobs/{world.dead_job_id}/retry"
    for data in ({"task": "cancel_in_worldshare"}, {"task": "cancel_in_worldshare", "csrf": "x"}):
        assert client.post(resolve, data=data).status_code == 403
        assert client.post(retry, data=data).status_code == 403
    assert open_task_count(engine, world.a_request_id) == 1
    assert job_status(engine, world.dead_job_id) == "dead"
    # A token from another session does not fit this one.
    with TestClient(client.app, follow_redirects=False) as other:
        sign_in(other, world.a_token)
        foreign = csrf_of(other.get("/ops").text)
    assert client.post(retry, data={"csrf": foreign}).status_code == 403
    assert job_status(engine, world.dead_job_id) == "dead"


def test_resolve_and_retry_through_the_pages(client, world, engine):
    sign_in(client, world.a_token)
    page = client.get(f"/ops/requests/{world.a_request_id}")
    assert "cancel_in_worldshare" in page.text
    csrf = csrf_of(page.text)
    done = client.post(
        f"/ops/requests/{world.a_request_id}/resolve",
        data={"csrf": csrf, "task": "cancel_in_worldshare"},
    )
    assert done.status_code == 303
    assert open_task_count(engine, world.a_request_id) == 0
    timeline = client.get(done.headers["location"]).text
    assert "task_closed" in timeline and "resolved by univ-staff" in timeline
    # Resolving it again is a conflict, shown as a page.
    again = client.post(
        f"/ops/requests/{world.a_request_id}/resolve",
        data={"csrf": csrf, "task": "cancel_in_worldshare"},
    )
    assert again.status_code == 409 and "<html" in again.text
    retried = client.post(f"/ops/jobs/{world.dead_job_id}/retry", data={"csrf": csrf})
    assert retried.status_code == 303
    assert job_status(engine, world.dead_job_id) == "queued"
    assert (
        client.post(f"/ops/jobs/{world.dead_job_id}/retry", data={"csrf": csrf}).status_code == 409
    )


def test_a_read_only_token_sees_no_forms_and_may_not_post(client, world, engine):
    sign_in(client, world.a_reader_token)
    page = client.get(f"/ops/requests/{world.a_request_id}").text
    assert "/resolve" not in page and "/retry" not in page
    csrf = csrf_of(page)  # the sign-out form's
    answer = client.post(
        f"/ops/requests/{world.a_request_id}/resolve",
        data={"csrf": csrf, "task": "cancel_in_worldshare"},
    )
    assert answer.status_code == 403
    assert (
        client.post(f"/ops/jobs/{world.dead_job_id}/retry", data={"csrf": csrf}).status_code == 403
    )
    assert open_task_count(engine, world.a_request_id) == 1


def test_search_by_each_id(client, world):
    sign_in(client, world.admin_token)
    for query in (
        f"alma_request_id={world.a_alma_id}",
        f"worldshare_request_id={world.a_worldshare_id}",
        f"item_barcode={world.a_barcode}",
        "state=received&institution=UNIV",
    ):
        text = client.get(f"/ops/requests?{query}").text
        assert f'href="/ops/requests/{world.a_request_id}"' in text, query
        assert f'href="/ops/requests/{world.b_request_id}"' not in text, query


def test_no_page_shows_a_patron_id(client, world):
    sign_in(client, world.admin_token)
    pages = [
        "/",
        "/ops",
        "/ops/tasks",
        "/ops/requests",
        "/ops/jobs",
        "/ops/jobs?status=dead",
        "/ops/cleanup",
        f"/ops/requests/{world.a_request_id}",
        f"/ops/requests/{world.b_request_id}",
        f"/ops/requests?alma_request_id={world.a_alma_id}",
    ]
    seen = 0
    for path in pages:
        answer = client.get(path, follow_redirects=True)
        assert answer.status_code == 200, path
        assert PATRON_ID not in answer.text, path
        seen += 1
    # Every link the pages offer, followed once.
    links = set()
    for path in pages:
        links |= set(
            re.findall(r'href="(/ops[^"#]*)"', client.get(path, follow_redirects=True).text)
        )
    for link in sorted(links):
        if link.startswith("/ops/static"):
            continue
        answer = client.get(link.replace("&amp;", "&"), follow_redirects=True)
        assert PATRON_ID not in answer.text, link
        seen += 1
    assert seen > 15


def test_the_overview_counts_what_is_there(settings, engine, world):
    from datetime import UTC, datetime

    from app.jobs.models import JobStatus

    with write_session(engine) as session:
        univ = service.get_by_code(session, "UNIV")
        polled = datetime(2026, 11, 30, 9, 15, tzinfo=UTC)
        session.add(
            Job(
                kind="worldshare.poll",
                status=JobStatus.SUCCEEDED.value,
                institution_id=univ.id,
                finished_at=polled,
            )
        )
        session.commit()
    live = settings.model_copy(update={"metrics_cache_seconds": 0})
    with TestClient(create_app(live), follow_redirects=False) as client:
        sign_in(client, world.a_token)
        page = client.get("/ops").text
        assert re.search(r'id="dead-jobs">1<', page)
        assert re.search(r'id="open-task-count">1<', page)
        assert "<svg" in page and "received" in page
        assert "2026-11-30 09:15 UTC" in page  # UNIV's last successful poll
        assert "rest: " in page  # its last REST message
        client.post(f"/ops/jobs/{world.dead_job_id}/retry", data={"csrf": csrf_of(page)})
        assert re.search(r'id="dead-jobs">0<', client.get("/ops").text)


def test_overview_counts_are_kept_for_the_configured_age(client, world):
    sign_in(client, world.a_token)
    page = client.get("/ops").text
    assert "counts are kept 15 s" in page
    client.post(f"/ops/jobs/{world.dead_job_id}/retry", data={"csrf": csrf_of(page)})
    # Within the age the same count (and the same "Counted" time) is shown.
    assert re.search(r'id="dead-jobs">1<', client.get("/ops").text)


def test_an_export_whose_answer_was_lost_is_settled_from_its_page(client, world, engine):
    from app.borrowing.models import BorrowingRequest
    from app.timeutil import utcnow

    with write_session(engine) as session:
        request = session.get(BorrowingRequest, world.a_request_id)
        assert request is not None
        request.worldshare_request_id = None
        request.export_attempted_at = utcnow()
        request.needs_attention = True
        request.attention_reason = "the WorldShare create may have succeeded"
        session.add(request)
        session.commit()
    sign_in(client, world.a_token)
    page = client.get(f"/ops/requests/{world.a_request_id}").text
    assert 'id="unknown-export"' in page
    csrf = csrf_of(page)
    bad = client.post(
        f"/ops/requests/{world.a_request_id}/resolve",
        data={"csrf": csrf, "worldshare_request_id": "not-a-number"},
    )
    assert bad.status_code == 422
    linked = client.post(
        f"/ops/requests/{world.a_request_id}/resolve",
        data={"csrf": csrf, "worldshare_request_id": "55501"},
    )
    assert linked.status_code == 303
    page = client.get(f"/ops/requests/{world.a_request_id}").text
    assert re.search(r'id="worldshare-id">55501<', page)
    assert 'id="unknown-export"' not in page and "worldshare_request_linked" in page


def test_an_expired_token_cannot_sign_in_and_its_session_ends(client, world, engine):
    from datetime import timedelta

    from sqlalchemy import update

    from app.institutions.models import ApiToken
    from app.timeutil import utcnow
    from tests.support.factories import make_token

    old = make_token(engine, ["admin"], name="old", expires_at=utcnow() - timedelta(minutes=1))
    assert sign_in(client, old).status_code == 401
    sign_in(client, world.admin_token)
    assert client.get("/ops").status_code == 200
    with write_session(engine) as session:
        session.execute(
            update(ApiToken)
            .where(ApiToken.name == "consortium-admin")  # type: ignore[arg-type]
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    assert client.get("/ops").headers["location"].startswith("/ops/sign-in")


def test_a_link_cannot_put_words_on_a_page(client, world):
    sign_in(client, world.admin_token)
    assert "call 555" not in client.get("/ops?notice=Session+expired,+call+555").text
    assert "job 7 queued" in client.get("/ops/jobs?notice=job+7+queued").text


def test_the_overview_shows_each_worldshare_keys_calls_against_its_budget(settings, engine):
    from datetime import timedelta

    from app.timeutil import utcnow
    from app.worldshare import budget

    def library(key: str, daily: int) -> dict[str, object]:
        return {**sandbox_worldshare("http://127.0.0.1:9"), "key": key, "daily_call_budget": daily}

    first = make_institution(engine, settings, "KEYA", worldshare=library("wskey-a", 40_000))
    make_institution(engine, settings, "KEYB", worldshare=library("wskey-b", 10_000))
    a, b = budget.key_id("wskey-a"), budget.key_id("wskey-b")
    with write_session(engine) as session:
        budget.count_call(session, a, utcnow(), calls=1234)
        budget.count_call(session, b, utcnow() - timedelta(hours=2), calls=500)
        session.commit()
    live = settings.model_copy(update={"metrics_cache_seconds": 0})
    with TestClient(create_app(live), follow_redirects=False) as client:
        sign_in(client, make_token(engine, ["admin"]))
        page = client.get("/ops").text
        budget_section = page[page.index('id="worldshare-budget"') :]
        assert f"<code>{a[:12]}</code></td><td>KEYA</td><td>1234</td><td>40000</td>" in page
        assert f"<code>{b[:12]}</code></td><td>KEYB</td><td>500</td><td>10000</td>" in page
        assert "wskey-a" not in budget_section and "wskey-b" not in budget_section
    with TestClient(create_app(live), follow_redirects=False) as client:
        sign_in(client, make_token(engine, ["requests:read"], institution=first))
        page = client.get("/ops").text
        assert a[:12] in page and b[:12] not in page
