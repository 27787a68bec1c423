"""Sandbox mode's demo: an institution wired to the simulated Alma and WorldShare, a token, and
a short life cycle played as Alma would play it — on one machine, with no credentials."""

from __future__ import annotations

import asyncio
import time
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


def run_demo(base_url: str, token: str, *, alma_request_id: str) -> None:
    """Play Alma: a loan (request, receive, the patron's loan, renew, the return scan, the lender
    checks it in), then a copy of an article (request, the lender delivers it)."""
    asyncio.run(_play(base_url.rstrip("/"), token, alma_request_id))


BOOK = {"title": "The Name of the Rose", "author": "Umberto Eco", "isbn": "9780151446476"}
ARTICLE = {
    "title": "Molecular structure of nucleic acids",
    "author": "Watson, J. D.",
    "journal_title": "Nature",
    "issn": "0028-0836",
}
PATRON = {"patron_id": "demo-patron", "surname": "Demo", "given_name": "Pat", "email": None}


async def _play(base: str, token: str, alma_request_id: str) -> None:
    iso_url = f"{base}/iso18626/{DEMO_CODE}"
    alma_url = f"{base}{ALMA_PREFIX}"
    lender_url = f"{base}{WORLDSHARE_PREFIX}/_sandbox/requests"
    async with httpx.AsyncClient(
        timeout=10.0, headers={"Authorization": f"Bearer {token}"}
    ) as http:

        async def wait_for_state(request_id: str, *states: str) -> dict[str, Any]:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                listed = await http.get(
                    f"{base}/api/v1/requests", params={"alma_request_id": request_id}
                )
                items = listed.json()["items"]
                if items and items[0]["state"] in states:
                    found = dict(items[0])
                    print(
                        f"  bridge: {found['state']} (WorldShare request "
                        f"{found['worldshare_request_id']}, lender due {found['lender_due_date']})"
                    )
                    return found
                await asyncio.sleep(0.5)
            raise SystemExit(f"the request did not reach {states} in time")

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

        async def alma_asks(request_id: str, citation: dict[str, str], what: str) -> str:
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
            return str(exported["worldshare_request_id"])

        async def show_what_alma_was_told(request_id: str) -> None:
            told = {"request_id": request_id}
            messages = await http.get(f"{alma_url}/_sandbox/messages", params=told)
            print(f"what Alma was told about {request_id}:")
            for message in messages.json():
                answer = f" {message['answerYesNo']}" if message["answerYesNo"] else ""
                due = f" due {message['dueDate']}" if message["dueDate"] else ""
                item = f" item {message['itemId']}" if message["itemId"] else ""
                ignored = " (Alma ignores it)" if message["outcome"] == "ignored" else ""
                print(
                    f"  {message['reasonForMessage']} {message['status']}"
                    f"{answer}{due}{item}{ignored}"
                )
            for refused in (await http.get(f"{alma_url}/_sandbox/refusals", params=told)).json():
                print(
                    f"  refused by Alma: {refused['reasonForMessage']} {refused['status']} "
                    f"({refused['errorType']}: {refused['errorValue']})"
                )

        ws_id = await alma_asks(alma_request_id, BOOK, "a loan")
        print("lender (WorldShare sandbox) ships the item")
        await http.post(f"{lender_url}/{ws_id}/ship")
        shipped = await wait_for_state(alma_request_id, "shipped")
        await alma_acts(alma_request_id, Action.RECEIVED)
        await wait_for_state(alma_request_id, "in_library")
        webhook = {
            "webhook_url": f"{base}/webhooks/alma/{DEMO_CODE}",
            "secret": DEMO_WEBHOOK_SECRET,
        }
        print("Alma → bridge: webhook LOAN_CREATED (the patron borrows the item)")
        loaned = await http.post(
            f"{alma_url}/_sandbox/loans",
            json={
                **webhook,
                "user_id": PATRON["patron_id"],
                "item_barcode": shipped["item_barcode"],
                "library": DEMO_ILL_LIBRARY,
                "due_date": shipped["patron_due_date"] or "2030-01-01",
            },
        )
        loan_id = loaned.json()["loan_id"]
        await wait_for_state(alma_request_id, "on_loan")
        await alma_acts(alma_request_id, Action.RENEW)
        print("lender approves the renewal")
        await http.post(f"{lender_url}/{ws_id}/renewal", json={"approve": True})
        renewed = await wait_for_state(alma_request_id, "on_loan")
        loan = await _loan_once_updated(http, f"{alma_url}/_sandbox/loans/{loan_id}")
        print(
            f"  bridge → Alma REST: PUT loan, patron due {loan['due_date'][:10]} "
            f"(lender due {renewed['lender_due_date']})"
        )
        print("Alma → bridge: webhook LOAN_RETURNED (the return scan)")
        await http.post(
            f"{alma_url}/_sandbox/loans/{loan_id}/events",
            json={**webhook, "event": "LOAN_RETURNED"},
        )
        returned = await wait_for_state(alma_request_id, "returned")
        detail = (await http.get(f"{base}/api/v1/requests/{returned['id']}")).json()
        for task in detail["tasks"]:
            print(f"  staff task: {task['kind']}: {task['reason']}")
        print("lender checks the item back in (WorldShare closes the request)")
        await http.post(f"{lender_url}/{ws_id}/close")
        await wait_for_state(alma_request_id, "closed")

        copy_id = f"{alma_request_id}-COPY"
        copy_ws_id = await alma_asks(copy_id, ARTICLE, "a copy")
        print("lender sends the copy")
        await http.post(f"{lender_url}/{copy_ws_id}/ship")
        await wait_for_state(copy_id, "closed")

        for request_id in (alma_request_id, copy_id):
            await show_what_alma_was_told(request_id)


async def _loan_once_updated(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    """The simulated Alma's loan once the bridge has PUT its new due date."""
    for _ in range(120):
        loan = dict((await http.get(url)).json())
        if loan["puts"] >= 1:
            return loan
        await asyncio.sleep(0.5)
    raise SystemExit("the bridge did not update the patron's loan in time")


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
