"""The WorldShare client against the simulated WorldShare, over real HTTP."""

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from app.borrowing.citation import Citation
from app.borrowing.states import LenderOutcome
from app.sandbox.worldshare import WorldShareSandboxSettings, create_worldshare_sandbox
from app.upstream import PermanentUpstreamError, TransientUpstreamError
from app.worldshare.auth import TokenCache
from app.worldshare.client import Requester, WorldShareClient, WorldShareConfig
from app.worldshare.status import lender_outcome
from tests.support.servers import run_asgi_in_thread

pytestmark = pytest.mark.anyio

OCLC_REFERENCE = (
    Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "oclc-worldshare-ill"
)
BOOK = Citation(title="Outwitting Squirrels", isbn="978-1556523021", citation_type="BK")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sandbox_settings() -> WorldShareSandboxSettings:
    return WorldShareSandboxSettings()


@pytest.fixture
def sandbox(sandbox_settings: WorldShareSandboxSettings) -> Iterator[str]:
    with run_asgi_in_thread(create_worldshare_sandbox(sandbox_settings)) as root:
        yield root


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def config_for(root: str, *, institution_id: str = "128807") -> WorldShareConfig:
    return WorldShareConfig(
        institution_code="main",
        base_url=f"{root}/ILL",
        token_url=f"{root}/oauth/token",
        scope="WorldShareILL",
        key="demo-wskey",
        secret="demo-secret",
        requester=Requester(
            institution_id=institution_id, billing_address={"address1": "1 Library Walk"}
        ),
    )


@pytest.fixture
def worldshare(sandbox: str, http: httpx.AsyncClient) -> WorldShareClient:
    return WorldShareClient(http, TokenCache(), config_for(sandbox))


async def control(http: httpx.AsyncClient, root: str, path: str, body: object = None) -> dict:
    response = await http.post(f"{root}/_sandbox/{path}", json=body)
    response.raise_for_status()
    return response.json()


async def stats(http: httpx.AsyncClient, root: str) -> dict[str, int]:
    return (await http.get(f"{root}/_sandbox/stats")).json()


def basic(key: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()}


