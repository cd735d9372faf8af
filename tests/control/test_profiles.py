"""Configuration drift: each kind, the report's partition, and that applying the fixable
changes leaves nothing fixable behind."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evota.control.profiles import Reported, drift, report, same_value, settings_problem

DESIRED = {
    "HeartbeatInterval": "300",
    "MeterValueSampleInterval": "60",
    "LocalPreAuthorize": "true",
}


def test_each_kind_of_drift() -> None:
    reported = {
        "heartbeatinterval": Reported("900"),  # keys are case-insensitive
        "MeterValueSampleInterval": Reported("30", readonly=True),
        "LocalPreAuthorize": Reported(None),
    }
    rows = {r.key: r for r in drift("CP1", DESIRED, reported)}
    assert rows["HeartbeatInterval"].kind == "differs" and rows["HeartbeatInterval"].fixable
    assert rows["HeartbeatInterval"].actual == "900"
    assert rows["MeterValueSampleInterval"].kind == "readonly"
    assert not rows["MeterValueSampleInterval"].fixable
    assert rows["LocalPreAuthorize"].kind == "missing" and rows["LocalPreAuthorize"].fixable
    unknown = drift("CP1", {"VendorThing": "1"}, reported)
    assert [(r.kind, r.fixable) for r in unknown] == [("unknown_key", False)]


def test_equal_values_are_in_sync_and_booleans_ignore_case() -> None:
    reported = {
        "HeartbeatInterval": Reported("300"),
        "MeterValueSampleInterval": Reported("60", readonly=True),  # readonly but as desired
        "LocalPreAuthorize": Reported("TRUE"),
    }
    assert drift("CP1", DESIRED, reported) == []
    assert not same_value("abc", "ABC")  # only booleans are case-insensitive
    assert same_value("False", "false")


def test_report_counts_never_fetched_chargers_apart() -> None:
    configs = {
        "A": {k: Reported(v) for k, v in DESIRED.items()},
        "B": {"HeartbeatInterval": Reported("1")},
    }
    r = report(DESIRED, ["A", "B", "C"], configs)
    assert r.in_sync == ("A",) and r.drifted == ("B",) and r.not_fetched == ("C",)
    assert r.fixable == ("B",)
    counts = r.counts()
    assert counts["by_kind"] == {"differs": 1, "missing": 0, "unknown_key": 2, "readonly": 0}
    assert (counts["chargers"], counts["drifted"], counts["not_fetched"]) == (3, 1, 1)


desired_keys = st.sampled_from(["A", "B", "HeartbeatInterval", "X"])
reported_keys = st.sampled_from(["a", "B", "heartbeatinterval", "X", "Y"])  # other spellings
values = st.sampled_from(["1", "2", "true", "TRUE", "x"])
configs = st.dictionaries(
    reported_keys, st.builds(Reported, st.none() | values, st.booleans()), max_size=5
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(desired_keys, values, min_size=1, max_size=4),
    st.dictionaries(st.sampled_from(["C1", "C2", "C3", "C4"]), configs),
)
def test_applying_the_fixable_changes_leaves_only_unfixable_drift(
    desired: dict[str, str], fetched: dict[str, dict[str, Reported]]
) -> None:
    ids = ["C1", "C2", "C3", "C4"]
    before = report(desired, ids, fetched)
    # every charger lands in exactly one bucket
    buckets = [*before.in_sync, *before.drifted, *before.not_fetched]
    assert sorted(buckets) == ids
    # a charger is in sync exactly when it has no rows
    assert {r.charger_id for r in before.rows} == set(before.drifted)
    # what a perfect apply does: the charger takes each fixable key's desired value
    after_configs = {}
    for cid, config in fetched.items():
        fixed = dict(config)
        for row in before.rows:
            if row.charger_id == cid and row.fixable:
                name = next(k for k in config if k.casefold() == row.key.casefold())
                fixed[name] = Reported(row.desired, config[name].readonly)
        after_configs[cid] = fixed
    after = report(desired, ids, after_configs)
    assert after.fixable == ()
    assert {(r.charger_id, r.key) for r in after.rows} == {
        (r.charger_id, r.key) for r in before.rows if not r.fixable
    }


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({}, "settings"),
        ([], "settings"),
        ({"": "1"}, "settings."),
        ({"K" * 51: "1"}, "settings." + "K" * 51),
        ({"A": 1}, "settings.A"),
        ({"A": "x" * 501}, "settings.A"),
        ({"Key": "1", "KEY": "2"}, "settings.KEY"),
        ({" A": "1"}, "settings. A"),
    ],
)
def test_bad_settings_name_the_key(value: object, field: str) -> None:
    problem = settings_problem(value)
    assert problem is not None and problem[0] == field


def test_good_settings_pass() -> None:
    assert settings_problem(DESIRED) is None
