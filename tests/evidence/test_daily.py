"""The day computation (evota.evidence.daily): examples and properties over random days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evota.evidence import daily
from evota.evidence.daily import (
    Connected,
    Disconnected,
    SessionEnded,
    State,
    Status,
    Totals,
    VersionSeen,
    roll,
)

START = datetime(2026, 3, 2, tzinfo=UTC)
END = START + timedelta(days=1)


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def test_a_day_connected_half_and_available_a_quarter():
    events = [
        Connected(at(0)),
        Status(at(0), 1, "Unavailable"),
        Status(at(21600), 1, "Available"),  # repaired 6 h after it went out of order
        Status(at(43200), 1, "Faulted", "GroundFailure"),
        Disconnected(at(43200)),
    ]
    totals, state = roll(State(), events, START, END)
    assert totals.connected == timedelta(hours=12)
    assert totals.available == timedelta(hours=6)
    assert totals.faults == {"GroundFailure": 1}
    assert totals.repairs == 1 and totals.repair_time == timedelta(hours=6)
    assert totals.offline_episodes == 1  # offline from noon, longer than 5 minutes
    assert not state.connected and state.outage_since == at(43200)
    assert State.from_json(state.to_json()) == state


def test_short_drop_is_a_reconnect_not_an_offline_episode():
    events = [Connected(at(10)), Disconnected(at(100)), Connected(at(160))]
    totals, _ = roll(State(), events, START, END)
    assert totals.reconnects == 1 and totals.offline_episodes == 0


def test_version_change_sessions_and_repeated_fault_reports():
    events = [
        VersionSeen(at(5), "1.0.0"),
        Status(at(10), 1, "Faulted", "OtherError"),
        Status(at(11), 1, "Faulted", "OtherError"),  # the same fault reported again
        SessionEnded(at(20), failed=True),
        SessionEnded(at(30), failed=False),
        VersionSeen(at(40), "2.0.0"),
    ]
    totals, state = roll(State(version="1.0.0"), events, START, END)
    assert totals.faults == {"OtherError": 1}
    assert (totals.sessions, totals.failed_sessions) == (2, 1)
    assert totals.version_changed and state.version == "2.0.0"
    first, _ = roll(State(), [VersionSeen(at(5), "1.0.0")], START, END)
    assert not first.version_changed  # an unknown version becoming known is no change


def test_events_outside_the_window_are_ignored_and_end_before_start_refused():
    totals, _ = roll(State(), [Connected(at(-5)), SessionEnded(END, False)], START, END)
    assert totals == Totals(observed=daily.DAY)
    with pytest.raises(ValueError):
        roll(State(), [], END, START)


# -- properties -------------------------------------------------------------------------------
STATUSES = ["Available", "Charging", "Preparing", "Faulted", "Unavailable", "Finishing"]
seconds = st.integers(min_value=0, max_value=86_399)


@st.composite
def events(draw: st.DrawFn) -> list[daily.Event]:
    n = draw(st.integers(0, 40))
    out: list[daily.Event] = []
    for _ in range(n):
        t = at(draw(seconds) + draw(st.integers(0, 999_999)) / 1e6)
        kind = draw(st.integers(0, 4))
        if kind == 0:
            out.append(Connected(t))
        elif kind == 1:
            out.append(Disconnected(t))
        elif kind == 2:
            code = draw(st.sampled_from(["NoError", "GroundFailure", "OtherError"]))
            out.append(Status(t, draw(st.integers(0, 2)), draw(st.sampled_from(STATUSES)), code))
        elif kind == 3:
            out.append(SessionEnded(t, draw(st.booleans())))
        else:
            out.append(VersionSeen(t, draw(st.sampled_from(["1.0", "2.0"]))))
    return sorted(out, key=lambda e: e.at)


@st.composite
def states(draw: st.DrawFn) -> State:
    connectors = draw(
        st.dictionaries(st.integers(0, 2), st.tuples(st.sampled_from(STATUSES), st.just("NoError")))
    )
    before = st.none() | st.integers(1, 86_400 * 3).map(lambda s: START - timedelta(seconds=s))
    connected = draw(st.booleans())
    return State(
        connected=connected,
        ever_connected=connected or draw(st.booleans()),
        offline_since=None if connected else draw(before),
        connectors=connectors,
        outage_since=draw(before) if daily._out_of_order(connectors) else None,
        version=draw(st.sampled_from([None, "1.0", "2.0"])),
    )


@settings(max_examples=300, deadline=None)
@given(states(), events())
def test_bounds(state: State, evs: list[daily.Event]):
    totals, _ = roll(state, evs, START, END)
    assert timedelta(0) <= totals.available <= totals.connected <= totals.observed == daily.DAY
    counts = [totals.offline_episodes, totals.reconnects, totals.sessions, totals.repairs]
    assert min(counts) >= 0 and all(n > 0 for n in totals.faults.values())
    assert 0 <= totals.failed_sessions <= totals.sessions
    assert totals.repair_time >= timedelta(0) and totals.repair_s2 >= 0


@settings(max_examples=300, deadline=None)
@given(states(), events(), seconds, st.integers(0, 999_999))
def test_splitting_a_day_and_carrying_state_gives_the_same_totals(
    state: State, evs: list[daily.Event], split_s: int, split_us: int
):
    split = at(split_s + split_us / 1e6)
    whole, end_whole = roll(state, evs, START, END)
    first, middle = roll(state, evs, START, split)
    second, end_split = roll(State.from_json(middle.to_json()), evs, split, END)
    both = first + second
    assert end_split == end_whole
    assert both.repair_s2 == pytest.approx(whole.repair_s2)
    assert Totals(**{**_fields(both), "repair_s2": 0}) == Totals(
        **{**_fields(whole), "repair_s2": 0}
    )


def _fields(t: Totals) -> dict[str, object]:
    return {f: getattr(t, f) for f in Totals.__slots__}  # type: ignore[attr-defined]
