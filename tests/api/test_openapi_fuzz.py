"""Schemathesis against the committed openapi.yaml: the app keeps the promises the document makes.

Every operation the document lists is fuzzed, so a new route is covered as soon as `illbridge
openapi` has written it (tests/test_openapi_contract.py keeps the file current). Each generated
request is sent in-process three times: with an admin token, with a read-only token bound to one
institution, and with no token. Every answer must be declared and match its schema, never a 5xx,
and the bearer requirement the document names for the operation must hold:

* no token: 401 on every operation that names one; none on the others;
* the bound reader: 403 where the scope named is not `requests:read`, never a sight of the other
  institution's request; its objects answer 404 (checked for each operation below).

`/iso18626/{institution}` and `/webhooks/alma/{institution}` are Alma's doors, authenticated by
the ISO security code in the message and by the webhook's signature, so they are held to the
schema and to no 5xx only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, find
from hypothesis import settings as hypothesis_settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select, update

from app.institutions.models import ApiToken, Institution
from app.jobs.models import Job, JobStatus
from app.main import create_app
from tests.support.api_checks import assert_envelope, citation_body
from tests.support.factories import bearer, make_institution, make_token

OPENAPI = Path(__file__).resolve().parents[2] / "openapi.yaml"
DOCUMENT: dict[str, Any] = yaml.safe_load(OPENAPI.read_text())
MAX_EXAMPLES = 30

# The fuzz sends its own three identities, so schemathesis generates no Authorization header.
# The coverage phase's hundreds of boundary cases per operation would cost minutes, not seconds.
schema = schemathesis.openapi.from_path(
    OPENAPI,
    config=schemathesis.Config.from_dict(
        {
            "generation": {"with-security-parameters": False},
            "phases": {"coverage": {"enabled": False}},
        }
    ),
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

BEARER = "HTTPBearer"
READ_SCOPE = "requests:read"
# Answered to anyone, by design: probes, the Prometheus scrape, and Alma's ISO 18626 door.
PUBLIC = {"/healthz", "/readyz", "/metrics"}
ISO_DOOR = "/iso18626/{institution}"
ALMA_DOORS = {ISO_DOOR, "/webhooks/alma/{institution}"}
HOME, ELSEWHERE = "HOME", "ELSEWHERE"
# What the bound reader must never see: the other institution's name and request reference.
ELSEWHERE_NAME = "Hidden College of Elsewhere"
ELSEWHERE_REFERENCE = "elsewhere-alma-ref-7f3a"


@dataclass(frozen=True)
class World:
    """Two institutions with a request and its job each; the tokens the fuzz sends."""

    client: TestClient
    admin: dict[str, str]
    reader: dict[str, str]  # requests:read, bound to HOME
    home_admin: dict[str, str]  # admin, bound to HOME
    home_request: int
    home_job: int
    elsewhere_request: int
    elsewhere_job: int
    # Tokens nobody sends, for the operations on tokens to name (and revoke).
    home_decoy_token: int
    elsewhere_decoy_token: int
    # A clean-up dry run of each institution.
    home_batch: int = 0
    elsewhere_batch: int = 0

    def spare_the_senders(self, case: Case) -> None:
        """The fuzz may revoke any token but the ones it sends: those ids name a decoy instead."""
        if case.operation.path != "/api/v1/tokens/{token_id}" or not case.path_parameters:
            return
        named = case.path_parameters["token_id"]
        # The senders' tokens were made before the decoys, so their ids are the smaller ones.
        if isinstance(named, int) and 0 < named < self.home_decoy_token:
            case.path_parameters = {"token_id": self.home_decoy_token}

    def identities(self) -> dict[str, dict[str, str]]:
        return {"admin": self.admin, "reader": self.reader, "anonymous": {}}


def _register(client: TestClient, headers: dict[str, str], institution: str, ref: str) -> int:
    response = client.post(
        "/api/v1/requests", json=citation_body(institution, ref), headers=headers
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _only_job(client: TestClient, headers: dict[str, str], request_id: int) -> int:
    jobs = client.get(f"/api/v1/jobs?request_id={request_id}", headers=headers).json()["items"]
    assert len(jobs) == 1, jobs
    return int(jobs[0]["id"])


def _token_id(engine: Engine, name: str, institution: Institution) -> int:
    make_token(engine, ["requests:read"], institution, name=name)
    with Session(engine) as session:
        token = session.exec(select(ApiToken).where(ApiToken.name == name)).one()
    assert token.id is not None
    return token.id


@pytest.fixture
def world(settings, engine) -> Iterator[World]:
    home = make_institution(engine, settings, HOME)
    elsewhere = make_institution(engine, settings, ELSEWHERE, name=ELSEWHERE_NAME)
    admin = bearer(make_token(engine, ["admin"], name="admin"))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        home_request = _register(client, admin, HOME, "home-alma-ref")
        elsewhere_request = _register(client, admin, ELSEWHERE, ELSEWHERE_REFERENCE)
        home_job = _only_job(client, admin, home_request)
        with Session(engine) as session:  # a dead job, so that a retry can succeed
            session.exec(update(Job).where(col(Job.id) == home_job).values(status=JobStatus.DEAD))
            session.commit()
        yield World(
            client=client,
            admin=admin,
            reader=bearer(make_token(engine, [READ_SCOPE], home, name="home-reader")),
            home_admin=bearer(make_token(engine, ["admin"], home, name="home-admin")),
            home_request=home_request,
            home_job=home_job,
            elsewhere_request=elsewhere_request,
            elsewhere_job=_only_job(client, admin, elsewhere_request),
            home_decoy_token=_token_id(engine, "home-decoy", home),
            elsewhere_decoy_token=_token_id(engine, "elsewhere-decoy", elsewhere),
            home_batch=_dry_run(client, admin, HOME),
            elsewhere_batch=_dry_run(client, admin, ELSEWHERE),
        )


def _dry_run(client: TestClient, admin: dict[str, str], institution: str) -> int:
    response = client.post(
        "/api/v1/cleanup", json={"institution": institution, "dry_run": True}, headers=admin
    )
    assert response.status_code == 200, response.text
    return int(response.json()["batch_id"])


def _send(client: TestClient, case: Case, headers: dict[str, str]) -> httpx.Response:
    """The request schemathesis built, sent through the app's TestClient."""
    sent = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
    unexpected = set(sent) - {"method", "url", "headers", "params", "cookies", "json", "data"}
    assert not unexpected and not sent.get("cookies"), f"cannot send {unexpected} yet"
    content = json.dumps(sent["json"], allow_nan=False).encode() if "json" in sent else None
    return client.request(
        sent["method"],
        sent["url"],
        params=sent.get("params"),
        headers=sent["headers"],
        content=sent.get("data", content),
    )


