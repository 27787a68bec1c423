"""JSON logs with redaction, Prometheus metrics, request ids and the body-size guard."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from random import getrandbits
from typing import Any

from fastapi import HTTPException
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# uvicorn's color_message repeats the message with terminal colours.
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}
_SECRET_KEYS = re.compile(r"(secret|token|password|api_key|apikey|authorization)", re.I)
_SECRET_VALUES = re.compile(r"(ilb_[A-Za-z0-9_\-]{8,}|Bearer\s+\S+|apikey\s+\S+)", re.I)
# Label values come from this set only, so a client cannot grow the metric's series at will.
_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_REQUEST_ID = re.compile(rb"[A-Za-z0-9\-]{8,64}")
# Outbound calls take from tens of milliseconds to the whole-call deadline (30 s by default).
UPSTREAM_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _label_slug(name: str) -> str:
    """ "WorldShare token endpoint" → "worldshare_token_endpoint": a label value easy to query."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


# Alma's REST paths carry the patron's user id (`/almaws/v1/users/{user_id}/loans/…`).
_ALMA_USER_PATH = re.compile(r"(/users/)[^/?#\s\"']+")


def redact(value: str) -> str:
    return _ALMA_USER_PATH.sub(r"\1[redacted]", _SECRET_VALUES.sub("[redacted]", value))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, request id and the extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": redact(record.getMessage()),
        }
        if (rid := request_id_var.get()) is not None:
            entry["request_id"] = rid
        for key, value in vars(record).items():
            if key in _STANDARD_ATTRS or key.startswith("_"):
                continue
            if _SECRET_KEYS.search(key):
                entry[key] = "[redacted]"
            elif isinstance(value, str):
                entry[key] = redact(value)
            else:
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error_type"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs full URLs at INFO; they can carry ids we keep out of the log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True


@dataclass
class _Repeats:
    logged_at: float
    unlogged: int = 0


class RepeatedWarnings:
    """A warning that repeats (every poll fails while the database is down) logged once per
    `interval` with how many times it happened, instead of once per occurrence.

    The first occurrence of an event with an error type is logged at once with `count` 1; later
    ones are counted and logged as one line when `interval` has passed since the last, or when
    `resolved` says the condition is over. The counts of an event's lines add up to its
    occurrences. Not thread-safe: call it from one thread (the worker's event loop).
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._interval = interval
        self._clock = clock
        self._seen: dict[tuple[str, str], _Repeats] = {}

    def warning(self, event: str, *, error_type: str, **fields: Any) -> None:
        now = self._clock()
        repeats = self._seen.get((event, error_type))
        if repeats is None:
            self._seen[(event, error_type)] = _Repeats(logged_at=now)
            self._emit(event, error_type, 1, fields)
            return
        repeats.unlogged += 1
        if now - repeats.logged_at >= self._interval:
            self._emit(event, error_type, repeats.unlogged, fields)
            repeats.logged_at, repeats.unlogged = now, 0

    def resolved(self, event: str) -> None:
        """`event`'s condition is over: log the occurrences not yet logged, and start afresh."""
        for key in [key for key in self._seen if key[0] == event]:
            repeats = self._seen.pop(key)
            if repeats.unlogged:
                self._emit(event, key[1], repeats.unlogged, {"resolved": True})

    def _emit(self, event: str, error_type: str, count: int, fields: dict[str, Any]) -> None:
        self._log.warning(event, extra={**fields, "error_type": error_type, "count": count})


