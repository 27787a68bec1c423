"""No patron data ever reaches WorldShare, whatever the citation and whoever the patron."""

import asyncio
import json
import string
from typing import Any

import httpx
import respx
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ConfigDict

from app.borrowing.citation import Citation
from app.worldshare.auth import TokenCache
from app.worldshare.client import Requester, WorldShareClient, WorldShareConfig

BASE = "https://128807.share.worldcat.org/ILL"
TOKEN_URL = "https://oauth.oclc.org/token"
CONFIG = WorldShareConfig(
    institution_code="main",
    base_url=BASE,
    token_url=TOKEN_URL,
    scope="WorldShareILL",
    key="wskey",
    secret="wssecret",
    requester=Requester(institution_id="128807", billing_address={"address1": "1 Library Walk"}),
)


class CitationWithPatron(Citation):
    """What a careless caller might hand over: a citation still carrying the patron."""

    model_config = ConfigDict(extra="allow")


# Within every Citation field limit (the shortest, year, is 32 characters).
text = st.text(alphabet=string.ascii_letters + string.digits + " .,:-'éü", max_size=30)
optional = st.none() | text
citations = st.builds(
    CitationWithPatron,
    title=text.filter(lambda value: value.strip() != ""),
    author=optional,
    isbn=optional,
    issn=optional,
    oclc_number=st.none() | st.from_regex(r"\(OCoLC\)[0-9]{1,9}", fullmatch=True),
    publisher=optional,
    place_of_publication=optional,
    year=optional,
    edition=optional,
    volume=optional,
    issue=optional,
    pages=optional,
    journal_title=optional,
    chapter_title=optional,
    chapter_author=optional,
    doi=optional,
    format=st.sampled_from([None, "PHYSICAL", "DIGITAL"]),
    citation_type=st.sampled_from([None, "BK", "CR"]),
    last_interest_date=st.none() | st.dates(),
)
names = st.text(alphabet=string.ascii_letters, min_size=6, max_size=20)
patron_ids = st.text(alphabet=string.digits, min_size=7, max_size=12)
emails = st.from_regex(r"[a-z]{3,10}\.[a-z]{3,10}@[a-z]{3,8}\.(org|edu)", fullmatch=True)
patrons = st.fixed_dictionaries(
    {"patron_name": names, "patron_id": patron_ids, "patron_email": emails}
)


def keys_at_any_depth(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for child in value.values() for k in keys_at_any_depth(child)}
    if isinstance(value, list):
        return {k for child in value for k in keys_at_any_depth(child)}
    return set()


async def export(citation: Citation, reference: str) -> httpx.Request:
    with respx.mock() as router:
        router.post(TOKEN_URL).mock(
            return_value=httpx.Response(200, json={"access_token": "tk", "expires_in": "3599"})
        )
        create = router.post(f"{BASE}/request/data").mock(
            return_value=httpx.Response(200, json={"response": {"illRequest": {"requestId": 1}}})
        )
        async with httpx.AsyncClient() as http:
            await WorldShareClient(http, TokenCache(), CONFIG).create_request(
                citation, reference=reference
            )
        return create.calls.last.request


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(citation=citations, patron=patrons, reference=st.from_regex(r"[0-9]{10,16}", fullmatch=True))
def test_no_patron_data_leaves_for_worldshare(
    citation: CitationWithPatron, patron: dict[str, str], reference: str
) -> None:
    # Patron strings that happen to occur in the clean export (a title word, "python-httpx")
    # would be false alarms, so the property is checked against that baseline.
    baseline = outbound_text(asyncio.run(export(citation, reference)))
    for name, value in patron.items():
        assume(value.lower() not in baseline)
        setattr(citation, name, value)

    sent = asyncio.run(export(citation, reference))

    outbound = outbound_text(sent)
    for value in patron.values():
        assert value.lower() not in outbound
    assert "patron" not in {key.lower() for key in keys_at_any_depth(json.loads(sent.content))}


def outbound_text(sent: httpx.Request) -> str:
    headers = "\n".join(f"{name}: {value}" for name, value in sent.headers.items())
    body = sent.content.decode()
    return "\n".join([str(sent.url), headers, body, json.dumps(json.loads(body))]).lower()