def _bearer_scope(operation: dict[str, Any]) -> str | None:
    """The scope the document says the operation needs, or None when it names no bearer token."""
    requirements = operation.get("security", DOCUMENT.get("security", []))
    scopes = [scope for requirement in requirements for scope in requirement.get(BEARER, [])]
    assert len(scopes) <= 1, f"one scope per operation, not {scopes}"
    if not scopes:
        assert not any(BEARER in requirement for requirement in requirements), "no scope named"
        return None
    return scopes[0]


def _operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if method in {"get", "put", "post", "patch", "delete"}:
                yield path, method, operation


def _assert_sees_nothing_of_elsewhere(response: httpx.Response, world: World) -> None:
    for secret in (ELSEWHERE, ELSEWHERE_NAME, ELSEWHERE_REFERENCE):
        assert secret not in response.text, f"{response.request.url}: {response.text[:300]}"
    if response.status_code != 200 or not response.text.startswith(("{", "[")):
        return
    body = response.json()
    for item in body.get("items", []) if isinstance(body, dict) else body:
        assert item.get("request_id") != world.elsewhere_request, item  # a job of theirs


def _assert_keeps_the_documented_door(
    case: Case, identity: str, response: httpx.Response, world: World
) -> None:
    where = f"{identity}: {case.method} {response.request.url} -> {response.status_code}"
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith(
        "application/json"
    ):
        assert_envelope(response)
    path = case.operation.path
    if path in ALMA_DOORS:
        return
    scope = _bearer_scope(case.operation.definition.raw)
    if scope is None:
        assert path in PUBLIC, f"{path} names no bearer scope but is not meant to be public"
        assert response.status_code not in (401, 403), where
        return
    if identity == "anonymous":
        assert assert_envelope(response, 401)["error"] == "unauthorized", where
        assert response.headers["www-authenticate"] == "Bearer", where
    elif identity == "reader":
        if scope == READ_SCOPE:
            assert response.status_code not in (401, 403), f"{where}: {response.text[:300]}"
        else:
            assert assert_envelope(response, 403)["error"] == "forbidden", where
        _assert_sees_nothing_of_elsewhere(response, world)
    else:
        assert response.status_code not in (401, 403), f"{where}: {response.text[:300]}"


