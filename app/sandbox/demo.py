"""Sandbox mode's demo: an institution wired to the simulated Alma and WorldShare, a token, and
a short life cycle played as Alma would play it — on one machine, with no credentials."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from app.config import VAR_DIR, Settings
from app.db import create_db_engine, write_session
from app.institutions import service
from app.institutions.schemas import InstitutionCreate
from app.institutions.secrets import load_secret_box
from app.outbound_hosts import allowed_host_patterns
from app.sandbox.alma_requester import PartnerAnswer, send_action, send_request
from app.sandbox.alma_vocabulary import Action, MessageStatus
from app.sandbox.mount import ALMA_PREFIX, WORLDSHARE_PREFIX

DEMO_CODE = "DEMO"
DEMO_ALMA_AGENCY = ("ISIL", "US-DEMO")
DEMO_BRIDGE_AGENCY = ("ISIL", "US-ILLBRIDGE")
DEMO_SECURITY_CODE = "demo-shared-code"
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
                            "api_base_url": f"{base}{ALMA_PREFIX}/almaws/v1",
                            "api_key": "sandbox-alma-api-key",
                            "agency_id": dict(
                                zip(("type", "value"), DEMO_ALMA_AGENCY, strict=True)
                            ),
                            "bridge_agency_id": dict(
                                zip(("type", "value"), DEMO_BRIDGE_AGENCY, strict=True)
                            ),
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
    """Play Alma: send an unfilled request, receive the item, ask a renewal, return it."""
    asyncio.run(_play(base_url.rstrip("/"), token, alma_request_id))


async def _play(base: str, token: str, alma_request_id: str) -> None:
    iso_url = f"{base}/iso18626/{DEMO_CODE}"
    alma_url = f"{base}{ALMA_PREFIX}"
    async with httpx.AsyncClient(
        timeout=10.0, headers={"Authorization": f"Bearer {token}"}
    ) as http:

        async def wait_for_state(*states: str) -> dict[str, object]:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                listed = await http.get(
                    f"{base}/api/v1/requests", params={"alma_request_id": alma_request_id}
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

        print(f"Alma → bridge: request {alma_request_id} (the rota reached its last partner)")
        confirmation = await send_request(
            http,
            alma_url,
            bridge_url=iso_url,
            request_id=alma_request_id,
            citation={
                "title": "The Name of the Rose",
                "author": "Umberto Eco",
                "isbn": "9780151446476",
            },
            patron={
                "patron_id": "demo-patron",
                "surname": "Demo",
                "given_name": "Pat",
                "email": None,
            },
            requesting_agency=DEMO_ALMA_AGENCY,
            supplying_agency=DEMO_BRIDGE_AGENCY,
            security_code=DEMO_SECURITY_CODE,
        )
        _must_be_taken(confirmation, "the request")
        exported = await wait_for_state("exported")
        print("lender (WorldShare sandbox) ships the item")
        await http.post(
            f"{base}{WORLDSHARE_PREFIX}/_sandbox/requests/{exported['worldshare_request_id']}/ship"
        )
        await wait_for_state("shipped")
        for action in (Action.RECEIVED, Action.RENEW):
            print(f"Alma → bridge: {action.value}")
            confirmed = await send_action(
                http,
                alma_url,
                bridge_url=iso_url,
                request_id=alma_request_id,
                action=action,
                requesting_agency=DEMO_ALMA_AGENCY,
                supplying_agency=DEMO_BRIDGE_AGENCY,
                security_code=DEMO_SECURITY_CODE,
            )
            _must_be_taken(confirmed, action.value)
        print("lender approves the renewal")
        await http.post(
            f"{base}{WORLDSHARE_PREFIX}/_sandbox/requests/{exported['worldshare_request_id']}/renewal",
            json={"approve": True},
        )
        await wait_for_state("in_library")
        print("Alma → bridge: ShippedReturn")
        confirmed = await send_action(
            http,
            alma_url,
            bridge_url=iso_url,
            request_id=alma_request_id,
            action=Action.SHIPPED_RETURN,
            requesting_agency=DEMO_ALMA_AGENCY,
            supplying_agency=DEMO_BRIDGE_AGENCY,
            security_code=DEMO_SECURITY_CODE,
        )
        _must_be_taken(confirmed, Action.SHIPPED_RETURN.value)
        await wait_for_state("closed")
        told = {"request_id": alma_request_id}
        messages = await http.get(f"{alma_url}/_sandbox/messages", params=told)
        print("what Alma was told:")
        for message in messages.json():
            answer = f" {message['answerYesNo']}" if message["answerYesNo"] else ""
            due = f" due {message['dueDate']}" if message["dueDate"] else ""
            ignored = " (Alma ignores it)" if message["outcome"] == "ignored" else ""
            print(f"  {message['reasonForMessage']} {message['status']}{answer}{due}{ignored}")
        for refused in (await http.get(f"{alma_url}/_sandbox/refusals", params=told)).json():
            print(
                f"  refused by Alma: {refused['reasonForMessage']} {refused['status']} "
                f"({refused['errorType']}: {refused['errorValue']})"
            )


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
