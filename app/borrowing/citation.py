"""The citation of a borrowing request: what the patron asked for, never who asked.

Field names follow Alma's resource-sharing request object, so intake by REST and by
ISO 18626 land in the same shape, and the WorldShare client builds its allow-list from it.
"""

from __future__ import annotations

from datetime import date

from pydantic import Field

from app.validation import StrictInput

_SHORT = 500
_LONG = 2000


class Citation(StrictInput):
    title: str = Field(min_length=1, max_length=_LONG)
    author: str | None = Field(default=None, max_length=_SHORT)
    isbn: str | None = Field(default=None, max_length=64)
    issn: str | None = Field(default=None, max_length=64)
    oclc_number: str | None = Field(default=None, max_length=64)
    publisher: str | None = Field(default=None, max_length=_SHORT)
    place_of_publication: str | None = Field(default=None, max_length=_SHORT)
    year: str | None = Field(default=None, max_length=32)
    edition: str | None = Field(default=None, max_length=_SHORT)
    volume: str | None = Field(default=None, max_length=64)
    issue: str | None = Field(default=None, max_length=64)
    pages: str | None = Field(default=None, max_length=64)
    journal_title: str | None = Field(default=None, max_length=_LONG)
    chapter_title: str | None = Field(default=None, max_length=_LONG)
    chapter_author: str | None = Field(default=None, max_length=_SHORT)
    doi: str | None = Field(default=None, max_length=256)
    format: str | None = Field(
        default=None, max_length=32, description="PHYSICAL or DIGITAL (Alma's format code)"
    )
    citation_type: str | None = Field(
        default=None, max_length=32, description="BK (book) or CR (article), Alma's codes"
    )
    last_interest_date: date | None = None
    copyright_compliance: str | None = Field(
        default=None,
        max_length=64,
        description="ISO 18626 serviceInfo/copyrightCompliance (e.g. US:CCG), for a copy",
    )

    @property
    def is_article(self) -> bool:
        return (self.citation_type or "").upper() == "CR" or (
            (self.format or "").upper() == "DIGITAL"
        )
