"""The sliding-window pacing rule shared by bulk operations and campaigns: never more than
``burst`` events in any window, and never a wait once the window has room."""

from __future__ import annotations

import bisect
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evota.pacing import Pace

T0 = datetime(2026, 1, 1, tzinfo=UTC)

rates = st.floats(min_value=0.01, max_value=1000, allow_nan=False, allow_infinity=False)
periods = st.sampled_from([1.0, 60.0])
arrivals = st.lists(st.floats(min_value=0, max_value=1000, allow_nan=False), max_size=60)


def greedy(pace: Pace, requests: list[float]) -> list[float]:
    """Send each request (in order) at the first moment the pace allows, as the shells do."""
    sent: list[float] = []
    for arrival in sorted(requests):
        now = max(arrival, sent[-1]) if sent else arrival
        free = pace.next_free(sent, now)
        if free is not None:
            assert free > now
            assert pace.allowance(sent, now) == 0
            # Not a moment earlier: just before ``free`` the window is still full.
            assert pace.allowance(sent, math.nextafter(free, -math.inf)) == 0
            now = free
        assert pace.allowance(sent, now) >= 1, "next_free named a moment without room"
        sent.append(now)
    return sent


@given(rates, periods, arrivals)
def test_never_more_than_burst_in_any_window(rate: float, period: float, requests: list[float]):
    pace = Pace(rate, period)
    sent = greedy(pace, requests)
    for i, start in enumerate(sent):
        inside = bisect.bisect_left(sent, start + pace.window) - i
        assert inside <= pace.burst, f"{inside} events within {pace.window}s of {start}"


@given(rates, periods, arrivals)
def test_never_stalls_when_the_window_has_room(
    rate: float, period: float, requests: list[float]
) -> None:
    pace = Pace(rate, period)
    sent = greedy(pace, requests)
    # Requests that find room go out on arrival; the first burst never waits.
    for arrival, at in zip(sorted(requests)[: pace.burst], sent, strict=False):
        assert at == arrival
    now = max(sent, default=0.0)
    assert pace.allowance(sent, now + pace.window) == pace.burst  # a full window later: all free
    assert pace.next_free(sent, now + pace.window) is None


@given(rates, periods, st.lists(st.integers(min_value=0, max_value=10_000), max_size=30))
def test_datetimes_and_seconds_agree(rate: float, period: float, offsets: list[int]) -> None:
    """The campaign engine passes datetimes, operations monotonic seconds: one rule."""
    pace = Pace(rate, period)
    now = 10_000
    seconds = [float(o) for o in offsets]
    stamps = [T0 + timedelta(seconds=o) for o in offsets]
    at = T0 + timedelta(seconds=now)
    assert pace.allowance(stamps, at) == pace.allowance(seconds, float(now))
    free_s = pace.next_free(seconds, float(now))
    free_t = pace.next_free(stamps, at)
    assert (free_s is None) == (free_t is None)
    if free_s is not None and free_t is not None:
        assert abs((free_t - T0).total_seconds() - free_s) < 1e-6


def test_fractional_rates_are_honoured_not_rounded_to_zero() -> None:
    assert (Pace(0.5).burst, Pace(0.5).window) == (1, 2.0)
    assert (Pace(10).burst, Pace(10).window) == (10, 1.0)
    assert (Pace(2.5).burst, Pace(2.5).window) == (2, 0.8)
    assert (Pace(2, 60).burst, Pace(2, 60).window) == (2, 60.0)  # 2 per minute
    assert (Pace(0.5, 60).burst, Pace(0.5, 60).window) == (1, 120.0)  # one per two minutes


def test_an_event_leaves_the_window_exactly_one_window_later() -> None:
    pace = Pace(1)
    assert pace.next_free([5.0], 5.5) == 6.0
    assert pace.allowance([5.0], 6.0) == 1
    assert pace.next_free([5.0], 6.0) is None
    assert pace.next_free([T0], T0 + timedelta(seconds=0.5)) == T0 + timedelta(seconds=1)


def test_the_burst_th_latest_event_decides_not_the_oldest() -> None:
    # 2 per second, three events in the window (e.g. rollbacks counted, or a lowered rate):
    # room again only when the second latest leaves, not when the oldest does.
    assert Pace(2).next_free([0.1, 0.2, 0.3], 0.5) == 1.2


def test_a_window_given_directly_is_kept_exactly() -> None:
    assert 0.1 * 3 / 3 != 0.1  # why the window is not derived from a rate here
    assert (Pace.per_window(3, 0.1).burst, Pace.per_window(3, 0.1).window) == (3, 0.1)
    assert Pace.per_window(3, 0.1).next_free([0.0, 0.0, 0.0], 0.05) == 0.1
    for burst in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="burst"):
            Pace.per_window(burst, 1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [0, -1, math.inf, math.nan])
def test_a_rate_must_be_positive_and_finite(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        Pace(rate)
