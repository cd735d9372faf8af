"""Bounded path and query parameters shared by every route.

Unbounded parameters let a client push values the database cannot hold (an offset beyond a
64-bit integer overflows SQLite's driver; a NUL character is refused by PostgreSQL), which
would surface as a 500. Every integer here is bounded to what a BIGINT column holds, every
free text to a length and to printable characters, so such input is a 422 naming the field
before any query runs; the same bounds appear in the OpenAPI schema.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import Path, Query
from pydantic import AfterValidator, AwareDatetime

from evota.ocpp import identity

MAX_ID: Final = 2**63 - 1
"""The largest value of a BIGINT (and of SQLite's INTEGER) column."""
MAX_OFFSET: Final = 2**31 - 1
"""Further than any list evota keeps; also fits every database's OFFSET."""
PRINTABLE: Final = r"^[^\x00-\x1f\x7f]*$"
"""No control characters (PostgreSQL refuses NUL in text, the rest is never meaningful)."""
IDENTITY: Final = identity.PATTERN
"""An OCPP charge point identity: the one rule of :mod:`evota.ocpp.identity`."""

Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip")]
Limit = Annotated[int, Query(ge=1, le=1000, description="items per page (at most 1000)")]
BigLimit = Annotated[int, Query(ge=1, le=10000, description="items per page (at most 10000)")]

IntId = Annotated[int, Path(ge=1, le=MAX_ID, description="a numeric id")]
"""A numeric row id in the path (jobs, alerts, trusted roots, API tokens)."""
ChargerId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=identity.MAX_LENGTH,
        pattern=IDENTITY,
        description="the OCPP identity",
    ),
]
SitePath = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._\-]+$", description="a site id")
]
Uuid = Annotated[
    str, Path(min_length=1, max_length=36, pattern=r"^[A-Za-z0-9-]+$", description="an id")
]
"""A UUID-shaped id in the path (firmware, campaigns, operations, profiles, approvals)."""
Name = Annotated[str, Path(min_length=1, max_length=64, pattern=PRINTABLE, description="a name")]
"""A name in the path (users, vendors)."""


def text(description: str | None = None, max_length: int = 200) -> Any:
    """A free-text query filter (``None`` when absent): bounded, printable characters only."""
    return Query(None, max_length=max_length, pattern=PRINTABLE, description=description)


def _utc(value: datetime) -> datetime:
    """In UTC (naive means UTC); 0001-01-01T00:00+01:00 has no UTC year and is refused."""
    try:
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except OverflowError:
        raise ValueError("out of range once converted to UTC") from None


Instant = Annotated[datetime, AfterValidator(_utc)]
"""A point in time; without an offset it is read as UTC."""
AwareInstant = Annotated[AwareDatetime, AfterValidator(_utc)]
"""A point in time with its UTC offset (required)."""
