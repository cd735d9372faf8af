"""Policy, target and wave specs: validation names the field, JSON round-trips exactly."""

from __future__ import annotations

from datetime import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evota.rollout.policy import (
    FAILURES,
    AutoStopRule,
    Policy,
    PolicyError,
    Target,
    WaveSpec,
    Window,
    policy_from_dict,
    policy_to_dict,
    target_from_dict,
    target_to_dict,
    waves_from_list,
    waves_to_list,
)


def test_defaults_and_issue_example() -> None:
    assert policy_from_dict({}) == Policy()
    p = policy_from_dict(
        {
            "success_threshold": 0.5,
            "soak_seconds": 5,
            "health_window_seconds": 5,
            "auto_stop": [
                {
                    "failures": ["unhealthy", "installation_failed"],
                    "min_executed": 2,
                    "max_failure_percent": 25,
                    "action": "abort_and_rollback",
                }
            ],
            "windows": [{"days": ["mon", "tue"], "start": "22:00", "end": "05:00"}],
            "site_windows": {"berlin": [{"days": [5, 6], "start": "01:00", "end": "04:30"}]},
            "retries": {"booted_previous_version": 1, "download_failed": 2},
        }
    )
    assert p.auto_stop[0].failures == frozenset({"unhealthy", "installation_failed"})
    assert p.windows == (Window(frozenset({0, 1}), time(22), time(5)),)
    assert p.windows_for("berlin")[0].days == frozenset({5, 6})
    assert p.windows_for("paris") == p.windows
    assert p.retries["download_failed"] == 2
    hash(p)  # frozen and hashable, mappings included
    assert waves_from_list([{"count": 4}, {"percent": 50}, {"percent": 100}]) == (
        WaveSpec(count=4),
        WaveSpec(percent=50),
        WaveSpec(percent=100),
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (
            {"auto_stop": [{"min_executed": 2, "max_failure_percent": 5, "action": "x"}]},
            "policy.auto_stop[0].action",
        ),
        (
            {
                "auto_stop": [
                    {
                        "failures": ["nope"],
                        "min_executed": 1,
                        "max_failure_percent": 5,
                        "action": "pause",
                    }
                ]
            },
            "policy.auto_stop[0].failures",
        ),
        (
            {"auto_stop": [{"min_executed": 1, "action": "pause"}]},
            "policy.auto_stop[0].max_failure_percent",
        ),
        ({"success_threshold": 1.5}, "policy.success_threshold"),
        ({"success_threshold": True}, "policy.success_threshold"),
        ({"soak_seconds": -1}, "policy.soak_seconds"),
        (
            {"windows": [{"days": ["xyz"], "start": "22:00", "end": "05:00"}]},
            "policy.windows[0].days[0]",
        ),
        ({"windows": [{"start": "25:00", "end": "05:00"}]}, "policy.windows[0].start"),
        ({"windows": [{"start": "22:00"}]}, "policy.windows[0].end"),
        (
            {"site_windows": {"b": [{"start": "x", "end": "05:00"}]}},
            "policy.site_windows.b[0].start",
        ),
        ({"retries": {"timed_out": -1}}, "policy.retries.timed_out"),
        ({"retries": {"bogus": 1}}, "policy.retries.bogus"),
        ({"max_per_site_fraction": 0}, "policy.max_per_site_fraction"),
        ({"max_per_site": 0}, "policy.max_per_site"),
        ({"rollback_on_failure": ["nah"]}, "policy.rollback_on_failure[0]"),
        ({"typo": 1}, "policy.typo"),
    ],
)
def test_bad_policy_names_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(PolicyError) as err:
        policy_from_dict(data)
    assert err.value.field == field, err.value


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([{"count": 0}], "waves[0].count"),
        ([{"count": 1, "percent": 5}], "waves[0]"),
        ([{}], "waves[0]"),
        ([{"percent": 50}, {"percent": 20}], "waves[1].percent"),
        ([{"percent": 101}], "waves[0].percent"),
        ([{"size": 3}], "waves[0].size"),
        ("1,2", "waves"),
    ],
)
def test_bad_waves_name_the_field(items: Any, field: str) -> None:
    with pytest.raises(PolicyError) as err:
        waves_from_list(items)
    assert err.value.field == field


def test_bad_target_names_the_field() -> None:
    for data, field in [
        ({"vendors": "Acme"}, "target.vendors"),
        ({"models": ["ok", ""]}, "target.models[1]"),
        ({"max_offline_days": -1}, "target.max_offline_days"),
        ({"dynamic": "yes"}, "target.dynamic"),
        ({"version_min": 3}, "target.version_min"),
        ({"color": "red"}, "target.color"),
    ]:
        with pytest.raises(PolicyError) as err:
            target_from_dict(data)
        assert err.value.field == field


names = st.text("abcdef-", min_size=1, max_size=6)
failures = st.sampled_from(sorted(FAILURES))
times = st.builds(
    time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]), st.sampled_from([0, 0, 30])
)
windows = st.builds(Window, st.frozensets(st.integers(0, 6), min_size=1), times, times)
rules = st.builds(
    AutoStopRule,
    st.frozensets(failures),
    st.integers(1, 100),
    st.floats(0, 99.5),
    st.sampled_from(["pause", "abort", "abort_and_rollback"]),
)
policies = st.builds(
    Policy,
    success_threshold=st.floats(0, 1),
    soak_seconds=st.floats(0, 1e6),
    pause_at_gate=st.booleans(),
    auto_stop=st.lists(rules, max_size=3).map(tuple),
    windows=st.lists(windows, max_size=3).map(tuple),
    site_windows=st.dictionaries(names, st.lists(windows, max_size=2).map(tuple), max_size=3),
    max_per_site=st.none() | st.integers(1, 10),
    max_per_site_fraction=st.none() | st.floats(0.01, 1),
    max_concurrent=st.none() | st.integers(1, 10_000),
    start_rate_per_minute=st.none() | st.floats(0.1, 1000),
    retries=st.dictionaries(failures, st.integers(0, 5), max_size=3),
    rollback_on_failure=st.lists(failures, max_size=3).map(tuple),
    max_wait_seconds=st.none() | st.floats(0, 1e6),
)
targets = st.builds(
    Target,
    vendors=st.lists(names, max_size=3).map(tuple),
    tags=st.lists(names, max_size=3).map(tuple),
    exclude_ids=st.lists(names, max_size=3).map(tuple),
    version_min=st.none() | names,
    older_than_target=st.booleans(),
    max_offline_days=st.none() | st.floats(0, 365),
    dynamic=st.booleans(),
)
specs = st.lists(
    st.one_of(
        st.builds(WaveSpec, count=st.integers(1, 1000)),
        st.builds(WaveSpec, percent=st.floats(0.01, 100)),
    ),
    max_size=5,
).map(
    lambda s: tuple(
        w
        for i, w in enumerate(s)
        if w.percent is None or all(o.percent is None or o.percent < w.percent for o in s[:i])
    )
)


@given(policies)
def test_policy_round_trips(p: Policy) -> None:
    d = policy_to_dict(p)
    assert policy_from_dict(d) == p
    assert policy_to_dict(policy_from_dict(d)) == d


@given(targets)
def test_target_round_trips(t: Target) -> None:
    assert target_from_dict(target_to_dict(t)) == t


@given(specs)
def test_waves_round_trip(s: tuple[WaveSpec, ...]) -> None:
    assert waves_from_list(waves_to_list(s)) == s
