import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
import respx

from app.borrowing.citation import Citation
from app.upstream import PermanentUpstreamError, TransientUpstreamError, UpstreamError
from app.worldshare.auth import TokenCache
from app.worldshare.client import Requester, WorldShareClient, WorldShareConfig, build_ill_request
from app.worldshare.network import LenderStatus, RenewalInfo

pytestmark = pytest.mark.anyio

BASE = "https://128807.share.worldcat.org/ILL"
TOKEN_URL = "https://oauth.oclc.org/token"
KEY = "wskey-Q7zKey0001"
SECRET = "secret-Zz9Secret0002"
LIBRARY_ADDRESS = {"attention": "Interlibrary Loan", "address1": "1 Library Walk"}
LIBRARY = Requester(institution_id="128807", billing_address=LIBRARY_ADDRESS)
CONFIG = WorldShareConfig(
    institution_code="main",
    base_url=BASE,
    token_url=TOKEN_URL,
    scope="WorldShareILL",
    key=KEY,
    secret=SECRET,
    requester=LIBRARY,
)
BOOK = Citation(title="Outwitting Squirrels", author="Bill Adler", isbn="978-1556523021")
CREATED = {"response": {"illRequest": {"requestId": 167513532, "requestStatus": "SUBMITTING"}}}


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now


def token_body(token: str, expires_in: str | None = "3599", expires_at: str | None = None) -> dict:
    body = {"access_token": token, "token_type": "bearer"}
    if expires_in is not None:
        body["expires_in"] = expires_in
    if expires_at is not None:
        body["expires_at"] = expires_at
    return body


class Tokens:
    """A token endpoint handing out tk_1, tk_2, … and counting requests."""

    def __init__(self, **token_fields: str | None) -> None:
        self.issued: list[str] = []
        self.token_fields = token_fields

    def __call__(self, request: httpx.Request) -> httpx.Response:
        token = f"tk_secret_{len(self.issued) + 1}"
        self.issued.append(token)
        return httpx.Response(200, json=token_body(token, **self.token_fields))


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def client(clock: Clock) -> AsyncIterator[WorldShareClient]:
    async with httpx.AsyncClient() as http:
        yield WorldShareClient(http, TokenCache(clock=clock), CONFIG)


def assert_no_secrets(error: BaseException, tokens: list[str]) -> None:
    for text in (str(error), repr(error), getattr(error, "message", "")):
        for secret in [KEY, SECRET, *tokens]:
            assert secret not in text


def test_build_ill_request_for_a_book() -> None:
    citation = Citation(
        title="Outwitting Squirrels",
        author="Bill Adler",
        isbn="978-1556523021",
        oclc_number="(OCoLC)ocm00012345",
        publisher="Chicago Review Press",
        place_of_publication="Chicago",
        year="1996",
        edition="2nd ed.",
        volume="1",
        citation_type="BK",
        format="PHYSICAL",
        last_interest_date=date(2025, 8, 15),
    )
    body = build_ill_request(citation, LIBRARY, reference="alma-req-42")
    assert body == {
        "illRequest": {
            "requestStatus": "SUBMITTING",
            "referenceId": "alma-req-42",
            "needed": "2025-08-15T12:00:00.000+0000",
            "requester": {
                "institution": {"institutionId": 128807},
                "serviceType": "LOAN",
                "requesterBilling": {"address": LIBRARY_ADDRESS},
            },
            "item": {
                "title": "Outwitting Squirrels",
                "author": "Bill Adler",
                "isbn": "978-1556523021",
                "oclcNumber": 12345,
                "publisherName": "Chicago Review Press",
                "publicationPlace": "Chicago",
                "publicationDate": "1996",
                "edition": {"editionSpecific": "2nd ed."},
                "issueVolume": "1",
            },
        }
    }


def test_build_ill_request_for_an_article_asks_for_a_copy() -> None:
    citation = Citation(
        title="Squirrel cognition",
        author="A. Nutt",
        journal_title="Journal of Rodent Studies",
        issn="1234-5678",
        volume="12",
        issue="3",
        pages="45-67",
        citation_type="CR",
    )
    ill_request = build_ill_request(citation, LIBRARY, reference="r")["illRequest"]
    assert ill_request["requester"]["serviceType"] == "COPY"
    assert ill_request["item"] == {
        "title": "Journal of Rodent Studies",
        "articleTitle": "Squirrel cognition",
        "articleAuthor": "A. Nutt",
        "issn": "1234-5678",
        "issueVolume": "12, no. 3",
        "pages": "45-67",
    }
    assert "needed" not in ill_request


