from datetime import date

import pytest

from app.worldshare.network import LenderStatus, RenewalInfo
from app.worldshare.status import (
    DEFAULT_STATUS_MAP,
    LenderOutcome,
    answer_mismatch,
    lender_outcome,
    map_status,
    normalise_status,
)


def on_loan(status: str = "IN_TRANSIT", renewal: RenewalInfo | None = None) -> LenderStatus:
    return LenderStatus(
        request_id="167513532",
        status=status,
        due_date=date(2025, 3, 1),
        renewal=renewal,
        reference="alma-1",
    )


@pytest.mark.parametrize(("raw", "outcome"), sorted(DEFAULT_STATUS_MAP.items()))
def test_every_default_status_maps_to_its_outcome(raw: str, outcome: LenderOutcome) -> None:
    assert map_status(raw) is outcome


def test_outcome_names_are_the_state_machine_names() -> None:
    assert [o.value for o in LenderOutcome] == [
        "pending",
        "shipped",
        "renewal_approved",
        "renewal_refused",
        "unfilled",
        "cancelled",
        "returned",
        "closed",
    ]


@pytest.mark.parametrize(
    ("raw", "outcome"),
    [
        ("in_transit", LenderOutcome.shipped),
        ("In Transit", LenderOutcome.shipped),
        ("Received/In Use", LenderOutcome.shipped),
        ("Closed (Cancelled)", LenderOutcome.cancelled),
        ("  complete ", LenderOutcome.closed),
        ("Returned/Complete?", LenderOutcome.returned),
    ],
)
def test_statuses_match_regardless_of_case_and_punctuation(
    raw: str, outcome: LenderOutcome
) -> None:
    assert map_status(raw) is outcome


@pytest.mark.parametrize("raw", ["", "LOST", "RECALL", "Item due back", "NOT_RECEIVED", "WEIRD"])
def test_unknown_or_staff_only_statuses_map_to_none(raw: str) -> None:
    assert map_status(raw) is None


def test_overrides_win_over_defaults_and_add_local_statuses() -> None:
    overrides = {"in transit": "pending", "LOCAL_HOLD": "Shipped"}
    assert map_status("IN_TRANSIT", overrides) is LenderOutcome.pending
    assert map_status("local-hold", overrides) is LenderOutcome.shipped
    assert map_status("COMPLETE", overrides) is LenderOutcome.closed


def test_an_override_naming_no_outcome_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="no lender outcome"):
        map_status("IN_TRANSIT", {"IN_TRANSIT": "lent"})


def test_normalise_status() -> None:
    assert normalise_status("Received/In Use") == "RECEIVED_IN_USE"


def test_lender_outcome_without_renewal_is_the_status_outcome() -> None:
    assert lender_outcome(on_loan(), None) is LenderOutcome.shipped


def test_approved_renewal_on_a_lent_item() -> None:
    renewal = RenewalInfo(renewals=1, status="APPROVED", new_due_date=date(2025, 4, 1))
    assert lender_outcome(on_loan(renewal=renewal), None) is LenderOutcome.renewal_approved


def test_denied_renewal_on_a_lent_item() -> None:
    renewal = RenewalInfo(renewals=0, status="denied", new_due_date=None)
    assert lender_outcome(on_loan(renewal=renewal), None) is LenderOutcome.renewal_refused


def test_renewal_without_status_shows_as_new_due_date() -> None:
    renewal = RenewalInfo(renewals=2, status=None, new_due_date=date(2025, 5, 1))
    assert lender_outcome(on_loan(renewal=renewal), None) is LenderOutcome.renewal_approved


def test_pending_renewal_leaves_the_item_shipped() -> None:
    renewal = RenewalInfo(renewals=0, status="REQUESTED", new_due_date=None)
    assert lender_outcome(on_loan(renewal=renewal), None) is LenderOutcome.shipped


def test_a_later_status_wins_over_an_old_renewal_answer() -> None:
    renewal = RenewalInfo(renewals=1, status="APPROVED", new_due_date=date(2025, 4, 1))
    assert lender_outcome(on_loan("COMPLETE", renewal), None) is LenderOutcome.closed


def test_unknown_status_stays_unknown_even_with_renewal_info() -> None:
    renewal = RenewalInfo(renewals=1, status="APPROVED", new_due_date=date(2025, 4, 1))
    assert lender_outcome(on_loan("WEIRD", renewal), None) is None


def test_lender_outcome_uses_overrides() -> None:
    assert lender_outcome(on_loan("LOCAL_HOLD"), {"LOCAL_HOLD": "shipped"}) is LenderOutcome.shipped


@pytest.mark.parametrize(
    ("request_id", "reference", "mismatch"),
    [
        ("167513532", "alma-1", None),
        ("167513532", None, None),
        ("0167513532", "alma-1", None),
        (
            "167513533",
            "alma-1",
            "requestId mismatch: the poll of WorldShare request 167513532 was answered for "
            "request 167513533",
        ),
        (
            "Smith, Jane",
            "alma-1",
            "requestId mismatch: the poll of WorldShare request 167513532 was answered for "
            "another requestId",
        ),
        (
            None,
            "alma-1",
            "requestId mismatch: the poll of WorldShare request 167513532 was answered without "
            "a requestId",
        ),
        (
            "167513532",
            "for Jane Smith",
            "referenceId mismatch: WorldShare request 167513532 does not carry this request's "
            "Alma id alma-1 as its referenceId",
        ),
    ],
    ids=["same", "no-reference", "leading-zero", "other-id", "text-id", "no-id", "other-ref"],
)
def test_a_poll_answer_must_be_about_the_request_polled(
    request_id: str | None, reference: str | None, mismatch: str | None
) -> None:
    answer = LenderStatus(
        request_id=request_id, status="IN_TRANSIT", due_date=None, renewal=None, reference=reference
    )

    assert answer_mismatch(answer, asked="167513532", alma_request_id="alma-1") == mismatch
