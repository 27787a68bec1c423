"""An institution's WorldShare settings, decrypted for one outbound call."""

from __future__ import annotations

from app.institutions.models import Institution
from app.institutions.secrets import SecretBox
from app.institutions.worldshare_settings import worldshare_missing
from app.worldshare.client import Requester, WorldShareConfig

CONFIGURATION_INCOMPLETE = "WorldShare configuration incomplete"
# A create needs all of worldshare_missing; reading a request needs only these.
_TO_CALL = ("base_url", "token_url", "scope", "key", "secret", "institution_id")


class NotConfigured(Exception):
    """An institution lacks the settings an outbound call needs."""


def worldshare_config(
    institution: Institution, box: SecretBox, *, to_export: bool = False
) -> WorldShareConfig:
    """The settings to call WorldShare with; `to_export` also asks for what a create needs."""
    missing = [
        name
        for name in worldshare_missing(institution)
        if to_export or name.removeprefix("worldshare.") in _TO_CALL
    ]
    if missing:
        raise NotConfigured(
            f"{CONFIGURATION_INCOMPLETE}: {', '.join(missing)} not set "
            f"(institution {institution.code})"
        )
    assert institution.worldshare_key_encrypted and institution.worldshare_secret_encrypted
    return WorldShareConfig(
        institution_code=institution.code,
        base_url=institution.worldshare_base_url or "",
        token_url=institution.worldshare_token_url or "",
        scope=institution.worldshare_scope or "",
        key=box.decrypt(institution.worldshare_key_encrypted),
        secret=box.decrypt(institution.worldshare_secret_encrypted),
        refresh_token=(
            box.decrypt(institution.worldshare_refresh_token_encrypted)
            if institution.worldshare_refresh_token_encrypted
            else None
        ),
        daily_call_budget=institution.worldshare_daily_call_budget,
        requester=Requester(
            institution_id=institution.worldshare_institution_id or "",
            billing_address=institution.worldshare_billing_address,
            delivery_address=institution.worldshare_delivery_address,
            delivery_email=institution.worldshare_delivery_email,
            lenders=tuple(institution.worldshare_lenders or ()),
            max_cost=institution.worldshare_max_cost,
            billing_types=tuple(institution.worldshare_billing_types or ()),
        ),
    )
