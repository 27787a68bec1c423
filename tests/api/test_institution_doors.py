"""Institution settings cannot be turned against their own secrets, and every change is logged.

The reproduced attack: an admin token bound to one institution pointed `worldshare.token_url`
at its own server and received the WSKey and secret in the next token request's Basic header.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.main import create_app
from tests.support.api_checks import assert_envelope, two_tenants
from tests.support.factories import bearer, make_institution, make_token

SECRETS = {
    "alma.api_key": "l8xx-alma-key-77d1",
    "alma.iso18626_security_code": "isocode-41aa",
    "alma.webhook_secret": "whsec-19be",
    "worldshare.key": "wskey-5c0e",
    "worldshare.secret": "wssecret-a3f2",
}
ALMA = {
    "api_base_url": "https://api-eu.hosted.exlibrisgroup.com",
    "api_key": SECRETS["alma.api_key"],
    "webhook_secrets": [SECRETS["alma.webhook_secret"]],
    "iso18626_url": "https://univ.alma.exlibrisgroup.com/rapido/iso18626",
    "iso18626_security_code": SECRETS["alma.iso18626_security_code"],
}
WORLDSHARE = {
    "base_url": "https://univ.share.worldcat.org/ILL",
    "token_url": "https://oauth.oclc.org/token",
    "scope": "WorldShareILL",
    "key": SECRETS["worldshare.key"],
    "secret": SECRETS["worldshare.secret"],
    "institution_id": "128807",
}


@pytest.fixture
def client(settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def tenant(engine, settings) -> dict[str, str]:
    """UNIV with every secret set, and an admin token bound to it (the reviewer's token)."""
    univ = make_institution(engine, settings, "UNIV", alma=ALMA, worldshare=WORLDSHARE)
    return bearer(make_token(engine, ["admin"], univ, name="univ-admin"))


def _stored(engine) -> tuple[str, ...]:
    with engine.connect() as connection:
        return tuple(
            connection.execute(
                text(
                    "SELECT alma_api_base_url, alma_iso18626_url, alma_api_key_encrypted, "
                    "worldshare_base_url, worldshare_token_url, worldshare_key_encrypted, "
                    "worldshare_secret_encrypted, updated_at FROM institution "
                    "WHERE code = 'UNIV'"
                )
            ).one()
        )


@pytest.mark.parametrize(
    ("group", "url_field", "missing"),
    [
        ("worldshare", "token_url", "worldshare.key, worldshare.secret"),
        ("worldshare", "base_url", "worldshare.key, worldshare.secret"),
        (
            "alma",
            "api_base_url",
            "alma.api_key, alma.webhook_secrets, alma.iso18626_security_code",
        ),
        (
            "alma",
            "iso18626_url",
            "alma.api_key, alma.webhook_secrets, alma.iso18626_security_code",
        ),
    ],
)
def test_moving_a_url_without_the_groups_secrets_is_refused(
    client, tenant, engine, group, url_field, missing
):
    before = _stored(engine)
    moved = client.patch(
        "/api/v1/institutions/UNIV",
        json={group: {url_field: "https://attacker.example/collect"}},
        headers=tenant,
    )
    body = assert_envelope(moved, 422)
    assert body["error"] == "secrets_required"
    assert f"{group}.{url_field}" in body["detail"] and missing in body["detail"]
    assert _stored(engine) == before


def test_a_url_moves_when_every_secret_of_its_group_is_given_again(client, tenant):
    partial = client.patch(
        "/api/v1/institutions/UNIV",
        json={"worldshare": {"token_url": "https://oauth2.oclc.org/token", "key": "new-key"}},
        headers=tenant,
    )
    assert assert_envelope(partial, 422)["detail"].endswith(
        "requires worldshare.secret in the same request"
    )
    moved = client.patch(
        "/api/v1/institutions/UNIV",
        json={
            "worldshare": {
                "token_url": "https://oauth2.oclc.org/token",
                "key": "new-key",
                "secret": "new-secret",
            }
        },
        headers=tenant,
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["worldshare"]["token_url"] == "https://oauth2.oclc.org/token"
    assert "new-secret" not in moved.text


def test_unchanged_urls_and_other_fields_need_no_secrets(client, tenant):
    same = client.patch(
        "/api/v1/institutions/UNIV",
        json={
            "worldshare": {"token_url": WORLDSHARE["token_url"] + "/", "scope": "WorldShareILL x"},
            "alma": {"api_base_url": ALMA["api_base_url"]},
            "policy": {"stale_after_days": 9},
        },
        headers=tenant,
    )
    assert same.status_code == 200, same.text
    assert same.json()["worldshare"]["scope"] == "WorldShareILL x"


def test_a_url_of_a_group_without_secrets_moves_freely(client, engine, settings):
    make_institution(engine, settings, "BARE")
    admin = bearer(make_token(engine, ["admin"]))
    moved = client.patch(
        "/api/v1/institutions/BARE",
        json={"worldshare": {"token_url": "https://oauth.oclc.org/token"}},
        headers=admin,
    )
    assert moved.status_code == 200, moved.text


@pytest.mark.parametrize(
    "url",
    ["https://user:pw@oauth.oclc.org/token", "https://user@oauth.oclc.org/token"],
    ids=["user-and-password", "user"],
)
def test_urls_with_user_info_are_refused(client, engine, settings, url):
    admin = bearer(make_token(engine, ["admin"]))
    created = client.post(
        "/api/v1/institutions",
        json={"code": "X", "name": "X", "worldshare": {"token_url": url}},
        headers=admin,
    )
    body = assert_envelope(created, 422)
    assert "worldshare.token_url" in body["detail"] and "user" in body["detail"]
    assert "pw" not in created.text


def test_urls_outside_the_allowed_hosts_are_refused(engine, settings):
    narrowed = settings.model_copy(
        update={"outbound_allowed_hosts": "*.oclc.org, *.worldcat.org, *.exlibrisgroup.com"}
    )
    admin = bearer(make_token(engine, ["admin"]))
    with TestClient(create_app(narrowed)) as client:
        refused = client.post(
            "/api/v1/institutions",
            json={"code": "X", "name": "X", "worldshare": {"token_url": "https://oclc.org.evil/t"}},
            headers=admin,
        )
        body = assert_envelope(refused, 422)
        assert body["error"] == "host_not_allowed"
        assert "worldshare.token_url" in body["detail"] and "'oclc.org.evil'" in body["detail"]

        created = client.post(
            "/api/v1/institutions",
            json={"code": "UNIV", "name": "U", "alma": ALMA, "worldshare": WORLDSHARE},
            headers=admin,
        )
        assert created.status_code == 201, created.text
        patched = client.patch(
            "/api/v1/institutions/UNIV",
            json={"alma": {"iso18626_url": "http://127.0.0.1:9/iso", **_alma_secrets()}},
            headers=admin,
        )
        assert assert_envelope(patched, 422)["error"] == "host_not_allowed"


def _alma_secrets() -> dict[str, object]:
    return {k: ALMA[k] for k in ("api_key", "webhook_secrets", "iso18626_security_code")}


def test_every_change_is_logged_with_field_names_only(client, engine, settings):
    admin = bearer(make_token(engine, ["admin"], name="ops-admin"))
    created = client.post(
        "/api/v1/institutions",
        json={"code": "UNIV", "name": "U", "alma": ALMA, "worldshare": WORLDSHARE},
        headers=admin,
    )
    assert created.status_code == 201
    client.patch(
        "/api/v1/institutions/UNIV", json={"policy": {"stale_after_days": 9}}, headers=admin
    )
    moved = {"token_url": "https://oauth2.oclc.org/token", "key": "k2", "secret": "s2"}
    client.patch("/api/v1/institutions/UNIV", json={"worldshare": moved}, headers=admin)
    # Neither a request that changes nothing nor a refused one is an entry.
    client.patch("/api/v1/institutions/UNIV", json={}, headers=admin)
    refused = {"token_url": "https://x.example/t"}
    client.patch("/api/v1/institutions/UNIV", json={"worldshare": refused}, headers=admin)

    audit = client.get("/api/v1/institutions/UNIV/audit", headers=admin)
    assert audit.status_code == 200, audit.text
    items = audit.json()["items"]
    assert [(i["action"], i["actor"]) for i in items] == [
        ("updated", "ops-admin"),
        ("updated", "ops-admin"),
        ("created", "ops-admin"),
    ]
    assert items[0]["fields"] == ["worldshare.key", "worldshare.secret", "worldshare.token_url"]
    assert items[1]["fields"] == ["policy.stale_after_days"]
    assert {
        "code",
        "name",
        "alma.api_key",
        "alma.iso18626_security_code",
        "worldshare.token_url",
    } <= set(items[2]["fields"])
    for value in [*SECRETS.values(), "k2", "s2", "oauth2.oclc.org"]:
        assert value not in audit.text

    with engine.connect() as connection:
        raw = " ".join(
            str(row) for row in connection.execute(text("SELECT * FROM institution_audit"))
        )
    for value in [*SECRETS.values(), "oauth2.oclc.org", "k2"]:
        assert value not in raw


def test_the_change_log_pages_and_is_admin_only(client, engine, settings):
    make_institution(engine, settings, "UNIV")
    admin = bearer(make_token(engine, ["admin"]))
    for days in range(2, 7):
        client.patch(
            "/api/v1/institutions/UNIV", json={"policy": {"stale_after_days": days}}, headers=admin
        )
    first = client.get("/api/v1/institutions/UNIV/audit?limit=4", headers=admin).json()
    second = client.get(
        f"/api/v1/institutions/UNIV/audit?limit=4&cursor={first['next_cursor']}", headers=admin
    ).json()
    assert len(first["items"]) == 4 and len(second["items"]) == 2  # 5 updates and the creation
    assert second["next_cursor"] is None and second["items"][-1]["action"] == "created"

    reader = bearer(make_token(engine, ["requests:read", "requests:write"]))
    assert_envelope(client.get("/api/v1/institutions/UNIV/audit", headers=reader), 403)


def test_a_bound_token_cannot_tell_another_institution_from_none(client, engine, settings):
    tenants = two_tenants(engine, settings)
    for path in ("/api/v1/institutions/{}", "/api/v1/institutions/{}/audit"):
        hidden = client.get(path.format("B"), headers=tenants.a_admin)
        missing = client.get(path.format("NOPE"), headers=tenants.a_admin)
        assert assert_envelope(hidden, 404) == {
            "error": "not_found",
            "detail": "no institution 'B'",
        }
        assert assert_envelope(missing, 404) == {
            "error": "not_found",
            "detail": "no institution 'NOPE'",
        }
    hidden = client.patch("/api/v1/institutions/B", json={"name": "x"}, headers=tenants.a_admin)
    assert assert_envelope(hidden, 404)["detail"] == "no institution 'B'"
    listed = client.get("/api/v1/requests?institution=B", headers=tenants.a_reader)
    assert assert_envelope(listed, 404)["detail"] == "no institution 'B'"