@pytest.mark.parametrize(
    "zone",
    ["Pacific/Honolulu", "America/Anchorage", "America/Los_Angeles", "America/New_York", "UTC"],
)
def test_the_need_before_date_stays_the_same_day_in_the_americas(zone: str) -> None:
    citation = Citation(title="T", last_interest_date=date(2025, 8, 15))

    needed = build_ill_request(citation, LIBRARY, reference="r")["illRequest"]["needed"]

    moment = datetime.strptime(needed, "%Y-%m-%dT%H:%M:%S.%f%z")
    assert moment.astimezone(ZoneInfo(zone)).date() == date(2025, 8, 15)


def test_an_articles_copyright_compliance_reaches_copyright_type() -> None:
    article = Citation(
        title="Squirrel cognition",
        journal_title="Journal of Rodent Studies",
        citation_type="CR",
        copyright_compliance="US:CCG",
    )
    book = Citation(title="Outwitting Squirrels", copyright_compliance="US:CCG")

    copy = build_ill_request(article, LIBRARY, reference="r")["illRequest"]["requester"]
    loan = build_ill_request(book, LIBRARY, reference="r")["illRequest"]["requester"]

    assert (copy["serviceType"], copy["copyrightType"]) == ("COPY", "US:CCG")
    assert "copyrightType" not in loan


def test_build_ill_request_for_a_book_chapter() -> None:
    citation = Citation(
        title="Backyard Wildlife",
        chapter_title="Squirrels",
        chapter_author="C. Hazel",
        format="DIGITAL",
    )
    item = build_ill_request(citation, LIBRARY, reference="r")["illRequest"]["item"]
    assert item == {
        "title": "Backyard Wildlife",
        "articleTitle": "Squirrels",
        "articleAuthor": "C. Hazel",
    }


def test_the_librarys_addresses_lenders_and_terms_go_as_in_oclcs_sample() -> None:
    library = Requester(
        institution_id="128807",
        billing_address={
            "attention": "ILL Billing",
            "address1": "1 Library Walk",
            "address2": "Room 101",
            "locality": "Gainesville",
            "region": "FL",
            "postal": "32611",
            "country": "US",
            "note": "not an OCLC field: stays home",
        },
        delivery_address={"address1": "Smathers Library, Loading Dock"},
        delivery_email="ill@library.example.edu",
        lenders=(148456, 116402),
        max_cost={"amount": "25.00", "currency": "USD"},
        billing_types=("IFM",),
    )

    requester = build_ill_request(BOOK, library, reference="r")["illRequest"]["requester"]

    assert requester == {
        "institution": {"institutionId": 128807},
        "serviceType": "LOAN",
        "supplierInfo": {"institutions": [{"institutionId": 148456}, {"institutionId": 116402}]},
        "requesterDelivery": {
            "address": {"address1": "Smathers Library, Loading Dock"},
            "email": "ill@library.example.edu",
        },
        "requesterBilling": {
            "billingTypes": ["IFM"],
            "address": {
                "attention": "ILL Billing",
                "address1": "1 Library Walk",
                "address2": "Room 101",
                "locality": "Gainesville",
                "region": "FL",
                "country": "US",
                "postal": "32611",
            },
            "maximumCost": {"amount": 25.0, "currency": "USD"},
        },
    }


async def test_create_request_sends_the_envelope_and_returns_the_request_id(
    router: respx.MockRouter, client: WorldShareClient
) -> None:
    router.post(TOKEN_URL).mock(side_effect=Tokens())
    create = router.post(f"{BASE}/request/data").mock(
        return_value=httpx.Response(200, json=CREATED)
    )

    assert await client.create_request(BOOK, reference="alma-req-1") == "167513532"

    sent = create.calls.last.request
    assert sent.headers["Authorization"] == "Bearer tk_secret_1"
    assert sent.headers["Accept"] == "application/json"
    assert sent.headers["Content-Type"] == "application/json"
    body = json.loads(sent.content)
    assert body["illRequest"]["referenceId"] == "alma-req-1"
    assert body["illRequest"]["item"]["title"] == "Outwitting Squirrels"


async def test_token_request_uses_client_credentials_and_basic_auth(
    router: respx.MockRouter, client: WorldShareClient
) -> None:
    token_route = router.post(TOKEN_URL).mock(side_effect=Tokens())
    router.post(f"{BASE}/request/data").mock(return_value=httpx.Response(200, json=CREATED))

    await client.create_request(BOOK, reference="r")

    sent = token_route.calls.last.request
    assert sent.content == b"grant_type=client_credentials&scope=WorldShareILL"
    assert (
        sent.headers["Authorization"]
        == "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
    )


