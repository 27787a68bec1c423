"""API tokens for operators: list them, revoke one. Values and hashes are never shown."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from app.api.deps import Admin, DbEngine, ReadSession
from app.api.pagination import MAX_ID
from app.api.routing import AuthFirstRoute
from app.db import write_session
from app.errors import ERROR_RESPONSES
from app.institutions import service
from app.institutions.schemas import TokenPublic

router = APIRouter(
    prefix="/api/v1/tokens",
    tags=["tokens"],
    responses=ERROR_RESPONSES,
    route_class=AuthFirstRoute,
)

log = logging.getLogger("illbridge.auth")


@router.get("")
def list_tokens(token: Admin, session: ReadSession) -> list[TokenPublic]:
    """Every token; a token bound to one institution sees that institution's tokens only."""
    return service.list_tokens(session, institution_id=token.institution_id)


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=MAX_ID)], token: Admin, engine: DbEngine
) -> Response:
    """Revoke a token at once (revoking it again is no error); it answers 401 from then on."""
    with write_session(engine) as session:
        service.revoke_token(session, token_id, institution_id=token.institution_id)
        session.commit()
    log.info("api_token_revoked", extra={"revoked_id": token_id, "by": token.name})
    return Response(status_code=status.HTTP_204_NO_CONTENT)
