"""`/ops` driven in a real headless Chromium (Playwright for Python, Debian's chromium).

Skipped, saying why, only outside CI when Playwright or the browser is missing; under CI
(`CI=true`) a missing browser fails the run. Screenshots of the overview and a request page are
kept under var/artefacts/ops/ and their paths printed.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import Session

from app.borrowing.models import BorrowingRequest
from app.borrowing.states import RequestState
from app.db import write_session
from app.jobs.models import Job
from app.main import create_app
from tests.conftest import IN_CI
from tests.support.ops import PATRON_ID, seed_ops_world
from tests.support.servers import run_asgi_in_thread

ARTEFACTS = Path(__file__).resolve().parents[2] / "var" / "artefacts" / "ops"


def chromium_path() -> str:
    """The browser to drive, or a skip (outside CI) / failure (under CI) saying what is missing."""
    found = os.environ.get("ILLBRIDGE_CHROMIUM") or shutil.which("chromium") or ""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "the Python package `playwright` (pip install -e '.[dev]')"
    else:
        missing = (
            "" if found and Path(found).exists() else "Debian's chromium (apt-get install chromium)"
        )
    if missing:
        message = f"browser test needs {missing}"
        if IN_CI:
            pytest.fail(f"{message}; .ci/run installs it")
        pytest.skip(message)
    return found


def _more_requests(engine, settings) -> None:
    """A few more of UNIV's requests in other states, so the overview's chart has bars."""
    from tests.support.ops import _take

    for number, state in enumerate(
        [RequestState.EXPORTED, RequestState.EXPORTED, RequestState.SHIPPED, RequestState.ON_LOAN],
        start=1,
    ):
        request = _take(engine, "UNIV", f"ALMA-A-20{number:02d}", f"Monograph {number}")
        with write_session(engine) as session:
            session.execute(
                update(BorrowingRequest)
                .where(BorrowingRequest.id == request.id)  # type: ignore[arg-type]
                .values(state=state)
            )
            session.commit()


def test_operator_walks_through_ops_in_chromium(settings, engine, request):
    executable = chromium_path()
    from playwright.sync_api import expect, sync_playwright

    world = seed_ops_world(engine, settings)
    _more_requests(engine, settings)
    backend = request.node.callspec.params.get("database_url", "db")
    ARTEFACTS.mkdir(parents=True, exist_ok=True)

    with (
        run_asgi_in_thread(create_app(settings)) as base,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})

            # No session: every page sends the browser to sign in.
            for path in ("/ops", f"/ops/requests/{world.a_request_id}", "/ops/jobs"):
                page.goto(base + path)
                assert "/ops/sign-in" in page.url, path

            # Sign in with UNIV's token; the browser lands where it wanted to go.
            page.goto(base + "/ops/tasks")
            page.fill("#token", world.a_token)
            page.click("button:has-text('Sign in')")
            assert page.url.endswith("/ops/tasks")
            expect(page.locator("table.tasks")).to_contain_text("cancel_in_worldshare")
            cookies = {c["name"]: c for c in page.context.cookies()}
            session_cookie = cookies["illbridge_ops"]
            assert session_cookie["httpOnly"] and session_cookie["sameSite"] == "Strict"
            assert world.a_token not in session_cookie["value"]

            page.click("nav >> text=Overview")
            expect(page.locator("#dead-jobs")).to_have_text("1")
            expect(page.locator("svg.chart").first).to_be_visible()
            assert "OTHER" not in page.content()
            overview_png = ARTEFACTS / f"overview-{backend}.png"
            page.screenshot(path=str(overview_png), full_page=True)

            # Find the request by its Alma id and open it.
            page.click("nav >> text=Requests")
            page.fill("input[name=alma_request_id]", world.a_alma_id)
            page.click("button:has-text('Search')")
            page.click(f"a:has-text('{world.a_alma_id}')")
            assert page.url.endswith(f"/ops/requests/{world.a_request_id}")
            expect(page.locator("#alma-id")).to_have_text(world.a_alma_id)
            expect(page.locator("#worldshare-id")).to_have_text(world.a_worldshare_id)
            expect(page.locator("#state")).to_have_text("received")
            assert PATRON_ID not in page.content()
            request_png = ARTEFACTS / f"request-{backend}.png"
            page.screenshot(path=str(request_png), full_page=True)

            # Resolve its task.
            page.click("button:has-text('Resolve cancel_in_worldshare')")
            expect(page.locator(".notice")).to_have_text("resolved")
            expect(page.locator("table.timeline")).to_contain_text("task_closed")
            expect(page.locator("button:has-text('Resolve cancel_in_worldshare')")).to_have_count(0)

            # Retry the dead job from the Jobs page.
            page.click("nav >> text=Jobs")
            page.click("a:has-text('dead')")
            page.click(f"button:has-text('Retry job {world.dead_job_id}')")
            expect(page.locator(".notice")).to_have_text(f"job {world.dead_job_id} queued")
            with Session(engine) as session:
                job = session.get(Job, world.dead_job_id)
                assert job is not None and job.status == "queued"

            # A clean-up dry run from its page: the plan, and the confirmed-run form under it.
            page.click("nav >> text=Clean-up")
            page.click("button:has-text('Preview (dry run)')")
            expect(page.locator("#plan")).to_contain_text("Plan for UNIV")
            expect(page.locator("#cleanup-run input[name=confirm]")).not_to_be_checked()

            # Institution B stays out of sight, even by address.
            answer = page.goto(f"{base}/ops/requests/{world.b_request_id}")
            assert answer is not None and answer.status == 404
            page.goto(f"{base}/ops/requests?alma_request_id={world.b_alma_id}")
            expect(page.locator("main")).to_contain_text("No request matches.")

            # Sign out: the pages are closed again.
            page.goto(base + "/ops")
            page.click("button:has-text('Sign out')")
            assert "/ops/sign-in" in page.url
            page.goto(base + "/ops")
            assert "/ops/sign-in" in page.url
            assert re.search(r"Sign in", page.content())
        finally:
            browser.close()
    print(f"\nscreenshots: {overview_png} {request_png}")
