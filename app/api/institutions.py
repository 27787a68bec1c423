"""Institutions (tenants): admin scope. Secrets are write-only; every change is logged."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status
from sqlalchemy.exc import IntegrityError

from app.api.deps import (
    Admin,
    AllowedHosts,
    Box,
    DbEngine,
    ReadSession,
    actor_of,
    ensure_visible,
)
from app.api.pagination import decode_cursor, encode_cursor
from app.api.routing import AuthFirstRoute
from app.db import write_session
from app.errors import ERROR_RESPONSES, Conflict, Forbidden
from app.institutions import service
from app.institutions.schemas import (
    InstitutionChange,
    InstitutionChangePage,
    InstitutionCreate,
    InstitutionPublic,
    InstitutionUpdate,
)

router = APIRouter(
    prefix="/api/v1/institutions",
    tags=["institutions"],
    responses=ERROR_RESPONSES,
    route_class=AuthFirstRoute,
)

CodePath = Annotated[str, Path(max_length=64)]


@router.post("", status_code=status.HTTP_201_CREATED)
def create_institution(
    body: InstitutionCreate, token: Admin, engine: DbEngine, box: Box, allowed: AllowedHosts
) -> InstitutionPublic:
    if token.institution_id is not None:
        raise Forbidden("a token bound to one institution cannot create institutions")
    try:
        with write_session(engine) as session:
            institution = service.create_institution(
                session, box, body, actor=actor_of(token), allowed_hosts=allowed
            )
            session.commit()
    except IntegrityError:
        # Lost a race with a create of the same code (the check above it saw none).
        raise Conflict(f"institution {body.code!r} already exists") from None
    return service.to_public(institution, box)


@router.get("")
def list_institutions(token: Admin, session: ReadSession, box: Box) -> list[InstitutionPublic]:
    return [
        service.to_public(i, box)
        for i in service.list_institutions(session, only_id=token.institution_id)
    ]


@router.get("/{code}")
def get_institution(
    code: CodePath, token: Admin, session: ReadSession, box: Box
) -> InstitutionPublic:
    institution = service.get_by_code(session, code)
    ensure_visible(token, institution)
    return service.to_public(institution, box)


@router.patch("/{code}")
def update_institution(
    code: CodePath,
    body: InstitutionUpdate,
    token: Admin,
    engine: DbEngine,
    box: Box,
    allowed: AllowedHosts,
) -> InstitutionPublic:
    """Change the settings named. Changing a URL of `alma` or `worldshare` requires every secret
    that group has set to be given again in the same request (422 `secrets_required`)."""
    with write_session(engine) as session:
        institution = service.get_by_code(session, code)
        ensure_visible(token, institution)
        service.update_institution(
            session, box, institution, body, actor=actor_of(token), allowed_hosts=allowed
        )
        session.commit()
        return service.to_public(institution, box)


@router.get("/{code}/audit")
def list_changes(
    code: CodePath,
    token: Admin,
    session: ReadSession,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> InstitutionChangePage:
    """Who changed which settings, and when, newest first (field names only, never values)."""
    institution = service.get_by_code(session, code)
    ensure_visible(token, institution)
    rows = service.list_changes(
        session, institution, before_id=decode_cursor(cursor), limit=limit + 1
    )
    page = rows[:limit]
    last_id = page[-1].id if page else None
    return InstitutionChangePage(
        items=[InstitutionChange.model_validate(row, from_attributes=True) for row in page],
        next_cursor=encode_cursor(last_id) if len(rows) > limit and last_id else None,
    )
