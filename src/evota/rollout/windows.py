"""Maintenance windows in a site's local time, turned into real (UTC) instants.

A window occurrence is one continuous span of real time: it opens at the first instant the
site's clock reads ``start`` on a listed day and closes at the first instant after that
the clock reads ``end``. Daylight saving time follows from that one rule:

* a boundary inside the spring-forward gap (02:30 in Berlin on the last Sunday of March)
  moves to the instant the clock jumps (03:00 local), so 01:30–03:30 that night is one
  real hour long and 02:00–02:30 does not happen that night;
* a boundary inside the repeated fall-back hour takes its first occurrence, so 01:30–03:30
  that night is three real hours long and a window never opens twice in one night.

Empty window lists mean "always open". All results are aware UTC datetimes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from evota.rollout.policy import Window

__all__ = ["current_close", "next_opening", "occurrences", "window_open"]

_DAY = timedelta(days=1)


@functools.lru_cache(maxsize=256)
def _zone(tz: str) -> ZoneInfo:
    return ZoneInfo(tz)


@functools.lru_cache(maxsize=65536)
def _instant(zone: ZoneInfo, wall: datetime) -> datetime:
    """The first UTC instant at which the local clock reads ``wall`` or later."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first  # exists (fold=0 is the first of two readings on fall-back night)
    # In the spring-forward gap: find the jump, between the two offsets' readings.
    lo = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    hi = first
    if lo > hi:
        lo, hi = hi, lo
    while hi - lo > timedelta(microseconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(zone).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return hi


def _span(zone: ZoneInfo, w: Window, day: date) -> tuple[datetime, datetime]:
    start_wall = datetime.combine(day, w.start)
    end_day = day if w.end > w.start else day + _DAY
    start = _instant(zone, start_wall)
    end = _instant(zone, datetime.combine(end_day, w.end))
    return start, max(start, end)


def occurrences(
    windows: Sequence[Window], tz: str, first_day: date, days: int
) -> Iterator[tuple[datetime, datetime]]:
    """Window spans (UTC) for occurrences starting on ``days`` local days from ``first_day``."""
    zone = _zone(tz)
    for i in range(days):
        day = first_day + i * _DAY
        weekday = day.weekday()
        for w in windows:
            if weekday in w.days:
                start, end = _span(zone, w, day)
                if end > start:
                    yield start, end


def _local_day(tz: str, now: datetime) -> date:
    return now.astimezone(_zone(tz)).date()


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")


def window_open(windows: Sequence[Window], tz: str, now: datetime) -> bool:
    """Whether ``now`` lies inside an occurrence (start inclusive, end exclusive)."""
    if not windows:
        return True
    _require_aware(now)
    day = _local_day(tz, now) - _DAY  # yesterday's occurrence may still be running
    return any(s <= now < e for s, e in occurrences(windows, tz, day, 2))


def next_opening(windows: Sequence[Window], tz: str, now: datetime) -> datetime | None:
    """``now`` (in UTC) if open, else the next instant a window opens (None: never)."""
    _require_aware(now)
    now = now.astimezone(UTC)
    if window_open(windows, tz, now):
        return now
    starts = [s for s, _ in occurrences(windows, tz, _local_day(tz, now) - _DAY, 9) if s > now]
    return min(starts, default=None)


def current_close(windows: Sequence[Window], tz: str, now: datetime) -> datetime | None:
    """When the open window(s) around ``now`` close, following windows that overlap or
    touch (Mon 22:00–24:00 then Tue 00:00–05:00 closes Tue 05:00). None when closed now, or
    when the windows never close within a week (e.g. every day 00:00–00:00)."""
    if not windows:
        return None
    _require_aware(now)
    spans = list(occurrences(windows, tz, _local_day(tz, now) - _DAY, 9))
    close: datetime | None = None
    for s, e in spans:
        if s <= now < e and (close is None or e > close):
            close = e
    if close is None:
        return None
    horizon = now + 7 * _DAY
    extended = True
    while extended and close < horizon:
        extended = False
        for s, e in spans:
            if s <= close < e:
                close = e
                extended = True
    return close if close < horizon else None
