"""The session cookie's signature, lifetime and key rotation, and the CSRF tokens, as plain code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet

from app.institutions.secrets import SecretBox
from app.institutions.service import Caller
from app.ops.session import (
    SESSION_LIFETIME,
    CsrfRefused,
    Signer,
    check_sign_in_csrf,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def token(expires_at: datetime | None = None) -> Caller:
    return Caller(
        id=7,
        name="t",
        scopes=("admin",),
        institution_id=None,
        expires_at=expires_at,
        last_used_at=None,
    )


def test_a_cookie_names_its_token_until_it_expires():
    signer = Signer(SecretBox([Fernet.generate_key()]))
    cookie, expires = signer.session_cookie(token(), NOW)
    assert expires == NOW + SESSION_LIFETIME
    assert cookie.startswith("7.")
    assert signer.token_id_of(cookie, NOW) == 7
    assert signer.token_id_of(cookie, expires + timedelta(seconds=1)) is None


def test_a_session_ends_no_later_than_its_token():
    signer = Signer(SecretBox([Fernet.generate_key()]))
    soon = NOW + timedelta(minutes=5)
    cookie, expires = signer.session_cookie(token(expires_at=soon), NOW)
    assert expires == soon
    assert signer.token_id_of(cookie, soon + timedelta(seconds=1)) is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: "8" + c[1:],  # another token's id
        lambda c: c.replace(c.split(".")[1], str(int(c.split(".")[1]) + 86400)),  # longer life
        lambda c: c[:-2] + ("AA" if not c.endswith("AA") else "BB"),  # another signature
        lambda c: c.rpartition(".")[0],  # no signature
        lambda c: "",
    ],
)
def test_a_tampered_cookie_is_no_session(tamper):
    signer = Signer(SecretBox([Fernet.generate_key()]))
    cookie, _ = signer.session_cookie(token(), NOW)
    assert signer.token_id_of(tamper(cookie), NOW) is None


def test_key_rotation_keeps_sessions_and_another_key_refuses_them():
    old, new = Fernet.generate_key(), Fernet.generate_key()
    cookie, _ = Signer(SecretBox([old])).session_cookie(token(), NOW)
    csrf = Signer(SecretBox([old])).csrf_for(cookie)
    rotating = Signer(SecretBox([new, old]))
    assert rotating.token_id_of(cookie, NOW) == 7
    rotating.check_csrf(cookie, csrf)
    assert Signer(SecretBox([new])).token_id_of(cookie, NOW) is None


def test_csrf_tokens_are_bound_to_their_session():
    signer = Signer(SecretBox([Fernet.generate_key()]))
    mine, _ = signer.session_cookie(token(), NOW)
    theirs, _ = signer.session_cookie(token(), NOW)
    signer.check_csrf(mine, signer.csrf_for(mine))
    for wrong in (None, "", signer.csrf_for(theirs)):
        with pytest.raises(CsrfRefused):
            signer.check_csrf(mine, wrong)
    with pytest.raises(CsrfRefused):
        check_sign_in_csrf("abc", "abd")
    with pytest.raises(CsrfRefused):
        check_sign_in_csrf(None, None)
    check_sign_in_csrf("abc", "abc")
