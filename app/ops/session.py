"""The operators' session: a signed cookie that names the API token used to sign in, and CSRF.

The cookie holds `<token id>.<expiry>.<nonce>.<signature>`, never the token: the signature is an
HMAC with a key derived from ILLBRIDGE_SECRET_KEYS (the newest signs, every one verifies, so a
key rotation signs no one out). Each page re-reads the token: revoked or expired, the session is
over. Forms carry a CSRF token bound to the session cookie; the sign-in form, before any
session, a double-submit token (a cookie of its own that the form must repeat).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session

from app.errors import AppError
from app.institutions.models import ApiToken
from app.institutions.secrets import SecretBox
from app.institutions.service import Caller
from app.timeutil import utcnow

SESSION_COOKIE = "illbridge_ops"
SIGN_IN_CSRF_COOKIE = "illbridge_ops_signin"
SESSION_LIFETIME = timedelta(hours=8)
READ_SCOPE = "requests:read"
WRITE_SCOPE = "requests:write"
ADMIN_SCOPE = "admin"


class SignInRequired(AppError):
    """No session, or one that no longer holds (expired, tampered, token revoked)."""

    status_code = 401
    code = "sign_in_required"


class CsrfRefused(AppError):
    status_code = 403
    code = "csrf_refused"


@dataclass(frozen=True)
class Operator:
    """Who is signed in: the token's id, name, scopes and institution (None: every one)."""

    token_id: int
    name: str
    scopes: tuple[str, ...]
    institution_id: int | None
    cookie: str

    def can(self, scope: str) -> bool:
        return scope in self.scopes or ADMIN_SCOPE in self.scopes


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class Signer:
    """Signs and checks session cookies and CSRF tokens with keys derived from the box."""

    def __init__(self, box: SecretBox) -> None:
        self._session_keys = box.derived_keys("ops-session")
        self._csrf_keys = box.derived_keys("ops-csrf")

    @staticmethod
    def _mac(key: bytes, text: str) -> str:
        return _b64(hmac.new(key, text.encode(), hashlib.sha256).digest())

    def _verify(self, keys: list[bytes], text: str, signature: str) -> bool:
        return any(hmac.compare_digest(self._mac(key, text), signature) for key in keys)

    def session_cookie(self, token: Caller, now: datetime) -> tuple[str, datetime]:
        """The cookie value for a session of `token`, and when it ends."""
        expires = now + SESSION_LIFETIME
        if token.expires_at is not None:
            expires = min(expires, token.expires_at)
        body = f"{token.id}.{int(expires.timestamp())}.{secrets.token_urlsafe(12)}"
        return f"{body}.{self._mac(self._session_keys[0], body)}", expires

    def token_id_of(self, cookie: str | None, now: datetime) -> int | None:
        """The token id a genuine, unexpired cookie names; None for anything else."""
        if not cookie or len(cookie) > 200:
            return None
        body, _, signature = cookie.rpartition(".")
        parts = body.split(".")
        if len(parts) != 3 or not self._verify(self._session_keys, body, signature):
            return None
        token_id, expires, _nonce = parts
        if not (token_id.isdigit() and expires.isdigit()):
            return None
        if int(expires) <= now.timestamp():
            return None
        return int(token_id)

    def csrf_for(self, cookie: str) -> str:
        return self._mac(self._csrf_keys[0], cookie)

    def check_csrf(self, cookie: str, submitted: str | None) -> None:
        if not submitted or not self._verify(self._csrf_keys, cookie, submitted):
            raise CsrfRefused("the form's CSRF token is missing or wrong; reload the page")


def check_sign_in_csrf(cookie: str | None, submitted: str | None) -> None:
    """The double-submit check of the sign-in form."""
    if not cookie or not submitted or not hmac.compare_digest(cookie, submitted):
        raise CsrfRefused("the form's CSRF token is missing or wrong; reload the page")


def new_sign_in_csrf() -> str:
    return secrets.token_urlsafe(24)


def operator_of(session: Session, signer: Signer, cookie: str | None) -> Operator:
    """The signed-in operator, re-checking the token on every call."""
    now = utcnow()
    token_id = signer.token_id_of(cookie, now)
    if token_id is None or cookie is None:
        raise SignInRequired("sign in with an API token")
    token = session.get(ApiToken, token_id)
    if token is None or token.revoked_at is not None:
        raise SignInRequired("the token of this session was revoked; sign in again")
    if token.expires_at is not None and token.expires_at <= now:
        raise SignInRequired("the token of this session expired; sign in again")
    if not token.has_scope(READ_SCOPE):
        raise SignInRequired("the token of this session may not read requests")
    return Operator(
        token_id=token_id,
        name=token.name,
        scopes=tuple(token.scopes),
        institution_id=token.institution_id,
        cookie=cookie,
    )
