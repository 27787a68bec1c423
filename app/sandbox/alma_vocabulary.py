"""What the simulated Alma knows of ISO 18626: the v1.2 code lists and how Alma reads a partner.

Written down here, from the v1.2 XSD and what Alma is reported to accept from a supplier (an
open-source broker that bridges Alma every day rewrites its messages to fit): never taken from the
bridge, so a test cannot pass because both sides share a mistake.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class Action(StrEnum):
    """The requestingAgencyMessage actions Alma sends its partner (v1.2 has ShippedForward too,
    which a borrowing library never sends)."""

    STATUS_REQUEST = "StatusRequest"
    RECEIVED = "Received"
    CANCEL = "Cancel"
    RENEW = "Renew"
    SHIPPED_RETURN = "ShippedReturn"
    NOTIFICATION = "Notification"


class ReasonForMessage(StrEnum):
    REQUEST_RESPONSE = "RequestResponse"
    STATUS_REQUEST_RESPONSE = "StatusRequestResponse"
    RENEW_RESPONSE = "RenewResponse"
    CANCEL_RESPONSE = "CancelResponse"
    STATUS_CHANGE = "StatusChange"
    NOTIFICATION = "Notification"


class Status(StrEnum):
    """The v1.2 status list: every status Alma knows."""

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
    UNSUPPORTED_ACTION_TYPE = "UnsupportedActionType"
    UNSUPPORTED_REASON_FOR_MESSAGE_TYPE = "UnsupportedReasonForMessageType"
    UNRECOGNISED_DATA_ELEMENT = "UnrecognisedDataElement"
    UNRECOGNISED_DATA_VALUE = "UnrecognisedDataValue"
    BADLY_FORMED_MESSAGE = "BadlyFormedMessage"


# The statuses Alma takes from a supplier unprompted, by the reasonForMessage it expects them in.
REPORTED_STATUSES: Mapping[ReasonForMessage, frozenset[Status]] = MappingProxyType(
    {
        ReasonForMessage.REQUEST_RESPONSE: frozenset(
            {Status.WILL_SUPPLY, Status.LOAN_COMPLETED, Status.UNFILLED}
        ),
        ReasonForMessage.STATUS_CHANGE: frozenset(
            {Status.LOANED, Status.COPY_COMPLETED, Status.CANCELLED}
        ),
    }
)
# Answers to what Alma asked; the first two must say yes or no.
ANSWERS = frozenset(
    {
        ReasonForMessage.RENEW_RESPONSE,
        ReasonForMessage.CANCEL_RESPONSE,
        ReasonForMessage.STATUS_REQUEST_RESPONSE,
    }
)
YES_NO_ANSWERS = frozenset({ReasonForMessage.RENEW_RESPONSE, ReasonForMessage.CANCEL_RESPONSE})
# Alma takes the message but does nothing with the status (brokers rewrite it to WillSupply).
IGNORED_STATUSES = frozenset({Status.EXPECT_TO_SUPPLY})
