"""Builders for the records tests start from, through the real service functions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from app.config import Settings
from app.db import write_session
from app.institutions import service
from app.institutions.models import Institution
from app.institutions.schemas import InstitutionCreate
from app.institutions.secrets import load_secret_box


def make_institution(
    engine: Engine, settings: Settings, code: str = "UNIV", **groups: Any
) -> Institution:
    data = {"code": code, "name": f"University {code}", **groups}
    with write_session(engine) as session:
        institution = service.create_institution(
            session,
            load_secret_box(settings),
            InstitutionCreate.model_validate(data),
            actor=service.Actor("test"),
        )
        session.commit()
    return institution


def make_token(
    engine: Engine,
    scopes: list[str],
    institution: Institution | None = None,
    name: str = "test",
    expires_at: datetime | None = None,
) -> str:
    with write_session(engine) as session:
        _token, plain = service.create_token(
            session, name=name, scopes=scopes, institution=institution, expires_at=expires_at
        )
        session.commit()
    return plain


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# The library's own address, which OCLC requires on a create (never a patron's).
LIBRARY_ADDRESS = {"attention": "Interlibrary Loan", "address1": "1 University Ave"}


def sandbox_worldshare(sandbox_url: str) -> dict[str, Any]:
    """An institution's `worldshare` group for the WorldShare sandbox served at `sandbox_url`."""
    return {
        "base_url": f"{sandbox_url}/ILL",
        "token_url": f"{sandbox_url}/oauth/token",
        "scope": "WorldShareILL",
        "key": "sandbox-key",
        "secret": "sandbox-secret",
        "institution_id": "128807",
        "billing_address": LIBRARY_ADDRESS,
    }
