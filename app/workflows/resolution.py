"""Staff say a flag or a task is done: the one service behind the REST `resolve` and `/ops`."""

from __future__ import annotations

from sqlmodel import Session

from app.borrowing import service, tasks
from app.borrowing.models import BorrowingRequest
from app.borrowing.schemas import ResolveAttention
from app.errors import Conflict
from app.institutions.models import Institution
from app.workflows import export


def resolve(
    session: Session,
    request: BorrowingRequest,
    institution: Institution,
    answer: ResolveAttention,
    *,
    staff: str,
) -> None:
    """Apply what staff did (the caller commits); Conflict when there is nothing to resolve.

    With an empty answer the flag is cleared and every open task closed; with `task` that task
    only; with a WorldShare id or `export_again`, an export whose answer was lost is settled.
    """
    done = f"resolved by {staff}"
    if answer.task is not None:
        closed = tasks.close_task(session, request, answer.task, source="operator", resolution=done)
        if not closed:
            raise Conflict(f"request {request.id} has no open {answer.task.value} task")
    elif answer.worldshare_request_id is None and not answer.export_again:
        open_tasks = tasks.open_tasks(session, request)
        if not request.needs_attention and not open_tasks:
            raise Conflict(f"request {request.id} is not flagged and has no open task")
        service.clear_flag(session, request, source="operator", why=done)
        for task in open_tasks:
            tasks.close_task(session, request, task.kind, source="operator", resolution=done)
    elif request.export_attempted_at is None or request.worldshare_request_id is not None:
        raise Conflict(f"request {request.id} has no export whose outcome is unknown")
    else:
        export.resolve_unknown_create(
            session,
            request,
            institution,
            worldshare_request_id=answer.worldshare_request_id,
            staff=staff,
        )
