"""Tables of the borrowing domain: the request, its append-only timeline, and the inbox."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from app.borrowing.states import RequestState, ServiceKind
from app.db import StrEnumType
from app.timeutil import UTCDateTime, utcnow


class RequestOrigin(StrEnum):
    """How Alma handed the request over."""

    ISO18626 = "iso18626"  # Alma's rota reached the bridge; Alma expects supplier messages
    API = "api"  # registered through the REST API


class InboxSource(StrEnum):
    ISO18626 = "iso18626"
    REST = "rest"
    WEBHOOK = "webhook"


class InboxOutcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    FLAGGED = "flagged"  # recorded, did not fit the request's state
    UNMATCHED = "unmatched"  # a loan in a resource-sharing library that matches no request


class BorrowingRequest(SQLModel, table=True):
    """One Alma borrowing request that reached the bridge, and its WorldShare counterpart.

    `requester_user_id` is the only patron identifier kept: it is needed to talk to Alma about
    the patron's own request and loan, and it is purged after the retention period.
    """

    __tablename__ = "borrowing_request"
    __table_args__ = (
        UniqueConstraint("institution_id", "alma_request_id"),
        UniqueConstraint("institution_id", "idempotency_key"),
        Index("ix_borrowing_request_state_next_poll_at", "state", "next_poll_at"),
        # The lists are newest first (ORDER BY id DESC) under equality filters: each index
        # holds a filter's columns then id, so a page is read in order and stops at its limit.
        Index("ix_borrowing_request_institution_id_id", "institution_id", "id"),
        Index("ix_borrowing_request_institution_id_state_id", "institution_id", "state", "id"),
        Index("ix_borrowing_request_state_id", "state", "id"),
        Index("ix_borrowing_request_needs_attention_id", "needs_attention", "id"),
        Index(
            "ix_borrowing_request_institution_id_needs_attention_id",
            "institution_id",
            "needs_attention",
            "id",
        ),
        Index("ix_borrowing_request_alma_request_id", "alma_request_id"),
        # The task list's flagged requests, oldest change first.
        Index(
            "ix_borrowing_request_flagged_updated_at_id",
            "updated_at",
            "id",
            postgresql_where=text("needs_attention IS true"),
            sqlite_where=text("needs_attention IS 1"),
        ),
        # The task list's lost exports (tried, no WorldShare id known), oldest attempt first.
        Index(
            "ix_borrowing_request_lost_export_attempted_at_id",
            "export_attempted_at",
            "id",
            postgresql_where=text(
                "worldshare_request_id IS NULL AND export_attempted_at IS NOT NULL"
            ),
            sqlite_where=text("worldshare_request_id IS NULL AND export_attempted_at IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    institution_id: int = Field(foreign_key="institution.id")
    alma_request_id: str = Field(max_length=128)
    # Alma's internal borrowing request id, resolved once from the id Alma sent over ISO 18626
    # (which may be the external identifier); the REST API cancels by it.
    alma_internal_request_id: str | None = Field(default=None, max_length=128)
    idempotency_key: str | None = Field(default=None, max_length=255)
    origin: RequestOrigin = Field(
        default=RequestOrigin.API, sa_column=Column(StrEnumType(RequestOrigin, 16), nullable=False)
    )
    requester_user_id: str | None = Field(default=None, max_length=255)
    citation: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    state: RequestState = Field(
        default=RequestState.RECEIVED,
        sa_column=Column(StrEnumType(RequestState, 32), nullable=False),
    )
    resume_state: RequestState | None = Field(
        default=None, sa_column=Column(StrEnumType(RequestState, 32))
    )
    service_kind: ServiceKind = Field(
        default=ServiceKind.LOAN,
        sa_column=Column(
            StrEnumType(ServiceKind, 8), nullable=False, server_default=ServiceKind.LOAN.value
        ),
    )

    worldshare_request_id: str | None = Field(default=None, max_length=64, index=True)
    # Set, in a transaction of its own, just before a WorldShare create is sent; cleared when
    # its answer is recorded. Set with no WorldShare id: an attempt whose outcome is unknown.
    export_attempted_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    lender_status: str | None = Field(default=None, max_length=64)
    lender_due_date: date | None = None
    patron_due_date: date | None = None
    item_barcode: str | None = Field(default=None, max_length=128, index=True)
    # The lender's renewal count and answer as last polled.
    lender_renewals: int | None = None
    lender_renewal_status: str | None = Field(default=None, max_length=64)
    # The lender's side when Alma asked for the renewal now pending: only news past it answers.
    renewal_asked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    renewal_asked_renewals: int | None = None
    renewal_asked_due_date: date | None = None
    renewal_asked_status: str | None = Field(default=None, max_length=64)
    # Where the lender wants the item back (OCLC's address fields), when WorldShare says.
    lender_return_address: dict[str, str] | None = Field(
        default=None, sa_column=Column(JSON(none_as_null=True))
    )
    # Alma asked to cancel an exported request: answered once WorldShare shows what happened.
    cancel_asked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # The patron's loan of the temporary item, linked by LOAN_CREATED.
    alma_loan_id: str | None = Field(default=None, max_length=64, index=True)
    alma_item_id: str | None = Field(default=None, max_length=64, index=True)
    next_poll_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # When next_poll_at was last set: a request changed since then gets its cadence again.
    poll_scheduled_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))

    # Why the request looks stuck (`app.borrowing.stale.StaleReason`), set by the periodic check.
    stale_reason: str | None = Field(default=None, max_length=32, index=True)
    stale_since: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))

    needs_attention: bool = Field(default=False)
    attention_reason: str | None = Field(default=None, max_length=1000)

    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False, index=True)
    )
    closed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))


class RequestEvent(SQLModel, table=True):
    """One line of a request's timeline: who/what/when/why, never patron data. Append-only."""

    __tablename__ = "request_event"

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="borrowing_request.id", index=True)
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    kind: str = Field(max_length=64)
    source: str = Field(max_length=32)
    from_state: str | None = Field(default=None, max_length=32)
    to_state: str | None = Field(default=None, max_length=32)
    applied: bool = Field(default=True)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class InboundMessage(SQLModel, table=True):
    """Everything received (ISO message, webhook, REST write), unique per source + external id.

    Only a PII-free summary is kept; the patron fields of a message live on the request alone.
    """

    __tablename__ = "inbound_message"
    __table_args__ = (
        UniqueConstraint("source", "external_id"),
        # The last message per institution and source (the operators' overview).
        Index("ix_inbound_message_institution_id_source_id", "institution_id", "source", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    institution_id: int | None = Field(default=None, foreign_key="institution.id", index=True)
    source: InboxSource = Field(sa_column=Column(StrEnumType(InboxSource, 32), nullable=False))
    external_id: str = Field(max_length=512)
    kind: str = Field(max_length=64)
    outcome: InboxOutcome = Field(sa_column=Column(StrEnumType(InboxOutcome, 32), nullable=False))
    request_id: int | None = Field(default=None, foreign_key="borrowing_request.id", index=True)
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    received_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