class Metrics:
    """The service's Prometheus instruments, on a registry of its own (one per app)."""

    def __init__(self, stats_max_age_seconds: float = 15.0) -> None:
        self.stats_max_age_seconds = stats_max_age_seconds
        self._stats_read_at: float | None = None
        self._stats_lock = threading.Lock()
        self.registry = CollectorRegistry()
        self.http_requests = Histogram(
            "illbridge_http_request_duration_seconds",
            "HTTP requests served, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.jobs_finished = Counter(
            "illbridge_jobs_finished_total",
            "Jobs finished by this process, by kind and outcome",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.job_duration = Histogram(
            "illbridge_job_duration_seconds",
            "Time spent running job handlers, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.inbound_messages = Counter(
            "illbridge_inbound_messages_total",
            "Messages received, by source and outcome",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.requests = Gauge(
            "illbridge_requests", "Borrowing requests by state", ["state"], registry=self.registry
        )
        self.requests_needing_attention = Gauge(
            "illbridge_requests_needing_attention",
            "Borrowing requests flagged for staff",
            registry=self.registry,
        )
        self.jobs = Gauge("illbridge_jobs", "Jobs by status", ["status"], registry=self.registry)
        self.queue_depth = Gauge(
            "illbridge_queue_depth", "Queued jobs that are due now", registry=self.registry
        )
        self.oldest_job_age = Gauge(
            "illbridge_oldest_queued_job_age_seconds",
            "How long the oldest due job has waited",
            registry=self.registry,
        )
        self.upstream_calls = Histogram(
            "illbridge_upstream_call_duration_seconds",
            "Outbound calls by upstream and outcome (the HTTP status, or timeout or"
            " connection_error), whole call including the body",
            ["target", "status"],
            buckets=UPSTREAM_BUCKETS,
            registry=self.registry,
        )
        self.alma_api_remaining = Gauge(
            "illbridge_alma_api_remaining",
            "Alma API calls left today, as Alma last reported it (X-Exl-Api-Remaining)",
            ["institution"],
            registry=self.registry,
        )
        self.worldshare_calls_today = Gauge(
            "illbridge_worldshare_calls_today",
            "WorldShare API calls in the last 24 hours per WSKey (a hash prefix of the key)",
            ["key"],
            registry=self.registry,
        )
        self.token_refreshes = Counter(
            "illbridge_token_refreshes_total",
            "Access tokens fetched from an upstream's token endpoint, by grant and outcome",
            ["grant_type", "outcome"],
            registry=self.registry,
        )

    def upstream_call(self, target: str, status: str, seconds: float) -> None:
        """One outbound call finished (`app.upstream.call` reports every call here)."""
        self.upstream_calls.labels(_label_slug(target), status).observe(seconds)

    def set_alma_api_remaining(self, institution: str, remaining: int) -> None:
        """Alma's `X-Exl-Api-Remaining` of the last answer for `institution` (its code)."""
        self.alma_api_remaining.labels(institution).set(remaining)

    def set_worldshare_calls_today(self, calls_by_key: dict[str, int]) -> None:
        """Today's WorldShare call count per budget key (institution code or key name, never
        the WSKey or its secret); keys not given are dropped, so a new day starts empty."""
        self.worldshare_calls_today.clear()
        for key, calls in calls_by_key.items():
            self.worldshare_calls_today.labels(key).set(calls)

    def token_fetched(self, grant_type: str, outcome: str) -> None:
        self.token_refreshes.labels(grant_type, outcome).inc()

    def refresh_stats(self, read: Callable[[], Any]) -> None:
        """Set the gauges from `read()` unless they were read less than the max age ago.

        The counts are aggregates over whole tables: however often and by however many anyone
        scrapes, the database answers them once per window (one scrape reads, the others wait).
        """
        with self._stats_lock:
            now = time.monotonic()
            fresh = self._stats_read_at is not None and (
                now - self._stats_read_at < self.stats_max_age_seconds
            )
            if fresh:
                return
            self.observe_stats(read())
            self._stats_read_at = now

    def observe_stats(self, stats: Any) -> None:
        """Set the gauges from a `Stats` read at scrape time (shared by all processes)."""
        self.requests.clear()
        for state, count in stats.requests_by_state.items():
            self.requests.labels(state).set(count)
        self.requests_needing_attention.set(stats.requests_needing_attention)
        self.jobs.clear()
        for status, count in stats.jobs_by_status.items():
            self.jobs.labels(status).set(count)
        self.queue_depth.set(stats.queue_depth)
        self.oldest_job_age.set(stats.oldest_queued_job_age_seconds or 0)
        self.set_worldshare_calls_today(stats.worldshare_calls_last_24h)


class RequestContextMiddleware:
    """Assigns a request id, times the request and records it by route template.

    It runs on every request, so it does the least it can: one pass over the headers, the
    request-id pattern checked only when a client sent one, and each (route, method, status)
    histogram child looked up once per process instead of through `labels()` every time.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._observers: dict[tuple[str, str, int], Callable[[float], None]] = {}

    def _observer(self, template: str, method: str, status: int) -> Callable[[float], None]:
        key = (template, method, status)
        observe = self._observers.get(key)
        if observe is None:
            observe = self.metrics.http_requests.labels(template, method, str(status)).observe
            self._observers[key] = observe
        return observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if _REQUEST_ID.fullmatch(value):
                    rid = value.decode("ascii")
                break
        if rid is None:
            # 128 random bits as 32 hex digits, like a uuid4 without its read of os.urandom:
            # an id to find a request's log lines by, not a secret.
            rid = f"{getrandbits(128):032x}"
        header = (b"x-request-id", rid.encode("ascii"))
        token = request_id_var.set(rid)
        # 499 (nginx's "client closed request"): the client left before it was answered.
        status = 499

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append(header)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            if status == 499:  # a fault before any answer
                status = 500
            raise
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            method = scope["method"] if scope["method"] in _HTTP_METHODS else "other"
            self._observer(template, method, status)(time.perf_counter() - started)
            request_id_var.reset(token)


class BodySizeLimitMiddleware:
    """Answers 413 with the error envelope once a body passes `max_bytes`, before it is read."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        limit_for: Callable[[str], int | None] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = (self.limit_for(scope["path"]) if self.limit_for else None) or self.max_bytes
        if declared_too_large(dict(scope.get("headers") or []).get(b"content-length"), limit):
            await _too_large(send, limit)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # An HTTPException, so FastAPI's body reader passes it to the error handlers.
                    raise HTTPException(413, f"body exceeds {limit} bytes")
            return message

        await self.app(scope, limited_receive, send)


def declared_too_large(content_length: bytes | None, limit: int) -> bool:
    """Whether a Content-Length header announces more than `limit` bytes (or is not a number)."""
    return content_length is not None and (
        not content_length.isdigit() or int(content_length) > limit
    )


async def _too_large(send: Callable[[Message], Awaitable[None]], limit: int) -> None:
    body = json.dumps(
        {"error": "payload_too_large", "detail": f"body exceeds {limit} bytes"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
