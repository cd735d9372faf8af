"""Maintenance windows in local site time, across DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from evota.rollout.policy import Window
from evota.rollout.windows import current_close, next_opening, window_open

EVERY_DAY = frozenset(range(7))
NIGHT = (Window(EVERY_DAY, time(1, 30), time(3, 30)),)
BERLIN, NEW_YORK = "Europe/Berlin", "America/New_York"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_empty_is_always_open() -> None:
    now = utc(2026, 1, 1)
    assert window_open((), "UTC", now) and next_opening((), "UTC", now) == now
    assert current_close((), "UTC", now) is None


def test_overnight_window_and_days() -> None:
    w = (Window(frozenset({4}), time(22), time(5)),)  # Friday 22:00 -> Saturday 05:00
    fri = utc(2026, 1, 2, 21, 59)  # a Friday; Berlin is UTC+1 in January
    assert not window_open(w, "UTC", fri)
    assert next_opening(w, "UTC", fri) == utc(2026, 1, 2, 22)
    assert window_open(w, "UTC", utc(2026, 1, 3, 4, 59))  # Saturday morning, started Friday
    assert not window_open(w, "UTC", utc(2026, 1, 3, 22, 30))  # Saturday night: not listed
    assert current_close(w, "UTC", utc(2026, 1, 3, 1)) == utc(2026, 1, 3, 5)
    assert next_opening(w, "UTC", utc(2026, 1, 3, 6)) == utc(2026, 1, 9, 22)
    # 21:59 UTC on Friday is 22:59 CET: already open in Berlin, closing 05:00 CET.
    assert next_opening(w, BERLIN, fri) == fri
    assert current_close(w, BERLIN, fri) == utc(2026, 1, 3, 4)


def test_chained_windows_close_at_the_end_of_the_chain() -> None:
    w = (
        Window(frozenset({0}), time(22), time(0)),
        Window(frozenset({1}), time(0), time(5)),
    )
    assert current_close(w, "UTC", utc(2026, 1, 5, 23)) == utc(2026, 1, 6, 5)  # Mon 23:00
    always = (Window(EVERY_DAY, time(0), time(0)),)
    assert window_open(always, "UTC", utc(2026, 1, 5, 23))
    assert current_close(always, "UTC", utc(2026, 1, 5, 23)) is None  # never closes


def test_berlin_spring_forward() -> None:
    # 2026-03-29: 02:00 CET -> 03:00 CEST at 01:00 UTC. 01:30 CET = 00:30Z; 03:30 CEST = 01:30Z
    night = utc(2026, 3, 29, 0, 0)
    assert next_opening(NIGHT, BERLIN, night) == utc(2026, 3, 29, 0, 30)
    assert current_close(NIGHT, BERLIN, utc(2026, 3, 29, 0, 45)) == utc(2026, 3, 29, 1, 30)
    # A window entirely in the gap does not happen that night.
    gap = (Window(EVERY_DAY, time(2, 0), time(2, 30)),)
    assert next_opening(gap, BERLIN, night) == utc(2026, 3, 30, 0, 0)  # next night, CEST
    # A boundary in the gap moves to the jump (03:00 CEST = 01:00Z).
    late = (Window(EVERY_DAY, time(2, 30), time(4, 0)),)
    assert next_opening(late, BERLIN, night) == utc(2026, 3, 29, 1, 0)


def test_berlin_fall_back() -> None:
    # 2026-10-25: 03:00 CEST -> 02:00 CET at 01:00 UTC. The window is 3 real hours.
    opening = next_opening(NIGHT, BERLIN, utc(2026, 10, 24, 22))
    assert opening == utc(2026, 10, 24, 23, 30)  # 01:30 CEST
    assert current_close(NIGHT, BERLIN, opening) == utc(2026, 10, 25, 2, 30)  # 03:30 CET
    # Both 02:45 readings are inside; it opens once.
    assert window_open(NIGHT, BERLIN, utc(2026, 10, 25, 0, 45))
    assert window_open(NIGHT, BERLIN, utc(2026, 10, 25, 1, 45))
    assert next_opening(NIGHT, BERLIN, utc(2026, 10, 25, 2, 30)) == utc(2026, 10, 26, 0, 30)


def test_new_york_transitions() -> None:
    # 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z); 2026-11-01 02:00 EDT -> 01:00 EST (06:00Z).
    assert next_opening(NIGHT, NEW_YORK, utc(2026, 3, 8, 0)) == utc(2026, 3, 8, 6, 30)
    assert current_close(NIGHT, NEW_YORK, utc(2026, 3, 8, 6, 45)) == utc(2026, 3, 8, 7, 30)
    assert next_opening(NIGHT, NEW_YORK, utc(2026, 11, 1, 0)) == utc(2026, 11, 1, 5, 30)
    assert current_close(NIGHT, NEW_YORK, utc(2026, 11, 1, 5, 30)) == utc(2026, 11, 1, 8, 30)


zones = st.sampled_from([BERLIN, NEW_YORK, "UTC", "Australia/Lord_Howe", "Asia/Kolkata"])
clock = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
windows = st.lists(
    st.builds(Window, st.frozensets(st.integers(0, 6), min_size=1), clock, clock),
    min_size=1,
    max_size=3,
).map(tuple)
instants = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)
# Instants near transitions are where bugs live.
near_dst = st.builds(
    lambda base, minutes: base + timedelta(minutes=minutes),
    st.sampled_from(
        [utc(2026, 3, 29, 1), utc(2026, 10, 25, 1), utc(2026, 3, 8, 7), utc(2026, 11, 1, 6)]
    ),
    st.integers(-36 * 60, 36 * 60),
)


@given(windows, zones, instants | near_dst)
def test_open_next_close_are_consistent(ws: tuple[Window, ...], tz: str, now: datetime) -> None:
    is_open = window_open(ws, tz, now)
    opening = next_opening(ws, tz, now)
    if is_open:
        assert opening == now
        close = current_close(ws, tz, now)
        if close is not None:
            assert close > now
            assert window_open(ws, tz, close - timedelta(microseconds=1))
            assert not window_open(ws, tz, close)
    else:
        assert current_close(ws, tz, now) is None
        assert opening is not None and opening > now
        assert window_open(ws, tz, opening)
        assert not window_open(ws, tz, opening - timedelta(microseconds=1))
        assert opening - now <= timedelta(days=8)
        # an opening is at a listed day's start time, in local wall-clock terms or a DST jump
        local = opening.astimezone(ZoneInfo(tz))
        starts = {w.start.replace(second=0) for w in ws}
        assert local.time().replace(second=0, microsecond=0) in starts or local.minute == 0
