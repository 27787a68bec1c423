"""Dependencies shared by the routers: the process's runtime, sessions, and bearer-token auth."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.db import read_session
from app.errors import Forbidden, NotFound, Unauthorized
from app.institutions.models import ApiToken, Institution
from app.institutions.secrets import SecretBox
from app.institutions.service import authenticate
from app.runtime import Runtime

_bearer = HTTPBearer(
    auto_error=False,
    description="A token from `illbridge token create`. Each operation names the scope it needs;"
    " `admin` implies the others.",
)


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.services.runtime
    return runtime


AppRuntime = Annotated[Runtime, Depends(get_runtime)]


def get_wake(request: Request) -> Callable[[], None]:
    """Nudges the in-process worker (if any) to claim new jobs now rather than at its next poll."""
    wake: Callable[[], None] = request.app.state.services.wake_worker
    return wake


WakeWorker = Annotated[Callable[[], None], Depends(get_wake)]


def get_engine(runtime: AppRuntime) -> Engine:
    return runtime.engine


def get_box(runtime: AppRuntime) -> SecretBox:
    return runtime.secrets


def get_read_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    with read_session(engine) as session:
        yield session


ReadSession = Annotated[Session, Depends(get_read_session)]
DbEngine = Annotated[Engine, Depends(get_engine)]
Box = Annotated[SecretBox, Depends(get_box)]


def authorize(
    security_scopes: SecurityScopes,
    session: ReadSession,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiToken:
    """Admits a token carrying the scope the route declares (401 without one, 403 without it).

    Declared with `Security(authorize, scopes=[...])`, so the OpenAPI document names each
    operation's scope in its security requirement.
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("a bearer token is required")
    token = authenticate(session, credentials.credentials)
    for scope in security_scopes.scopes:
        if not token.has_scope(scope):
            raise Forbidden(f"this token lacks the {scope!r} scope")
    return token


def ensure_visible(token: ApiToken, institution: Institution) -> None:
    """A token bound to one institution sees nothing of another: 404, not 403."""
    if token.institution_id is not None and token.institution_id != institution.id:
        raise NotFound("not found")


Reader = Annotated[ApiToken, Security(authorize, scopes=["requests:read"])]
Writer = Annotated[ApiToken, Security(authorize, scopes=["requests:write"])]
Admin = Annotated[ApiToken, Security(authorize, scopes=["admin"])]
