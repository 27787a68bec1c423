"""Tables for tenants (institutions), their change log, and the bearer tokens of REST clients."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Column, String
from sqlmodel import Field, SQLModel

from app.borrowing.states import CloseOn
from app.db import StrEnumType
from app.timeutil import UTCDateTime, utcnow

ADMIN_SCOPE = "admin"
SCOPES = ("requests:read", "requests:write", ADMIN_SCOPE)

# The encrypted columns and the setting each holds.
SECRET_COLUMNS = {
    "alma_api_key_encrypted": "alma.api_key",
    "alma_webhook_secrets_encrypted": "alma.webhook_secrets",
    "alma_iso18626_security_code_encrypted": "alma.iso18626_security_code",
    "worldshare_key_encrypted": "worldshare.key",
    "worldshare_secret_encrypted": "worldshare.secret",
}


class Institution(SQLModel, table=True):
    __tablename__ = "institution"

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(sa_column=Column(String(64), unique=True, nullable=False))
    name: str = Field(max_length=255)
    active: bool = Field(default=True)

    alma_api_base_url: str | None = Field(default=None, max_length=500)
    alma_api_key_encrypted: str | None = Field(default=None)
    alma_webhook_secrets_encrypted: str | None = Field(default=None)
    alma_iso18626_url: str | None = Field(default=None, max_length=500)
    alma_iso18626_security_code_encrypted: str | None = Field(default=None)
    alma_iso18626_allow_without_code: bool = Field(default=False)
    alma_agency_id_type: str | None = Field(default=None, max_length=64)
    alma_agency_id_value: str | None = Field(default=None, max_length=128)
    bridge_agency_id_type: str | None = Field(default=None, max_length=64)
    bridge_agency_id_value: str | None = Field(default=None, max_length=128)
    # Which `app.alma.iso18626.profile.PROFILES` entry this Alma speaks.
    alma_iso18626_profile: str = Field(
        default="alma", sa_column=Column(String(32), nullable=False, server_default="alma")
    )
    # Put before the item ids given to Alma, so they cannot collide with the library's barcodes.
    alma_item_barcode_prefix: str = Field(
        default="ILL-", sa_column=Column(String(32), nullable=False, server_default="ILL-")
    )
    # Library codes whose loans may be of borrowed temporary items (LOAN webhooks).
    alma_resource_sharing_libraries: list[str] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, default=list)
    )

    worldshare_base_url: str | None = Field(default=None, max_length=500)
    worldshare_token_url: str | None = Field(default=None, max_length=500)
    worldshare_scope: str | None = Field(default=None, max_length=255)
    worldshare_key_encrypted: str | None = Field(default=None)
    worldshare_secret_encrypted: str | None = Field(default=None)
    worldshare_institution_id: str | None = Field(default=None, max_length=64)
    # The library's side of a create, in OCLC's field names (never a patron's address).
    worldshare_billing_address: dict[str, str] | None = Field(
        default=None, sa_column=Column(JSON(none_as_null=True))
    )
    worldshare_delivery_address: dict[str, str] | None = Field(
        default=None, sa_column=Column(JSON(none_as_null=True))
    )
    worldshare_delivery_email: str | None = Field(default=None, max_length=254)
    worldshare_lenders: list[int] | None = Field(
        default=None, sa_column=Column(JSON(none_as_null=True))
    )
    worldshare_max_cost: dict[str, str] | None = Field(
        default=None, sa_column=Column(JSON(none_as_null=True))
    )
    worldshare_billing_types: list[str] | None = Field(
        default=None, sa_column=Column(JSON(none_as_null=True))
    )
    worldshare_refresh_token_encrypted: str | None = Field(default=None)
    worldshare_refresh_token_expires_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime)
    )
    # Calls a day this institution's WSKey may make (OCLC refuses past about 50,000).
    worldshare_daily_call_budget: int = Field(default=40000)

    cancel_reason: str = Field(default="NOT_SUPPLIED_BY_PARTNER", max_length=64)
    stale_after_days: int = Field(default=60)
    renewal_answer_days: int = Field(default=14)
    auto_cleanup: bool = Field(default=False)
    patron_due_date_offset_days: int = Field(default=7)
    retention_days: int = Field(default=365)
    poll_interval_seconds: int = Field(default=3600)
    # Institutions from before the LOAN webhooks keep shipped_return (set by migration 0007).
    close_on: CloseOn = Field(
        default=CloseOn.PATRON_RETURN,
        sa_column=Column(
            StrEnumType(CloseOn, 32), nullable=False, server_default=CloseOn.PATRON_RETURN.value
        ),
    )
    status_map: dict[str, str] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False, default=dict)
    )

    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=255)
    token_hash: str = Field(sa_column=Column(String(64), unique=True, nullable=False))
    scopes: list[str] = Field(sa_column=Column(JSON, nullable=False))
    institution_id: int | None = Field(default=None, foreign_key="institution.id", index=True)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # Recorded at most once a minute, so reads do not all become writes.
    last_used_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))

    def has_scope(self, scope: str) -> bool:
        return scope_granted(self.scopes, scope)


def scope_granted(scopes: Sequence[str], scope: str) -> bool:
    """`admin` implies every other scope."""
    return scope in scopes or ADMIN_SCOPE in scopes


class AuditAction(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    SECRETS_REENCRYPTED = "secrets_reencrypted"


class InstitutionAudit(SQLModel, table=True):
    """Who changed which settings of an institution, and when: field names, never values."""

    __tablename__ = "institution_audit"

    id: int | None = Field(default=None, primary_key=True)
    institution_id: int = Field(foreign_key="institution.id", index=True)
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    actor: str = Field(max_length=255, description="The token's name, or cli")
    token_id: int | None = Field(default=None, foreign_key="api_token.id")
    action: str = Field(sa_column=Column(String(32), nullable=False))
    fields: list[str] = Field(sa_column=Column(JSON, nullable=False))
