"""Sandbox mode's demo: an institution wired to the simulated Alma and WorldShare, a token, and
a short life cycle played as Alma would play it — on one machine, with no credentials."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from app.config import VAR_DIR, Settings
from app.db import create_db_engine, write_session
from app.institutions import service
from app.institutions.schemas import InstitutionCreate
from app.institutions.secrets import load_secret_box
from app.outbound_hosts import allowed_host_patterns
from app.sandbox.alma_requester import PartnerAnswer, send_action, send_request
from app.sandbox.alma_vocabulary import Action, MessageStatus, ServiceType
from app.sandbox.bridge_clock import BRIDGE_CLOCK_PREFIX
from app.sandbox.mount import ALMA_PREFIX, WORLDSHARE_PREFIX

DEMO_CODE = "DEMO"
DEMO_ALMA_AGENCY = ("ISIL", "US-DEMO")
DEMO_BRIDGE_AGENCY = ("ISIL", "US-ILLBRIDGE")
DEMO_SECURITY_CODE = "demo-shared-code"
DEMO_WEBHOOK_SECRET = "demo-webhook-secret"  # noqa: S105 (the sandbox's, not a real one)
DEMO_ILL_LIBRARY = "ILL"
TOKEN_FILE = VAR_DIR / "sandbox-admin.token"


def seed_demo(settings: Settings, *, public_url: str | None = None) -> None:
    """Create the DEMO institution and an admin token (printed once, kept in var/) if absent."""
    base = (public_url or settings.public_url).rstrip("/")
    engine = create_db_engine(settings.database_url)
    box = load_secret_box(settings)
    try:
        with write_session(engine) as session:
            if any(i.code == DEMO_CODE for i in service.list_institutions(session)):
                print(f"sandbox: institution {DEMO_CODE} exists; token in {TOKEN_FILE}")
                return
            demo = service.create_institution(
                session,
                box,
                InstitutionCreate.model_validate(
                    {
                        "code": DEMO_CODE,
                        "name": "Demo University Library (sandbox)",
                        "alma": {
                            "iso18626_url": f"{base}{ALMA_PREFIX}/iso18626",
                            "iso18626_security_code": DEMO_SECURITY_CODE,
                            "agency_id": dict(
                                zip(("type", "value"), DEMO_ALMA_AGENCY, strict=True)
                            ),
                            "bridge_agency_id": dict(
                                zip(("type", "value"), DEMO_BRIDGE_AGENCY, strict=True)
                            ),
                            "api_base_url": f"{base}{ALMA_PREFIX}/almaws/v1",
                            "api_key": "sandbox-alma-api-key",
                            "webhook_secrets": [DEMO_WEBHOOK_SECRET],
                            "resource_sharing_libraries": [DEMO_ILL_LIBRARY],
                        },
                        "worldshare": {
                            "base_url": f"{base}{WORLDSHARE_PREFIX}/ILL",
                            "token_url": f"{base}{WORLDSHARE_PREFIX}/oauth/token",
                            "scope": "WorldShareILL",
                            "key": "sandbox-wskey",
                            "secret": "sandbox-secret",
                            "institution_id": "128807",
                            "billing_address": {
                                "attention": "Interlibrary Loan",
                                "address1": "1 Demo Library Walk",
                                "locality": "Springfield",
                                "country": "US",
                            },
                            "delivery_email": "ill@demo-library.example.org",
                        },
                        "policy": {"poll_interval_seconds": 5},
                    }
                ),
                actor=service.CLI,
                allowed_hosts=allowed_host_patterns(settings),
            )
            _token, plain = service.create_token(
                session, name="sandbox-admin", scopes=["admin"], institution=None
            )
            session.commit()
    finally:
        engine.dispose()
    TOKEN_FILE.parent.mkdir(parents=True, exist_ok=True)
    TOKEN_FILE.write_text(plain + "\n")
    TOKEN_FILE.chmod(0o600)
    print(f"sandbox: created institution {demo.code} and an admin token (also in {TOKEN_FILE}):")
    print(plain)


def run_demo(base_url: str, token: str, *, alma_request_id: str, step_seconds: float = 120) -> None:
    """Play Alma and the lender through every scenario, one progress line per step; raise
    SystemExit with the failed step's reason unless every step happened as expected.

    The scenarios: a loan (request, receive, the patron's loan, an approved renewal, the return
    scan, the lender checks it in), a copy of an article, a refused renewal, a cancel, and a
    stale request cleaned up (dry run, then the real run). Each wait lasts `step_seconds` at most.
    """
    progress = Progress()
    try:
        asyncio.run(_play(base_url.rstrip("/"), token, alma_request_id, progress, step_seconds))
    except DemoStepFailed as failed:
        print(f"✗ {failed.step}: {failed.why}")
        raise SystemExit(
            f"demo failed at step {failed.step!r}: {failed.why} "
            f"({len(progress.done)} steps done before it)"
        ) from None
    except httpx.HTTPError as exc:
        print(f"✗ {progress.current}: {exc!r}")
        raise SystemExit(
            f"demo failed at step {progress.current!r}: cannot reach {base_url} ({exc!r}); "
            "is the service running in sandbox mode (make run)?"
        ) from None
    print(f"demo: all {len(progress.done)} steps happened as expected")


class DemoStepFailed(Exception):
    def __init__(self, step: str, why: str) -> None:
        super().__init__(f"{step}: {why}")
        self.step = step
        self.why = why


class Progress:
    """The progress display: a "✓" line per step done; the current step names a failure."""

    def __init__(self) -> None:
        self.done: list[str] = []
        self.current = "start"

    def begin(self, step: str) -> None:
        self.current = step

    def ok(self, step: str | None = None) -> None:
        step = step or self.current
        self.done.append(step)
        print(f"✓ {step}")

    def fail(self, why: str) -> DemoStepFailed:
        return DemoStepFailed(self.current, why)


BOOK = {"title": "The Name of the Rose", "author": "Umberto Eco", "isbn": "9780151446476"}
ARTICLE = {
    "title": "Molecular structure of nucleic acids",
    "author": "Watson, J. D.",
    "journal_title": "Nature",
    "issn": "0028-0836",
}
SECOND_BOOK = {"title": "Foucault's Pendulum", "author": "Umberto Eco", "isbn": "9780151327652"}
PATRON = {"patron_id": "demo-patron", "surname": "Demo", "given_name": "Pat", "email": None}


async def _play(
    base: str, token: str, alma_request_id: str, progress: Progress, step_seconds: float
) -> None:
    iso_url = f"{base}/iso18626/{DEMO_CODE}"
    alma_url = f"{base}{ALMA_PREFIX}"
    lender_url = f"{base}{WORLDSHARE_PREFIX}/_sandbox/requests"
    async with httpx.AsyncClient(
        timeout=10.0, headers={"Authorization": f"Bearer {token}"}
    ) as http:

        async def call(method: str, url: str, **kwargs: Any) -> Any:
            answer = await http.request(method, url, **kwargs)
            if answer.status_code >= 400:
                raise progress.fail(f"{method} {url} answered {answer.status_code}: {answer.text}")
            return answer.json()

        async def find(request_id: str) -> dict[str, Any] | None:
            listed = await call(
                "GET", f"{base}/api/v1/requests", params={"alma_request_id": request_id}
            )
            items = listed["items"]
            return dict(items[0]) if items else None

        async def wait_until(what: str, check: Callable[[], Awaitable[Any]]) -> Any:
            deadline = time.monotonic() + step_seconds
            while time.monotonic() < deadline:
                found = await check()
                if found:
                    return found
                await asyncio.sleep(0.25)
            raise progress.fail(f"{what} did not happen within {step_seconds:g} s")

        async def wait_for_state(request_id: str, *states: str) -> dict[str, Any]:
            async def reached() -> dict[str, Any] | None:
                found = await find(request_id)
                return found if found and found["state"] in states else None

            found = await wait_until(f"{request_id} reaching {'/'.join(states)}", reached)
            print(
                f"  bridge: {found['state']} (WorldShare request "
                f"{found['worldshare_request_id']}, lender due {found['lender_due_date']})"
            )
            return dict(found)

        async def told(request_id: str) -> list[dict[str, Any]]:
            found = await call(
                "GET", f"{alma_url}/_sandbox/messages", params={"request_id": request_id}
            )
            return list(found)

        async def alma_was_told(
            request_id: str, reason: str, status: str, answer: str | None
        ) -> None:
            async def arrived() -> bool:
                return any(
                    (m["reasonForMessage"], m["status"], m["answerYesNo"])
                    == (reason, status, answer)
                    for m in await told(request_id)
                )

            await wait_until(f"Alma being told {reason} {status} {answer}", arrived)

        async def alma_acts(request_id: str, action: Action) -> None:
            print(f"Alma → bridge: {action.value}")
            confirmed = await send_action(
                http,
                alma_url,
                bridge_url=iso_url,
                request_id=request_id,
                action=action,
                requesting_agency=DEMO_ALMA_AGENCY,
                supplying_agency=DEMO_BRIDGE_AGENCY,
                security_code=DEMO_SECURITY_CODE,
            )
            _must_be_taken(confirmed, action.value)

        async def lender(ws_id: str, act: str, **body: Any) -> None:
            await call("POST", f"{lender_url}/{ws_id}/{act}", json=body or None)

        async def alma_asks(request_id: str, citation: dict[str, str], what: str) -> str:
            progress.begin(f"{request_id}: {what} requested and exported to WorldShare")
            print(
                f"Alma → bridge: request {request_id}, {what} (the rota reached its last partner)"
            )
            confirmation = await send_request(
                http,
                alma_url,
                bridge_url=iso_url,
                request_id=request_id,
                citation=citation,
                patron=PATRON,
                requesting_agency=DEMO_ALMA_AGENCY,
                supplying_agency=DEMO_BRIDGE_AGENCY,
                security_code=DEMO_SECURITY_CODE,
                service_type=ServiceType.COPY if what == "a copy" else ServiceType.LOAN,
            )
            _must_be_taken(confirmation, "the request")
            exported = await wait_for_state(request_id, "exported")
            progress.ok()
            return str(exported["worldshare_request_id"])

        async def show_what_alma_was_told(request_id: str) -> None:
            print(f"what Alma was told about {request_id}:")
            for message in await told(request_id):
                answer = f" {message['answerYesNo']}" if message["answerYesNo"] else ""
                due = f" due {message['dueDate']}" if message["dueDate"] else ""
                item = f" item {message['itemId']}" if message["itemId"] else ""
                ignored = " (Alma ignores it)" if message["outcome"] == "ignored" else ""
                print(
                    f"  {message['reasonForMessage']} {message['status']}"
                    f"{answer}{due}{item}{ignored}"
                )
            refusals = await call(
                "GET", f"{alma_url}/_sandbox/refusals", params={"request_id": request_id}
            )
            for refused in refusals:
                print(
                    f"  refused by Alma: {refused['reasonForMessage']} {refused['status']} "
                    f"({refused['errorType']}: {refused['errorValue']})"
                )

        # 1. A loan, from the request to the lender's check-in.
        ws_id = await alma_asks(alma_request_id, BOOK, "a loan")
        progress.begin(f"{alma_request_id}: the lender ships, Alma receives the item")
        print("lender (WorldShare sandbox) ships the item")
        await lender(ws_id, "ship")
        shipped = await wait_for_state(alma_request_id, "shipped")
        await alma_acts(alma_request_id, Action.RECEIVED)
        await wait_for_state(alma_request_id, "in_library")
        progress.ok()
        progress.begin(f"{alma_request_id}: the patron's loan linked by LOAN_CREATED")
        webhook = {
            "webhook_url": f"{base}/webhooks/alma/{DEMO_CODE}",
            "secret": DEMO_WEBHOOK_SECRET,
        }
        print("Alma → bridge: webhook LOAN_CREATED (the patron borrows the item)")
        loaned = await call(
            "POST",
            f"{alma_url}/_sandbox/loans",
            json={
                **webhook,
                "user_id": PATRON["patron_id"],
                "item_barcode": shipped["item_barcode"],
                "library": DEMO_ILL_LIBRARY,
                "due_date": shipped["patron_due_date"] or "2030-01-01",
            },
        )
        loan_id = loaned["loan_id"]
        await wait_for_state(alma_request_id, "on_loan")
        progress.ok()
        progress.begin(f"{alma_request_id}: renewal approved, the new date in Alma's loan")
        await alma_acts(alma_request_id, Action.RENEW)
        print("lender approves the renewal")
        await lender(ws_id, "renewal", approve=True)
        renewed = await wait_for_state(alma_request_id, "on_loan")
        loan = await _loan_once_updated(
            lambda: call("GET", f"{alma_url}/_sandbox/loans/{loan_id}"), wait_until
        )
        print(
            f"  bridge → Alma REST: PUT loan, patron due {loan['due_date'][:10]} "
            f"(lender due {renewed['lender_due_date']})"
        )
        await alma_was_told(alma_request_id, "RenewResponse", "Loaned", "Y")
        progress.ok()
        progress.begin(f"{alma_request_id}: returned by the patron, checked in by the lender")
        print("Alma → bridge: webhook LOAN_RETURNED (the return scan)")
        await call(
            "POST",
            f"{alma_url}/_sandbox/loans/{loan_id}/events",
            json={**webhook, "event": "LOAN_RETURNED"},
        )
        returned = await wait_for_state(alma_request_id, "returned")
        detail = await call("GET", f"{base}/api/v1/requests/{returned['id']}")
        for task in detail["tasks"]:
            print(f"  staff task: {task['kind']}: {task['reason']}")
        print("lender checks the item back in (WorldShare closes the request)")
        await lender(ws_id, "close")
        await wait_for_state(alma_request_id, "closed")
        progress.ok()

        # 2. A copy of an article.
        copy_id = f"{alma_request_id}-COPY"
        copy_ws_id = await alma_asks(copy_id, ARTICLE, "a copy")
        progress.begin(f"{copy_id}: the lender sends the copy, Alma told CopyCompleted")
        print("lender sends the copy")
        await lender(copy_ws_id, "ship")
        await wait_for_state(copy_id, "closed")
        await alma_was_told(copy_id, "StatusChange", "CopyCompleted", None)
        progress.ok()

        # 3. A renewal the lender refuses: Alma is told N, the due date stays.
        refused_id = f"{alma_request_id}-REFUSED"
        refused_ws_id = await alma_asks(refused_id, SECOND_BOOK, "a loan")
        progress.begin(f"{refused_id}: shipped and received")
        await lender(refused_ws_id, "ship")
        shipped = await wait_for_state(refused_id, "shipped")
        await alma_acts(refused_id, Action.RECEIVED)
        await wait_for_state(refused_id, "in_library")
        progress.ok()
        progress.begin(f"{refused_id}: renewal refused, RenewResponse N, the due date unchanged")
        await alma_acts(refused_id, Action.RENEW)
        await wait_for_state(refused_id, "renewal_requested")
        print("lender refuses the renewal")
        await lender(refused_ws_id, "renewal", approve=False)
        after = await wait_for_state(refused_id, "in_library")
        if after["lender_due_date"] != shipped["lender_due_date"]:
            raise progress.fail(
                f"the lender's due date moved from {shipped['lender_due_date']} "
                f"to {after['lender_due_date']}"
            )
        await alma_was_told(refused_id, "RenewResponse", "Loaned", "N")
        progress.ok()

        # 4. Alma cancels while the request is at the lender: held until WorldShare shows it.
        cancel_id = f"{alma_request_id}-CANCEL"
        cancel_ws_id = await alma_asks(cancel_id, SECOND_BOOK, "a loan")
        progress.begin(f"{cancel_id}: Alma's Cancel held, a staff task to cancel in WorldShare")
        await alma_acts(cancel_id, Action.CANCEL)
        held = await find(cancel_id)
        assert held is not None
        detail = await call("GET", f"{base}/api/v1/requests/{held['id']}")
        tasks = [t for t in detail["tasks"] if t["kind"] == "cancel_in_worldshare"]
        if held["state"] != "exported" or not tasks:
            raise progress.fail(
                f"expected exported with a cancel_in_worldshare task, got {held['state']} "
                f"with tasks {[t['kind'] for t in detail['tasks']]}"
            )
        print(f"  bridge: {held['state']}; staff task: {tasks[0]['kind']}: {tasks[0]['reason']}")
        progress.ok()
        progress.begin(f"{cancel_id}: cancelled in WorldShare, CancelResponse Y, cancelled")
        print("lender (staff in WorldShare) cancels the request")
        await lender(cancel_ws_id, "cancel")
        await wait_for_state(cancel_id, "cancelled")
        await alma_was_told(cancel_id, "CancelResponse", "Cancelled", "Y")
        progress.ok()

        # 5. A stale request whose WorldShare side the lender closed: clean-up closes Alma's.
        stale_id = f"{alma_request_id}-STALE"
        stale_ws_id = await alma_asks(stale_id, BOOK, "a loan")
        progress.begin(f"{stale_id}: the lender closes it in WorldShare, the bridge polls it")
        print("lender closes the request in WorldShare without supplying it")
        await lender(stale_ws_id, "status", status="CLOSED")

        async def polled_closed() -> dict[str, Any] | None:
            found = await find(stale_id)
            if found is None or found["lender_status"] != "CLOSED":
                return None
            if found["state"] != "exported":
                raise progress.fail(f"the bridge moved it to {found['state']} by itself")
            return found

        stale = await wait_until(f"{stale_id}'s CLOSED status polled", polled_closed)
        print(f"  bridge: {stale['state']}, WorldShare shows {stale['lender_status']}")
        progress.ok()
        progress.begin(f"{stale_id}: stale after the policy's stale_after_days")
        policy = (await call("GET", f"{base}/api/v1/institutions/{DEMO_CODE}"))["policy"]
        days = int(policy["stale_after_days"]) + 1
        print(f"  sandbox clock: the request's timeline moved back {days} days (no demo waits)")
        await call("POST", f"{base}{BRIDGE_CLOCK_PREFIX}/requests/{stale['id']}/age?days={days}")
        progress.ok()
        progress.begin(f"{stale_id}: clean-up dry run plans an ISO 18626 notice")
        order = {"institution": DEMO_CODE, "dry_run": True}
        dry = await call("POST", f"{base}/api/v1/cleanup", json=order)
        _print_batch("clean-up dry run", dry)
        planned = [i for i in dry["items"] if i["request_id"] == stale["id"]]
        if not planned or planned[0]["action"] != "iso_notice":
            raise progress.fail(f"the dry run planned {planned} for {stale_id}")
        if (await find(stale_id) or {}).get("state") != "exported":
            raise progress.fail("the dry run changed the request")
        progress.ok()
        progress.begin(f"{stale_id}: clean-up real run cancels it, Alma told Cancelled")
        started = await call("POST", f"{base}/api/v1/cleanup", json={**order, "dry_run": False})

        async def batch_done() -> dict[str, Any] | None:
            batch = await call("GET", f"{base}/api/v1/cleanup/{started['batch_id']}")
            return dict(batch) if batch["status"] == "done" else None

        outcome = await wait_until("the clean-up run", batch_done)
        _print_batch("clean-up run", outcome)
        lines = [i for i in outcome["items"] if i["request_id"] == stale["id"]]
        if not lines or lines[0]["outcome"] != "done":
            raise progress.fail(f"the run's line for {stale_id} is {lines}")
        await wait_for_state(stale_id, "cancelled")
        await alma_was_told(stale_id, "StatusChange", "Cancelled", None)
        progress.ok()

        scenarios = (alma_request_id, copy_id, refused_id, cancel_id, stale_id)
        for request_id in scenarios:
            await show_what_alma_was_told(request_id)
        print("timelines (no patron data; each request's page is under /ops):")
        for request_id in scenarios:
            found = await find(request_id)
            assert found is not None
            detail = await call("GET", f"{base}/api/v1/requests/{found['id']}")
            _print_timeline(base, request_id, detail)


def _print_batch(title: str, batch: dict[str, Any]) -> None:
    print(f"  {title} (batch {batch['batch_id']}, {batch['status']}):")
    for item in batch["items"]:
        error = f" — {item['error']}" if item["error"] else ""
        print(
            f"    {item['alma_request_id']}: {item['action']} ({item['why']}) "
            f"→ {item['outcome']}{error}"
        )


def _print_timeline(base: str, request_id: str, detail: dict[str, Any]) -> None:
    print(f"timeline of {request_id}: {detail['state']} — {base}/ops/requests/{detail['id']}")
    for event in detail["events"]:
        moved = f" {event['from_state'] or '·'} → {event['to_state']}" if event["to_state"] else ""
        refused = "" if event["applied"] else " (not applied)"
        print(f"  {event['at'][:19]} {event['kind']} [{event['source']}]{moved}{refused}")


async def _loan_once_updated(
    read: Callable[[], Awaitable[Any]],
    wait_until: Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]],
) -> dict[str, str]:
    """The simulated Alma's loan once the bridge has PUT its new due date."""

    async def updated() -> dict[str, str] | None:
        loan = dict(await read())
        return loan if loan["puts"] >= 1 else None

    return dict(await wait_until("the bridge's PUT of the patron's loan", updated))


def _must_be_taken(confirmation: PartnerAnswer, what: str) -> None:
    """Stop at once when the bridge refuses, rather than wait for a state that cannot come."""
    if confirmation.message_status is not MessageStatus.OK:
        error_type = confirmation.error_type.value if confirmation.error_type else "ERROR"
        raise SystemExit(
            f"the bridge refused {what}: {error_type} {confirmation.error_value!r} "
            f"(the {DEMO_CODE} institution must have alma.iso18626_security_code "
            "set as `illbridge sandbox-seed` sets it)"
        )


def read_demo_token() -> str:
    if not Path(TOKEN_FILE).exists():
        raise SystemExit(f"no {TOKEN_FILE}: run `illbridge sandbox-seed` (make run does)")
    return TOKEN_FILE.read_text().strip()
