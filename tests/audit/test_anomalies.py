"""The anomaly rules against a brute-force model of their definition (full histories, no
pruning), and their memory bound."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evota.audit import anomalies as an
from evota.audit.chain import Entry

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NO_HOURS = frozenset[str]()


def reset(at: datetime, charger: str, outcome: str = "Accepted", actor: str = "ann") -> an.Event:
    return an.Event(
        at, actor, "command.reset", outcome, frozenset({"firmware_manager"}), (charger,)
    )


def login_failed(at: datetime, user: str, client: str | None = None) -> an.Event:
    return an.Event(at, user, "auth.login", "failed", client=client)


def command(at: datetime, actor: str, roles: frozenset[str] = frozenset({"viewer"})) -> an.Event:
    return an.Event(at, actor, "command.unlock", "Accepted", roles, ("C1",))


def run(state: an.State, events: list[an.Event]) -> tuple[an.State, list[tuple[int, an.Alert]]]:
    fired: list[tuple[int, an.Alert]] = []
    for i, event in enumerate(events):
        state, alerts = an.observe(state, event, event.at)
        fired.extend((i, a) for a in alerts)
    return state, fired


def model(times: list[datetime], threshold: int, window: timedelta) -> list[int]:
    """Indices where the rule fires: more than ``threshold`` in (t - window, t], and no firing
    in the window before."""
    fires: list[int] = []
    for i, t in enumerate(times):
        count = sum(1 for s in times[: i + 1] if s > t - window)
        if count > threshold and not (fires and t < times[fires[-1]] + window):
            fires.append(i)
    return fires


gaps = st.lists(st.integers(0, 900), min_size=1, max_size=60)


def timeline(seconds: list[int]) -> list[datetime]:
    out, at = [], T0
    for s in seconds:
        at += timedelta(seconds=s)
        out.append(at)
    return out


@settings(max_examples=300, deadline=None)
@given(gaps, st.integers(0, 6), st.integers(1, 60))
def test_failed_logins_fire_exactly_when_the_count_passes_the_threshold(
    seconds: list[int], threshold: int, window_minutes: int
) -> None:
    window = timedelta(minutes=window_minutes)
    t = an.Thresholds(failed_logins=threshold, failed_logins_window=window)
    times = timeline(seconds)
    _, fired = run(an.State(t), [login_failed(at, "mallory") for at in times])
    assert [i for i, _ in fired] == (model(times, threshold, window) if threshold else [])
    assert all(a.rule == an.FAILED_LOGINS and a.subject == "user:mallory" for _, a in fired)
    for (i, a), (j, b) in itertools.pairwise(fired):  # never twice in one window
        assert times[j] - times[i] >= window and b.at - a.at >= window


kinds = st.sampled_from(["reset", "rejected_reset", "login", "command"])
subjects = st.sampled_from(["A", "B", "C"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3000), kinds, subjects), min_size=1, max_size=80))
def test_every_rule_and_subject_is_its_own_window(
    steps: list[tuple[int, str, str]],
) -> None:
    t = an.Thresholds(
        resets_per_charger=2,
        resets_window=timedelta(hours=2),
        commands_per_operator=3,
        commands_window=timedelta(minutes=30),
        failed_logins=2,
        failed_logins_window=timedelta(minutes=15),
        restricted_roles=NO_HOURS,
    )
    events: list[an.Event] = []
    expected: dict[tuple[str, str], list[int]] = {}
    at = T0
    for i, (gap, kind, subject) in enumerate(steps):
        at += timedelta(seconds=gap)
        if kind == "reset":
            events.append(reset(at, subject, actor="op-" + subject))
            keys = [(an.REPEATED_RESETS, subject), (an.COMMAND_VOLUME, "op-" + subject)]
        elif kind == "rejected_reset":  # an answered but refused reset is not a reset
            events.append(reset(at, subject, "Rejected", actor="op-" + subject))
            keys = [(an.COMMAND_VOLUME, "op-" + subject)]
        elif kind == "login":
            events.append(login_failed(at, subject, client="10.0.0." + subject))
            keys = [
                (an.FAILED_LOGINS, "user:" + subject),
                (an.FAILED_LOGINS, "client:10.0.0." + subject),
            ]
        else:
            events.append(command(at, "op-" + subject))
            keys = [(an.COMMAND_VOLUME, "op-" + subject)]
        for key in keys:
            expected.setdefault(key, []).append(i)
    _, fired = run(an.State(t), events)
    got: dict[tuple[str, str], list[int]] = {}
    for i, a in fired:
        got.setdefault((a.rule, a.subject), []).append(i)
    want = {}
    for key, indices in expected.items():
        threshold, window = t.limit(key[0])
        fires = model([events[i].at for i in indices], threshold, window)
        if fires:
            want[key] = [indices[f] for f in fires]
    assert got == want


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 120), st.integers(0, 500)), min_size=1, max_size=150))
def test_memory_stays_bounded_and_empties_once_windows_pass(steps: list[tuple[int, int]]) -> None:
    t = an.Thresholds(
        resets_per_charger=3, commands_per_operator=4, failed_logins=2, restricted_roles=NO_HOURS
    )
    state, at = an.State(t), T0
    for gap, n in steps:
        at += timedelta(seconds=gap)
        event = (reset, login_failed, command)[n % 3](at, f"s{n % 7}")
        state, _ = an.observe(state, event, at)
        for (rule, _subject), times in state.windows.items():
            assert len(times) <= t.limit(rule)[0] + 1
            assert list(times) == sorted(times)
        # Nothing older than its window survives a sweep interval.
        for (rule, _subject), times in state.windows.items():
            assert min(times) > at - t.limit(rule)[1] - an.SWEEP_EVERY
    # 7 chargers x 4 resets, 8 operators x 5 commands, 7 users x 3 logins, 22 quiet periods
    assert state.size <= 7 * 4 + 8 * 5 + 7 * 3 + 22
    later = at + t.lookback + an.SWEEP_EVERY
    state, _ = an.observe(state, command(later, "fresh"), later)
    assert dict(state.windows) == {(an.COMMAND_VOLUME, "fresh"): (later,)}
    assert not state.quiet


def reference_allows(hours: an.Hours, t: time) -> bool:
    """Walk the minutes from start to end: the allowed set, midnight crossing included."""
    start = hours.start.hour * 60 + hours.start.minute
    end = hours.end.hour * 60 + hours.end.minute
    if start == end:
        return True
    allowed, m = set(), start
    while m != end:
        allowed.add(m)
        m = (m + 1) % 1440
    return t.hour * 60 + t.minute in allowed


clock_times = st.builds(time, st.integers(0, 23), st.integers(0, 59))


@given(clock_times, clock_times, clock_times)
def test_allowed_hours_cross_midnight(start: time, end: time, at: time) -> None:
    hours = an.Hours.parse(f"{start:%H:%M}-{end:%H:%M}")
    assert hours == an.Hours(start, end)
    assert hours.allows(at) == reference_allows(hours, at)


def test_allowed_hours_examples() -> None:
    night = an.Hours.parse("22:00-06:00")
    assert night.allows(time(23, 59)) and night.allows(time(0, 0)) and night.allows(time(5, 59))
    assert not night.allows(time(6, 0)) and not night.allows(time(12, 0))
    day = an.Hours.parse("7:00 - 20:00")
    assert day.allows(time(7)) and not day.allows(time(20)) and str(day) == "07:00-20:00"
    for bad in ("", "7-20", "25:00-01:00", "07:60-08:00", "07:00-20:00-21:00", "ab:cd-ef:gh"):
        with pytest.raises(ValueError, match=r"HH:MM|00:00"):
            an.Hours.parse(bad)
    with pytest.raises(ValueError, match="time zone"):
        an.Thresholds(timezone="Mars/Olympus")


@settings(max_examples=300, deadline=None)
@given(
    clock_times,
    clock_times,
    st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
    st.lists(st.integers(0, 5 * 3600), min_size=1, max_size=40),
)
def test_off_hours_fire_once_per_closed_stretch(
    start: time, end: time, tz: str, seconds: list[int]
) -> None:
    hours = an.Hours(start, end)
    t = an.Thresholds(allowed_hours=hours, timezone=tz, commands_per_operator=0)
    times = timeline(seconds)
    roles = frozenset({"operator", "viewer"})
    _, fired = run(an.State(t), [command(at, "olga", roles) for at in times])
    zone = ZoneInfo(tz)
    expected: list[int] = []
    quiet_until: datetime | None = None
    for i, at in enumerate(times):
        local = at.astimezone(zone)
        if reference_allows(hours, local.time()):
            continue
        if quiet_until is not None and at < quiet_until:
            continue
        expected.append(i)
        # Quiet until the allowed hours next begin: the first later minute that is allowed.
        probe = local.replace(second=0, microsecond=0) + timedelta(minutes=1)
        while not (probe.time() == start and reference_allows(hours, probe.time())):
            probe += timedelta(minutes=1)
        quiet_until = probe.astimezone(UTC)
    assert [i for i, _ in fired] == expected
    assert all(a.rule == an.OFF_HOURS and a.subject == "olga" for _, a in fired)
    assert all(a.detail["roles"] == ["operator"] for _, a in fired)


def test_off_hours_need_a_restricted_role_and_a_command() -> None:
    night = T0.replace(hour=23)
    t = an.Thresholds()  # operator, 07:00-20:00 UTC
    state = an.State(t)
    state, alerts = an.observe(state, command(night, "vic"), night)  # viewer only
    assert alerts == []
    login = an.Event(night, "olga", "auth.login", "ok", frozenset({"operator"}))
    state, alerts = an.observe(state, login, night)
    assert alerts == []
    state, alerts = an.observe(state, command(night, "olga", frozenset({"operator"})), night)
    assert [a.rule for a in alerts] == [an.OFF_HOURS]
    off = an.State(an.Thresholds(restricted_roles=NO_HOURS))
    _, alerts = an.observe(off, command(night, "olga", frozenset({"operator"})), night)
    assert alerts == []


def test_restart_state_from_fired_alerts_stays_quiet() -> None:
    t = an.Thresholds(failed_logins=1, failed_logins_window=timedelta(minutes=15))
    state = an.fired(an.State(t), an.FAILED_LOGINS, "user:eve", T0)
    times = [T0 + timedelta(minutes=m) for m in (1, 2, 16)]
    _, fired = run(state, [login_failed(at, "eve") for at in times])
    assert [i for i, _ in fired] == [2]  # the quiet period from before the restart held


def entry(actor: str, role: str, action: str, **detail: str) -> Entry:
    return Entry(
        seq=1, at=T0, actor=actor, role=role, action=action, outcome="failed", detail=detail
    )


def test_system_entries_and_alerts_are_not_observed() -> None:
    assert an.event_of(entry("system", "system", "command.reset")) is None
    assert an.event_of(entry("ann", "operator", "alert.acknowledged")) is None
    as_system = an.event_of(entry("system", "", "auth.login", client="10.1.1.1"))
    assert as_system is not None and as_system.client == "10.1.1.1"  # a login *as* system
    ev = an.event_of(entry("ann", "operator,viewer", "command.reset"), ["C1"])
    assert ev is not None and ev.roles == {"operator", "viewer"} and ev.chargers == ("C1",)
