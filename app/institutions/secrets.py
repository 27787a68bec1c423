"""Encryption of institution secrets at rest, key rotation, and hashing of API tokens.

Secrets are write-only: they are decrypted only for the outbound client that needs them.
Several keys may be configured (newest first): the newest encrypts, every one decrypts, so a
key can be rotated without downtime (`illbridge rotate-secrets` re-encrypts with the newest).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlmodel import Session, col, select

from app.config import VAR_DIR, Settings
from app.db import read_session
from app.institutions.models import SECRET_COLUMNS, Institution

TOKEN_PREFIX = "ilb_"  # noqa: S105 (a prefix that makes leaked tokens greppable)
KEY_SETTINGS = "ILLBRIDGE_SECRET_KEYS/ILLBRIDGE_SECRET_KEY"

log = logging.getLogger("illbridge.secrets")


class SecretKeyError(RuntimeError):
    """The configured key(s) cannot serve: absent, malformed, or not the ones secrets use."""


class SecretKeyMissing(SecretKeyError):
    pass


class SecretKeyMismatch(SecretKeyError):
    pass


class SecretBox:
    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise SecretKeyMissing(f"no key configured ({KEY_SETTINGS})")
        try:
            fernets = [Fernet(key) for key in keys]
        except ValueError:
            raise SecretKeyMissing(
                f"a key in {KEY_SETTINGS} is not a Fernet key (32 url-safe base64-encoded "
                "bytes; `illbridge secret-key` makes one)"
            ) from None
        self._newest = fernets[0]
        self._fernet = MultiFernet(fernets)
        self._keys = list(keys)

    def __repr__(self) -> str:
        return "SecretBox(<keys hidden>)"

    def derived_keys(self, purpose: str) -> list[bytes]:
        """A key per configured key (newest first) for `purpose` alone, e.g. signing cookies;
        one purpose's key tells nothing of the secrets' keys or of another purpose's."""
        label = f"illbridge/{purpose}".encode()
        return [hmac.new(key, label, hashlib.sha256).digest() for key in self._keys]

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise SecretKeyMismatch(
                f"a stored secret cannot be decrypted with the keys in {KEY_SETTINGS}"
            ) from None

    def encrypt_list(self, values: list[str]) -> str:
        return self.encrypt(json.dumps(values))

    def decrypt_list(self, ciphertext: str) -> list[str]:
        values = json.loads(self.decrypt(ciphertext))
        return [str(v) for v in values]

    def readable(self, ciphertext: str) -> bool:
        try:
            self._fernet.decrypt(ciphertext.encode())
        except InvalidToken:
            return False
        return True

    def uses_newest_key(self, ciphertext: str) -> bool:
        try:
            self._newest.decrypt(ciphertext.encode())
        except InvalidToken:
            return False
        return True

    def rotate(self, ciphertext: str) -> str:
        """The same secret encrypted with the newest key."""
        try:
            return self._fernet.rotate(ciphertext.encode()).decode()
        except InvalidToken:
            raise SecretKeyMismatch(
                f"a stored secret cannot be decrypted with the keys in {KEY_SETTINGS}"
            ) from None


def configured_keys(settings: Settings) -> list[bytes]:
    """ILLBRIDGE_SECRET_KEYS (newest first), then ILLBRIDGE_SECRET_KEY; repeats dropped."""
    texts: list[str] = []
    if settings.secret_keys is not None:
        texts += settings.secret_keys.get_secret_value().split(",")
    if settings.secret_key is not None:
        texts.append(settings.secret_key.get_secret_value())
    keys: list[bytes] = []
    for text in texts:
        key = text.strip().encode()
        if key and key not in keys:
            keys.append(key)
    return keys


def load_secret_box(settings: Settings) -> SecretBox:
    """The configured keys; in sandbox mode with none, one is made once and kept under var/."""
    keys = configured_keys(settings)
    if keys:
        return SecretBox(keys)
    if not settings.sandbox:
        raise SecretKeyMissing(
            "ILLBRIDGE_SECRET_KEY is not set (generate one with `illbridge secret-key`)"
        )
    key_file = VAR_DIR / "secret.key"
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_bytes(Fernet.generate_key())
        key_file.chmod(0o600)
    return SecretBox([Path(key_file).read_bytes().strip()])


def unreadable_secrets(session: Session, box: SecretBox) -> list[str]:
    """`CODE: group.field` for every stored secret none of the keys decrypts."""
    found = []
    for institution in session.exec(select(Institution).order_by(Institution.code)):
        for column, field in SECRET_COLUMNS.items():
            ciphertext = getattr(institution, column)
            if ciphertext is not None and not box.readable(ciphertext):
                found.append(f"{institution.code}: {field}")
    return found


def check_stored_secrets(engine: Engine, box: SecretBox) -> None:
    """Refuse to start with keys that cannot read the stored secrets (a wrong or lost key).

    A database that cannot be read yet (down, not migrated) is left to /readyz and the queue.
    """
    try:
        with read_session(engine) as session:
            unreadable = unreadable_secrets(session, box)
    except (OperationalError, ProgrammingError) as exc:
        log.warning("secret_key_check_skipped", extra={"error_type": type(exc.orig).__name__})
        return
    if unreadable:
        shown = ", ".join(unreadable[:5]) + (" …" if len(unreadable) > 5 else "")
        raise SecretKeyMismatch(
            f"{len(unreadable)} stored secret(s) cannot be decrypted with the keys in "
            f"{KEY_SETTINGS} ({shown}); configure the key they were encrypted with "
            "(during a rotation list the new key first and the old one after it)"
        )


def rotate_stored_secrets(session: Session, box: SecretBox) -> list[tuple[Institution, list[str]]]:
    """Re-encrypt every stored secret not yet under the newest key; the caller commits.

    Returns each institution changed with the fields rewritten. Rows are locked (PostgreSQL) so
    a concurrent change cannot write a value encrypted with an older key over a rotated one.
    """
    changed = []
    query = select(Institution).order_by(col(Institution.id)).with_for_update()
    for institution in session.exec(query):
        fields = []
        for column, field in SECRET_COLUMNS.items():
            ciphertext = getattr(institution, column)
            if ciphertext is not None and not box.uses_newest_key(ciphertext):
                setattr(institution, column, box.rotate(ciphertext))
                fields.append(field)
        if fields:
            session.add(institution)
            changed.append((institution, fields))
    session.flush()
    return changed


def new_api_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_api_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