async def test_concurrent_exports_share_one_token_request(
    router: respx.MockRouter, client: WorldShareClient
) -> None:
    tokens = Tokens()

    async def slow_token(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)
        return tokens(request)

    router.post(TOKEN_URL).mock(side_effect=slow_token)
    router.post(f"{BASE}/request/data").mock(return_value=httpx.Response(200, json=CREATED))

    ids = await asyncio.gather(
        *(client.create_request(BOOK, reference=f"alma-{n}") for n in range(100))
    )

    assert ids == ["167513532"] * 100
    assert len(tokens.issued) == 1


async def test_an_expired_token_is_refreshed(
    router: respx.MockRouter, client: WorldShareClient, clock: Clock
) -> None:
    tokens = Tokens()
    router.post(TOKEN_URL).mock(side_effect=tokens)
    create = router.post(f"{BASE}/request/data").mock(
        return_value=httpx.Response(200, json=CREATED)
    )

    await client.create_request(BOOK, reference="r")
    clock.now += 3599 - 61
    await client.create_request(BOOK, reference="r")
    assert len(tokens.issued) == 1
    clock.now += 2
    await client.create_request(BOOK, reference="r")

    assert len(tokens.issued) == 2
    assert create.calls.last.request.headers["Authorization"] == "Bearer tk_secret_2"


async def test_expires_at_sets_the_lifetime_when_expires_in_is_absent(
    router: respx.MockRouter, client: WorldShareClient, clock: Clock
) -> None:
    expires_at = datetime.fromtimestamp(clock.now, UTC) + timedelta(seconds=600)
    tokens = Tokens(expires_in=None, expires_at=expires_at.strftime("%Y-%m-%d %H:%M:%SZ"))
    router.post(TOKEN_URL).mock(side_effect=tokens)
    router.post(f"{BASE}/request/data").mock(return_value=httpx.Response(200, json=CREATED))

    await client.create_request(BOOK, reference="r")
    clock.now += 600 - 59
    await client.create_request(BOOK, reference="r")

    assert len(tokens.issued) == 2


async def test_expires_in_wins_over_a_skewed_expires_at(
    router: respx.MockRouter, client: WorldShareClient, clock: Clock
) -> None:
    # Our clock runs an hour ahead of OCLC's: expires_at already looks past.
    skewed = datetime.fromtimestamp(clock.now, UTC) - timedelta(minutes=50)
    tokens = Tokens(expires_in="3599", expires_at=skewed.strftime("%Y-%m-%d %H:%M:%SZ"))
    router.post(TOKEN_URL).mock(side_effect=tokens)
    router.post(f"{BASE}/request/data").mock(return_value=httpx.Response(200, json=CREATED))

    for _ in range(5):
        await client.create_request(BOOK, reference="r")

    assert len(tokens.issued) == 1


async def test_a_401_refreshes_the_token_and_replays_once(
    router: respx.MockRouter, client: WorldShareClient
) -> None:
    tokens = Tokens()
    router.post(TOKEN_URL).mock(side_effect=tokens)
    create = router.post(f"{BASE}/request/data").mock(
        side_effect=[httpx.Response(401), httpx.Response(200, json=CREATED)]
    )

    assert await client.create_request(BOOK, reference="r") == "167513532"

    assert len(tokens.issued) == 2
    assert [call.request.headers["Authorization"] for call in create.calls] == [
        "Bearer tk_secret_1",
        "Bearer tk_secret_2",
    ]


async def test_a_second_401_is_permanent_and_not_retried(
    router: respx.MockRouter, client: WorldShareClient
) -> None:
    tokens = Tokens()
    router.post(TOKEN_URL).mock(side_effect=tokens)
    create = router.post(f"{BASE}/request/data").mock(return_value=httpx.Response(401))

    with pytest.raises(PermanentUpstreamError) as caught:
        await client.create_request(BOOK, reference="r")

    assert caught.value.status_code == 401
    assert create.call_count == 2
    assert len(tokens.issued) == 2
    assert_no_secrets(caught.value, tokens.issued)


async def test_invalidate_keeps_a_newer_token(router: respx.MockRouter, clock: Clock) -> None:
    tokens = Tokens()
    router.post(TOKEN_URL).mock(side_effect=tokens)
    cache = TokenCache(clock=clock)
    credentials = CONFIG.credentials
    async with httpx.AsyncClient() as http:
        first = await cache.token(http, credentials)
        cache.invalidate(credentials.cache_key, first)
        second = await cache.token(http, credentials)
        cache.invalidate(credentials.cache_key, first)
        assert await cache.token(http, credentials) == second
    assert len(tokens.issued) == 2


