"""ILLBRIDGE_OUTBOUND_ALLOWED_HOSTS: the pure host check and the hook on the shared client."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from pydantic import ValidationError

from app.config import Settings
from app.outbound_hosts import (
    OutboundHostRefused,
    allowed_host_patterns,
    host_allowed,
    outbound_host_guard,
)
from app.runtime import new_http_client
from app.upstream import PermanentUpstreamError

PATTERNS = ("*.oclc.org", "*.worldcat.org", "api-na.hosted.exlibrisgroup.com")


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://oauth.oclc.org/token", True),
        ("https://univ.share.worldcat.org/ILL/request/data", True),
        ("https://api-na.hosted.exlibrisgroup.com/almaws/v1", True),
        ("HTTPS://OAUTH.OCLC.ORG./token", True),
        ("https://oauth.oclc.org:8443/token", True),
        ("https://oclc.org/token", False),
        ("https://oauth.oclc.org.evil.example/token", False),
        ("https://evil-oclc.org/token", False),
        ("https://evil.example/oauth.oclc.org", False),
        ("https://oauth.oclc.org@evil.example/token", False),
        ("https://evil.example#.oclc.org", False),
        ("https://api-eu.hosted.exlibrisgroup.com/almaws/v1", False),
        ("http://127.0.0.1:8000/sandbox", False),
        ("not a url", False),
    ],
)
def test_host_allowed(url, allowed):
    assert host_allowed(url, PATTERNS) is allowed


def test_no_patterns_allow_any_host():
    assert host_allowed("https://anything.example/x", ())


def test_sandbox_mode_keeps_its_own_host_allowed():
    narrowed = {"outbound_allowed_hosts": "*.oclc.org", "public_url": "http://127.0.0.1:8000"}
    assert allowed_host_patterns(Settings(sandbox=True, **narrowed)) == ("*.oclc.org", "127.0.0.1")
    assert allowed_host_patterns(Settings(sandbox=False, **narrowed)) == ("*.oclc.org",)
    assert allowed_host_patterns(Settings(sandbox=True)) == ()


def test_patterns_are_hosts_not_urls():
    with pytest.raises(ValidationError, match="not a host pattern"):
        Settings(outbound_allowed_hosts="*.oclc.org,https://evil.example/")


def test_the_hook_refuses_before_anything_is_sent():
    sent: list[httpx.Request] = []

    def transport(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    async def call(url: str) -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(transport),
            event_hooks={"request": [outbound_host_guard(PATTERNS)]},
        ) as http:
            return await http.post(url, auth=("wskey", "wssecret"))

    assert asyncio.run(call("https://oauth.oclc.org/token")).status_code == 200
    with pytest.raises(OutboundHostRefused) as refused:
        asyncio.run(call("https://evil.example/token"))
    assert [r.url.host for r in sent] == ["oauth.oclc.org"]
    # Permanent: the worker dead-letters the job with this message instead of retrying.
    assert isinstance(refused.value, PermanentUpstreamError)
    assert refused.value.message == (
        "outbound call refused: host 'evil.example' is not in ILLBRIDGE_OUTBOUND_ALLOWED_HOSTS"
    )
    assert "wssecret" not in str(refused.value)


def test_the_shared_client_carries_the_hook():
    async def call() -> None:
        async with new_http_client(Settings(outbound_allowed_hosts="*.oclc.org")) as http:
            await http.get("http://127.0.0.1:9/token")

    # Refused by the hook: a connection attempt would have been a ConnectError.
    with pytest.raises(OutboundHostRefused):
        asyncio.run(call())
