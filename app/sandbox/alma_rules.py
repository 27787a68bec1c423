"""How the simulated Alma judges what its partner tells it, and what it remembers per request.

Pure: ``judge`` says whether Alma takes a supplyingAgencyMessage (applied, ignored) or refuses
it, with the errorType its confirmation gives; ``AlmaRequest.apply`` records what it was told.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from app.sandbox.alma_vocabulary import (
    ANSWERS,
    IGNORED_STATUSES,
    REPORTED_STATUSES,
    YES_NO_ANSWERS,
    ErrorType,
    ReasonForMessage,
    ServiceType,
    Status,
)
from app.sandbox.alma_xml import Agency


class Taken(StrEnum):
    APPLIED = "applied"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class Refused:
    error_type: ErrorType
    error_value: str


@dataclass(frozen=True, slots=True)
class Notice:
    """A supplyingAgencyMessage that passed the code lists and the XSD, in Alma's terms."""

    request_id: str
    requesting_agency: Agency
    supplying_agency: Agency
    reason: ReasonForMessage
    status: Status
    answer: bool | None = None
    due_date: datetime | None = None
    item_id: str | None = None

    @property
    def is_loan_given(self) -> bool:
        """The lender says the item is out on loan now: a StatusChange or a renewal granted."""
        return self.status is Status.LOANED and (
            self.reason is ReasonForMessage.STATUS_CHANGE
            or (self.reason is ReasonForMessage.RENEW_RESPONSE and self.answer is True)
        )


@dataclass
class AlmaRequest:
    """What Alma knows of one borrowing request it sent its partner, and what it was told."""

    request_id: str
    service_type: ServiceType
    alma_agency: Agency
    partner_agency: Agency
    partner_answer: str | None = None
    status: Status | None = None
    due_date: datetime | None = None
    item_id: str | None = None
    # Alma sent Renew and has had no RenewResponse since.
    renewal_asked: bool = False
    renewals: list[dict[str, str | None]] = field(default_factory=list)
    cancel_answer: str | None = None
    actions_sent: list[str] = field(default_factory=list)

    def apply(self, notice: Notice) -> None:
        if notice.status not in IGNORED_STATUSES:
            self.status = notice.status
        if notice.is_loan_given:
            self.due_date = notice.due_date or self.due_date
            self.item_id = notice.item_id or self.item_id
        if notice.reason is ReasonForMessage.RENEW_RESPONSE:
            self.renewal_asked = False
            self.renewals.append(
                {
                    "answerYesNo": _yes_no(notice.answer),
                    "dueDate": None if notice.due_date is None else notice.due_date.isoformat(),
                }
            )
        if notice.reason is ReasonForMessage.CANCEL_RESPONSE:
            self.cancel_answer = _yes_no(notice.answer)

    def public(self) -> dict[str, Any]:
        return {
            "requestId": self.request_id,
            "serviceType": self.service_type,
            "partnerAnswer": self.partner_answer,
            "status": self.status,
            "dueDate": None if self.due_date is None else self.due_date.isoformat(),
            "itemId": self.item_id,
            "renewalAsked": self.renewal_asked,
            "renewals": list(self.renewals),
            "cancelAnswer": self.cancel_answer,
            "actionsSent": list(self.actions_sent),
        }


def _yes_no(answer: bool | None) -> str | None:
    return None if answer is None else ("Y" if answer else "N")


def judge(notice: Notice, request: AlmaRequest | None) -> Taken | Refused:
    """Whether Alma takes ``notice`` about ``request`` (None: a request it never sent)."""
    if request is None:
        return Refused(ErrorType.UNRECOGNISED_DATA_VALUE, "requestingAgencyRequestId")
    if notice.requesting_agency != request.alma_agency:
        return Refused(ErrorType.UNRECOGNISED_DATA_VALUE, "requestingAgencyId")
    if notice.supplying_agency != request.partner_agency:
        return Refused(ErrorType.UNRECOGNISED_DATA_VALUE, "supplyingAgencyId")
    reason, status = notice.reason, notice.status
    if reason in REPORTED_STATUSES:
        if status in IGNORED_STATUSES:
            return Taken.IGNORED
        if status not in REPORTED_STATUSES[reason]:
            return Refused(ErrorType.UNSUPPORTED_REASON_FOR_MESSAGE_TYPE, f"{reason} {status}")
    elif reason not in ANSWERS:
        return Refused(ErrorType.UNSUPPORTED_REASON_FOR_MESSAGE_TYPE, str(reason))
    if reason in YES_NO_ANSWERS and notice.answer is None:
        return Refused(ErrorType.BADLY_FORMED_MESSAGE, "messageInfo/answerYesNo")
    if reason is ReasonForMessage.RENEW_RESPONSE and not request.renewal_asked:
        return Refused(ErrorType.UNSUPPORTED_REASON_FOR_MESSAGE_TYPE, "RenewResponse: no Renew")
    if reason is ReasonForMessage.CANCEL_RESPONSE and "Cancel" not in request.actions_sent:
        return Refused(ErrorType.UNSUPPORTED_REASON_FOR_MESSAGE_TYPE, "CancelResponse: no Cancel")
    is_copy = request.service_type is ServiceType.COPY
    if notice.is_loan_given and notice.due_date is None and not is_copy:
        return Refused(ErrorType.BADLY_FORMED_MESSAGE, "statusInfo/dueDate")
    if status is Status.COPY_COMPLETED and request.service_type is ServiceType.LOAN:
        return Refused(ErrorType.UNRECOGNISED_DATA_VALUE, "status CopyCompleted on a loan")
    if status in IGNORED_STATUSES and reason not in YES_NO_ANSWERS:
        return Taken.IGNORED
    return Taken.APPLIED
