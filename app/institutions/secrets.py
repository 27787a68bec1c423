"""Encryption of institution secrets at rest, and hashing of API tokens.

Secrets are write-only: they are decrypted only for the outbound client that needs them.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from app.config import VAR_DIR, Settings

TOKEN_PREFIX = "ilb_"  # noqa: S105 (a prefix that makes leaked tokens greppable)


class SecretKeyMissing(RuntimeError):
    pass


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise SecretKeyMissing(
                "a stored secret cannot be decrypted with ILLBRIDGE_SECRET_KEY"
            ) from None

    def encrypt_list(self, values: list[str]) -> str:
        return self.encrypt(json.dumps(values))

    def decrypt_list(self, ciphertext: str) -> list[str]:
        values = json.loads(self.decrypt(ciphertext))
        return [str(v) for v in values]


def load_secret_box(settings: Settings) -> SecretBox:
    """The configured key; in sandbox mode one is made once and kept under var/."""
    if settings.secret_key is not None:
        return SecretBox(settings.secret_key.get_secret_value().encode())
    if not settings.sandbox:
        raise SecretKeyMissing(
            "ILLBRIDGE_SECRET_KEY is not set (generate one with `illbridge secret-key`)"
        )
    key_file = VAR_DIR / "secret.key"
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_bytes(Fernet.generate_key())
        key_file.chmod(0o600)
    return SecretBox(Path(key_file).read_bytes().strip())


def new_api_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_api_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
