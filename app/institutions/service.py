"""Institutions and API tokens: create, change, read, authenticate. Callers commit."""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from app.errors import Conflict, NotFound, Unauthorized
from app.institutions.models import SCOPES, ApiToken, Institution
from app.institutions.schemas import (
    AgencyIdOut,
    AlmaSettingsIn,
    AlmaSettingsOut,
    InstitutionCreate,
    InstitutionPublic,
    InstitutionUpdate,
    PolicyIn,
    PolicyOut,
    WorldShareSettingsIn,
    WorldShareSettingsOut,
)
from app.institutions.secrets import SecretBox, hash_api_token, new_api_token
from app.institutions.worldshare_settings import worldshare_missing
from app.timeutil import utcnow

log = logging.getLogger("illbridge.institutions")


def get_by_code(session: Session, code: str) -> Institution:
    institution = session.exec(select(Institution).where(Institution.code == code)).first()
    if institution is None:
        raise NotFound(f"no institution {code!r}")
    return institution


def codes_by_id(session: Session, ids: set[int]) -> dict[int, str]:
    """The codes of the institutions `ids`, for showing records that name them by id."""
    if not ids:
        return {}
    rows = session.exec(
        select(Institution.id, Institution.code).where(col(Institution.id).in_(ids))
    )
    return {institution_id: code for institution_id, code in rows if institution_id is not None}


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


def create_institution(session: Session, box: SecretBox, data: InstitutionCreate) -> Institution:
    if session.exec(select(Institution.id).where(Institution.code == data.code)).first():
        raise Conflict(f"institution {data.code!r} already exists")
    institution = Institution(code=data.code, name=data.name)
    _apply_alma(institution, box, data.alma)
    _apply_worldshare(institution, box, data.worldshare)
    _apply_policy(institution, data.policy)
    session.add(institution)
    session.flush()
    return institution


def update_institution(
    session: Session, box: SecretBox, institution: Institution, data: InstitutionUpdate
) -> Institution:
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
    institution.updated_at = utcnow()
    session.add(institution)
    session.flush()
    return institution


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


def _apply_policy(institution: Institution, policy: PolicyIn) -> None:
    for name in (
        "cancel_reason",
        "stale_after_days",
        "patron_due_date_offset_days",
        "retention_days",
        "poll_interval_seconds",
        "status_map",
    ):
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
            complete=not worldshare_missing(institution),
            missing=worldshare_missing(institution),
        ),
        policy=PolicyOut(
            cancel_reason=institution.cancel_reason,
            stale_after_days=institution.stale_after_days,
            patron_due_date_offset_days=institution.patron_due_date_offset_days,
            retention_days=institution.retention_days,
            poll_interval_seconds=institution.poll_interval_seconds,
            status_map=institution.status_map,
        ),
        created_at=institution.created_at,
        updated_at=institution.updated_at,
    )


def create_token(
    session: Session, *, name: str, scopes: list[str], institution: Institution | None
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
    )
    session.add(token)
    session.flush()
    return token, plain


def authenticate(session: Session, bearer: str) -> ApiToken:
    token = session.exec(
        select(ApiToken).where(ApiToken.token_hash == hash_api_token(bearer))
    ).first()
    if token is None or token.revoked_at is not None:
        raise Unauthorized("invalid or revoked token")
    return token
