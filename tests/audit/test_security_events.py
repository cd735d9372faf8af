"""Security-event alert rules: what alerts, deduplication, the per-charger cap, restarts."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from evota.audit import security_events as se

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def run(events: list[se.Reported], state: se.State | None = None) -> list[se.Alert]:
    state = state or se.State()
    out = []
    for e in events:
        state, alert = se.observe(state, e, e.at)
        if alert is not None:
            out.append(alert)
    return out


def test_a_bad_firmware_signature_alerts_at_once_naming_charger_and_event() -> None:
    [alert] = run([se.Reported("CP-1", "InvalidFirmwareSignature", T0, "sig mismatch", T0)])
    assert alert.subject == "CP-1" and alert.at == T0
    assert alert.message == "charger CP-1 reported security event InvalidFirmwareSignature"
    assert alert.detail["event"] == "InvalidFirmwareSignature"
    assert alert.detail["tech_info"] == "sig mismatch"


def test_informational_events_never_alert() -> None:
    kinds = ["FirmwareUpdated", "StartupOfTheDevice", "ResetOrReboot", "SettingSystemTime", "x"]
    assert run([se.Reported("CP-1", k, T0 + i * MIN) for i, k in enumerate(kinds * 10)]) == []


def test_a_cleared_log_alerts_only_when_it_repeats_within_the_window() -> None:
    once_a_day = [
        se.Reported("CP-1", "SecurityLogWasCleared", T0 + i * timedelta(hours=25)) for i in range(3)
    ]
    assert run(once_a_day) == []
    twice = [
        se.Reported("CP-1", "SecurityLogWasCleared", T0 + i * timedelta(hours=2)) for i in range(2)
    ]
    [alert] = run(twice)
    assert alert.message == "charger CP-1 reported SecurityLogWasCleared 2 times within 24 h"


def test_same_event_is_quiet_for_an_hour_then_alerts_again() -> None:
    events = [se.Reported("CP-1", "TamperDetectionActivated", T0 + i * MIN) for i in range(61)]
    assert [a.at for a in run(events)] == [T0, T0 + 60 * MIN]


def test_one_charger_cannot_flood_other_chargers_still_alert() -> None:
    kinds = sorted(se.ALERTING)
    flood = [se.Reported("EVIL", k, T0) for k in kinds]
    flood.append(se.Reported("GOOD", "FirmwareTampered", T0))
    alerts = run(flood)
    assert Counter(a.subject for a in alerts) == {"EVIL": 5, "GOOD": 1}


def test_a_restart_rebuilt_from_raised_alerts_and_stored_events_repeats_nothing() -> None:
    before = se.State()
    before = se.fired(before, "CP-1", "InvalidFirmwareSignature", T0)
    before = se.counted(before, se.Reported("CP-1", "SecurityLogWasCleared", T0))
    later = T0 + 10 * MIN
    assert run([se.Reported("CP-1", "InvalidFirmwareSignature", later)], before) == []
    [cleared] = run([se.Reported("CP-1", "SecurityLogWasCleared", later)], before)
    assert cleared.detail["count"] == 2


reported = st.builds(
    se.Reported,
    st.sampled_from(["A", "B", "C"]),
    st.sampled_from([*sorted(se.ALERTING)[:8], "SecurityLogWasCleared", "FirmwareUpdated"]),
    st.integers(0, 6 * 60).map(lambda m: T0 + m * MIN),
)


@settings(max_examples=300)
@given(st.lists(reported, max_size=80))
def test_alerts_stay_bounded_per_charger_and_type(events: list[se.Reported]) -> None:
    events.sort(key=lambda e: e.at)
    t = se.Thresholds()
    state = se.State(t)
    alerts: list[se.Alert] = []
    for e in events:
        state, alert = se.observe(state, e, e.at)
        if alert is not None:
            alerts.append(alert)
        # memory: only what the rules need (quiet periods, capped times, short windows)
        assert all(len(v) <= t.repeats + 1 for v in state.windows.values())
        assert all(len(v) <= t.per_charger for v in state.raised.values())
    for charger in "ABC":
        times = [a.at for a in alerts if a.subject == charger]
        for start in times:  # no hour holds more than the cap
            assert sum(start <= x < start + t.quiet for x in times) <= t.per_charger
        per_type: dict[str, list[datetime]] = {}
        for a in alerts:
            if a.subject == charger:
                per_type.setdefault(a.detail["event"], []).append(a.at)
        for seen in per_type.values():  # one alert per type per quiet period
            assert all(b - a >= t.quiet for a, b in itertools.pairwise(seen))
    # every alert is for an alerting type, or a repeat of a repeated one
    assert all(a.detail["event"] in se.ALERTING | se.REPEATED for a in alerts)
    # the first alerting event of each charger always gets through
    for charger in "ABC":
        first = next((e for e in events if e.charger_id == charger and e.type in se.ALERTING), None)
        if first is not None:
            assert any(a.subject == charger and a.at == first.at for a in alerts)
