"""Shared ISO 18626 fixtures: the bridge and an Alma, and a header between them."""

from datetime import UTC, datetime

from app.alma.iso18626 import AgencyId, Header

SENT_AT = datetime(2025, 3, 4, 15, 16, 17, tzinfo=UTC)
BRIDGE = AgencyId("ISIL", "US-ILLBRIDGE")
ALMA = AgencyId("ISIL", "US-FTASU")
HEADER = Header(
    supplying_agency=BRIDGE,
    requesting_agency=ALMA,
    timestamp=SENT_AT,
    requesting_agency_request_id="RS-2025-0001",
    supplying_agency_request_id="WS-778899",
)
