"""What the simulated Alma writes: ``request``, requestingAgencyMessage, and the
supplyingAgencyMessageConfirmation it answers its partner with.

Each is one of Alma's fixtures in ``alma_messages/`` filled in, never the bridge's encoder: only
the standard is shared, so the bridge's parser meets Alma's shape, not its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from app.sandbox.alma_vocabulary import Action, ErrorType, MessageStatus, ServiceType
from app.sandbox.alma_xml import Agency, fill, message_bytes, xs_datetime

# Where Alma writes the delivery and return addresses inside a request's note.
SHIP_TO_MARKERS = ("#SHIP_TO#", "#ST_END#")
RETURN_TO_MARKERS = ("#RETURN_TO#", "#RT_END#")


class AgencyFields(Protocol):
    @property
    def type(self) -> str: ...
    @property
    def value(self) -> str: ...


class HeaderFields(Protocol):
    """What goes in the header of a message Alma sends (any object with these fields)."""

    @property
    def supplying_agency(self) -> AgencyFields: ...
    @property
    def requesting_agency(self) -> AgencyFields: ...
    @property
    def timestamp(self) -> datetime: ...
    @property
    def requesting_agency_request_id(self) -> str: ...
    @property
    def supplying_agency_request_id(self) -> str | None: ...
    @property
    def multiple_item_request_id(self) -> str | None: ...
    @property
    def security_code(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class AlmaHeader:
    supplying_agency: Agency
    requesting_agency: Agency
    timestamp: datetime
    requesting_agency_request_id: str
    supplying_agency_request_id: str | None = None
    multiple_item_request_id: str | None = None
    # requestingAgencyAuthentication/securityCode: the secret Alma shares with its partner.
    security_code: str | None = field(default=None, repr=False)


class AlmaCitation(BaseModel):
    """The citation fields of an Alma borrowing request."""

    model_config = ConfigDict(extra="forbid")

    title: str
    author: str | None = None
    isbn: str | None = None
    issn: str | None = None
    oclc_number: str | None = None
    publisher: str | None = None
    place_of_publication: str | None = None
    year: str | None = None
    edition: str | None = None
    volume: str | None = None
    issue: str | None = None
    pages: str | None = None
    journal_title: str | None = None
    chapter_title: str | None = None
    chapter_author: str | None = None
    doi: str | None = None
    format: str | None = None
    citation_type: str | None = None
    last_interest_date: date | None = None

    def service_type(self) -> ServiceType:
        """Copy for an article (CR, DIGITAL or a journal title), else Loan."""
        is_article = (
            self.journal_title is not None
            or (self.citation_type or "").upper() == "CR"
            or (self.format or "").upper() == "DIGITAL"
        )
        return ServiceType.COPY if is_article else ServiceType.LOAN


class AlmaPatron(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patron_id: str | None = None
    surname: str | None = None
    given_name: str | None = None
    email: str | None = None


def _header_values(header: HeaderFields) -> dict[str, str | None]:
    return {
        "supplying_agency_type": header.supplying_agency.type,
        "supplying_agency_value": header.supplying_agency.value,
        "requesting_agency_type": header.requesting_agency.type,
        "requesting_agency_value": header.requesting_agency.value,
        # Required by the v1.2 XSD even for a single item.
        "multiple_item_request_id": header.multiple_item_request_id or "",
        "timestamp": xs_datetime(header.timestamp),
        "requesting_agency_request_id": header.requesting_agency_request_id,
        "supplying_agency_request_id": header.supplying_agency_request_id,
        "security_code": header.security_code,
    }


def encode_request(
    header: HeaderFields,
    citation: AlmaCitation | Mapping[str, str | date | None],
    *,
    patron: AlmaPatron | Mapping[str, str | None] | None = None,
    service_type: str | None = None,
    note: str | None = None,
    ship_to: str | None = None,
    return_to: str | None = None,
) -> bytes:
    """A ``request`` as Alma sends it, from Alma's citation fields.

    ``service_type`` defaults to Copy for articles, else Loan. A citation whose
    ``journal_title`` differs from its ``title`` is Alma's article shape: the journal becomes the
    ISO ``title`` and the article its ``titleOfComponent``.
    """
    cited = citation if isinstance(citation, AlmaCitation) else AlmaCitation(**citation)
    person = patron if patron is None or isinstance(patron, AlmaPatron) else AlmaPatron(**patron)
    host_title = cited.journal_title or cited.title
    need_before = (
        None
        if cited.last_interest_date is None
        else xs_datetime(datetime.combine(cited.last_interest_date, time(23, 59, 59), tzinfo=UTC))
    )
    publication = {
        "publisher": cited.publisher,
        "publication_date": cited.year,
        "place_of_publication": cited.place_of_publication,
    }
    return message_bytes(
        "request.xml",
        **_header_values(header),
        title=host_title,
        author=cited.author,
        edition=cited.edition,
        title_of_component=cited.chapter_title
        or (cited.title if host_title != cited.title else None),
        author_of_component=cited.chapter_author,
        volume=cited.volume,
        issue=cited.issue,
        pages_requested=cited.pages,
        isbn=cited.isbn,
        issn=cited.issn,
        doi=cited.doi,
        oclc_number=cited.oclc_number,
        publication_info=fill("publicationInfo.xml", **publication)
        if any(value is not None for value in publication.values())
        else None,
        service_type=ServiceType(service_type or cited.service_type()),
        need_before_date=need_before,
        note=_alma_note(note, ship_to, return_to),
        patron_info=None if person is None else fill("patronInfo.xml", **person.model_dump()),
    )


def encode_requesting_agency_message(
    header: HeaderFields, *, action: str, note: str | None = None
) -> bytes:
    """Alma's requestingAgencyMessage: Renew, Received, ShippedReturn, Cancel, StatusRequest…"""
    return message_bytes(
        "requestingAgencyMessage.xml",
        **_header_values(header),
        action=Action(action),
        note=note,
    )


