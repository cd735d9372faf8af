"""The fleet's firmware over time and who is behind, pure.

evota keeps no daily snapshot of versions, so history is rebuilt from what it stores: each
boot reports the version the charger runs, each succeeded update or rollback job says what
it installed and what ran before (``previous_version``), and the charger's record holds the
version it runs now. :func:`daily` turns those facts into per-day counts:

* a charger's version on a day is the one it ran at the end of that day (at ``now`` for today);
* before its first fact in the window it ran that fact's ``before`` when known (a job's
  ``previous_version``), else the fact's own version (a boot reports what was already running);
  with no fact at all it ran its current version;
* the current version holds from ``now``, so today's counts always equal the fleet as it is;
* a charger is counted from the day it was created (or its first fact, if earlier).

Work is O(chargers + facts + days x versions), so 100,000 chargers over 366 days is a sweep,
not a join.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from evota.firmware import versions

UNKNOWN = "unknown"
MAX_DAYS = 366

Key = tuple[str, str]  # (vendor, version), UNKNOWN where the charger never said


@dataclass(frozen=True, slots=True)
class ChargerNow:
    """A charger as its record is now."""

    id: str
    vendor: str | None
    version: str | None
    since: datetime  # when evota first knew it (created_at)


@dataclass(frozen=True, slots=True)
class Change:
    """From ``at`` the charger ran ``version``; until then ``before``, when that is known."""

    charger_id: str
    at: datetime
    version: str | None
    before: str | None = None


@dataclass(frozen=True, slots=True)
class Day:
    day: date
    counts: tuple[tuple[Key, int], ...]  # vendor, then newest version first; unknown last

    @property
    def total(self) -> int:
        return sum(n for _, n in self.counts)


def window(now: datetime, days: int) -> tuple[date, datetime]:
    """The first day of the ``days`` UTC days ending today, and its first instant."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be 1 to {MAX_DAYS}, got {days}")
    first = now.astimezone(UTC).date() - timedelta(days=days - 1)
    return first, datetime(first.year, first.month, first.day, tzinfo=UTC)


def sort_keys(keys: Iterable[Key]) -> list[Key]:
    """By vendor, then newest version first, unknown versions last."""
    unique = set(keys)
    newest_first = sorted(
        unique,
        key=lambda k: (
            k[1] != UNKNOWN,
            versions.version_key(k[1]) if k[1] != UNKNOWN else (),
            k[1],
        ),
        reverse=True,
    )
    # stable: within a vendor the newest-first order above is kept
    return sorted(
        newest_first, key=lambda k: (k[0] == UNKNOWN, k[0].casefold(), k[0], k[1] == UNKNOWN)
    )


def daily(
    chargers: Iterable[ChargerNow],
    changes: Iterable[Change],
    first_day: date,
    days: int,
    now: datetime,
) -> tuple[Day, ...]:
    """How many chargers ran each (vendor, version) at the end of each of ``days`` days from
    ``first_day`` (see the module docstring for the rules)."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be 1 to {MAX_DAYS}, got {days}")
    by_charger: dict[str, list[Change]] = defaultdict(list)
    for c in changes:
        if c.at <= now:
            by_charger[c.charger_id].append(c)

    def index(at: datetime) -> int:
        return (at.astimezone(UTC).date() - first_day).days

    # diff[i][key]: chargers that start (+) or stop (-) running key from day i on.
    diff: list[Counter[Key]] = [Counter() for _ in range(days + 1)]
    for charger in chargers:
        vendor = charger.vendor or UNKNOWN
        facts = sorted(by_charger.get(charger.id, ()), key=lambda c: c.at)
        if not facts or facts[-1].version != charger.version:
            facts.append(Change(charger.id, now, charger.version))
        first = facts[0]
        initial = first.before if first.before is not None else first.version
        start = max(0, index(min(charger.since, first.at)))
        if start >= days:
            continue
        segments: list[tuple[int, str | None]] = [(start, initial)]
        for fact in facts:
            i = max(start, index(fact.at))
            if i >= days:
                break
            if segments[-1][0] == i:
                segments[-1] = (i, fact.version)
            else:
                segments.append((i, fact.version))
        for (i, version), nxt in zip(segments, [*segments[1:], (days, None)], strict=True):
            key = (vendor, version or UNKNOWN)
            diff[i][key] += 1
            diff[nxt[0]][key] -= 1
    running: Counter[Key] = Counter()
    out = []
    for i in range(days):
        running.update(diff[i])  # update adds, negative counts included
        counts = tuple((k, running[k]) for k in sort_keys(k for k, n in running.items() if n > 0))
        out.append(Day(first_day + timedelta(days=i), counts))
    return tuple(out)


def series_keys(days: Sequence[Day]) -> list[Key]:
    """Every (vendor, version) seen on any day, in :func:`sort_keys` order."""
    return sort_keys(k for d in days for k, _ in d.counts)


def releases_behind(version: str, released: Iterable[str]) -> int:
    """How many released versions newer than ``version`` there are (equivalent spellings once)."""
    key = versions.version_key(version)
    return len({k for k in map(versions.version_key, released) if k > key})