async def test_token_answer_has_oclc_shape(sandbox: str, http: httpx.AsyncClient) -> None:
    response = await http.post(
        f"{sandbox}/oauth/token",
        data={"grant_type": "client_credentials", "scope": "WorldShareILL"},
        headers=basic("k", "s"),
    )

    body = response.json()
    assert response.status_code == 200
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == "3599"
    expires_at = datetime.strptime(body["expires_at"], "%Y-%m-%d %H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((expires_at - datetime.now(UTC)).total_seconds() - 3599) < 5
    assert {"access_token", "principalID", "principalIDNS", "contextInstitutionId"} <= set(body)


async def test_the_refresh_grant_rotates_and_refuses_a_used_token(
    sandbox: str, http: httpx.AsyncClient
) -> None:
    signed_in = (await http.post(f"{sandbox}/_sandbox/refresh-tokens", json={"wskey": "k"})).json()

    async def refresh(refresh_token: str, key: str = "k") -> httpx.Response:
        return await http.post(
            f"{sandbox}/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
            headers=basic(key, "s"),
        )

    refreshed = await refresh(signed_in["refresh_token"])
    body = refreshed.json()
    assert refreshed.status_code == 200
    assert body["refresh_token"] not in ("", signed_in["refresh_token"])
    assert {"access_token", "expires_at", "refresh_token_expires_at"} <= set(body)
    assert (await refresh(signed_in["refresh_token"])).status_code == 401
    assert (await refresh(body["refresh_token"], key="another-wskey")).status_code == 401
    assert (await refresh(body["refresh_token"])).status_code == 200


async def test_client_credentials_carry_no_refresh_token(
    sandbox: str, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        f"{sandbox}/oauth/token",
        data={"grant_type": "client_credentials", "scope": "WorldShareILL"},
        headers=basic("k", "s"),
    )

    assert "refresh_token" not in response.json()


@pytest.mark.parametrize(
    "sandbox_settings", [WorldShareSandboxSettings(clients={"demo-wskey": "other"})]
)
async def test_unknown_credentials_are_rejected_permanently(
    sandbox: str, worldshare: WorldShareClient, http: httpx.AsyncClient
) -> None:
    raw = await http.post(
        f"{sandbox}/oauth/token",
        data={"grant_type": "client_credentials", "scope": "x"},
        headers=basic("demo-wskey", "wrong"),
    )
    assert raw.status_code == 401
    assert raw.json()["code"] == {"type": "http", "value": "401"}

    with pytest.raises(PermanentUpstreamError, match="WorldShare credentials rejected"):
        await worldshare.create_request(BOOK, reference="alma-1")


async def test_wrong_grant_type_is_refused(sandbox: str, http: httpx.AsyncClient) -> None:
    response = await http.post(
        f"{sandbox}/oauth/token", data={"grant_type": "password"}, headers=basic("k", "s")
    )
    assert response.status_code == 400


async def test_request_api_needs_a_bearer_token(sandbox: str, http: httpx.AsyncClient) -> None:
    response = await http.get(f"{sandbox}/ILL/request/data/1")
    assert response.status_code == 401
    assert response.json() == {
        "code": {"type": "http", "value": "401"},
        "message": "No valid authentication credentials found in request",
    }


async def test_create_then_read_a_request(
    sandbox: str, worldshare: WorldShareClient, http: httpx.AsyncClient
) -> None:
    request_id = await worldshare.create_request(BOOK, reference="alma-req-1")

    status = await worldshare.get_request(request_id)

    assert request_id == "167513532"
    assert (status.status, status.due_date, status.renewal) == ("PRODUCED", None, None)
    assert status.reference == "alma-req-1"
    assert lender_outcome(status, None) is LenderOutcome.pending
    created = (await http.get(f"{sandbox}/_sandbox/calls")).json()[1]
    assert created["method"] == "POST"
    assert '"referenceId":"alma-req-1"' in created["body"]
    assert "patron" not in created["body"].lower()


async def test_created_requests_are_listed_with_their_reference(
    sandbox: str, worldshare: WorldShareClient, http: httpx.AsyncClient
) -> None:
    first = await worldshare.create_request(BOOK, reference="alma-req-1")
    second = await worldshare.create_request(BOOK, reference="alma-req-2")

    listed = (await http.get(f"{sandbox}/_sandbox/requests")).json()

    assert [(str(r["requestId"]), r["referenceId"], r["requestStatus"]) for r in listed] == [
        (first, "alma-req-1", "PRODUCED"),
        (second, "alma-req-2", "PRODUCED"),
    ]


async def test_concurrent_exports_make_one_token_request(
    sandbox: str, worldshare: WorldShareClient, http: httpx.AsyncClient
) -> None:
    ids = await asyncio.gather(
        *(worldshare.create_request(BOOK, reference=f"alma-{n}") for n in range(100))
    )

    assert len(set(ids)) == 100
    assert await stats(http, sandbox) == {"token_requests": 1, "creates": 100, "reads": 0}


async def test_expired_tokens_are_refreshed_once(
    sandbox: str, worldshare: WorldShareClient, http: httpx.AsyncClient
) -> None:
    request_id = await worldshare.create_request(BOOK, reference="alma-1")
    await control(http, sandbox, "faults", {"expire_tokens": True})

    status = await worldshare.get_request(request_id)

    assert status.status == "PRODUCED"
    assert (await stats(http, sandbox))["token_requests"] == 2


@pytest.mark.parametrize("status", [429, 503])
async def test_throttling_and_outages_surface_retry_after(
    sandbox: str, worldshare: WorldShareClient, http: httpx.AsyncClient, status: int
) -> None:
    await control(http, sandbox, "faults", {"fail_next": [{"status": status, "retry_after": 1}]})

    with pytest.raises(TransientUpstreamError) as caught:
        await worldshare.create_request(BOOK, reference="alma-1")

    assert (caught.value.status_code, caught.value.retry_after) == (status, 1.0)
    assert await worldshare.create_request(BOOK, reference="alma-1") == "167513532"


async def test_token_endpoint_outage_is_transient(
    sandbox: str, worldshare: WorldShareClient, http: httpx.AsyncClient
) -> None:
    await control(
        http, sandbox, "faults", {"fail_next": [{"status": 503, "retry_after": 2, "path": "token"}]}
    )

    with pytest.raises(TransientUpstreamError) as caught:
        await worldshare.create_request(BOOK, reference="alma-1")

    assert caught.value.retry_after == 2.0


async def test_injected_validation_error_is_permanent_until_cleared(
    sandbox: str, worldshare: WorldShareClient, http: httpx.AsyncClient
) -> None:
    fault = {"failureCode": 30001, "fieldName": "item.title"}
    await control(http, sandbox, "faults", {"validation_error": fault})

    for _ in range(2):
        with pytest.raises(PermanentUpstreamError) as caught:
            await worldshare.create_request(BOOK, reference="alma-1")
        assert caught.value.codes == ("30001:item.title",)

    await http.delete(f"{sandbox}/_sandbox/faults")
    assert await worldshare.create_request(BOOK, reference="alma-1") == "167513532"


async def test_missing_institution_is_rejected_like_oclc(
    sandbox: str, http: httpx.AsyncClient
) -> None:
    worldshare = WorldShareClient(http, TokenCache(), config_for(sandbox, institution_id=""))

    with pytest.raises(PermanentUpstreamError) as caught:
        await worldshare.create_request(BOOK, reference="alma-1")

    assert caught.value.status_code == 400
    assert caught.value.codes == ("30000:requester.institution.institutionId",)
    assert "30000 Missing requester.institution.institutionId" in caught.value.message


async def bearer_token(http: httpx.AsyncClient, root: str) -> dict[str, str]:
    token = (
        await http.post(
            f"{root}/oauth/token",
            data={"grant_type": "client_credentials", "scope": "x"},
            headers=basic("k", "s"),
        )
    ).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


async def create_raw(http: httpx.AsyncClient, root: str, body: object) -> httpx.Response:
    return await http.post(
        f"{root}/ILL/request/data", json=body, headers=await bearer_token(http, root)
    )


def oclc_sample(name: str) -> dict:
    return json.loads((OCLC_REFERENCE / name).read_text())


async def test_raw_validation_error_has_oclc_shape(sandbox: str, http: httpx.AsyncClient) -> None:
    response = await create_raw(
        http, sandbox, {"illRequest": {"item": {}, "requester": {"serviceType": "LOAN"}}}
    )

    error = response.json()["response"]["error"]
    assert response.status_code == 400
    assert error["detail"] == [
        {"failureCode": 30000, "fieldName": "item.title"},
        {"failureCode": 30000, "fieldName": "requester.institution.institutionId"},
        {"failureCode": 30000, "fieldName": "requester.requesterBilling.address.address1"},
    ]
    assert {"message", "instance"} <= set(error)


async def test_oclcs_own_sample_request_is_accepted(sandbox: str, http: httpx.AsyncClient) -> None:
    response = await create_raw(http, sandbox, oclc_sample("illRequest-sample.json"))

    assert response.status_code == 200, response.text
    assert response.json()["response"]["illRequest"]["requestStatus"] == "SUBMITTING"


async def test_a_create_without_a_billing_address_fails_as_in_oclcs_example(
    sandbox: str, http: httpx.AsyncClient
) -> None:
    sample = oclc_sample("illRequest-sample.json")
    del sample["illRequest"]["requester"]["requesterBilling"]

    response = await create_raw(http, sandbox, sample)

    expected = oclc_sample("failure-example.json")["response"]["error"]["detail"]
    assert response.status_code == 400
    assert response.json()["response"]["error"]["detail"] == expected
    assert (await stats(http, sandbox))["creates"] == 0


async def test_a_patron_block_is_refused(sandbox: str, http: httpx.AsyncClient) -> None:
    sample = oclc_sample("illRequest-sample.json")
    sample["illRequest"]["patron"] = {"name": "Stacy Smith", "userId": "jkdjfldjfdlj"}

    response = await create_raw(http, sandbox, sample)

    assert response.status_code == 400
    assert response.json()["response"]["error"]["detail"] == [
        {"failureCode": 30007, "fieldName": "patron"}
    ]
    assert (await stats(http, sandbox))["creates"] == 0


@pytest.mark.parametrize(
    ("change", "field_name"),
    [
        (
            lambda r: r["requester"]["institution"].update(institutionId="128807"),
            "requester.institution.institutionId",
        ),
        (
            lambda r: r["requester"]["supplierInfo"]["institutions"].append(
                {"institutionId": "116402"}
            ),
            "requester.supplierInfo.institutions[2].institutionId",
        ),
        (lambda r: r["item"].update(oclcNumber="780941515"), "item.oclcNumber"),
        (lambda r: r["item"].update(oclcNumber=True), "item.oclcNumber"),
        (
            lambda r: r["requester"]["requesterBilling"].update(
                maximumCost={"amount": "25.00", "currency": "USD"}
            ),
            "requester.requesterBilling.maximumCost.amount",
        ),
        (
            lambda r: r["requester"]["requesterDelivery"]["address"].update(postal=32611),
            "requester.requesterDelivery.address.postal",
        ),
        (lambda r: r.update(needed="2019-08-15"), "needed"),
    ],
    ids=[
        "institution-id-text",
        "lender-id-text",
        "oclc-number-text",
        "oclc-number-bool",
        "amount-text",
        "postal-number",
        "needed-a-bare-date",
    ],
)
async def test_values_of_the_wrong_kind_are_invalid(
    sandbox: str, http: httpx.AsyncClient, change: Callable[[dict], None], field_name: str
) -> None:
    sample = oclc_sample("illRequest-sample.json")
    change(sample["illRequest"])

    response = await create_raw(http, sandbox, sample)

    assert response.status_code == 400
    assert response.json()["response"]["error"]["detail"] == [
        {"failureCode": 30001, "fieldName": field_name}
    ]


async def test_the_bridges_create_with_every_library_setting_is_accepted(
    sandbox: str, http: httpx.AsyncClient
) -> None:
    requester = Requester(
        institution_id="128807",
        billing_address={"attention": "ILL", "address1": "1 Library Walk", "postal": "32611"},
        delivery_address={"address1": "Loading Dock 3", "country": "US"},
        delivery_email="ill@library.example.edu",
        lenders=(148456, 116402),
        max_cost={"amount": "25.00", "currency": "USD"},
        billing_types=("IFM",),
    )
    config = replace(config_for(sandbox), requester=requester)
    article = Citation(
        title="Squirrel cognition",
        journal_title="Journal of Rodent Studies",
        oclc_number="(OCoLC)780941515",
        citation_type="CR",
        last_interest_date=date(2025, 8, 15),
    )

    request_id = await WorldShareClient(http, TokenCache(), config).create_request(
        article, reference="alma-1"
    )

    assert (await WorldShareClient(http, TokenCache(), config).get_request(request_id)).status


async def test_more_than_fifteen_lenders_are_out_of_bounds(
    sandbox: str, http: httpx.AsyncClient
) -> None:
    sample = oclc_sample("illRequest-sample.json")
    lenders = [{"institutionId": 100000 + n} for n in range(16)]
    sample["illRequest"]["requester"]["supplierInfo"]["institutions"] = lenders

    response = await create_raw(http, sandbox, sample)

    assert response.json()["response"]["error"]["detail"] == [
        {"failureCode": 30002, "fieldName": "requester.supplierInfo.institutions"}
    ]


async def test_lender_ships_renews_and_closes(
    sandbox: str, worldshare: WorldShareClient, http: httpx.AsyncClient
) -> None:
    request_id = await worldshare.create_request(BOOK, reference="alma-1")

    await control(http, sandbox, f"requests/{request_id}/ship", {"due_date": "2025-03-01"})
    shipped = await worldshare.get_request(request_id)
    assert shipped.due_date == date(2025, 3, 1)
    assert lender_outcome(shipped, None) is LenderOutcome.shipped

    await control(
        http, sandbox, f"requests/{request_id}/renewal", {"approve": True, "due_date": "2025-04-01"}
    )
    renewed = await worldshare.get_request(request_id)
    assert renewed.due_date == date(2025, 4, 1)
    assert renewed.renewal is not None and renewed.renewal.renewals == 1
    assert lender_outcome(renewed, None) is LenderOutcome.renewal_approved

    await control(http, sandbox, f"requests/{request_id}/renewal", {"approve": False})
    refused = await worldshare.get_request(request_id)
    assert refused.due_date == date(2025, 4, 1)
    assert lender_outcome(refused, None) is LenderOutcome.renewal_refused

    await control(http, sandbox, f"requests/{request_id}/close")
    assert lender_outcome(await worldshare.get_request(request_id), None) is LenderOutcome.closed


async def test_default_due_date_is_the_loan_period(
    sandbox: str, worldshare: WorldShareClient, http: httpx.AsyncClient
) -> None:
    request_id = await worldshare.create_request(BOOK, reference="alma-1")
    await control(http, sandbox, f"requests/{request_id}/ship")

    status = await worldshare.get_request(request_id)

    assert status.due_date == datetime.now(UTC).date() + timedelta(days=28)


@pytest.mark.parametrize(
    ("action", "outcome"),
    [("unfill", LenderOutcome.unfilled), ("cancel", LenderOutcome.cancelled)],
)
async def test_lender_declines(
    sandbox: str,
    worldshare: WorldShareClient,
    http: httpx.AsyncClient,
    action: str,
    outcome: LenderOutcome,
) -> None:
    request_id = await worldshare.create_request(BOOK, reference="alma-1")
    await control(http, sandbox, f"requests/{request_id}/{action}")

    assert lender_outcome(await worldshare.get_request(request_id), None) is outcome


async def test_unknown_raw_status_maps_to_none(
    sandbox: str, worldshare: WorldShareClient, http: httpx.AsyncClient
) -> None:
    request_id = await worldshare.create_request(BOOK, reference="alma-1")
    await control(http, sandbox, f"requests/{request_id}/status", {"status": "ON_THE_MOON"})

    status = await worldshare.get_request(request_id)

    assert status.status == "ON_THE_MOON"
    assert lender_outcome(status, None) is None


async def test_lender_actions_must_fit_the_request(
    sandbox: str, worldshare: WorldShareClient, http: httpx.AsyncClient
) -> None:
    request_id = await worldshare.create_request(BOOK, reference="alma-1")

    close = await http.post(f"{sandbox}/_sandbox/requests/{request_id}/close")
    unknown = await http.post(f"{sandbox}/_sandbox/requests/999/ship")

    assert (close.status_code, unknown.status_code) == (409, 404)


async def test_unknown_request_is_permanent(worldshare: WorldShareClient) -> None:
    with pytest.raises(PermanentUpstreamError) as caught:
        await worldshare.get_request("999")

    assert caught.value.status_code == 404


@pytest.mark.parametrize(
    "sandbox_settings",
    [WorldShareSandboxSettings(auto_ship_after_s=0, auto_close_after_s=3600)],
)
async def test_auto_lender_ships_on_read(worldshare: WorldShareClient) -> None:
    request_id = await worldshare.create_request(BOOK, reference="alma-1")

    status = await worldshare.get_request(request_id)

    assert status.status == "IN_TRANSIT"
    assert status.due_date == datetime.now(UTC).date() + timedelta(days=28)


@pytest.mark.parametrize(
    "sandbox_settings", [WorldShareSandboxSettings(auto_ship_after_s=0, auto_close_after_s=0)]
)
async def test_auto_lender_closes_after_shipping(worldshare: WorldShareClient) -> None:
    request_id = await worldshare.create_request(BOOK, reference="alma-1")

    assert (await worldshare.get_request(request_id)).status == "COMPLETE"


async def test_latency_applies_to_request_api_calls(
    sandbox: str, worldshare: WorldShareClient, http: httpx.AsyncClient
) -> None:
    await worldshare.create_request(BOOK, reference="alma-1")
    await control(http, sandbox, "faults", {"latency_ms": 200})

    started = time.monotonic()
    await worldshare.create_request(BOOK, reference="alma-2")

    assert time.monotonic() - started >= 0.2
