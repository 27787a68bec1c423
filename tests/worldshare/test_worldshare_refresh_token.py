"""A staff user's refresh token: the refresh-token grant, OCLC's rotations handed to the caller,
and the newest rotation sent while the caller's store lags behind."""

import base64
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import pytest
import respx

from app.worldshare.auth import (
    ClientCredentials,
    RefreshTokenRefused,
    RotatedRefreshToken,
    TokenCache,
)

pytestmark = pytest.mark.anyio

TOKEN_URL = "https://oauth.oclc.org/token"
KEY, SECRET = "wskey-Q7zKey0001", "secret-Zz9Secret0002"


def credentials(refresh_token: str | None) -> ClientCredentials:
    return ClientCredentials(
        institution_code="UNIV",
        token_url=TOKEN_URL,
        scope="WorldShareILL",
        key=KEY,
        secret=SECRET,
        refresh_token=refresh_token,
    )


class Clock:
    now = datetime(2025, 1, 1, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now


class Oclc:
    """A token endpoint that rotates refresh tokens as OCLC may: rt_1 → rt_2 → rt_3 …"""

    def __init__(self, *, rotate: bool = True) -> None:
        self.sent: list[bytes] = []
        self.rotate = rotate

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request.content)
        n = len(self.sent)
        body = {"access_token": f"tk_{n}", "token_type": "bearer", "expires_in": "3599"}
        if self.rotate:
            body |= {
                "refresh_token": f"rt_{n + 1}",
                "refresh_token_expires_in": "604799",
                "refresh_token_expires_at": "2025-01-08 00:00:00Z",
            }
        return httpx.Response(200, json=body)


class Store:
    """The caller's side: records each rotation handed over, failing the first `fail` times."""

    def __init__(self, fail: int = 0) -> None:
        self.rotations: list[RotatedRefreshToken] = []
        self.fail = fail

    async def __call__(self, rotated: RotatedRefreshToken) -> bool:
        if self.fail:
            self.fail -= 1
            return False
        self.rotations.append(rotated)
        return True


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def test_a_refresh_token_is_sent_with_the_wskey_instead_of_client_credentials(
    router: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    route = router.post(TOKEN_URL).mock(side_effect=Oclc())

    assert await TokenCache().token(http, credentials("rt_1")) == "tk_1"

    sent = route.calls.last.request
    assert sent.content == b"grant_type=refresh_token&refresh_token=rt_1"
    assert (
        sent.headers["Authorization"]
        == "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
    )


async def test_the_rotated_refresh_token_is_handed_to_the_caller_once(
    router: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    router.post(TOKEN_URL).mock(side_effect=Oclc())
    cache, store = TokenCache(), Store()

    await cache.token(http, credentials("rt_1"), on_rotated=store)
    await cache.token(http, credentials("rt_1"), on_rotated=store)

    assert store.rotations == [
        RotatedRefreshToken(
            institution_code="UNIV",
            replaces=("rt_1",),
            value="rt_2",
            expires_at=datetime(2025, 1, 8, tzinfo=UTC),
        )
    ]
    assert "rt_" not in repr(store.rotations[0])


async def test_a_rotation_the_caller_could_not_store_is_handed_over_again_and_used(
    router: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    oclc = Oclc()
    router.post(TOKEN_URL).mock(side_effect=oclc)
    clock = Clock()
    cache, store = TokenCache(clock=clock), Store(fail=1)

    assert await cache.token(http, credentials("rt_1"), on_rotated=store) == "tk_1"
    assert store.rotations == []
    assert await cache.token(http, credentials("rt_1"), on_rotated=store) == "tk_1"
    assert [r.value for r in store.rotations] == ["rt_2"]

    # The caller's store still holds rt_1 (say its write was lost): the cache knows better.
    clock.now += 3600
    await cache.token(http, credentials("rt_1"), on_rotated=store)

    assert oclc.sent[-1] == b"grant_type=refresh_token&refresh_token=rt_2"
    assert store.rotations[-1].value == "rt_3"
    assert set(store.rotations[-1].replaces) == {"rt_1", "rt_2"}


async def test_a_refresh_token_staff_set_since_wins_over_the_cached_rotation(
    router: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    oclc = Oclc()
    router.post(TOKEN_URL).mock(side_effect=oclc)
    clock = Clock()
    cache = TokenCache(clock=clock)
    await cache.token(http, credentials("rt_1"), on_rotated=Store())

    clock.now += 3600
    await cache.token(http, credentials("rt_staff"), on_rotated=Store())

    assert oclc.sent[-1] == b"grant_type=refresh_token&refresh_token=rt_staff"


async def test_no_rotation_no_handing_over(router: respx.MockRouter, http: httpx.AsyncClient):
    router.post(TOKEN_URL).mock(side_effect=Oclc(rotate=False))
    store = Store()

    await TokenCache().token(http, credentials("rt_1"), on_rotated=store)

    assert store.rotations == []


@pytest.mark.parametrize("status", [400, 401])
async def test_a_refused_refresh_token_is_permanent_and_names_the_setting(
    router: respx.MockRouter, http: httpx.AsyncClient, status: int
) -> None:
    router.post(TOKEN_URL).mock(
        return_value=httpx.Response(status, json={"message": "rt_1 is invalid"})
    )

    with pytest.raises(RefreshTokenRefused) as caught:
        await TokenCache().token(http, credentials("rt_1"))

    assert "set a new worldshare.refresh_token" in caught.value.message
    for text in (str(caught.value), repr(caught.value)):
        assert "rt_1" not in text and KEY not in text and SECRET not in text


async def test_client_credentials_and_the_refresh_grant_do_not_share_a_token(
    router: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    oclc = Oclc(rotate=False)
    router.post(TOKEN_URL).mock(side_effect=oclc)
    cache = TokenCache()

    await cache.token(http, credentials(None))
    assert await cache.token(http, credentials("rt_1")) == "tk_2"

    assert oclc.sent == [
        b"grant_type=client_credentials&scope=WorldShareILL",
        b"grant_type=refresh_token&refresh_token=rt_1",
    ]
