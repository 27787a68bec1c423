"""The secret key: a wrong one stops start-up, and keys rotate without downtime (real keys)."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.config import Settings
from app.institutions import secrets as keys
from app.main import create_app
from tests.conftest import SECRET_KEY
from tests.support.cli import illbridge, no_traceback
from tests.support.factories import bearer, make_institution, make_token

ALMA = {
    "api_key": "alma-key-0b1c",
    "webhook_secrets": ["wh-old-9e2f", "wh-new-13aa"],
    "iso18626_security_code": "iso-code-7d41",
}
WORLDSHARE = {"key": "wskey-2f6a", "secret": "wssecret-c590"}


def _with(settings: Settings, **changes: str) -> Settings:
    return Settings.model_validate({**settings.model_dump(), **changes})


def _new_key() -> str:
    return Fernet.generate_key().decode()


def _encrypted(engine) -> list[str]:
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT alma_api_key_encrypted, alma_webhook_secrets_encrypted, "
                "alma_iso18626_security_code_encrypted, worldshare_key_encrypted, "
                "worldshare_secret_encrypted FROM institution WHERE code = 'UNIV'"
            )
        ).one()
    return list(row)


def test_the_api_refuses_to_start_with_a_key_that_cannot_read_the_secrets(settings, engine):
    make_institution(engine, settings, alma={"api_key": ALMA["api_key"]})
    wrong = _with(settings, secret_key=_new_key())
    with (
        pytest.raises(RuntimeError, match="cannot be decrypted") as refused,
        TestClient(create_app(wrong)),
    ):
        pass
    message = str(refused.value)
    assert "UNIV: alma.api_key" in message and "ILLBRIDGE_SECRET_KEY" in message
    assert ALMA["api_key"] not in message


def test_the_worker_refuses_to_start_with_a_wrong_key(settings, engine):
    make_institution(engine, settings, worldshare=WORLDSHARE)
    worker = illbridge(settings.database_url, "worker", secret_key=_new_key(), timeout=30)
    assert worker.returncode != 0
    assert "cannot be decrypted" in worker.stderr and "UNIV: worldshare.key" in worker.stderr
    no_traceback(worker)


def test_a_malformed_key_is_named_not_a_traceback(settings):
    with pytest.raises(keys.SecretKeyMissing, match="not a Fernet key"):
        keys.load_secret_box(_with(settings, secret_key="not-a-key"))
    listed = illbridge(settings.database_url, "institution", "list", secret_key="not-a-key")
    assert listed.returncode != 0 and "not a Fernet key" in listed.stderr
    no_traceback(listed)


def test_keys_are_the_list_then_the_single_key_newest_first(settings):
    old, new = _new_key(), _new_key()
    both = _with(settings, secret_key=old, secret_keys=f" {new} ,{old}")
    assert keys.configured_keys(both) == [new.encode(), old.encode()]
    ciphertext = keys.load_secret_box(both).encrypt("x")
    new_only = _with(settings, secret_key=new)
    assert keys.load_secret_box(new_only).decrypt(ciphertext) == "x"


def test_rotating_re_encrypts_every_secret_with_the_newest_key(settings, engine):
    old, new = SECRET_KEY, _new_key()
    make_institution(engine, settings, alma=ALMA, worldshare=WORLDSHARE)
    make_institution(engine, settings, "BARE")
    before = _encrypted(engine)

    rotated = illbridge(
        settings.database_url, "rotate-secrets", secret_key=None,
        env={"ILLBRIDGE_SECRET_KEYS": f"{new},{old}"},
    )  # fmt: skip
    assert rotated.returncode == 0, rotated.stderr
    assert "re-encrypted 5 stored secret value(s)" in rotated.stdout
    after = _encrypted(engine)
    assert all(a != b for a, b in zip(after, before, strict=True))

    again = illbridge(
        settings.database_url, "rotate-secrets", env={"ILLBRIDGE_SECRET_KEYS": f"{new},{old}"}
    )
    assert again.returncode == 0 and "re-encrypted 0 " in again.stdout

    # The old key can go: the new one alone reads every secret, the old one alone no longer.
    new_only = _with(settings, secret_key=new)
    box = keys.load_secret_box(new_only)
    keys.check_stored_secrets(engine, box)
    assert [box.decrypt(after[0]), box.decrypt_list(after[1]), box.decrypt(after[4])] == [
        ALMA["api_key"],
        ALMA["webhook_secrets"],
        WORLDSHARE["secret"],
    ]
    with pytest.raises(keys.SecretKeyMismatch):
        keys.check_stored_secrets(engine, keys.load_secret_box(settings))

    admin = bearer(make_token(engine, ["admin"]))
    with TestClient(create_app(new_only)) as client:
        shown = client.get("/api/v1/institutions/UNIV", headers=admin).json()
        assert shown["alma"]["webhook_secrets_set"] == 2
        [entry, *_] = client.get("/api/v1/institutions/UNIV/audit", headers=admin).json()["items"]
    assert (entry["action"], entry["actor"]) == ("secrets_reencrypted", "cli")
    assert entry["fields"] == [
        "alma.api_key",
        "alma.webhook_secrets",
        "alma.iso18626_security_code",
        "worldshare.key",
        "worldshare.secret",
    ]