@schema.parametrize()
@hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_operation_keeps_its_document(case: Case, world: World):
    world.spare_the_senders(case)
    for identity, headers in world.identities().items():
        response = _send(world.client, case, headers)
        case.validate_response(response, checks=CHECKS)
        _assert_keeps_the_documented_door(case, identity, response, world)


def test_every_api_operation_names_its_scope():
    for path, method, operation in _operations():
        scope = _bearer_scope(operation)
        if path.startswith("/api/"):
            assert scope in {READ_SCOPE, "requests:write", "admin"}, f"{method} {path}: {scope}"
            if method != "get":
                assert scope != READ_SCOPE, f"{method} {path} writes with the read scope"
        else:
            assert scope is None and path in PUBLIC | ALMA_DOORS, f"{method} {path}"


def test_the_documents_and_probes_are_public(settings):
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        for path in ("/healthz", "/readyz", "/docs", "/openapi.json"):
            assert client.get(path).status_code == 200, path


def _object_values(world: World, institution: str) -> dict[str, str]:
    """What a path parameter (or the `institution` filter) names, in one of the institutions."""
    home = institution == HOME
    return {
        "code": institution,
        "institution": institution,
        "request_id": str(world.home_request if home else world.elsewhere_request),
        "job_id": str(world.home_job if home else world.elsewhere_job),
        "token_id": str(world.home_decoy_token if home else world.elsewhere_decoy_token),
        "batch_id": str(world.home_batch if home else world.elsewhere_batch),
    }


def _cases_naming_an_object() -> list[Any]:
    cases = []
    for path, method, operation in _operations():
        names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        filters = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
        if path.startswith("/api/") and (names or "institution" in filters):
            cases.append(pytest.param(path, method, id=f"{method.upper()} {path}"))
    return cases


def _simplest_case(path: str, method: str) -> Case:
    """The smallest valid request for the operation (an empty body where one is allowed)."""
    operation = schema[path][method.upper()]
    return find(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        lambda _: True,
        settings=hypothesis_settings(database=None, derandomize=True),
    )


@pytest.mark.parametrize(("path", "method"), _cases_naming_an_object())
def test_a_bound_token_finds_nothing_of_another_institution(world: World, path, method):
    """Its own institution's object is within reach; the same call on the other's is a 404."""
    scope = _bearer_scope(DOCUMENT["paths"][path][method])
    case = _simplest_case(path, method)
    names = set(case.path_parameters or {})
    for institution, expected_miss in ((HOME, False), (ELSEWHERE, True)):
        values = _object_values(world, institution)
        unknown = names - set(values)
        assert not unknown, f"teach _object_values what {unknown} names in {path}"
        case.path_parameters = {name: values[name] for name in names}
        if "institution" in {p.name for p in case.operation.query}:
            case.query = {**(case.query or {}), "institution": institution}
        for identity, headers in (("reader", world.reader), ("home-admin", world.home_admin)):
            response = _send(world.client, case, headers)
            case.validate_response(response, checks=CHECKS)
            where = f"{identity} {method.upper()} {response.request.url}: {response.text[:200]}"
            if identity == "reader" and scope != READ_SCOPE:
                assert_envelope(response, 403)
            elif expected_miss:
                assert assert_envelope(response, 404)["error"] == "not_found", where
            else:
                assert response.status_code != 404, where
