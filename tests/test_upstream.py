"""One outbound call: no redirects, classified failures, and a deadline on the whole call."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import respx

from app.upstream import PermanentUpstreamError, TransientUpstreamError, call

pytestmark = pytest.mark.anyio

URL = "https://upstream.example/resource"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


async def test_a_redirect_is_not_followed_and_is_permanent(router: respx.MockRouter) -> None:
    router.get(URL).mock(
        return_value=httpx.Response(302, headers={"Location": "https://elsewhere.example/x"})
    )
    elsewhere = router.route(host="elsewhere.example")

    async with httpx.AsyncClient() as http:
        with pytest.raises(PermanentUpstreamError) as caught:
            await call(http, "Upstream", "GET", URL)

    assert caught.value.status_code == 302
    assert "redirect not followed" in str(caught.value)
    assert not elsewhere.called


@pytest.mark.parametrize(
    ("failure", "may_have_been_sent"),
    [
        (httpx.ConnectTimeout("slow"), False),
        (httpx.PoolTimeout("busy"), False),
        (httpx.ReadTimeout("slow"), True),
        (httpx.RemoteProtocolError("gone"), True),
    ],
    ids=["connect-timeout", "pool-timeout", "read-timeout", "connection-dropped"],
)
async def test_transport_failures_say_whether_the_request_may_have_been_sent(
    router: respx.MockRouter, failure: Exception, may_have_been_sent: bool
) -> None:
    router.post(URL).mock(side_effect=failure)

    async with httpx.AsyncClient() as http:
        with pytest.raises(TransientUpstreamError) as caught:
            await call(http, "Upstream", "POST", URL, json={})

    assert caught.value.may_have_been_sent is may_have_been_sent
    assert caught.value.status_code is None


async def test_a_refused_connection_is_transient_and_nothing_was_sent() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The port is free again and nobody listens on it.

    async with httpx.AsyncClient(timeout=1.0) as http:
        with pytest.raises(TransientUpstreamError) as caught:
            await call(http, "Upstream", "POST", f"http://127.0.0.1:{port}/", json={})

    assert str(caught.value) == "Upstream: connection error (ConnectError)"
    assert caught.value.may_have_been_sent is False


@pytest.fixture
async def trickling_server() -> AsyncIterator[str]:
    """Answers with headers at once, then one byte of the body every half second."""
    handlers: set[asyncio.Task[None]] = set()

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            for _ in range(100):
                await writer.drain()
                await asyncio.sleep(0.5)
                writer.write(b"x")
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/slow"
    finally:
        server.close()
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def test_an_upstream_trickling_its_body_is_cut_off_at_the_deadline(
    trickling_server: str,
) -> None:
    started = time.monotonic()

    # Each byte comes well within httpx's per-read timeout; only the whole-call deadline ends it.
    async with httpx.AsyncClient(timeout=1.0) as http:
        with pytest.raises(TransientUpstreamError) as caught:
            await call(http, "Upstream", "GET", trickling_server)

    assert time.monotonic() - started < 3
    assert "timeout" in str(caught.value)
    assert caught.value.may_have_been_sent is True
