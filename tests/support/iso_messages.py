"""ISO 18626 messages as Alma writes them, built by hand (not with the bridge's codec), and a
reader for the confirmations the bridge answers with."""

from __future__ import annotations

from xml.sax.saxutils import escape

from lxml import etree

NS = "http://illtransactions.org/2013/iso18626"
XML = {"Content-Type": "text/xml"}
ALMA_AGENCY = "US-UNIV"
BRIDGE_AGENCY = "US-ILLBRIDGE"
SECURITY_CODE = "alma-sesame-4c1d"
# The bridge's whole answer to a sender it will not take, whatever was wrong.
SENDER_REFUSED = ("ERROR", "UnrecognisedDataValue", "sender not recognised")


def iso_message(
    title: str = "Title",
    *,
    action: str | None = None,
    request_id: str = "HOSTILE-1",
    security_code: str | None = SECURITY_CODE,
    requesting_agency: str = ALMA_AGENCY,
    supplying_agency: str = BRIDGE_AGENCY,
    patron_id: str | None = None,
    ns: str = NS,
    version: str = "1.2",
) -> bytes:
    """A `request` (or, with `action`, a requestingAgencyMessage); `title` goes in unescaped."""
    authentication = (
        ""
        if security_code is None
        else "<requestingAgencyAuthentication><securityCode>"
        f"{escape(security_code)}</securityCode></requestingAgencyAuthentication>"
    )
    header = f"""<header>
   <supplyingAgencyId><agencyIdType>ISIL</agencyIdType>
    <agencyIdValue>{escape(supplying_agency)}</agencyIdValue></supplyingAgencyId>
   <requestingAgencyId><agencyIdType>ISIL</agencyIdType>
    <agencyIdValue>{escape(requesting_agency)}</agencyIdValue></requestingAgencyId>
   <multipleItemRequestId/>
   <timestamp>2026-11-29T10:00:00Z</timestamp>
   <requestingAgencyRequestId>{escape(request_id)}</requestingAgencyRequestId>
   {authentication}
  </header>"""
    if action is not None:
        body = (
            f"<requestingAgencyMessage>{header}<action>{action}</action></requestingAgencyMessage>"
        )
    else:
        patron = (
            ""
            if patron_id is None
            else f"<patronInfo><patronId>{escape(patron_id)}</patronId></patronInfo>"
        )
        body = f"""<request>
  {header}
  <bibliographicInfo><title>{title}</title></bibliographicInfo>
  <serviceInfo><serviceType>Loan</serviceType></serviceInfo>
  {patron}
 </request>"""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<ISO18626Message xmlns="{ns}" xmlns:ill="{ns}" ill:version="{version}">
 {body}
</ISO18626Message>""".encode()


def confirmation(body: bytes) -> tuple[str, str | None, str | None]:
    """(messageStatus, errorType, errorValue) of a confirmation."""
    root = etree.fromstring(body)
    return (
        str(root.findtext(f".//{{{NS}}}messageStatus")),
        root.findtext(f".//{{{NS}}}errorType"),
        root.findtext(f".//{{{NS}}}errorValue"),
    )


def echoed_request_id(body: bytes) -> str | None:
    """The requestingAgencyRequestId a confirmation repeats, if any."""
    return etree.fromstring(body).findtext(f".//{{{NS}}}requestingAgencyRequestId")


def without_timestamps(body: bytes) -> bytes:
    """A confirmation with its timestamps removed, to compare two answers byte for byte."""
    root = etree.fromstring(body)
    for name in ("timestamp", "timestampReceived"):
        for element in root.iter(f"{{{NS}}}{name}"):
            element.text = ""
    return etree.tostring(root)
