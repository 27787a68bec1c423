"""Alma's habits in ISO 18626, in one place: ``ALMA_DEFAULT`` is Alma out of the box.

Everything that reads or writes a message for an Alma takes an ``AlmaProfile``, so an
institution whose Alma is set up differently gets a profile of its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from app.alma.iso18626.messages import ReasonForMessage, Status

_ALMA_REASON_FOR_STATUS: Mapping[Status, ReasonForMessage] = MappingProxyType(
    {
        Status.EXPECT_TO_SUPPLY: ReasonForMessage.REQUEST_RESPONSE,
        Status.WILL_SUPPLY: ReasonForMessage.REQUEST_RESPONSE,
        Status.LOANED: ReasonForMessage.STATUS_CHANGE,
        Status.COPY_COMPLETED: ReasonForMessage.STATUS_CHANGE,
        Status.LOAN_COMPLETED: ReasonForMessage.REQUEST_RESPONSE,
        Status.UNFILLED: ReasonForMessage.REQUEST_RESPONSE,
        Status.CANCELLED: ReasonForMessage.STATUS_CHANGE,
    }
)


@dataclass(frozen=True, slots=True)
class AlmaProfile:
    """How one Alma institution speaks ISO 18626.

    ``reason_for_status`` is the reasonForMessage Alma accepts for each status the bridge reports
    unprompted; the note markers are where Alma writes delivery and return addresses.
    ``supply_status`` is what Alma is told once the request is with the lending network, after
    export and in status answers: Alma ignores ExpectToSupply, so WillSupply by default.
    """

    supply_status: Status = Status.WILL_SUPPLY
    reason_for_status: Mapping[Status, ReasonForMessage] = field(
        default_factory=lambda: _ALMA_REASON_FOR_STATUS
    )
    ship_to_markers: tuple[str, str] = ("#SHIP_TO#", "#ST_END#")
    return_to_markers: tuple[str, str] = ("#RETURN_TO#", "#RT_END#")

    def split_note(self, note: str | None) -> tuple[str | None, str | None, str | None]:
        """(staff note, ship-to address, return-to address) from an Alma request note."""
        if note is None:
            return None, None, None
        note, ship_to = _cut_between(note, self.ship_to_markers)
        note, return_to = _cut_between(note, self.return_to_markers)
        return note.strip() or None, ship_to, return_to


ALMA_DEFAULT = AlmaProfile()
# The profiles an institution can choose (`alma.iso18626_profile`), by name.
PROFILES: Mapping[str, AlmaProfile] = MappingProxyType(
    {
        "alma": ALMA_DEFAULT,
        # A requester that reads the standard's first answer, as ISO 18626 brokers other than
        # Alma do.
        "expect_to_supply": AlmaProfile(supply_status=Status.EXPECT_TO_SUPPLY),
    }
)
DEFAULT_PROFILE = "alma"


def _cut_between(text: str, markers: tuple[str, str]) -> tuple[str, str | None]:
    start, end = (re.escape(marker) for marker in markers)
    found = re.search(f"{start}(.*?){end}", text, re.DOTALL)
    if found is None:
        return text, None
    return text[: found.start()] + text[found.end() :], found.group(1).strip() or None
