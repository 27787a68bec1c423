"""Institutions and API tokens: create, change, read, authenticate. Callers commit.

Every change to an institution is written to its change log (who, when, which fields — never a
value). Moving a URL takes the secrets that go to it: a stolen admin token cannot point an
institution's credentials at a server of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import bindparam, or_, update
from sqlalchemy import select as select_columns
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from app.errors import AppError, Conflict, NotFound, Unauthorized
from app.institutions.models import (
    SCOPES,
    SECRET_COLUMNS,
    ApiToken,
    AuditAction,
    Institution,
    InstitutionAudit,
    scope_granted,
)
from app.institutions.schemas import (
    AgencyIdOut,
    AlmaSettingsIn,
    AlmaSettingsOut,
    InstitutionCreate,
    InstitutionPublic,
    InstitutionUpdate,
    PolicyIn,
    PolicyOut,
    TokenPublic,
    WorldShareSettingsIn,
    WorldShareSettingsOut,
)
from app.institutions.secrets import (
    SecretBox,
    hash_api_token,
    new_api_token,
    rotate_stored_secrets,
)
from app.institutions.worldshare_settings import worldshare_missing
from app.outbound_hosts import host_allowed, refusal
from app.timeutil import utcnow

log = logging.getLogger("illbridge.institutions")

# Each group's URLs, and the columns of the secrets that group's calls carry.
# Policy settings: the same name on the API's `policy` group and on the institution row.
POLICY_FIELDS = (
    "cancel_reason",
    "stale_after_days",
    "renewal_answer_days",
    "auto_cleanup",
    "patron_due_date_offset_days",
    "retention_days",
    "poll_interval_seconds",
    "status_map",
    "close_on",
)
GROUP_URLS = {"alma": ("api_base_url", "iso18626_url"), "worldshare": ("base_url", "token_url")}
GROUP_SECRETS = {
    "alma": {
        "api_key": "alma_api_key_encrypted",
        "webhook_secrets": "alma_webhook_secrets_encrypted",
        "iso18626_security_code": "alma_iso18626_security_code_encrypted",
    },
    "worldshare": {"key": "worldshare_key_encrypted", "secret": "worldshare_secret_encrypted"},
}
# The setting each column holds, as the API names it (for the change log).
FIELD_OF_COLUMN = {
    "name": "name",
    "active": "active",
    "alma_api_base_url": "alma.api_base_url",
    "alma_iso18626_url": "alma.iso18626_url",
    "alma_agency_id_type": "alma.agency_id",
    "alma_agency_id_value": "alma.agency_id",
    "bridge_agency_id_type": "alma.bridge_agency_id",
    "bridge_agency_id_value": "alma.bridge_agency_id",
    "alma_item_barcode_prefix": "alma.item_barcode_prefix",
    "alma_iso18626_profile": "alma.iso18626_profile",
    "alma_resource_sharing_libraries": "alma.resource_sharing_libraries",
    "worldshare_base_url": "worldshare.base_url",
    "worldshare_token_url": "worldshare.token_url",
    "worldshare_scope": "worldshare.scope",
    "worldshare_institution_id": "worldshare.institution_id",
    "worldshare_daily_call_budget": "worldshare.daily_call_budget",
    **{name: f"policy.{name}" for name in POLICY_FIELDS},
    **SECRET_COLUMNS,
}
# A token's last use is recorded at most this often, so reads do not all become writes.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class Actor:
    """Who changes an institution, for its change log: a token (by name and id) or the CLI."""

    name: str
    token_id: int | None = None


CLI = Actor("cli")


def institution_not_found(code: str) -> NotFound:
    """One answer for an institution that does not exist and one a token may not see."""
    return NotFound(f"no institution {code!r}")


_INSTITUTIONS = Institution.__table__  # type: ignore[attr-defined]
_INSTITUTION_ID_BY_CODE = select_columns(_INSTITUTIONS.c.id).where(
    _INSTITUTIONS.c.code == bindparam("code")
)


_CODES_BY_ID = select_columns(_INSTITUTIONS.c.id, _INSTITUTIONS.c.code).where(
    _INSTITUTIONS.c.id.in_(bindparam("ids", expanding=True))
)


def get_by_code(session: Session, code: str) -> Institution:
    institution = session.exec(select(Institution).where(Institution.code == code)).first()
    if institution is None:
        raise institution_not_found(code)
    return institution


def institution_id_by_code(session: Session, code: str) -> int:
    found = session.execute(_INSTITUTION_ID_BY_CODE, {"code": code}).scalar()
    if found is None:
        raise institution_not_found(code)
    return int(found)


def codes_by_id(session: Session, ids: set[int]) -> dict[int, str]:
    """The codes of the institutions `ids`, for showing records that name them by id."""
    if not ids:
        return {}
    rows = session.execute(_CODES_BY_ID, {"ids": sorted(ids)})
    return {institution_id: code for institution_id, code in rows}


def list_institutions(session: Session, *, only_id: int | None = None) -> list[Institution]:
    query = select(Institution).order_by(Institution.code)
    if only_id is not None:
        query = query.where(Institution.id == only_id)
    return list(session.exec(query))


def warn_of_iso18626_opt_outs(session: Session) -> None:
    """At start-up, name every institution that takes ISO 18626 messages without a code."""
    try:
        codes = session.exec(
            select(Institution.code).where(Institution.alma_iso18626_allow_without_code)
        ).all()
    except SQLAlchemyError as exc:
        # The process still starts (readiness reports the database); the check waits a restart.
        log.warning("iso18626_opt_outs_unchecked", extra={"error_type": type(exc).__name__})
        return
    for code in codes:
        log.warning("iso18626_security_code_not_required", extra={"institution": code})


def create_institution(
    session: Session,
    box: SecretBox,
    data: InstitutionCreate,
    *,
    actor: Actor,
    allowed_hosts: Sequence[str] = (),
) -> Institution:
    """`allowed_hosts`: the outbound host patterns every URL must match (none: any host)."""
    _check_hosts({"alma": data.alma, "worldshare": data.worldshare}, allowed_hosts)
    if session.exec(select(Institution.id).where(Institution.code == data.code)).first():
        raise Conflict(f"institution {data.code!r} already exists")
    institution = Institution(code=data.code, name=data.name)
    blank = _settings_of(institution)
    _apply_alma(institution, box, data.alma)
    _apply_worldshare(institution, box, data.worldshare)
    _apply_policy(institution, data.policy)
    session.add(institution)
    session.flush()
    fields = ["code", "name", *_changed_fields(blank, _settings_of(institution))]
    _log_change(session, institution, actor, AuditAction.CREATED, fields)
    return institution


def update_institution(
    session: Session,
    box: SecretBox,
    institution: Institution,
    data: InstitutionUpdate,
    *,
    actor: Actor,
    allowed_hosts: Sequence[str] = (),
) -> Institution:
    """Apply the fields `data` names; refused whole (422) if a URL moves without its secrets."""
    groups = {"alma": data.alma, "worldshare": data.worldshare}
    _check_hosts(groups, allowed_hosts)
    _require_secrets_with_moved_urls(institution, groups)
    before = _settings_of(institution)
    if data.name is not None:
        institution.name = data.name
    if data.active is not None:
        institution.active = data.active
    if data.alma is not None:
        _apply_alma(institution, box, data.alma)
    if data.worldshare is not None:
        _apply_worldshare(institution, box, data.worldshare)
    if data.policy is not None:
        _apply_policy(institution, data.policy)
    changed = _changed_fields(before, _settings_of(institution))
    if changed:
        institution.updated_at = utcnow()
        session.add(institution)
        session.flush()
        _log_change(session, institution, actor, AuditAction.UPDATED, changed)
    return institution


def rotate_secrets(session: Session, box: SecretBox, *, actor: Actor) -> int:
    """Re-encrypt every stored secret with the newest key; how many values were rewritten."""
    rewritten = 0
    for institution, fields in rotate_stored_secrets(session, box):
        _log_change(session, institution, actor, AuditAction.SECRETS_REENCRYPTED, fields)
        rewritten += len(fields)
    return rewritten


def list_changes(
    session: Session, institution: Institution, *, before_id: int | None, limit: int
) -> list[InstitutionAudit]:
    """The institution's change log, newest first."""
    query = select(InstitutionAudit).where(InstitutionAudit.institution_id == institution.id)
    if before_id is not None:
        query = query.where(col(InstitutionAudit.id) < before_id)
    return list(session.exec(query.order_by(col(InstitutionAudit.id).desc()).limit(limit)))


