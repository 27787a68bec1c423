"""ISO 18626 (v1.2) vocabulary and messages: the code lists and what each message carries.

Plain data, no XML: ``parsing`` reads these from bytes, ``outgoing`` writes the bridge's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import ClassVar, TypeAlias, TypedDict

ISO18626_NS = "http://illtransactions.org/2013/iso18626"
ISO18626_VERSION = "1.2"


def qualified(name: str) -> str:
    """An element or attribute name in the ISO 18626 namespace."""
    return f"{{{ISO18626_NS}}}{name}"


class MessageKind(StrEnum):
    """The six ISO 18626 messages, named by their element."""

    REQUEST = "request"
    REQUEST_CONFIRMATION = "requestConfirmation"
    SUPPLYING_AGENCY_MESSAGE = "supplyingAgencyMessage"
    SUPPLYING_AGENCY_MESSAGE_CONFIRMATION = "supplyingAgencyMessageConfirmation"
    REQUESTING_AGENCY_MESSAGE = "requestingAgencyMessage"
    REQUESTING_AGENCY_MESSAGE_CONFIRMATION = "requestingAgencyMessageConfirmation"


class Action(StrEnum):
    STATUS_REQUEST = "StatusRequest"
    RECEIVED = "Received"
    CANCEL = "Cancel"
    RENEW = "Renew"
    SHIPPED_RETURN = "ShippedReturn"
    SHIPPED_FORWARD = "ShippedForward"
    NOTIFICATION = "Notification"


class ReasonForMessage(StrEnum):
    REQUEST_RESPONSE = "RequestResponse"
    STATUS_REQUEST_RESPONSE = "StatusRequestResponse"
    RENEW_RESPONSE = "RenewResponse"
    CANCEL_RESPONSE = "CancelResponse"
    STATUS_CHANGE = "StatusChange"
    NOTIFICATION = "Notification"


class Status(StrEnum):
    REQUEST_RECEIVED = "RequestReceived"
    EXPECT_TO_SUPPLY = "ExpectToSupply"
    WILL_SUPPLY = "WillSupply"
    LOANED = "Loaned"
    OVERDUE = "Overdue"
    RECALLED = "Recalled"
    RETRY_POSSIBLE = "RetryPossible"
    UNFILLED = "Unfilled"
    COPY_COMPLETED = "CopyCompleted"
    LOAN_COMPLETED = "LoanCompleted"
    COMPLETED_WITHOUT_RETURN = "CompletedWithoutReturn"
    CANCELLED = "Cancelled"


class ServiceType(StrEnum):
    COPY = "Copy"
    LOAN = "Loan"
    COPY_OR_LOAN = "CopyOrLoan"


class MessageStatus(StrEnum):
    OK = "OK"
    ERROR = "ERROR"


class ErrorType(StrEnum):
    """The closed v1.2 list of reasons a confirmation may give for refusing a message."""

    UNSUPPORTED_ACTION_TYPE = "UnsupportedActionType"
    UNSUPPORTED_REASON_FOR_MESSAGE_TYPE = "UnsupportedReasonForMessageType"
    UNRECOGNISED_DATA_ELEMENT = "UnrecognisedDataElement"
    UNRECOGNISED_DATA_VALUE = "UnrecognisedDataValue"
    BADLY_FORMED_MESSAGE = "BadlyFormedMessage"


class IsoMessageError(Exception):
    """An incoming message the bridge must refuse, with what the matching confirmation needs.

    ``kind`` is the message refused (None when it could not be told), ``echo`` whatever of its
    header could be read. ``error_value`` names an element or quotes a short value, never the body.
    """

    def __init__(
        self,
        error_type: ErrorType,
        error_value: str,
        *,
        kind: MessageKind | None = None,
        echo: HeaderEcho | None = None,
    ) -> None:
        super().__init__(f"{error_type}: {error_value}")
        self.error_type = error_type
        self.error_value = error_value
        self.kind = kind
        self.echo = echo or HeaderEcho()


@dataclass(frozen=True, slots=True)
class AgencyId:
    type: str
    value: str


@dataclass(frozen=True, slots=True)
class Header:
    supplying_agency: AgencyId
    requesting_agency: AgencyId
    timestamp: datetime
    requesting_agency_request_id: str
    supplying_agency_request_id: str | None = None
    multiple_item_request_id: str | None = None
    # requestingAgencyAuthentication/securityCode: a shared secret, never shown or echoed.
    security_code: str | None = field(default=None, repr=False)

    @property
    def echo(self) -> HeaderEcho:
        return HeaderEcho(
            supplying_agency=self.supplying_agency,
            requesting_agency=self.requesting_agency,
            requesting_agency_request_id=self.requesting_agency_request_id,
            multiple_item_request_id=self.multiple_item_request_id,
        )


@dataclass(frozen=True, slots=True)
class ReturnAddress:
    """Where the item goes back to (ISO ``returnInfo``): the lender's address, never a patron's."""

    name: str | None = None
    line1: str | None = None
    line2: str | None = None
    locality: str | None = None
    postal_code: str | None = None
    region: str | None = None
    country: str | None = None


@dataclass(frozen=True, slots=True)
class HeaderEcho:
    """The header fields a confirmation repeats; any may be absent from a message being refused."""

    supplying_agency: AgencyId | None = None
    requesting_agency: AgencyId | None = None
    requesting_agency_request_id: str | None = None
    multiple_item_request_id: str | None = None


class CitationFields(TypedDict):
    """Keyword arguments for ``app.borrowing.citation.Citation``: the item, never the patron."""

    title: str
    author: str | None
    isbn: str | None
    issn: str | None
    oclc_number: str | None
    publisher: str | None
    place_of_publication: str | None
    year: str | None
    edition: str | None
    volume: str | None
    issue: str | None
    pages: str | None
    journal_title: str | None
    chapter_title: str | None
    chapter_author: str | None
    doi: str | None
    format: str | None
    citation_type: str | None
    last_interest_date: date | None
    copyright_compliance: str | None


class PatronFields(TypedDict):
    patron_id: str | None
    surname: str | None
    given_name: str | None
    email: str | None


@dataclass(frozen=True, slots=True)
class AgencyMessage:
    """What the three messages that are not confirmations share: a full header."""

    kind: ClassVar[MessageKind]
    header: Header

    @property
    def echo(self) -> HeaderEcho:
        return self.header.echo


@dataclass(frozen=True, slots=True)
class IsoRequest(AgencyMessage):
    """A borrowing request Alma could not fill inside the consortium.

    ``patron``, ``ship_to`` and ``return_to`` are patron-adjacent data kept apart from the citation.
    """

    kind: ClassVar[MessageKind] = MessageKind.REQUEST
    citation: CitationFields
    patron: PatronFields | None
    service_type: ServiceType | None
    note: str | None
    ship_to: str | None
    return_to: str | None


@dataclass(frozen=True, slots=True)
class RequestingAgencyMessage(AgencyMessage):
    kind: ClassVar[MessageKind] = MessageKind.REQUESTING_AGENCY_MESSAGE
    action: Action
    note: str | None


@dataclass(frozen=True, slots=True)
class SupplyingAgencyMessage(AgencyMessage):
    kind: ClassVar[MessageKind] = MessageKind.SUPPLYING_AGENCY_MESSAGE
    reason_for_message: ReasonForMessage
    status: Status
    answer_yes_no: bool | None = None
    note: str | None = None
    reason_unfilled: str | None = None
    due_date: datetime | None = None
    last_change: datetime | None = None
    item_id: str | None = None
    date_sent: datetime | None = None


@dataclass(frozen=True, slots=True)
class Repeated:
    """The one element of the confirmed message that its confirmation repeats, if any."""

    element: str
    attribute: str
    values: type[StrEnum]
    # The errorType for a value off the element's code list.
    unknown_value: ErrorType


@dataclass(frozen=True, slots=True)
class Confirmation:
    """What every confirmation carries: the echoed header, when, and OK or ERROR with why.

    ``confirms`` is the kind of message it answers; ``repeats`` the element of that message it
    repeats (held in the subclass's own field), or None.
    """

    kind: ClassVar[MessageKind]
    confirms: ClassVar[MessageKind]
    repeats: ClassVar[Repeated | None] = None
    echo: HeaderEcho
    timestamp: datetime
    timestamp_received: datetime
    message_status: MessageStatus
    error_type: ErrorType | None = field(default=None, kw_only=True)
    error_value: str | None = field(default=None, kw_only=True)

    @property
    def repeated(self) -> StrEnum | None:
        if self.repeats is None:
            return None
        value: StrEnum | None = getattr(self, self.repeats.attribute)
        return value


@dataclass(frozen=True, slots=True)
class RequestConfirmation(Confirmation):
    kind: ClassVar[MessageKind] = MessageKind.REQUEST_CONFIRMATION
    confirms: ClassVar[MessageKind] = MessageKind.REQUEST


@dataclass(frozen=True, slots=True)
class RequestingAgencyMessageConfirmation(Confirmation):
    kind: ClassVar[MessageKind] = MessageKind.REQUESTING_AGENCY_MESSAGE_CONFIRMATION
    confirms: ClassVar[MessageKind] = MessageKind.REQUESTING_AGENCY_MESSAGE
    repeats: ClassVar[Repeated | None] = Repeated(
        "action", "action", Action, ErrorType.UNSUPPORTED_ACTION_TYPE
    )
    action: Action | None = None


@dataclass(frozen=True, slots=True)
class SupplyingAgencyMessageConfirmation(Confirmation):
    kind: ClassVar[MessageKind] = MessageKind.SUPPLYING_AGENCY_MESSAGE_CONFIRMATION
    confirms: ClassVar[MessageKind] = MessageKind.SUPPLYING_AGENCY_MESSAGE
    repeats: ClassVar[Repeated | None] = Repeated(
        "reasonForMessage",
        "reason_for_message",
        ReasonForMessage,
        ErrorType.UNSUPPORTED_REASON_FOR_MESSAGE_TYPE,
    )
    reason_for_message: ReasonForMessage | None = None


AnyConfirmation: TypeAlias = (
    RequestConfirmation | RequestingAgencyMessageConfirmation | SupplyingAgencyMessageConfirmation
)
CONFIRMATIONS: Mapping[MessageKind, type[AnyConfirmation]] = MappingProxyType(
    {
        confirmation.kind: confirmation
        for confirmation in (
            RequestConfirmation,
            RequestingAgencyMessageConfirmation,
            SupplyingAgencyMessageConfirmation,
        )
    }
)


def confirmation_for(kind: MessageKind | None) -> type[AnyConfirmation]:
    """The confirmation answering a message of ``kind``: a requestConfirmation if unknown."""
    return next(
        (answer for answer in CONFIRMATIONS.values() if answer.confirms is kind),
        RequestConfirmation,
    )


IncomingMessage: TypeAlias = (
    IsoRequest | RequestingAgencyMessage | SupplyingAgencyMessage | AnyConfirmation
)
