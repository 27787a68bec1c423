"""Institutions (tenants): admin scope. Secrets are write-only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status
from sqlalchemy.exc import IntegrityError

from app.api.deps import Admin, Box, DbEngine, ReadSession, ensure_visible
from app.api.routing import AuthFirstRoute
from app.db import write_session
from app.errors import ERROR_RESPONSES, Conflict, Forbidden
from app.institutions import service
from app.institutions.schemas import InstitutionCreate, InstitutionPublic, InstitutionUpdate

router = APIRouter(
    prefix="/api/v1/institutions",
    tags=["institutions"],
    responses=ERROR_RESPONSES,
    route_class=AuthFirstRoute,
)

CodePath = Annotated[str, Path(max_length=64)]


@router.post("", status_code=status.HTTP_201_CREATED)
def create_institution(
    body: InstitutionCreate, token: Admin, engine: DbEngine, box: Box
) -> InstitutionPublic:
    if token.institution_id is not None:
        raise Forbidden("a token bound to one institution cannot create institutions")
    try:
        with write_session(engine) as session:
            institution = service.create_institution(session, box, body)
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
    code: CodePath, body: InstitutionUpdate, token: Admin, engine: DbEngine, box: Box
) -> InstitutionPublic:
    with write_session(engine) as session:
        institution = service.get_by_code(session, code)
        ensure_visible(token, institution)
        service.update_institution(session, box, institution, body)
        session.commit()
        return service.to_public(institution, box)