def _log_change(
    session: Session,
    institution: Institution,
    actor: Actor,
    action: AuditAction,
    fields: list[str],
) -> None:
    assert institution.id is not None
    session.add(
        InstitutionAudit(
            institution_id=institution.id,
            actor=actor.name,
            token_id=actor.token_id,
            action=action.value,
            fields=fields,
        )
    )
    session.flush()


def _settings_of(institution: Institution) -> dict[str, Any]:
    return {column: getattr(institution, column) for column in FIELD_OF_COLUMN}


def _changed_fields(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    # A secret given again counts as changed: its ciphertext is new even for the same value.
    return sorted({FIELD_OF_COLUMN[c] for c in FIELD_OF_COLUMN if before[c] != after[c]})


def _check_hosts(groups: Mapping[str, BaseModel | None], allowed_hosts: Sequence[str]) -> None:
    for group_name, group in groups.items():
        if group is None:
            continue
        for name in GROUP_URLS[group_name]:
            value = getattr(group, name)
            if value is not None and not host_allowed(str(value), allowed_hosts):
                raise AppError(
                    f"{group_name}.{name}: {refusal(str(value))}",
                    code="host_not_allowed",
                    status_code=422,
                )


def _require_secrets_with_moved_urls(
    institution: Institution, groups: Mapping[str, BaseModel | None]
) -> None:
    """A URL that changes must come with every secret its group holds, given again."""
    for group_name, group in groups.items():
        if group is None:
            continue
        moved = [
            f"{group_name}.{name}"
            for name in GROUP_URLS[group_name]
            if getattr(group, name) is not None
            and _url(getattr(group, name)) != getattr(institution, f"{group_name}_{name}")
        ]
        missing = [
            f"{group_name}.{name}"
            for name, column in GROUP_SECRETS[group_name].items()
            if getattr(institution, column) is not None and getattr(group, name) is None
        ]
        if moved and missing:
            raise AppError(
                f"changing {', '.join(moved)} requires {', '.join(missing)} in the same request",
                code="secrets_required",
                status_code=422,
            )


def _apply_alma(institution: Institution, box: SecretBox, alma: AlmaSettingsIn) -> None:
    given = alma.model_fields_set
    if "api_base_url" in given:
        institution.alma_api_base_url = _url(alma.api_base_url)
    if alma.api_key is not None:
        institution.alma_api_key_encrypted = box.encrypt(alma.api_key.get_secret_value())
    if alma.webhook_secrets is not None:
        institution.alma_webhook_secrets_encrypted = box.encrypt_list(
            [s.get_secret_value() for s in alma.webhook_secrets]
        )
    if "iso18626_url" in given:
        institution.alma_iso18626_url = _url(alma.iso18626_url)
    if alma.iso18626_security_code is not None:
        institution.alma_iso18626_security_code_encrypted = box.encrypt(
            alma.iso18626_security_code.get_secret_value()
        )
    if alma.iso18626_allow_without_code is not None:
        institution.alma_iso18626_allow_without_code = alma.iso18626_allow_without_code
    if alma.agency_id is not None:
        institution.alma_agency_id_type = alma.agency_id.type
        institution.alma_agency_id_value = alma.agency_id.value
    if alma.bridge_agency_id is not None:
        institution.bridge_agency_id_type = alma.bridge_agency_id.type
        institution.bridge_agency_id_value = alma.bridge_agency_id.value
    if alma.item_barcode_prefix is not None:
        institution.alma_item_barcode_prefix = alma.item_barcode_prefix
    if alma.iso18626_profile is not None:
        institution.alma_iso18626_profile = alma.iso18626_profile
    if alma.resource_sharing_libraries is not None:
        institution.alma_resource_sharing_libraries = list(alma.resource_sharing_libraries)


def _apply_worldshare(institution: Institution, box: SecretBox, ws: WorldShareSettingsIn) -> None:
    given = ws.model_fields_set
    if "base_url" in given:
        institution.worldshare_base_url = _url(ws.base_url)
    if "token_url" in given:
        institution.worldshare_token_url = _url(ws.token_url)
    if "scope" in given:
        institution.worldshare_scope = ws.scope
    if "institution_id" in given:
        institution.worldshare_institution_id = ws.institution_id
    if ws.key is not None:
        institution.worldshare_key_encrypted = box.encrypt(ws.key.get_secret_value())
    if ws.secret is not None:
        institution.worldshare_secret_encrypted = box.encrypt(ws.secret.get_secret_value())
    if "refresh_token" in given:
        token = ws.refresh_token.get_secret_value() if ws.refresh_token else None
        institution.worldshare_refresh_token_encrypted = box.encrypt(token) if token else None
        institution.worldshare_refresh_token_expires_at = None
    for name in ("billing_address", "delivery_address", "max_cost"):
        if name in given:
            value = getattr(ws, name)
            stored = value.model_dump(mode="json", exclude_none=True) if value else None
            setattr(institution, f"worldshare_{name}", stored)
    for name in ("delivery_email", "lenders", "billing_types"):
        if name in given:
            setattr(institution, f"worldshare_{name}", getattr(ws, name) or None)
    if ws.daily_call_budget is not None:
        institution.worldshare_daily_call_budget = ws.daily_call_budget


def _apply_policy(institution: Institution, policy: PolicyIn) -> None:
    for name in POLICY_FIELDS:
        value = getattr(policy, name)
        if value is not None:
            setattr(institution, name, value)


def _url(value: object | None) -> str | None:
    return str(value).rstrip("/") if value is not None else None


def to_public(institution: Institution, box: SecretBox) -> InstitutionPublic:
    def agency(kind: str | None, value: str | None) -> AgencyIdOut | None:
        return AgencyIdOut(type=kind, value=value) if kind and value else None

    webhook_secrets = 0
    if institution.alma_webhook_secrets_encrypted:
        webhook_secrets = len(box.decrypt_list(institution.alma_webhook_secrets_encrypted))
    return InstitutionPublic(
        code=institution.code,
        name=institution.name,
        active=institution.active,
        alma=AlmaSettingsOut(
            api_base_url=institution.alma_api_base_url,
            api_key_set=institution.alma_api_key_encrypted is not None,
            webhook_secrets_set=webhook_secrets,
            iso18626_url=institution.alma_iso18626_url,
            iso18626_security_code_set=institution.alma_iso18626_security_code_encrypted
            is not None,
            iso18626_allow_without_code=institution.alma_iso18626_allow_without_code,
            agency_id=agency(institution.alma_agency_id_type, institution.alma_agency_id_value),
            bridge_agency_id=agency(
                institution.bridge_agency_id_type, institution.bridge_agency_id_value
            ),
            item_barcode_prefix=institution.alma_item_barcode_prefix,
            iso18626_profile=institution.alma_iso18626_profile,
            resource_sharing_libraries=institution.alma_resource_sharing_libraries or [],
        ),
        worldshare=WorldShareSettingsOut(
            base_url=institution.worldshare_base_url,
            token_url=institution.worldshare_token_url,
            scope=institution.worldshare_scope,
            key_set=institution.worldshare_key_encrypted is not None,
            secret_set=institution.worldshare_secret_encrypted is not None,
            institution_id=institution.worldshare_institution_id,
            refresh_token_set=institution.worldshare_refresh_token_encrypted is not None,
            refresh_token_expires_at=institution.worldshare_refresh_token_expires_at,
            billing_address=institution.worldshare_billing_address,
            delivery_address=institution.worldshare_delivery_address,
            delivery_email=institution.worldshare_delivery_email,
            lenders=institution.worldshare_lenders or [],
            max_cost=institution.worldshare_max_cost,
            billing_types=institution.worldshare_billing_types or [],
            daily_call_budget=institution.worldshare_daily_call_budget,
            complete=not worldshare_missing(institution),
            missing=worldshare_missing(institution),
        ),
        policy=PolicyOut(
            cancel_reason=institution.cancel_reason,
            stale_after_days=institution.stale_after_days,
            renewal_answer_days=institution.renewal_answer_days,
            auto_cleanup=institution.auto_cleanup,
            patron_due_date_offset_days=institution.patron_due_date_offset_days,
            retention_days=institution.retention_days,
            poll_interval_seconds=institution.poll_interval_seconds,
            status_map=institution.status_map,
            close_on=institution.close_on,
        ),
        created_at=institution.created_at,
        updated_at=institution.updated_at,
    )


def create_token(
    session: Session,
    *,
    name: str,
    scopes: list[str],
    institution: Institution | None,
    expires_at: datetime | None = None,
) -> tuple[ApiToken, str]:
    """A new token; the plain value is returned once and only its hash is stored."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {unknown}; choose from {list(SCOPES)}")
    plain = new_api_token()
    token = ApiToken(
        name=name,
        token_hash=hash_api_token(plain),
        scopes=sorted(set(scopes)),
        institution_id=institution.id if institution else None,
        expires_at=expires_at,
    )
    session.add(token)
    session.flush()
    return token, plain


@dataclass(frozen=True)
class Caller:
    """A presented token that is valid now: what the routes need of it, read as plain columns."""

    id: int
    name: str
    scopes: tuple[str, ...]
    institution_id: int | None
    expires_at: datetime | None
    last_used_at: datetime | None

    def has_scope(self, scope: str) -> bool:
        return scope_granted(self.scopes, scope)


_TOKENS = ApiToken.__table__  # type: ignore[attr-defined]
# Built once: every authenticated call runs it, by the unique index on the hash.
_TOKEN_BY_HASH = select_columns(
    _TOKENS.c.id,
    _TOKENS.c.name,
    _TOKENS.c.scopes,
    _TOKENS.c.institution_id,
    _TOKENS.c.revoked_at,
    _TOKENS.c.expires_at,
    _TOKENS.c.last_used_at,
).where(_TOKENS.c.token_hash == bindparam("token_hash"))


def authenticate(session: Session, bearer: str, *, now: datetime | None = None) -> Caller:
    """Read on every call, never cached: a revocation or an expiry holds from the next call."""
    row = session.execute(_TOKEN_BY_HASH, {"token_hash": hash_api_token(bearer)}).first()
    if row is None or row.revoked_at is not None:
        raise Unauthorized("invalid or revoked token")
    if row.expires_at is not None and row.expires_at <= (now or utcnow()):
        raise Unauthorized("token expired")
    return Caller(
        id=row.id,
        name=row.name,
        scopes=tuple(row.scopes),
        institution_id=row.institution_id,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
    )


def use_is_stale(token: Caller, now: datetime) -> bool:
    """Whether the token's recorded last use is old enough to record this one."""
    return token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION


def record_token_use(session: Session, token_id: int, now: datetime) -> None:
    """Stamp the last use, unless another request (or replica) did within the resolution."""
    session.execute(
        update(ApiToken)
        .where(col(ApiToken.id) == token_id)
        .where(
            or_(
                col(ApiToken.last_used_at).is_(None),
                col(ApiToken.last_used_at) <= now - LAST_USED_RESOLUTION,
            )
        )
        .values(last_used_at=now)
    )


def list_tokens(session: Session, *, institution_id: int | None) -> list[TokenPublic]:
    """Every token, or (for a token bound to one institution) that institution's only."""
    query = (
        select(ApiToken, Institution.code)
        .join(Institution, col(ApiToken.institution_id) == col(Institution.id), isouter=True)
        .order_by(col(ApiToken.id))
    )
    if institution_id is not None:
        query = query.where(ApiToken.institution_id == institution_id)
    return [token_public(token, code) for token, code in session.exec(query)]


def revoke_token(session: Session, token_id: int, *, institution_id: int | None) -> ApiToken:
    """Revoke a token (again is no error); one out of the caller's reach is not found."""
    token = session.get(ApiToken, token_id)
    if token is None or institution_id not in (None, token.institution_id):
        raise NotFound(f"no token {token_id}")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.add(token)
        session.flush()
    return token


def token_public(token: ApiToken, institution_code: str | None) -> TokenPublic:
    """What may be shown of a token: never its hash."""
    assert token.id is not None
    return TokenPublic(
        id=token.id,
        name=token.name,
        scopes=token.scopes,
        institution=institution_code,
        created_at=token.created_at,
        expires_at=token.expires_at,
        last_used_at=token.last_used_at,
        revoked_at=token.revoked_at,
    )
