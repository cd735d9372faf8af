"""Sliding-window pacing, pure: at most ``burst`` events in any ``window`` seconds.

One rule for every rate limit evota enforces over time (a bulk operation's sends per second,
a campaign's update starts per minute). A rate of ``r`` per ``period`` seconds allows
``burst = max(1, floor(r))`` events in any ``window = period * burst / r`` seconds, so a
fractional rate is honoured instead of rounded to zero: 0.5/s is one event every two seconds.

Callers pass the times of their latest events and "now"; nothing here reads a clock. Times are
either floats (seconds from a monotonic clock) or datetimes (the window is then added as a
``timedelta``, exact to the microsecond); one call uses one kind. An event at ``t`` counts
while ``now < t + window``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

__all__ = ["Pace"]

T = TypeVar("T", float, datetime)


@dataclass(frozen=True, slots=True)
class Pace:
    """``rate`` events per ``period`` seconds, as a sliding window."""

    rate: float
    period: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"rate must be a finite number > 0, not {self.rate!r}")
        if not (math.isfinite(self.period) and self.period > 0):
            raise ValueError(f"period must be a finite number > 0, not {self.period!r}")

    @classmethod
    def per_window(cls, burst: int, window: float) -> Pace:
        """At most ``burst`` events in any ``window`` seconds, the window kept exactly as
        given (``window * burst / burst`` can round away from it: 0.1 * 3 / 3 != 0.1)."""
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(f"burst must be an integer >= 1, not {burst!r}")
        return cls(burst, window)

    @property
    def burst(self) -> int:
        """Events allowed within one :attr:`window`."""
        return max(1, math.floor(self.rate))

    @property
    def window(self) -> float:
        """The window's length in seconds: exactly ``period`` for a whole rate."""
        if self.burst == self.rate:
            return self.period
        return self.period * self.burst / self.rate

    def recent(self, times: Iterable[T], now: T) -> list[T]:
        """The times still inside the window at ``now``, in the given order."""
        if isinstance(now, datetime):  # exact in microseconds: now < t + w  <=>  now - w < t
            since = now - timedelta(seconds=self.window)
            return [t for t in times if since < t]
        return [t for t in times if now < t + self.window]

    def allowance(self, times: Iterable[T], now: T) -> int:
        """How many more events may happen at ``now``."""
        return max(0, self.burst - len(self.recent(times, now)))

    def next_free(self, times: Iterable[T], now: T) -> T | None:
        """When the next event may happen: None if one may happen at ``now``, otherwise the
        moment the ``burst``-th latest event in the window leaves it."""
        inside = self.recent(times, now)
        if len(inside) < self.burst:
            return None
        return _after(heapq.nlargest(self.burst, inside)[-1], self.window)


def _after(t: T, seconds: float) -> T:
    if isinstance(t, datetime):
        return t + timedelta(seconds=seconds)
    return t + seconds
