"""The operators' pages under `/ops`, and the landing page at `/`.

Server-rendered, no JavaScript needed. Reads use the API's read session; writes go through the
same service functions as the REST API and commit here, as the API's routes do.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError
from sqlmodel import Session, col, select

from app.api.deps import AppRuntime, ReadSession, WakeWorker
from app.api.pagination import MAX_ID
from app.api.tasks import decode_position, encode_position
from app.borrowing import queries, tasks
from app.borrowing.cleanup import CleanupBatch
from app.borrowing.models import BorrowingRequest
from app.borrowing.schemas import CleanupOrder, ResolveAttention
from app.borrowing.states import RequestState
from app.db import write_session
from app.errors import AppError, Conflict, Forbidden, NotFound, Unauthorized
from app.institutions.models import Institution
from app.institutions.service import authenticate, codes_by_id, get_by_code, record_token_use
from app.jobs import queue
from app.jobs.models import Job, JobStatus
from app.ops import read
from app.ops.session import (
    ADMIN_SCOPE,
    READ_SCOPE,
    SESSION_COOKIE,
    SIGN_IN_CSRF_COOKIE,
    WRITE_SCOPE,
    Operator,
    Signer,
    SignInRequired,
    check_sign_in_csrf,
    new_sign_in_csrf,
    operator_of,
)
from app.timeutil import utcnow
from app.workflows import cleanup, resolution
from app.workflows.task_list import LIST_KINDS, TaskFilter, list_tasks

HERE = Path(__file__).resolve().parent
log = logging.getLogger("illbridge.ops")
PAGE_SIZE = 50
FORM_MAX_BYTES = 4096


# No script runs on these pages; styles come from our own stylesheet only.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@functools.cache
def _templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = lambda value: value.strftime("%Y-%m-%d %H:%M UTC") if value else "—"
    env.filters["age"] = _age
    env.filters["v"] = lambda value: getattr(value, "value", value)
    env.filters["as_json"] = lambda value: json.dumps(value, sort_keys=True, ensure_ascii=False)
    return env


def _age(value: Any) -> str:
    if value is None:
        return "—"
    seconds = value if isinstance(value, int | float) else (utcnow() - value).total_seconds()
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# The only notices a redirect may ask a page to show: free text in a link would let anyone
# put words on these pages.
_NOTICE = re.compile(r"resolved|signed out|job [0-9]{1,10} queued")


def _notice(request: Request) -> str | None:
    notice = request.query_params.get("notice")
    return notice if notice is not None and _NOTICE.fullmatch(notice) else None


def render(
    request: Request,
    name: str,
    *,
    status_code: int = 200,
    operator: Operator | None = None,
    signer: Signer | None = None,
    **context: Any,
) -> HTMLResponse:
    csrf = signer.csrf_for(operator.cookie) if operator and signer else None
    html = (
        _templates()
        .get_template(name)
        .render(
            operator=operator,
            csrf=csrf,
            path=request.url.path,
            notice=_notice(request),
            **context,
        )
    )
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def _sign_in_redirect(request: Request) -> RedirectResponse:
    target = request.url.path if request.method == "GET" else "/ops"
    if request.method == "GET" and request.url.query:
        target += "?" + request.url.query
    response = RedirectResponse(
        "/ops/sign-in?" + urlencode({"next": target}), status_code=303, headers=SECURITY_HEADERS
    )
    if request.cookies.get(SESSION_COOKIE):
        response.delete_cookie(SESSION_COOKIE, path="/")
    return response


class OpsRoute(APIRoute):
    """Errors on these pages are pages: no session → sign-in, others an HTML error page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def as_page(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                return _sign_in_redirect(request)
            except AppError as exc:
                return render(
                    request,
                    "error.html",
                    status_code=exc.status_code,
                    title=exc.code.replace("_", " "),
                    detail=exc.detail,
                )
            except RequestValidationError:
                return render(
                    request,
                    "error.html",
                    status_code=404 if request.method == "GET" else 422,
                    title="not found" if request.method == "GET" else "invalid form",
                    detail="the address or the form holds a value this page does not know",
                )

        return as_page


router = APIRouter(route_class=OpsRoute, include_in_schema=False)


def get_signer(runtime: AppRuntime) -> Signer:
    return Signer(runtime.secrets)


Signing = Annotated[Signer, Depends(get_signer)]


def get_operator(request: Request, session: ReadSession, signer: Signing) -> Operator:
    return operator_of(session, signer, request.cookies.get(SESSION_COOKIE))


SignedIn = Annotated[Operator, Depends(get_operator)]


async def get_form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (first value of each); anything else is refused."""
    body = await request.body()
    if not body:
        return {}
    if request.headers.get("content-type", "").split(";")[0] != "application/x-www-form-urlencoded":
        raise AppError("send the form as application/x-www-form-urlencoded", status_code=415)
    if len(body) > FORM_MAX_BYTES:
        raise AppError("the form is too large", status_code=413)
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise AppError("the form could not be read", status_code=400) from None
    return {key: values[0] for key, values in fields.items()}


Form = Annotated[dict[str, str], Depends(get_form)]


def _checked(
    operator: Operator, signer: Signer, form: dict[str, str], *, scope: str | None = None
) -> None:
    """A form post: its CSRF token, then (when named) the scope its REST twin asks for."""
    signer.check_csrf(operator.cookie, form.get("csrf"))
    if scope is not None and not operator.can(scope):
        raise Forbidden(f"this token lacks the {scope!r} scope")


def _local_path(value: str | None, default: str) -> str:
    """A redirect target on this site only (no `//host`, no scheme)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


def _is_secure(request: Request, runtime: AppRuntime) -> bool:
    return request.url.scheme == "https" or runtime.settings.public_url.startswith("https://")


# --- landing, sign-in, sign-out -------------------------------------------------------------


@router.get("/")
def landing(request: Request, session: ReadSession, signer: Signing) -> Response:
    """Signed in: the dashboard; otherwise a short page pointing the way."""
    try:
        operator_of(session, signer, request.cookies.get(SESSION_COOKIE))
    except SignInRequired:
        return render(request, "landing.html")
    return RedirectResponse("/ops", status_code=302)


@router.get("/ops/sign-in")
def sign_in_page(request: Request, session: ReadSession, signer: Signing) -> Response:
    try:
        operator_of(session, signer, request.cookies.get(SESSION_COOKIE))
        return RedirectResponse("/ops", status_code=303)
    except SignInRequired:
        pass
    return _sign_in_form(request, error=None, status_code=200)


def _sign_in_form(request: Request, *, error: str | None, status_code: int) -> HTMLResponse:
    csrf = request.cookies.get(SIGN_IN_CSRF_COOKIE) or new_sign_in_csrf()
    response = render(
        request,
        "sign_in.html",
        status_code=status_code,
        sign_in_csrf=csrf,
        error=error,
        next=_local_path(request.query_params.get("next"), "/ops"),
    )
    response.set_cookie(
        SIGN_IN_CSRF_COOKIE,
        csrf,
        max_age=3600,
        path="/ops/sign-in",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/ops/sign-in")
def sign_in(
    request: Request, form: Form, session: ReadSession, signer: Signing, runtime: AppRuntime
) -> Response:
    check_sign_in_csrf(request.cookies.get(SIGN_IN_CSRF_COOKIE), form.get("csrf"))
    plain = form.get("token", "").strip()
    now = utcnow()
    try:
        if not plain or len(plain) > 200:
            raise Unauthorized("enter an API token")
        token = authenticate(session, plain, now=now)
    except Unauthorized as exc:
        return _sign_in_form(request, error=exc.detail, status_code=401)
    if not token.has_scope(READ_SCOPE):
        return _sign_in_form(
            request, error=f"this token lacks the {READ_SCOPE!r} scope", status_code=403
        )
    with write_session(runtime.engine) as writer:
        record_token_use(writer, token.id, now)
        writer.commit()
    log.info("ops_signed_in", extra={"token_id": token.id, "by": token.name})
    cookie, expires = signer.session_cookie(token, now)
    target = _local_path(form.get("next"), "/ops")
    response = RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=max(1, int((expires - now).total_seconds())),
        path="/",
        httponly=True,
        samesite="strict",
        secure=_is_secure(request, runtime),
    )
    response.delete_cookie(SIGN_IN_CSRF_COOKIE, path="/ops/sign-in")
    return response


@router.post("/ops/sign-out")
def sign_out(operator: SignedIn, signer: Signing, form: Form) -> Response:
    _checked(operator, signer, form)
    log.info("ops_signed_out", extra={"token_id": operator.token_id, "by": operator.name})
    response = RedirectResponse(
        "/ops/sign-in?notice=signed+out", status_code=303, headers=SECURITY_HEADERS
    )
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --- overview ----------------------------------------------------------------------------------


def _bars(items: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """Rows of a horizontal bar chart: label, count, bar width (0 to 300) and y offset."""
    top = max((count for _, count in items), default=0) or 1
    return [
        {"label": label, "count": count, "width": round(300 * count / top), "y": 24 * i}
        for i, (label, count) in enumerate(items)
    ]


@router.get("/ops")
def overview(
    request: Request,
    operator: SignedIn,
    signer: Signing,
    session: ReadSession,
    runtime: AppRuntime,
) -> Response:
    cache: read.OverviewCache = request.app.state.ops_overview
    data = cache.get(session, runtime.secrets, operator.institution_id)
    return render(
        request,
        "overview.html",
        operator=operator,
        signer=signer,
        data=data,
        state_bars=_bars(data.by_state),
        institution_bars=_bars([(n.code, n.requests) for n in data.institutions]),
        scope_label=_scope_label(session, operator),
        max_age=int(cache.max_age_seconds),
    )


def _scope_label(session: Session, operator: Operator) -> str:
    if operator.institution_id is None:
        return "every institution"
    return codes_by_id(session, {operator.institution_id}).get(operator.institution_id, "?")


# --- tasks -------------------------------------------------------------------------------------


def _institution_in_scope(session: Session, operator: Operator, code: str | None) -> int | None:
    """The institution a page asks for (by code), or the operator's own; a bound token may not
    name another one — to it, other institutions do not exist."""
    if code is None:
        return operator.institution_id
    found = get_by_code(session, code)
    if operator.institution_id not in (None, found.id):
        raise NotFound(f"no institution {code}")
    return found.id


def _older_than_days(request: Request) -> int | None:
    value = request.query_params.get("older_than_days")
    if not value:
        return None
    if not value.isdigit() or int(value) > 36500:
        raise AppError("older_than_days is not a number of days")
    return int(value)


@router.get("/ops/tasks")
def task_list(
    request: Request, operator: SignedIn, signer: Signing, session: ReadSession
) -> Response:
    """The REST task list's own query (`GET /api/v1/tasks`), filters and keyset pages."""
    kind = _text(request, "kind", 64)
    if kind is not None and kind not in LIST_KINDS:
        raise AppError(f"no task kind {kind!r}")
    where = TaskFilter(
        institution_id=_institution_in_scope(session, operator, _text(request, "institution", 64)),
        kind=kind,
        older_than_days=_older_than_days(request),
    )
    now = utcnow()
    after = decode_position(_text(request, "cursor", 300))
    entries = list_tasks(session, where, after=after, limit=PAGE_SIZE + 1, now=now)
    page = entries[:PAGE_SIZE]
    next_page = None
    if len(entries) > PAGE_SIZE and page:
        query = {k: v for k, v in request.query_params.items() if k not in ("cursor", "notice")}
        next_page = "/ops/tasks?" + urlencode(
            {**query, "cursor": encode_position(page[-1].position)}
        )
    return render(
        request,
        "tasks.html",
        operator=operator,
        signer=signer,
        rows=[(entry, entry.institution or "—") for entry in page],
        next_page=next_page,
        query=dict(request.query_params),
        kinds=LIST_KINDS,
        institutions=read.institutions_for(session, operator.institution_id),
        can_write=operator.can(WRITE_SCOPE),
        can_retry=operator.can(ADMIN_SCOPE),
    )


# --- requests ----------------------------------------------------------------------------------


def _text(request: Request, name: str, max_length: int) -> str | None:
    value = (request.query_params.get(name) or "").strip()
    if not value:
        return None
    if len(value) > max_length:
        raise AppError(f"{name} is longer than {max_length} characters")
    return value


def _before(request: Request) -> int | None:
    value = request.query_params.get("before")
    if not value:
        return None
    if not value.isdigit() or not 1 <= int(value) <= MAX_ID:
        raise AppError("before is not a request id")
    return int(value)


@router.get("/ops/requests")
def request_search(
    request: Request, operator: SignedIn, signer: Signing, session: ReadSession
) -> Response:
    institution_id = _institution_in_scope(session, operator, _text(request, "institution", 64))
    state = _text(request, "state", 32)
    if state is not None and state not in {s.value for s in RequestState}:
        raise AppError(f"no state {state!r}")
    where = queries.RequestFilter(
        institution_id=institution_id,
        state=state,
        alma_request_id=_text(request, "alma_request_id", 128),
        worldshare_request_id=_text(request, "worldshare_request_id", 64),
        item_barcode=_text(request, "item_barcode", 128),
    )
    rows = queries.list_requests(session, where, before_id=_before(request), limit=PAGE_SIZE + 1)
    page = rows[:PAGE_SIZE]
    older = None
    if len(rows) > PAGE_SIZE:
        query = {k: v for k, v in request.query_params.items() if k not in ("before", "notice")}
        older = "/ops/requests?" + urlencode({**query, "before": page[-1].id})
    return render(
        request,
        "requests.html",
        operator=operator,
        signer=signer,
        rows=page,
        older=older,
        query=dict(request.query_params),
        states=[s.value for s in RequestState],
        institutions=read.institutions_for(session, operator.institution_id),
    )


def _visible_request(session: Session, operator: Operator, request_id: int) -> BorrowingRequest:
    found = session.get(BorrowingRequest, request_id)
    if found is None or operator.institution_id not in (None, found.institution_id):
        raise NotFound(f"no request {request_id}")
    return found


@router.get("/ops/requests/{request_id}")
def request_page(
    request: Request,
    request_id: int,
    operator: SignedIn,
    signer: Signing,
    session: ReadSession,
) -> Response:
    if not 1 <= request_id <= MAX_ID:
        raise NotFound(f"no request {request_id}")
    found = _visible_request(session, operator, request_id)
    code = codes_by_id(session, {found.institution_id}).get(found.institution_id, "?")
    return render(
        request,
        "request.html",
        operator=operator,
        signer=signer,
        # The public view: it carries no patron identifier.
        item=queries.to_public(found, code),
        tasks=[
            {"kind": t.kind.value, "reason": t.reason, "opened_at": t.opened_at, "how": how}
            for t in tasks.open_tasks(session, found)
            for how in [tasks.HOW_TO_RESOLVE[t.kind]]
        ],
        events=queries.timeline(session, request_id),
        jobs=queue.list_jobs(
            session,
            status=None,
            kind=None,
            request_id=request_id,
            institution_id=operator.institution_id,
            before_id=None,
            limit=20,
        ),
        can_write=operator.can(WRITE_SCOPE),
        can_retry=operator.can(ADMIN_SCOPE),
        # An export whose answer was lost: staff say what they found in WorldShare.
        unknown_export=found.export_attempted_at is not None
        and found.worldshare_request_id is None,
    )


@router.post("/ops/requests/{request_id}/resolve")
def resolve(
    request_id: int,
    operator: SignedIn,
    signer: Signing,
    form: Form,
    runtime: AppRuntime,
    wake: WakeWorker,
) -> Response:
    """The form twin of `POST /api/v1/requests/{id}/resolve`, through the same service."""
    _checked(operator, signer, form, scope=WRITE_SCOPE)
    if not 1 <= request_id <= MAX_ID:
        raise NotFound(f"no request {request_id}")
    fields = {
        key: value
        for key in ("task", "worldshare_request_id")
        if (value := form.get(key, "").strip())
    }
    try:
        answer = ResolveAttention.model_validate(
            {**fields, "export_again": form.get("export_again") == "yes"}
        )
    except ValidationError:
        raise AppError("the form does not say what was resolved", status_code=422) from None
    with write_session(runtime.engine) as session:
        found = _visible_request(session, operator, request_id)
        institution = session.get(Institution, found.institution_id)
        assert institution is not None
        resolution.resolve(session, found, institution, answer, staff=operator.name)
        session.commit()
    log.info("ops_resolved", extra={"request_id": request_id, "by": operator.name})
    if answer.export_again:
        wake()
    back = _local_path(form.get("next"), f"/ops/requests/{request_id}")
    separator = "&" if "?" in back else "?"
    return RedirectResponse(f"{back}{separator}notice=resolved", status_code=303)


# --- jobs --------------------------------------------------------------------------------------


@router.get("/ops/jobs")
def job_list(
    request: Request,
    operator: SignedIn,
    signer: Signing,
    session: ReadSession,
    runtime: AppRuntime,
) -> Response:
    status = _text(request, "status", 16)
    if status is not None and status not in {s.value for s in JobStatus}:
        raise AppError(f"no job status {status!r}")
    kind = _text(request, "kind", 64)
    jobs = queue.list_jobs(
        session,
        status=status,
        kind=kind,
        request_id=None,
        institution_id=operator.institution_id,
        before_id=_before(request),
        limit=PAGE_SIZE + 1,
    )
    page = jobs[:PAGE_SIZE]
    older = None
    if len(jobs) > PAGE_SIZE:
        query = {k: v for k, v in request.query_params.items() if k not in ("before", "notice")}
        older = "/ops/jobs?" + urlencode({**query, "before": page[-1].id})
    return render(
        request,
        "jobs.html",
        operator=operator,
        signer=signer,
        jobs=page,
        older=older,
        query=dict(request.query_params),
        statuses=[s.value for s in JobStatus],
        # The overview's kept counts: counting the job table on every page load is not needed.
        counts=request.app.state.ops_overview.get(
            session, runtime.secrets, operator.institution_id
        ).jobs_by_status,
        can_retry=operator.can(ADMIN_SCOPE),
    )


@router.post("/ops/jobs/{job_id}/retry")
def retry(
    job_id: int,
    operator: SignedIn,
    signer: Signing,
    form: Form,
    runtime: AppRuntime,
    wake: WakeWorker,
) -> Response:
    """The form twin of `POST /api/v1/jobs/{id}/retry`: a dead job runs again from scratch."""
    _checked(operator, signer, form, scope=ADMIN_SCOPE)
    if not 1 <= job_id <= MAX_ID:
        raise NotFound(f"no job {job_id}")
    with write_session(runtime.engine) as session:
        job = session.get(Job, job_id)
        if job is None or operator.institution_id not in (None, job.institution_id):
            raise NotFound(f"no job {job_id}")
        if not queue.requeue_dead(session, job_id):
            raise Conflict(f"job {job_id} is {job.status}; only dead jobs can be retried")
        session.commit()
    log.info("ops_job_retried", extra={"job_id": job_id, "by": operator.name})
    wake()
    back = _local_path(form.get("next"), "/ops/jobs")
    separator = "&" if "?" in back else "?"
    return RedirectResponse(f"{back}{separator}notice=job+{job_id}+queued", status_code=303)


# --- clean-up ----------------------------------------------------------------------------------


def _cleanup_order(session: Session, operator: Operator, form: dict[str, str]) -> CleanupOrder:
    """The institution and the limit; a bound token gets its own when the form names none, and
    another institution is not found."""
    code = form.get("institution", "").strip()
    if operator.institution_id is not None and not code:
        code = codes_by_id(session, {operator.institution_id}).get(operator.institution_id, "")
    try:
        order = CleanupOrder.model_validate(
            {"institution": code, "limit": form.get("limit", "").strip() or 100}
        )
    except ValidationError:
        raise AppError(
            "choose an institution and a limit from 1 to 1000", status_code=422
        ) from None
    _institution_in_scope(session, operator, order.institution)
    return order


def _recent_batches(session: Session, operator: Operator) -> list[tuple[CleanupBatch, str]]:
    query = select(CleanupBatch).order_by(col(CleanupBatch.id).desc()).limit(20)
    if operator.institution_id is not None:
        query = query.where(CleanupBatch.institution_id == operator.institution_id)
    batches = list(session.exec(query))
    codes = codes_by_id(session, {b.institution_id for b in batches})
    return [(b, codes.get(b.institution_id, "?")) for b in batches]


@router.get("/ops/cleanup")
def cleanup_page(
    request: Request, operator: SignedIn, signer: Signing, session: ReadSession
) -> Response:
    return render(
        request,
        "cleanup.html",
        operator=operator,
        signer=signer,
        institutions=read.institutions_for(session, operator.institution_id),
        batches=_recent_batches(session, operator),
        can_write=operator.can(WRITE_SCOPE),
        preview=None,
        order=None,
    )


@router.post("/ops/cleanup/preview")
def cleanup_preview(
    request: Request, operator: SignedIn, signer: Signing, form: Form, runtime: AppRuntime
) -> Response:
    """A dry run (stored, as `POST /api/v1/cleanup` stores one): the plan from the WorldShare
    statuses last polled; nothing is sent anywhere."""
    _checked(operator, signer, form, scope=WRITE_SCOPE)
    with write_session(runtime.engine) as session:
        order = _cleanup_order(session, operator, form)
        institution = get_by_code(session, order.institution)
        batch = cleanup.dry_run(
            session, institution, limit=order.limit, requested_by=f"ops:{operator.name}"
        )
        session.commit()
        assert batch.id is not None
        lines = cleanup.batch_lines(session, batch.id)
        page = render(
            request,
            "cleanup.html",
            operator=operator,
            signer=signer,
            institutions=read.institutions_for(session, operator.institution_id),
            batches=[],
            can_write=True,
            preview={"batch": batch, "lines": lines},
            order=order,
        )
    log.info("ops_cleanup_previewed", extra={"batch_id": batch.id, "by": operator.name})
    return page


@router.post("/ops/cleanup/run")
def cleanup_run(
    operator: SignedIn, signer: Signing, form: Form, runtime: AppRuntime, wake: WakeWorker
) -> Response:
    """The real run, queued for the workers exactly as `POST /api/v1/cleanup` queues it; only
    with the confirmation box ticked."""
    _checked(operator, signer, form, scope=WRITE_SCOPE)
    with write_session(runtime.engine) as session:
        order = _cleanup_order(session, operator, form)
        if form.get("confirm") != "yes":
            raise AppError(
                "tick the box to confirm: a run cancels requests in Alma", status_code=422
            )
        institution = get_by_code(session, order.institution)
        batch = cleanup.start_run(
            session, institution, limit=order.limit, requested_by=f"ops:{operator.name}"
        )
        session.commit()
        batch_id = batch.id
    log.info("ops_cleanup_started", extra={"batch_id": batch_id, "by": operator.name})
    wake()
    return RedirectResponse(f"/ops/cleanup/{batch_id}", status_code=303)


@router.get("/ops/cleanup/{batch_id}")
def cleanup_batch(
    request: Request,
    batch_id: int,
    operator: SignedIn,
    signer: Signing,
    session: ReadSession,
) -> Response:
    batch = session.get(CleanupBatch, batch_id) if 1 <= batch_id <= MAX_ID else None
    if batch is None or operator.institution_id not in (None, batch.institution_id):
        raise NotFound(f"no clean-up batch {batch_id}")
    code = codes_by_id(session, {batch.institution_id}).get(batch.institution_id, "?")
    return render(
        request,
        "cleanup_batch.html",
        operator=operator,
        signer=signer,
        batch=batch,
        institution=code,
        lines=cleanup.batch_lines(session, batch_id),
    )