async def test_429_is_transient_with_retry_after(
    router: respx.MockRouter, client: WorldShareClient
) -> None:
    router.post(TOKEN_URL).mock(side_effect=Tokens())
    router.post(f"{BASE}/request/data").mock(
        return_value=httpx.Response(429, headers={"Retry-After": "7"})
    )

    with pytest.raises(TransientUpstreamError) as caught:
        await client.create_request(BOOK, reference="r")

    assert caught.value.status_code == 429
    assert caught.value.retry_after == 7.0


async def test_503_is_transient(router: respx.MockRouter, client: WorldShareClient) -> None:
    router.post(TOKEN_URL).mock(side_effect=Tokens())
    router.get(f"{BASE}/request/data/1").mock(return_value=httpx.Response(503))

    with pytest.raises(TransientUpstreamError) as caught:
        await client.get_request("1")

    assert caught.value.status_code == 503
    assert caught.value.retry_after is None


@pytest.mark.parametrize(
    "failure", [httpx.ConnectTimeout("slow"), httpx.ReadTimeout("slow"), httpx.ConnectError("no")]
)
async def test_timeouts_and_connection_errors_are_transient(
    router: respx.MockRouter, client: WorldShareClient, failure: Exception
) -> None:
    tokens = Tokens()
    router.post(TOKEN_URL).mock(side_effect=tokens)
    router.post(f"{BASE}/request/data").mock(side_effect=failure)

    with pytest.raises(TransientUpstreamError) as caught:
        await client.create_request(BOOK, reference="r")

    assert caught.value.status_code is None
    assert_no_secrets(caught.value, tokens.issued)


async def test_oclc_validation_error_is_permanent_with_codes(
    router: respx.MockRouter, client: WorldShareClient
) -> None:
    error_body = {
        "response": {
            "error": {
                "message": "There was an error processing your request.",
                "detail": [
                    {"failureCode": 30000, "fieldName": "requester.institution.institutionId"},
                    {"failureCode": 30001, "fieldName": "item.title"},
                ],
                "instance": "97f4da43-80d1-4ee5-9edb-f76677a7894c",
            },
            "illRequest": {"requestStatus": "SUBMITTING"},
        }
    }
    router.post(TOKEN_URL).mock(side_effect=Tokens())
    router.post(f"{BASE}/request/data").mock(return_value=httpx.Response(400, json=error_body))

    with pytest.raises(PermanentUpstreamError) as caught:
        await client.create_request(BOOK, reference="r")

    assert caught.value.codes == ("30000:requester.institution.institutionId", "30001:item.title")
    assert "rejected the request: 30000 Missing requester.institution.institutionId" in str(
        caught.value
    )
    assert "30001 Invalid item.title" in str(caught.value)


async def test_other_4xx_are_permanent(router: respx.MockRouter, client: WorldShareClient) -> None:
    router.post(TOKEN_URL).mock(side_effect=Tokens())
    router.get(f"{BASE}/request/data/404").mock(return_value=httpx.Response(404))

    with pytest.raises(PermanentUpstreamError) as caught:
        await client.get_request("404")

    assert caught.value.status_code == 404
    assert caught.value.codes == ()


async def test_redirects_are_not_followed(
    router: respx.MockRouter, client: WorldShareClient
) -> None:
    router.post(TOKEN_URL).mock(side_effect=Tokens())
    router.post(f"{BASE}/request/data").mock(
        return_value=httpx.Response(302, headers={"Location": "https://elsewhere.example/steal"})
    )
    elsewhere = router.route(host="elsewhere.example")

    with pytest.raises(PermanentUpstreamError) as caught:
        await client.create_request(BOOK, reference="r")

    assert caught.value.status_code == 302
    assert not elsewhere.called


@pytest.mark.parametrize("status", [400, 401])
async def test_rejected_credentials_are_permanent(
    router: respx.MockRouter, client: WorldShareClient, status: int
) -> None:
    router.post(TOKEN_URL).mock(
        return_value=httpx.Response(
            status,
            json={"code": {"type": "http", "value": str(status)}, "message": f"WSKey {KEY}"},
        )
    )

    with pytest.raises(PermanentUpstreamError) as caught:
        await client.create_request(BOOK, reference="r")

    assert "WorldShare credentials rejected" in str(caught.value)
    assert_no_secrets(caught.value, [])


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(503, headers={"Retry-After": "3"}),
        httpx.Response(429),
        httpx.ConnectTimeout("slow"),
    ],
)
async def test_token_endpoint_outages_are_transient(
    router: respx.MockRouter, client: WorldShareClient, failure: object
) -> None:
    route = router.post(TOKEN_URL)
    if isinstance(failure, httpx.Response):
        route.mock(return_value=failure)
    else:
        route.mock(side_effect=failure)

    with pytest.raises(TransientUpstreamError):
        await client.create_request(BOOK, reference="r")


