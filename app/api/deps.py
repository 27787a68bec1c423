"""Dependencies shared by the routers: the process's runtime, sessions, and bearer-token auth."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from app.db import new_read_session, write_session
from app.errors import Forbidden, Unauthorized
from app.institutions.models import Institution
from app.institutions.secrets import SecretBox
from app.institutions.service import (
    Actor,
    Caller,
    authenticate,
    institution_id_by_code,
    institution_not_found,
    record_token_use,
    use_is_stale,
)
from app.outbound_hosts import allowed_host_patterns
from app.runtime import Runtime
from app.timeutil import utcnow

log = logging.getLogger("illbridge.auth")

_bearer = HTTPBearer(
    auto_error=False,
    description="A token from `illbridge token create`. Each operation names the scope it needs;"
    " `admin` implies the others.",
)


async def get_runtime(request: Request) -> Runtime:
    # The dependencies that only reach an object are coroutines: FastAPI runs a plain `def`
    # dependency on the thread pool, one thread hop per dependency per request.
    runtime: Runtime = request.app.state.services.runtime
    return runtime


AppRuntime = Annotated[Runtime, Depends(get_runtime)]


async def get_wake(request: Request) -> Callable[[], None]:
    """Nudges the in-process worker (if any) to claim new jobs now rather than at its next poll."""
    wake: Callable[[], None] = request.app.state.services.wake_worker
    return wake


WakeWorker = Annotated[Callable[[], None], Depends(get_wake)]


async def get_engine(runtime: AppRuntime) -> Engine:
    return runtime.engine


async def get_box(runtime: AppRuntime) -> SecretBox:
    return runtime.secrets


async def get_read_session(
    engine: Annotated[Engine, Depends(get_engine)],
) -> AsyncIterator[Session]:
    # Opened on the event loop (no I/O), closed on the thread pool (a rollback): one thread hop
    # per request fewer than a plain generator, which FastAPI enters on the pool too.
    session = new_read_session(engine)
    try:
        yield session
    finally:
        await run_in_threadpool(session.close)


async def get_allowed_hosts(runtime: AppRuntime) -> tuple[str, ...]:
    return allowed_host_patterns(runtime.settings)


ReadSession = Annotated[Session, Depends(get_read_session)]
DbEngine = Annotated[Engine, Depends(get_engine)]
Box = Annotated[SecretBox, Depends(get_box)]
AllowedHosts = Annotated[tuple[str, ...], Depends(get_allowed_hosts)]


def authorize(
    security_scopes: SecurityScopes,
    session: ReadSession,
    engine: DbEngine,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """Admits a token carrying the scope the route declares (401 without one, 403 without it).

    Declared with `Security(authorize, scopes=[...])`, so the OpenAPI document names each
    operation's scope in its security requirement.
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("a bearer token is required")
    now = utcnow()
    token = authenticate(session, credentials.credentials, now=now)
    for scope in security_scopes.scopes:
        if not token.has_scope(scope):
            raise Forbidden(f"this token lacks the {scope!r} scope")
    if use_is_stale(token, now):
        _record_use(engine, token, now)
    return token


def _record_use(engine: Engine, token: Caller, now: datetime) -> None:
    """A token's last use, in a short write of its own; a failure costs the stamp, not the call."""
    try:
        with write_session(engine) as session:
            record_token_use(session, token.id, now)
            session.commit()
    except SQLAlchemyError as exc:
        log.warning("token_use_not_recorded", extra={"error_type": type(exc).__name__})


def actor_of(token: Caller) -> Actor:
    return Actor(token.name, token.id)


def ensure_visible(token: Caller, institution: Institution) -> None:
    """A token bound to one institution sees nothing of another: the 404 of a missing one."""
    if token.institution_id is not None and token.institution_id != institution.id:
        raise institution_not_found(institution.code)


def institution_in_view(session: Session, token: Caller, code: str) -> int:
    """The id of the institution a list is asked for, by its code, if the token may see it."""
    institution_id = institution_id_by_code(session, code)
    if token.institution_id not in (None, institution_id):
        raise institution_not_found(code)
    return institution_id


Reader = Annotated[Caller, Security(authorize, scopes=["requests:read"])]
Writer = Annotated[Caller, Security(authorize, scopes=["requests:write"])]
Admin = Annotated[Caller, Security(authorize, scopes=["admin"])]
