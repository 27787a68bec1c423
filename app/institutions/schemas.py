"""API shapes for institutions and tokens. Secrets are accepted on write and never returned."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    Field,
    SecretStr,
    field_validator,
)

from app.borrowing.states import CloseOn, LenderOutcome
from app.institutions.worldshare_settings import (
    BillingTypes,
    DeliveryEmail,
    Lenders,
    MaximumCost,
    WorldShareAddress,
    no_repeats,
)
from app.validation import StrictInput

URL_MAX_CHARS = 500


def _fits_column(url: AnyHttpUrl) -> AnyHttpUrl:
    # Normalisation (percent-encoding, punycode) can lengthen what the client sent.
    if len(str(url)) > URL_MAX_CHARS:
        raise ValueError(f"the URL is longer than {URL_MAX_CHARS} characters once normalised")
    return url


def _no_user_info(url: AnyHttpUrl) -> AnyHttpUrl:
    # httpx would send them as a Basic header to whatever host the URL names.
    if url.username is not None or url.password is not None:
        raise ValueError("the URL must not carry a user name or password (user@host)")
    return url


Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
Url = Annotated[
    AnyHttpUrl,
    Field(max_length=URL_MAX_CHARS),
    AfterValidator(_fits_column),
    AfterValidator(_no_user_info),
]
Short = Annotated[str, Field(min_length=1, max_length=128)]
# The columns of agency id types and of the cancellation reason hold 64 characters.
Label = Annotated[str, Field(min_length=1, max_length=64)]
Secret = Annotated[SecretStr, Field(min_length=1, max_length=1000)]


class AgencyId(StrictInput):
    type: Label
    value: Short


class AlmaSettingsIn(StrictInput):
    api_base_url: Url | None = None
    api_key: Secret | None = None
    webhook_secrets: list[Secret] | None = Field(
        default=None, max_length=2, description="Two may be valid during a rotation"
    )
    iso18626_url: Url | None = None
    iso18626_security_code: Secret | None = Field(
        default=None,
        description="Alma's ISO 18626 messages must carry it as "
        "requestingAgencyAuthentication/securityCode",
    )
    iso18626_allow_without_code: bool | None = Field(
        default=None,
        description="Take ISO 18626 messages that carry no security code (default false); "
        "logged as a warning at start-up",
    )
    agency_id: AgencyId | None = Field(default=None, description="Alma's own ISO 18626 agency id")
    bridge_agency_id: AgencyId | None = Field(
        default=None, description="The agency id Alma knows the bridge by (the partner's code)"
    )
    iso18626_profile: Literal["alma", "expect_to_supply"] | None = Field(
        default=None,
        description="How this Alma speaks ISO 18626: alma (default: WillSupply after export) or "
        "expect_to_supply (a requester that reads ExpectToSupply)",
    )
    item_barcode_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{0,32}$")] | None = Field(
        default=None,
        description="Put before the item id Alma's temporary item gets (default ILL-), so it "
        "cannot collide with the library's own barcodes",
    )
    resource_sharing_libraries: (
        list[Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-.]+$")]]
        | None
    ) = Field(
        default=None,
        max_length=50,
        description="Alma library codes where borrowed temporary items are loaned: a LOAN "
        "webhook from one of them that matches no request is kept for staff",
    )


class WorldShareSettingsIn(StrictInput):
    base_url: Url | None = None
    token_url: Url | None = None
    scope: Short | None = None
    key: Secret | None = None
    secret: Secret | None = None
    institution_id: Annotated[str, Field(pattern=r"^[0-9]{1,12}$")] | None = None
    refresh_token: Secret | None = Field(
        default=None,
        description="A staff user's refresh token: tokens are then got with the refresh-token "
        "grant (OCLC's rotations are kept), else with client credentials; null removes it",
    )
    billing_address: WorldShareAddress | None = Field(
        default=None, description="The library's billing address; OCLC requires address1"
    )
    delivery_address: WorldShareAddress | None = Field(
        default=None, description="The library's delivery address"
    )
    delivery_email: DeliveryEmail | None = None
    lenders: Lenders | None = None
    max_cost: MaximumCost | None = None
    billing_types: BillingTypes | None = Field(
        default=None, description="OCLC's requesterBilling.billingTypes"
    )
    daily_call_budget: int | None = Field(
        default=None,
        ge=100,
        le=50000,
        description="Calls a rolling 24 hours the WSKey may make (polls, creates, tokens); "
        "polling is stretched to fit. OCLC refuses past about 50,000",
    )

    _lenders_once = field_validator("lenders")(no_repeats)


class PolicyIn(StrictInput):
    cancel_reason: Label | None = None
    stale_after_days: int | None = Field(default=None, ge=1, le=3650)
    renewal_answer_days: int | None = Field(
        default=None, ge=1, le=3650, description="A renewal asked and unanswered this long is stale"
    )
    auto_cleanup: bool | None = Field(
        default=None,
        description="Clean up stale requests periodically (default false); see /api/v1/cleanup",
    )
    patron_due_date_offset_days: int | None = Field(default=None, ge=0, le=365)
    retention_days: int | None = Field(default=None, ge=1, le=36500)
    poll_interval_seconds: int | None = Field(default=None, ge=1, le=7 * 86400)
    status_map: dict[Annotated[str, Field(max_length=64)], str] | None = Field(
        default=None,
        max_length=100,
        description="WorldShare requestStatus → outcome, overriding the defaults",
    )
    close_on: CloseOn | None = Field(
        default=None,
        description="When Alma is told LoanCompleted and closes its borrowing request: "
        "patron_return (the LOAN_RETURNED webhook: the loan scanned back in; the default), "
        "shipped_return (Alma's ShippedReturn) or lender_checkin (WorldShare shows the item "
        "returned or the request closed)",
    )

    @field_validator("status_map")
    @classmethod
    def _known_outcomes(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        allowed = {outcome.value for outcome in LenderOutcome}
        for status, outcome in value.items():
            if outcome not in allowed:
                raise ValueError(f"{status}: {outcome!r} is not one of {sorted(allowed)}")
        return {status.upper(): outcome for status, outcome in value.items()}


class InstitutionCreate(StrictInput):
    code: Code
    name: Annotated[str, Field(min_length=1, max_length=255)]
    alma: AlmaSettingsIn = Field(default_factory=AlmaSettingsIn)
    worldshare: WorldShareSettingsIn = Field(default_factory=WorldShareSettingsIn)
    policy: PolicyIn = Field(default_factory=PolicyIn)


class InstitutionUpdate(StrictInput):
    name: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    active: bool | None = None
    alma: AlmaSettingsIn | None = None
    worldshare: WorldShareSettingsIn | None = None
    policy: PolicyIn | None = None


class AgencyIdOut(BaseModel):
    type: str
    value: str


class AlmaSettingsOut(BaseModel):
    api_base_url: str | None
    api_key_set: bool
    webhook_secrets_set: int = Field(description="How many webhook secrets are configured")
    iso18626_url: str | None
    iso18626_security_code_set: bool
    iso18626_allow_without_code: bool
    agency_id: AgencyIdOut | None
    bridge_agency_id: AgencyIdOut | None
    item_barcode_prefix: str
    iso18626_profile: str
    resource_sharing_libraries: list[str]


class WorldShareSettingsOut(BaseModel):
    base_url: str | None
    token_url: str | None
    scope: str | None
    key_set: bool
    secret_set: bool
    institution_id: str | None
    refresh_token_set: bool = Field(description="Tokens come from the refresh-token grant")
    refresh_token_expires_at: datetime | None = Field(
        description="When OCLC said the stored refresh token lapses unless used"
    )
    billing_address: WorldShareAddress | None
    delivery_address: WorldShareAddress | None
    delivery_email: str | None
    lenders: list[int]
    max_cost: MaximumCost | None
    billing_types: list[str]
    daily_call_budget: int
    complete: bool = Field(description="Requests can be exported with these settings")
    missing: list[str] = Field(description="What an export needs and is not set")


class PolicyOut(BaseModel):
    cancel_reason: str
    stale_after_days: int
    renewal_answer_days: int
    auto_cleanup: bool
    patron_due_date_offset_days: int
    retention_days: int
    poll_interval_seconds: int
    status_map: dict[str, str]
    close_on: CloseOn


class InstitutionPublic(BaseModel):
    code: str
    name: str
    active: bool
    alma: AlmaSettingsOut
    worldshare: WorldShareSettingsOut
    policy: PolicyOut
    created_at: datetime
    updated_at: datetime


class InstitutionChange(BaseModel):
    """One entry of an institution's change log: which settings changed, never their values."""

    at: datetime
    actor: str = Field(description="The name of the token that made the change, or cli")
    token_id: int | None
    action: str = Field(description="created, updated or secrets_reencrypted")
    fields: list[str] = Field(description="The settings changed, e.g. worldshare.token_url")


class InstitutionChangePage(BaseModel):
    items: list[InstitutionChange]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at end")


class TokenPublic(BaseModel):
    """A bearer token as operators see it: never its value nor its hash."""

    id: int
    name: str
    scopes: list[str]
    institution: str | None = Field(description="The institution it is bound to, if any")
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = Field(description="Recorded to within a minute")
    revoked_at: datetime | None