async def test_an_unreadable_token_answer_is_permanent(
    router: respx.MockRouter, client: WorldShareClient
) -> None:
    router.post(TOKEN_URL).mock(return_value=httpx.Response(200, json={"token_type": "bearer"}))

    with pytest.raises(PermanentUpstreamError, match="unreadable token response"):
        await client.create_request(BOOK, reference="r")


async def test_get_request_reads_status_due_date_and_renewal(
    router: respx.MockRouter, client: WorldShareClient
) -> None:
    router.post(TOKEN_URL).mock(side_effect=Tokens())
    router.get(f"{BASE}/request/data/167513532").mock(
        return_value=httpx.Response(
            200,
            json={
                "response": {
                    "illRequest": {
                        "requestId": 167513532,
                        "requestStatus": "IN_TRANSIT",
                        "referenceId": "alma-req-1",
                        "dueDate": "2025-04-01T00:00:00.000+0000",
                        "renewals": 1,
                        "renewalStatus": "APPROVED",
                        "newDueDate": "2025-04-01T00:00:00.000+0000",
                    }
                }
            },
        )
    )

    status = await client.get_request("167513532")

    assert status == LenderStatus(
        request_id="167513532",
        status="IN_TRANSIT",
        due_date=date(2025, 4, 1),
        renewal=RenewalInfo(renewals=1, status="APPROVED", new_due_date=date(2025, 4, 1)),
        reference="alma-req-1",
    )


async def test_get_request_reports_the_request_id_it_was_answered_for(
    router: respx.MockRouter, client: WorldShareClient
) -> None:
    router.post(TOKEN_URL).mock(side_effect=Tokens())
    router.get(f"{BASE}/request/data/7").mock(
        return_value=httpx.Response(200, json={"response": {"illRequest": {"requestStatus": "X"}}})
    )
    router.get(f"{BASE}/request/data/8").mock(
        return_value=httpx.Response(
            200, json={"response": {"illRequest": {"requestId": 9, "requestStatus": "X"}}}
        )
    )

    assert (await client.get_request("7")).request_id is None
    assert (await client.get_request("8")).request_id == "9"


async def test_get_request_before_shipping_has_no_due_date(
    router: respx.MockRouter, client: WorldShareClient
) -> None:
    router.post(TOKEN_URL).mock(side_effect=Tokens())
    router.get(f"{BASE}/request/data/7").mock(
        return_value=httpx.Response(
            200, json={"response": {"illRequest": {"requestId": 7, "requestStatus": "PRODUCED"}}}
        )
    )

    status = await client.get_request("7")

    assert (status.status, status.due_date, status.renewal) == ("PRODUCED", None, None)


async def test_an_unreadable_answer_is_permanent(
    router: respx.MockRouter, client: WorldShareClient
) -> None:
    router.post(TOKEN_URL).mock(side_effect=Tokens())
    router.post(f"{BASE}/request/data").mock(return_value=httpx.Response(200, text="<html>"))

    with pytest.raises(PermanentUpstreamError, match="unreadable response body"):
        await client.create_request(BOOK, reference="r")


def test_reprs_hide_key_and_secret() -> None:
    texts = [repr(CONFIG), repr(CONFIG.credentials), repr(TokenCache())]
    for text in texts:
        assert KEY not in text
        assert SECRET not in text


async def test_no_error_carries_secrets_or_tokens(
    router: respx.MockRouter, client: WorldShareClient
) -> None:
    tokens = Tokens()
    router.post(TOKEN_URL).mock(side_effect=tokens)
    router.post(f"{BASE}/request/data").mock(
        side_effect=[
            httpx.Response(500, text=f"echo {SECRET} tk_secret_1"),
            httpx.Response(403, text=f"echo {KEY}"),
            httpx.Response(400, json={"response": {"error": {"detail": [{"fieldName": SECRET}]}}}),
        ]
    )
    errors: list[UpstreamError] = []
    for _ in range(3):
        with pytest.raises(UpstreamError) as caught:
            await client.create_request(BOOK, reference="r")
        errors.append(caught.value)

    for error in errors:
        assert_no_secrets(error, tokens.issued)
