"""Alma's habits: which reasonForMessage goes with a status, where a note hides addresses."""

from __future__ import annotations

import pytest

from app.alma.iso18626 import (
    ALMA_DEFAULT,
    AlmaProfile,
    ReasonForMessage,
    Status,
    SupplyingAgencyMessage,
    parse_message,
    supplier_message,
)
from app.borrowing.states import AlmaNotice
from tests.support.iso18626 import HEADER


def test_profile_decides_reason_for_message() -> None:
    profile = AlmaProfile(reason_for_status={Status.LOANED: ReasonForMessage.REQUEST_RESPONSE})

    parsed = parse_message(supplier_message(profile, AlmaNotice.LOANED, HEADER))

    assert isinstance(parsed, SupplyingAgencyMessage)
    assert parsed.reason_for_message is ReasonForMessage.REQUEST_RESPONSE
    with pytest.raises(ValueError, match="no reasonForMessage"):
        supplier_message(profile, AlmaNotice.WILL_SUPPLY, HEADER)


def test_alma_note_markers_are_split_out() -> None:
    note = "Please hurry #SHIP_TO#Main Library\n1 Campus Dr#ST_END# #RETURN_TO#ILL, Box 9#RT_END#"

    assert ALMA_DEFAULT.split_note(note) == (
        "Please hurry",
        "Main Library\n1 Campus Dr",
        "ILL, Box 9",
    )
    assert ALMA_DEFAULT.split_note("#SHIP_TO#Main#ST_END#") == (None, "Main", None)
