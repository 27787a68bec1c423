"""What every Alma REST call from a workflow shares: one institution's client over the process's
HTTP client, its key decrypted, Alma's remaining-calls header recorded."""

from __future__ import annotations

from app.alma.rest import AlmaClient
from app.institutions.models import Institution
from app.runtime import Runtime

NOT_CONFIGURED = "the Alma REST API is not configured (alma.api_base_url, alma.api_key)"


def alma_client(ctx: Runtime, institution: Institution) -> AlmaClient | None:
    """The institution's Alma REST client; None when its Alma API is not configured."""
    if not institution.alma_api_base_url or not institution.alma_api_key_encrypted:
        return None
    return AlmaClient(
        ctx.http,
        institution.alma_api_base_url,
        ctx.secrets.decrypt(institution.alma_api_key_encrypted),
        institution=institution.code,
        remaining=ctx.metrics.alma_api_remaining,
    )
