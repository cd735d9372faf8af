"""Data retention, pure: which rows are old enough to go, what must stay, and the daily
partitions of the largest tables on PostgreSQL.

Each table class keeps its rows for a number of days (``EVOTA_RETENTION_*_DAYS``; 0 keeps
them forever). A cutoff is never later than what something still reads (``floor``): the
KPI rollup's next day, a running campaign's health window. Rows of a running job or an open
session never qualify: the shell selects only finished ones. The shell
(:mod:`evota.cluster.pruner`) deletes in bounded batches or, for a partitioned table, drops
whole days.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Final


@dataclass(frozen=True, slots=True)
class Retention:
    """Days each table class is kept (0: forever)."""

    status_days: float = 90
    events_days: float = 180
    job_events_days: float = 365
    sessions_days: float = 0
    audit_days: float = 0

    @property
    def enabled(self) -> bool:
        return any(
            d > 0
            for d in (
                self.status_days,
                self.events_days,
                self.job_events_days,
                self.sessions_days,
                self.audit_days,
            )
        )


#: Tables partitioned by day on PostgreSQL (migration 0021) and their partition key.
PARTITIONED: Final = {
    "connector_status_history": "received_at",
    "charger_events": "received_at",
}
#: The schema partitions live in, apart from the tables evota's models describe.
PARTITION_SCHEMA: Final = "evota_partitions"
#: Daily partitions created ahead of today, so inserts never wait for the pruner.
DAYS_AHEAD: Final = 7


def cutoff(now: datetime, days: float, floors: Iterable[datetime | None] = ()) -> datetime | None:
    """Rows received before this may go; None: keep everything (``days`` 0). Never later
    than a floor (the earliest time something still reads)."""
    if days <= 0:
        return None
    limit = now - timedelta(days=days)
    for f in floors:
        if f is not None and f < limit:
            limit = f
    return limit


def expired_ids(rows: Sequence[tuple[int, datetime]], before: datetime) -> tuple[list[int], bool]:
    """Of the oldest rows by id (ids grow with time), the ids received before ``before``,
    and whether the walk is done (a row at or after it was met, or the batch ran short)."""
    ids = [row_id for row_id, at in rows if at < before]
    return ids, len(ids) < len(rows) or not rows


def rollup_floor(next_days: Iterable[int]) -> datetime | None:
    """The start of the earliest day the KPI rollup has still to read (days since
    1970-01-01, as ``charger_days.day``): history from then on must stay."""
    earliest = min(next_days, default=None)
    if earliest is None:
        return None
    return datetime.combine(date(1970, 1, 1) + timedelta(days=earliest), time(), UTC)


# -- daily partitions ------------------------------------------------------------------------


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def default_partition(table: str) -> str:
    return f"{table}_default"


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    start: datetime  # inclusive
    end: datetime  # exclusive


def day_partition(table: str, day: date) -> Partition:
    start = datetime.combine(day, time(), UTC)
    return Partition(partition_name(table, day), start, start + timedelta(days=1))


def parse_partition(table: str, name: str) -> Partition | None:
    """The partition a name stands for: a day, or everything received before a day (the
    table as it was before migration 0021); None for the default partition."""
    m = re.fullmatch(re.escape(table) + r"_(p|before)(\d{8})", name)
    if m is None:
        return None
    day = datetime.strptime(m.group(2), "%Y%m%d").date()
    if m.group(1) == "before":
        return Partition(name, datetime.min.replace(tzinfo=UTC), day_partition(table, day).start)
    return day_partition(table, day)


def partitions_to_create(
    table: str, existing: Iterable[str], today: date, ahead: int = DAYS_AHEAD
) -> list[Partition]:
    """Today's partition and ``ahead`` days after it, where no partition covers them."""
    have = [p for name in existing if (p := parse_partition(table, name)) is not None]
    wanted = [day_partition(table, today + timedelta(days=i)) for i in range(ahead + 1)]
    return [w for w in wanted if not any(h.start < w.end and w.start < h.end for h in have)]


def partitions_to_drop(table: str, existing: Iterable[str], before: datetime) -> list[str]:
    """Day partitions wholly before ``before`` (a day partly kept stays whole), oldest first."""
    parts = [p for name in existing if (p := parse_partition(table, name)) is not None]
    return [p.name for p in sorted(parts, key=lambda p: p.start) if p.end <= before]


def partition_days(first: date, last: date) -> list[date]:
    """Every day from ``first`` to ``last`` inclusive (the partitions a migration creates
    for the rows already stored)."""
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
