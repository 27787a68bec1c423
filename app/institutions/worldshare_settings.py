"""The library's side of a WorldShare create: its billing and delivery addresses, its lenders and
billing terms, the user-context refresh token, and whether the settings are complete enough to
export. Every address here is the library's (its ILL office), never a patron's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import Field, StrictInt, field_validator
from sqlmodel import Session, select

from app.institutions.models import Institution
from app.institutions.secrets import SecretBox
from app.validation import StrictInput

# OCLC's lender string holds at most 15 lenders.
MAX_LENDERS = 15
# An OCLC registry id is a positive 64-bit integer (`Institution.institutionId`, int64).
RegistryId = Annotated[StrictInt, Field(ge=1, le=2**63 - 1)]
AddressLine = Annotated[str, Field(min_length=1, max_length=255)]


class WorldShareAddress(StrictInput):
    """An address with the field names of OCLC's Request API (`Address`)."""

    attention: AddressLine | None = None
    address1: AddressLine
    address2: AddressLine | None = None
    locality: AddressLine | None = None
    region: AddressLine | None = None
    postal: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    country: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class MaximumCost(StrictInput):
    """The most the library will pay a lender (`requesterBilling.maximumCost`)."""

    amount: Annotated[Decimal, Field(ge=0, le=1_000_000, decimal_places=2)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217, e.g. USD")]

    @field_validator("amount")
    @classmethod
    def _cents(cls, value: Decimal) -> Decimal:
        return value.quantize(Decimal("0.01"))


DeliveryEmail = Annotated[
    str, Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", description="The ILL office")
]
Lenders = Annotated[
    list[RegistryId],
    Field(max_length=MAX_LENDERS, description="WorldShare registry ids, tried in this order"),
]
BillingTypes = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=10)
]


def no_repeats(value: list[int] | None) -> list[int] | None:
    if value is not None and len(set(value)) != len(value):
        raise ValueError("each lender may be named once")
    return value


def worldshare_missing(institution: Institution) -> list[str]:
    """The settings an export needs and the institution lacks, by their API names."""
    needed = (
        ("base_url", institution.worldshare_base_url),
        ("token_url", institution.worldshare_token_url),
        ("scope", institution.worldshare_scope),
        ("key", institution.worldshare_key_encrypted),
        ("secret", institution.worldshare_secret_encrypted),
        ("institution_id", institution.worldshare_institution_id),
        # OCLC refuses a create without requesterBilling.address.address1 (failure 30000).
        ("billing_address", institution.worldshare_billing_address),
    )
    return [f"worldshare.{name}" for name, value in needed if not value]


def keep_rotated_refresh_token(
    session: Session,
    box: SecretBox,
    institution_code: str,
    *,
    replaces: Sequence[str],
    refresh_token: str,
    expires_at: datetime | None,
) -> bool:
    """Store the refresh token OCLC rotated to where one it `replaces` is stored; True if so.

    Any other stored token is newer (staff set one, or another worker stored its rotation
    first) and stays. The row is locked, so two workers' rotations do not interleave.
    """
    institution = session.exec(
        select(Institution).where(Institution.code == institution_code).with_for_update()
    ).first()
    stored = institution.worldshare_refresh_token_encrypted if institution else None
    if institution is None or stored is None or box.decrypt(stored) not in replaces:
        return False
    institution.worldshare_refresh_token_encrypted = box.encrypt(refresh_token)
    institution.worldshare_refresh_token_expires_at = expires_at
    session.add(institution)
    session.flush()
    return True


def stored_refresh_token(session: Session, box: SecretBox, institution_code: str) -> str | None:
    stored = session.exec(
        select(Institution.worldshare_refresh_token_encrypted).where(
            Institution.code == institution_code
        )
    ).first()
    return box.decrypt(stored) if stored else None