@dataclass(frozen=True, slots=True)
class ConfirmationEcho:
    """What Alma's confirmation repeats of the message it confirms (whatever could be read)."""

    supplying_agency: Agency | None = None
    requesting_agency: Agency | None = None
    requesting_agency_request_id: str | None = None
    multiple_item_request_id: str | None = None
    timestamp: datetime | None = None
    reason_for_message: str | None = None


def encode_supplying_agency_message_confirmation(
    echo: ConfirmationEcho,
    *,
    error_type: ErrorType | None = None,
    error_value: str | None = None,
    now: datetime | None = None,
) -> bytes:
    """Alma's answer to its partner: OK, or ERROR with the errorType (and a short errorValue).

    ``timestampReceived`` repeats the confirmed message's timestamp when it could be read.
    """
    if (error_type is None) != (error_value is None):
        raise ValueError("an ERROR confirmation needs both errorType and errorValue")
    moment = now or datetime.now(UTC)
    supplying, requesting = echo.supplying_agency, echo.requesting_agency
    return message_bytes(
        "supplyingAgencyMessageConfirmation.xml",
        supplying_agency_type=None if supplying is None else supplying.type,
        supplying_agency_value=None if supplying is None else supplying.value,
        requesting_agency_type=None if requesting is None else requesting.type,
        requesting_agency_value=None if requesting is None else requesting.value,
        timestamp=xs_datetime(moment),
        requesting_agency_request_id=echo.requesting_agency_request_id,
        multiple_item_request_id=echo.multiple_item_request_id,
        timestamp_received=xs_datetime(echo.timestamp or moment),
        message_status=MessageStatus.OK if error_type is None else MessageStatus.ERROR,
        reason_for_message=echo.reason_for_message,
        error_type=error_type,
        error_value=error_value,
    )


def _alma_note(note: str | None, ship_to: str | None, return_to: str | None) -> str | None:
    parts = [note or ""]
    for (start, end), address in ((SHIP_TO_MARKERS, ship_to), (RETURN_TO_MARKERS, return_to)):
        if address is not None:
            parts.append(f"{start}{address}{end}")
    return " ".join(part for part in parts if part) or None
