"""An institution's WorldShare settings, decrypted for one outbound call."""

from __future__ import annotations

from app.institutions.models import Institution
from app.institutions.secrets import SecretBox
from app.worldshare.client import WorldShareConfig


class NotConfigured(Exception):
    """An institution lacks the settings an outbound call needs."""


def worldshare_config(institution: Institution, box: SecretBox) -> WorldShareConfig:
    missing = [
        name
        for name, value in (
            ("worldshare.base_url", institution.worldshare_base_url),
            ("worldshare.token_url", institution.worldshare_token_url),
            ("worldshare.scope", institution.worldshare_scope),
            ("worldshare.key", institution.worldshare_key_encrypted),
            ("worldshare.secret", institution.worldshare_secret_encrypted),
            ("worldshare.institution_id", institution.worldshare_institution_id),
        )
        if not value
    ]
    if missing:
        raise NotConfigured(f"institution {institution.code} lacks {', '.join(missing)}")
    assert institution.worldshare_key_encrypted and institution.worldshare_secret_encrypted
    return WorldShareConfig(
        institution_code=institution.code,
        base_url=institution.worldshare_base_url or "",
        token_url=institution.worldshare_token_url or "",
        scope=institution.worldshare_scope or "",
        key=box.decrypt(institution.worldshare_key_encrypted),
        secret=box.decrypt(institution.worldshare_secret_encrypted),
        institution_id=institution.worldshare_institution_id or "",
    )
