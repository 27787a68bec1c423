"""The `worldshare` group's library settings: addresses, lenders, billing terms, the refresh
token, and whether the group is complete enough to export."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.institutions.secrets import load_secret_box
from app.main import create_app
from tests.support.api_checks import assert_envelope
from tests.support.factories import bearer, make_token

CREDENTIALS = {
    "base_url": "https://128807.share.worldcat.org/ILL",
    "token_url": "https://oauth.oclc.org/token",
    "scope": "WorldShareILL",
    "key": "wskey-4f1e",
    "secret": "wssecret-9a7c",
    "institution_id": "128807",
}
BILLING = {
    "attention": "Interlibrary Loan",
    "address1": "1 Library Walk",
    "address2": "Room 101",
    "locality": "Gainesville",
    "region": "FL",
    "postal": "32611",
    "country": "US",
}
REFRESH_TOKEN = "rt_staff-user-7d3b"


@pytest.fixture
def admin(engine) -> dict[str, str]:
    return bearer(make_token(engine, ["admin"]))


@pytest.fixture
def client(settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def create(client: TestClient, admin: dict[str, str], **worldshare: object) -> dict:
    body = {"code": "UNIV", "name": "University", "worldshare": {**CREDENTIALS, **worldshare}}
    response = client.post("/api/v1/institutions", json=body, headers=admin)
    assert response.status_code == 201, response.text
    return dict(response.json()["worldshare"])


def test_the_librarys_settings_are_kept_and_shown(client, admin):
    created = create(
        client,
        admin,
        billing_address=BILLING,
        delivery_address={"address1": "Loading Dock 3"},
        delivery_email="ill@library.example.edu",
        lenders=[148456, 116402],
        max_cost={"amount": "25", "currency": "USD"},
        billing_types=["IFM"],
    )

    assert created == {
        **{name: CREDENTIALS[name] for name in ("base_url", "token_url", "scope")},
        "key_set": True,
        "secret_set": True,
        "institution_id": "128807",
        "refresh_token_set": False,
        "refresh_token_expires_at": None,
        "billing_address": BILLING,
        "delivery_address": {
            "attention": None,
            "address1": "Loading Dock 3",
            "address2": None,
            "locality": None,
            "region": None,
            "postal": None,
            "country": None,
        },
        "delivery_email": "ill@library.example.edu",
        "lenders": [148456, 116402],
        "max_cost": {"amount": "25.00", "currency": "USD"},
        "billing_types": ["IFM"],
        "daily_call_budget": 40000,
        "complete": True,
        "missing": [],
    }
    assert client.get("/api/v1/institutions/UNIV", headers=admin).json()["worldshare"] == created


def test_without_a_billing_address_the_configuration_is_incomplete(client, admin):
    created = create(client, admin)

    assert (created["complete"], created["missing"]) == (False, ["worldshare.billing_address"])
    shown = client.get("/api/v1/institutions/UNIV", headers=admin).json()["worldshare"]
    assert (shown["complete"], shown["missing"]) == (False, ["worldshare.billing_address"])

    patched = client.patch(
        "/api/v1/institutions/UNIV",
        json={"worldshare": {"billing_address": {"address1": "1 Library Walk"}}},
        headers=admin,
    )
    assert patched.json()["worldshare"]["complete"] is True

    bare = client.post("/api/v1/institutions", json={"code": "B", "name": "B"}, headers=admin)
    assert bare.json()["worldshare"]["missing"] == [
        f"worldshare.{name}" for name in [*CREDENTIALS, "billing_address"]
    ]


def test_a_patch_changes_or_clears_only_the_settings_it_names(client, admin):
    create(client, admin, billing_address=BILLING, lenders=[1, 2], billing_types=["IFM"])

    patched = client.patch(
        "/api/v1/institutions/UNIV",
        json={"worldshare": {"lenders": None, "delivery_email": "ill@library.example.edu"}},
        headers=admin,
    ).json()["worldshare"]

    assert patched["lenders"] == []
    assert patched["billing_types"] == ["IFM"]
    assert patched["billing_address"] == BILLING
    assert patched["delivery_email"] == "ill@library.example.edu"


def test_the_refresh_token_is_write_only_encrypted_and_removable(client, admin, engine, settings):
    created = create(client, admin, billing_address=BILLING, refresh_token=REFRESH_TOKEN)
    assert created["refresh_token_set"] is True
    shown = client.get("/api/v1/institutions/UNIV", headers=admin)
    assert REFRESH_TOKEN not in shown.text
    with engine.connect() as connection:
        stored = connection.execute(
            text("SELECT worldshare_refresh_token_encrypted FROM institution")
        ).scalar_one()
    assert REFRESH_TOKEN not in stored
    assert load_secret_box(settings).decrypt(stored) == REFRESH_TOKEN

    kept = client.patch(
        "/api/v1/institutions/UNIV", json={"worldshare": {"scope": "WorldShareILL"}}, headers=admin
    )
    assert kept.json()["worldshare"]["refresh_token_set"] is True
    removed = client.patch(
        "/api/v1/institutions/UNIV", json={"worldshare": {"refresh_token": None}}, headers=admin
    )
    assert removed.json()["worldshare"]["refresh_token_set"] is False


@pytest.mark.parametrize(
    "worldshare",
    [
        {"billing_address": {"attention": "ILL"}},
        {"billing_address": {"address1": ""}},
        {"billing_address": {"address1": "x", "street": "not OCLC's name"}},
        {"delivery_address": {"address1": "x" * 256}},
        {"delivery_email": "not an address"},
        {"lenders": list(range(1, 17))},
        {"lenders": ["148456"]},
        {"lenders": [148456, 148456]},
        {"lenders": [0]},
        {"max_cost": {"amount": "25.001", "currency": "USD"}},
        {"max_cost": {"amount": "-1", "currency": "USD"}},
        {"max_cost": {"amount": "25", "currency": "dollars"}},
        {"billing_types": [""]},
        {"refresh_token": ""},
    ],
    ids=[
        "no-address1",
        "empty-address1",
        "unknown-address-field",
        "long-address-line",
        "bad-email",
        "sixteen-lenders",
        "lender-as-text",
        "lender-twice",
        "lender-zero",
        "tenths-of-cents",
        "negative-cost",
        "bad-currency",
        "empty-billing-type",
        "empty-refresh-token",
    ],
)
def test_invalid_library_settings_are_422(client, admin, worldshare):
    body = {"code": "UNIV", "name": "University", "worldshare": worldshare}
    refused = client.post("/api/v1/institutions", json=body, headers=admin)
    assert assert_envelope(refused, 422)["error"] == "validation_error"
