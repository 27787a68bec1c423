"""Institutions through the REST API: the JSON groups, write-only secrets, partial updates."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.institutions.secrets import load_secret_box
from app.main import create_app
from tests.support.api_checks import assert_envelope, row_counts
from tests.support.factories import bearer, make_institution, make_token

SECRETS = {
    "alma_api_key": "l8xx-alma-key-5f3a9c",
    "webhook_old": "whsec-old-71b2e0",
    "webhook_new": "whsec-new-0c4d18",
    "ws_key": "wskey-9d1e7f3a",
    "ws_secret": "wssecret-2b8c6d4e",
    "iso_code": "isocode-5e1f0a7c",
}

FULL = {
    "code": "UNIV",
    "name": "University Library",
    "alma": {
        "api_base_url": "https://api-eu.hosted.exlibrisgroup.com/",
        "api_key": SECRETS["alma_api_key"],
        "webhook_secrets": [SECRETS["webhook_old"], SECRETS["webhook_new"]],
        "iso18626_url": "https://univ.alma.exlibrisgroup.com/rapido/iso18626",
        "iso18626_security_code": SECRETS["iso_code"],
        "agency_id": {"type": "ISIL", "value": "DE-1"},
        "bridge_agency_id": {"type": "ISIL", "value": "XX-BRIDGE"},
        "resource_sharing_libraries": ["ILL", "RS_DESK"],
    },
    "worldshare": {
        "base_url": "https://univ.share.worldcat.org/ILL/request/data",
        "token_url": "https://oauth.oclc.org/token",
        "scope": "WorldShareILL",
        "key": SECRETS["ws_key"],
        "secret": SECRETS["ws_secret"],
        "institution_id": "128807",
    },
    "policy": {
        "cancel_reason": "NOT_SUPPLIED_BY_PARTNER",
        "stale_after_days": 30,
        "renewal_answer_days": 10,
        "auto_cleanup": True,
        "patron_due_date_offset_days": 5,
        "retention_days": 400,
        "poll_interval_seconds": 900,
        "status_map": {"lost": "closed"},
        "close_on": "shipped_return",
    },
}


@pytest.fixture
def admin(engine) -> dict[str, str]:
    return bearer(make_token(engine, ["admin"]))


@pytest.fixture
def client(settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def _assert_no_secret(text_: str) -> None:
    for name, value in SECRETS.items():
        assert value not in text_, f"{name} leaked"


def test_create_returns_the_groups_and_hides_every_secret(client, admin):
    created = client.post("/api/v1/institutions", json=FULL, headers=admin)
    assert created.status_code == 201, created.text
    _assert_no_secret(created.text)
    body = created.json()
    assert body["code"] == "UNIV" and body["name"] == "University Library" and body["active"]
    assert body["alma"] == {
        "api_base_url": "https://api-eu.hosted.exlibrisgroup.com",
        "api_key_set": True,
        "webhook_secrets_set": 2,
        "iso18626_url": "https://univ.alma.exlibrisgroup.com/rapido/iso18626",
        "iso18626_security_code_set": True,
        "iso18626_allow_without_code": False,
        "agency_id": {"type": "ISIL", "value": "DE-1"},
        "bridge_agency_id": {"type": "ISIL", "value": "XX-BRIDGE"},
        "iso18626_profile": "alma",
        "item_barcode_prefix": "ILL-",
        "resource_sharing_libraries": ["ILL", "RS_DESK"],
    }
    assert body["worldshare"] == {
        "base_url": "https://univ.share.worldcat.org/ILL/request/data",
        "token_url": "https://oauth.oclc.org/token",
        "scope": "WorldShareILL",
        "key_set": True,
        "secret_set": True,
        "institution_id": "128807",
        "refresh_token_set": False,
        "refresh_token_expires_at": None,
        "billing_address": None,
        "delivery_address": None,
        "delivery_email": None,
        "lenders": [],
        "max_cost": None,
        "billing_types": [],
        "daily_call_budget": 40000,
        "complete": False,
        "missing": ["worldshare.billing_address"],
    }
    assert body["policy"] == {
        **FULL["policy"],
        "status_map": {"LOST": "closed"},
        "close_on": "shipped_return",
    }

    for path in ("/api/v1/institutions", "/api/v1/institutions/UNIV"):
        read = client.get(path, headers=admin)
        assert read.status_code == 200
        _assert_no_secret(read.text)
    assert client.get("/api/v1/institutions/UNIV", headers=admin).json() == body


def test_a_bare_institution_reports_no_secrets_set(client, admin):
    created = client.post("/api/v1/institutions", json={"code": "X", "name": "X"}, headers=admin)
    assert created.status_code == 201, created.text
    alma, worldshare = created.json()["alma"], created.json()["worldshare"]
    assert (alma["api_key_set"], alma["webhook_secrets_set"]) == (False, 0)
    assert (worldshare["key_set"], worldshare["secret_set"]) == (False, False)


def test_secrets_are_stored_encrypted(client, admin, engine, settings):
    assert client.post("/api/v1/institutions", json=FULL, headers=admin).status_code == 201
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT alma_api_key_encrypted, alma_webhook_secrets_encrypted, "
                "worldshare_key_encrypted, worldshare_secret_encrypted "
                "FROM institution WHERE code = 'UNIV'"
            )
        ).one()
    raw = " ".join(row)
    _assert_no_secret(raw)
    box = load_secret_box(settings)
    assert box.decrypt(row[0]) == SECRETS["alma_api_key"]
    assert box.decrypt_list(row[1]) == [SECRETS["webhook_old"], SECRETS["webhook_new"]]
    assert box.decrypt(row[2]) == SECRETS["ws_key"]
    assert box.decrypt(row[3]) == SECRETS["ws_secret"]


def test_a_duplicate_code_is_a_conflict(client, admin, engine):
    assert client.post("/api/v1/institutions", json=FULL, headers=admin).status_code == 201
    before = row_counts(engine)
    again = client.post("/api/v1/institutions", json={**FULL, "name": "Other"}, headers=admin)
    assert assert_envelope(again, 409)["error"] == "conflict"
    _assert_no_secret(again.text)
    assert row_counts(engine) == before
    assert client.get("/api/v1/institutions/UNIV", headers=admin).json()["name"] == (
        "University Library"
    )


def test_patch_changes_only_what_it_names(client, admin, engine, settings):
    original = client.post("/api/v1/institutions", json=FULL, headers=admin).json()

    renamed = client.patch(
        "/api/v1/institutions/UNIV", json={"policy": {"stale_after_days": 90}}, headers=admin
    )
    assert renamed.status_code == 200, renamed.text
    expected = {**original, "policy": {**original["policy"], "stale_after_days": 90}}
    assert {k: v for k, v in renamed.json().items() if k != "updated_at"} == {
        k: v for k, v in expected.items() if k != "updated_at"
    }
    assert renamed.json()["updated_at"] >= original["updated_at"]

    rotated = client.patch(
        "/api/v1/institutions/UNIV",
        json={
            "name": "Renamed",
            "active": False,
            "alma": {"webhook_secrets": ["whsec-newest-1"]},
            "worldshare": {"scope": "WorldShareILL refresh_token"},
        },
        headers=admin,
    )
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    assert (body["name"], body["active"]) == ("Renamed", False)
    assert body["alma"] == {**original["alma"], "webhook_secrets_set": 1}
    assert body["worldshare"] == {**original["worldshare"], "scope": "WorldShareILL refresh_token"}
    assert body["policy"]["stale_after_days"] == 90
    assert "whsec-newest-1" not in rotated.text

    with engine.connect() as connection:
        key, secret = connection.execute(
            text(
                "SELECT alma_api_key_encrypted, worldshare_secret_encrypted "
                "FROM institution WHERE code = 'UNIV'"
            )
        ).one()
    box = load_secret_box(settings)
    assert (box.decrypt(key), box.decrypt(secret)) == (
        SECRETS["alma_api_key"],
        SECRETS["ws_secret"],
    )


def test_patch_of_an_unknown_institution_is_404(client, admin):
    assert_envelope(client.patch("/api/v1/institutions/NOPE", json={}, headers=admin), 404)
    assert_envelope(client.get("/api/v1/institutions/NOPE", headers=admin), 404)


@pytest.mark.parametrize(
    "patch",
    [
        {"policy": {"status_map": {"LOST": "vanished"}}},
        {"policy": {"status_map": {"X" * 65: "closed"}}},
        {"policy": {"stale_after_days": 0}},
        {"policy": {"cancel_reason": "R" * 65}},
        {"alma": {"webhook_secrets": ["a", "b", "c"]}},
        {"alma": {"api_base_url": "ftp://example.org"}},
        {"alma": {"api_base_url": "https://example.org/" + "é" * 200}},
        {"alma": {"agency_id": {"type": "T" * 65, "value": "v"}}},
        {"worldshare": {"institution_id": "not-digits"}},
        {"code": "RENAMED"},
        {"policy": {"unknown": 1}},
    ],
    ids=[
        "unknown-outcome",
        "long-status",
        "zero-days",
        "long-cancel-reason",
        "three-webhook-secrets",
        "ftp-url",
        "url-long-once-encoded",
        "long-agency-type",
        "ws-institution-id",
        "code-is-immutable",
        "unknown-policy-field",
    ],
)
def test_invalid_patches_are_422_and_change_nothing(client, admin, patch):
    original = client.post("/api/v1/institutions", json=FULL, headers=admin).json()
    refused = client.patch("/api/v1/institutions/UNIV", json=patch, headers=admin)
    assert assert_envelope(refused, 422)["error"] == "validation_error"
    _assert_no_secret(refused.text)
    assert client.get("/api/v1/institutions/UNIV", headers=admin).json() == original


def test_invalid_secret_is_refused_without_echoing_it(client, admin, engine):
    long_secret = "s3cr3t-" + "z" * 1000
    refused = client.post(
        "/api/v1/institutions",
        json={"code": "X", "name": "X", "alma": {"api_key": long_secret}},
        headers=admin,
    )
    assert_envelope(refused, 422)
    assert "s3cr3t" not in refused.text
    assert row_counts(engine)["Institution"] == 0


def test_a_bound_admin_cannot_create_institutions(client, engine, settings):
    own = make_institution(engine, settings, "OWN")
    bound = bearer(make_token(engine, ["admin"], own))
    refused = client.post("/api/v1/institutions", json=FULL, headers=bound)
    assert assert_envelope(refused, 403)["error"] == "forbidden"
    assert row_counts(engine)["Institution"] == 1
    assert client.patch(
        "/api/v1/institutions/OWN", json={"name": "Own, renamed"}, headers=bound
    ).json()["name"] == ("Own, renamed")
