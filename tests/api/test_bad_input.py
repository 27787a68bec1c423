"""Hostile and clumsy input on every endpoint: a 4xx in the error envelope, never a 500, and
nothing half-written."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app.main import create_app
from tests.support.api_checks import assert_envelope, citation_body, row_counts
from tests.support.factories import bearer, make_institution, make_token

MAX_BODY = 4096

JSON_ENDPOINTS = [
    ("POST", "/api/v1/requests"),
    ("POST", "/api/v1/institutions"),
    ("PATCH", "/api/v1/institutions/UNIV"),
]
READ_ENDPOINTS = [
    "/api/v1/requests",
    "/api/v1/requests/1",
    "/api/v1/jobs",
    "/api/v1/stats",
    "/api/v1/institutions",
    "/api/v1/institutions/UNIV",
]
HUGE = "x" * 3000


@pytest.fixture
def client(settings, engine) -> Iterator[TestClient]:
    make_institution(engine, settings, "UNIV")
    app = create_app(settings.model_copy(update={"max_body_bytes": MAX_BODY}))
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers.update(bearer(make_token(engine, ["admin"])))
        yield client


def _refused(response, status: int | None = None) -> dict[str, Any]:
    assert response.status_code < 500, response.text
    return assert_envelope(response, status)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


NOT_AN_OBJECT = (
    (b'{"institution": "UNIV",', "application/json"),
    (b"\xff\xfe\x00garbage", "application/json"),
    (b"", "application/json"),
    (b"null", "application/json"),
    (b"[]", "application/json"),
    (b'"a string"', "application/json"),
    (b"12", "application/json"),
    (b'{"institution": "UNIV"}', "text/plain"),
    (b"institution=UNIV", "application/x-www-form-urlencoded"),
    (b"<request/>", "application/xml"),
)


def test_bodies_that_are_not_a_json_object(client, engine):
    before = row_counts(engine)
    for content, content_type in NOT_AN_OBJECT:
        for method, path in JSON_ENDPOINTS:
            response = client.request(
                method, path, content=content, headers={"Content-Type": content_type}
            )
            _refused(response, 422)
    assert row_counts(engine) == before


def test_malformed_json_is_reported_as_such(client):
    response = client.post(
        "/api/v1/requests", content=b'{"a":', headers={"Content-Type": "application/json"}
    )
    assert _refused(response, 422)["detail"] == "body: malformed JSON"


REQUEST_BODIES = {
    "missing-citation": {"institution": "UNIV", "alma_request_id": "A1"},
    "missing-everything": {},
    "empty-title": citation_body("UNIV", "A1", citation={"title": ""}),
    "unknown-field": citation_body("UNIV", "A1", patron_email="p@example.org"),
    "unknown-citation-field": citation_body("UNIV", "A1", citation={"title": "T", "x": 1}),
    "title-is-number": citation_body("UNIV", "A1", citation={"title": 5}),
    "citation-is-list": citation_body("UNIV", "A1", citation=["T"]),
    "id-with-space": citation_body("UNIV", "A 1"),
    "id-with-non-ascii-letter": citation_body("UNIV", "ÄLMA-1"),
    "id-with-non-ascii-digits": citation_body("UNIV", "\u0661\u0662"),
    "id-is-int": {**citation_body("UNIV", "A1"), "alma_request_id": 1},
    "huge-id": citation_body("UNIV", HUGE),
    "huge-institution": citation_body(HUGE, "A1"),
    "huge-title": citation_body("UNIV", "A1", citation={"title": HUGE}),
    "huge-requester": citation_body("UNIV", "A1", requester_user_id="u" * 300),
    "bad-date": citation_body("UNIV", "A1", citation={"title": "T", "last_interest_date": "x"}),
    "huge-year": citation_body("UNIV", "A1", citation={"title": "T", "last_interest_date": 1e300}),
    "nul-in-requester": citation_body("UNIV", "A1", requester_user_id="p\x00"),
    "nul-in-institution": citation_body("UNIV\x00", "A1"),
}


def test_request_create_refuses_bad_bodies_and_writes_nothing(client, engine):
    before = row_counts(engine)
    for name, body in REQUEST_BODIES.items():
        response = client.post("/api/v1/requests", json=body)
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
        _refused(response)
    assert row_counts(engine) == before


def test_a_nul_byte_is_refused_on_every_database(client, engine):
    """SQLite would store it; PostgreSQL cannot. The answer must not depend on the database."""
    response = client.post(
        "/api/v1/requests", json=citation_body("UNIV", "A1", requester_user_id="p\x00")
    )
    _refused(response, 422)
    assert row_counts(engine)["BorrowingRequest"] == 0


INSTITUTION_BODIES = {
    "missing-name": {"code": "NEW"},
    "bad-code": {"code": "has space", "name": "x"},
    "huge-code": {"code": HUGE, "name": "x"},
    "huge-name": {"code": "NEW", "name": HUGE},
    "negative-days": {"code": "NEW", "name": "x", "policy": {"stale_after_days": -1}},
    "huge-days": {"code": "NEW", "name": "x", "policy": {"retention_days": 10**30}},
    "float-days": {"code": "NEW", "name": "x", "policy": {"retention_days": 1.5}},
    "string-days": {"code": "NEW", "name": "x", "policy": {"poll_interval_seconds": "often"}},
    "alma-is-list": {"code": "NEW", "name": "x", "alma": []},
    "secrets-not-list": {"code": "NEW", "name": "x", "alma": {"webhook_secrets": "s"}},
    "empty-secret": {"code": "NEW", "name": "x", "worldshare": {"secret": ""}},
    "status-map-list": {"code": "NEW", "name": "x", "policy": {"status_map": ["a"]}},
    "status-map-101": {
        "code": "NEW",
        "name": "x",
        "policy": {"status_map": {f"S{i}": "closed" for i in range(101)}},
    },
    "unknown-group": {"code": "NEW", "name": "x", "iso": {}},
    "nul-in-name": {"code": "NEW", "name": "x\x00"},
}


def test_institution_writes_refuse_bad_bodies_and_write_nothing(client, engine):
    original = client.get("/api/v1/institutions/UNIV").json()
    before = row_counts(engine)
    for name, body in INSTITUTION_BODIES.items():
        created = client.post("/api/v1/institutions", json=body)
        assert 400 <= created.status_code < 500, (name, created.status_code, created.text)
        _refused(created)
        if name in ("missing-name", "bad-code", "huge-code"):
            continue  # without the code these are valid updates
        patch = {k: v for k, v in body.items() if k != "code"}
        patched = client.patch("/api/v1/institutions/UNIV", json=patch)
        assert 400 <= patched.status_code < 500, (name, patched.status_code, patched.text)
        _refused(patched)
    assert row_counts(engine) == before
    assert client.get("/api/v1/institutions/UNIV").json() == original


BAD_PATHS = (
    "/api/v1/requests/0",
    "/api/v1/requests/-1",
    "/api/v1/requests/99999999999999999999",
    "/api/v1/requests/abc",
    "/api/v1/requests/1.5",
    "/api/v1/requests/%00",
    "/api/v1/jobs/0/retry",
    "/api/v1/jobs/99999999999999999999/retry",
    "/api/v1/jobs/abc/retry",
    f"/api/v1/institutions/{'C' * 65}",
)


def test_bad_path_parameters(client):
    for path in BAD_PATHS:
        method = "POST" if path.endswith("/retry") else "GET"
        _refused(client.request(method, path), 422)


ID_LIMITS = (
    ("/api/v1/requests/2147483647", 404),
    ("/api/v1/jobs/2147483647/retry", 404),
    ("/api/v1/requests/2147483648", 422),
    ("/api/v1/jobs/2147483648/retry", 422),
    ("/api/v1/requests/4611686018427387904", 422),
)


def test_ids_beyond_the_id_columns_are_invalid_not_a_database_error(client):
    for path, status in ID_LIMITS:
        method = "POST" if path.endswith("/retry") else "GET"
        error = _refused(client.request(method, path), status)["error"]
        assert error == ("not_found" if status == 404 else "validation_error")


CURSORS = {
    "garbage": "!!not-base64!!",
    "not-json": _b64(b"hello"),
    "not-object": _b64(b"[1]"),
    "no-before": _b64(b'{"after": 3}'),
    "negative": _b64(b'{"before": -1}'),
    "zero": _b64(b'{"before": 0}'),
    "string": _b64(b'{"before": "3"}'),
    "bool": _b64(b'{"before": true}'),
    "float": _b64(b'{"before": 2.5}'),
    "overflow": _b64(b'{"before": 99999999999999999999999}'),
    "beyond-int4": _b64(b'{"before": 2147483648}'),
    "not-utf8": _b64(b"\xff\xfe"),
}


@pytest.mark.parametrize("path", ["/api/v1/requests", "/api/v1/jobs"])
def test_invalid_cursors(client, path):
    for name, cursor in CURSORS.items():
        response = client.get(path, params={"cursor": cursor})
        assert _refused(response, 400)["error"] == "invalid_cursor", name
    _refused(client.get(path, params={"cursor": "c" * 201}), 422)


REQUEST_FILTERS = (
    "state=bogus",
    "needs_attention=maybe",
    "limit=0",
    "limit=-5",
    "limit=201",
    "limit=99999999999999999999",
    "limit=ten",
    "updated_since=yesterday",
    "updated_since=2024-13-01",
    "updated_since=9999-12-31T23:59:59-23:00",
    "updated_since=0001-01-01T00:00:00%2B14:00",
    "institution=%00",
    "institution=a%20b",
    "alma_request_id=a%00b",
    "worldshare_request_id=w%00",
    f"alma_request_id={'a' * 129}",
    f"worldshare_request_id={'w' * 65}",
)


def test_invalid_request_filters(client):
    for query in REQUEST_FILTERS:
        _refused(client.get(f"/api/v1/requests?{query}"), 422)


def test_invalid_job_filters(client):
    for query in ["status=bogus", "request_id=0", "request_id=x", "limit=0", f"kind={'k' * 65}"]:
        _refused(client.get(f"/api/v1/jobs?{query}"), 422)


def test_bodies_over_the_limit_are_413_with_or_without_a_length(client, engine):
    body = json.dumps(citation_body("UNIV", "A1", citation={"title": "t" * MAX_BODY})).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 512):
            yield body[start : start + 512]

    for method, path in JSON_ENDPOINTS:
        declared = client.request(
            method, path, content=body, headers={"Content-Type": "application/json"}
        )
        assert _refused(declared, 413)["error"] == "payload_too_large"
        chunked = client.request(
            method, path, content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert "content-length" not in {k.lower() for k in chunked.request.headers}
        assert _refused(chunked, 413)["error"] == "payload_too_large"
    assert row_counts(engine)["BorrowingRequest"] == 0


def test_a_chunked_body_under_the_limit_is_accepted(client):
    body = json.dumps(citation_body("UNIV", "A1")).encode()
    response = client.post(
        "/api/v1/requests",
        content=iter([body[:10], body[10:]]),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text


def test_unknown_routes_and_methods_use_the_envelope(client):
    assert _refused(client.get("/api/v1/nothing-here"), 404)["error"] == "not_found"
    assert _refused(client.delete("/api/v1/requests"), 405)["error"] == "method_not_allowed"
    for path in READ_ENDPOINTS:
        _refused(client.put(path, json={}), 405)


def test_an_empty_idempotency_key_is_refused(client, engine):
    response = client.post(
        "/api/v1/requests", json=citation_body("UNIV", "A1"), headers={"Idempotency-Key": ""}
    )
    _refused(response, 422)
    assert row_counts(engine)["BorrowingRequest"] == 0


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
)
_citation = st.one_of(
    _values,
    st.fixed_dictionaries(
        {},
        optional={
            "title": st.one_of(st.text(max_size=60), _values),
            "author": _values,
            "isbn": _values,
            "year": _values,
            "last_interest_date": st.one_of(st.dates().map(str), _values),
        },
    ),
)
_create_bodies = st.fixed_dictionaries(
    {},
    optional={
        "institution": st.one_of(st.just("UNIV"), st.text(max_size=70), _values),
        "alma_request_id": st.one_of(st.from_regex(r"\A[\w\-.:]{1,20}\Z"), st.text(), _values),
        "requester_user_id": st.one_of(st.text(max_size=300), _values),
        "citation": _citation,
        "extra": _values,
    },
)


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=_create_bodies)
def test_fuzzed_request_bodies_never_break_the_service(client, body):
    response = client.post("/api/v1/requests", json=body)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert_envelope(response)
    else:
        assert response.status_code in (200, 201)
        assert response.json()["institution"] == "UNIV"
