"""KPI maths (evota.evidence.kpis) and the regression rule (evota.evidence.regression)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evota.evidence import kpis, regression
from evota.evidence.kpis import Sums


def days(n: int, *, available: float = 1.0, faults: int = 0, sessions: int = 0, failed: int = 0):
    return Sums(
        charger_days=n,
        chargers=n,
        observed_s=86_400.0 * n,
        connected_s=86_400.0 * n,
        available_s=86_400.0 * n * available,
        available_share=n * available,
        available_share2=n * available * available,
        faults=faults,
        faulty_days=min(faults, n),
        faults_by_code={"GroundFailure": faults} if faults else {},
        sessions=sessions,
        failed_sessions=failed,
    )


def test_kpis_of_a_set_of_charger_days():
    k = kpis.kpis(days(10, available=0.9, faults=5, sessions=40, failed=4))
    assert k["availability"] == pytest.approx(0.9)
    assert k["faults_per_charger_day"] == 0.5
    assert k["faults_per_charger_day_by_code"] == {"GroundFailure": 0.5}
    assert k["session_success_rate"] == 0.9
    assert kpis.kpis(Sums())["session_success_rate"] is None  # nothing to divide by


def test_wilson_and_newcombe_match_published_values():
    # Newcombe (1998), example (a): 56/70 vs 48/80 -> difference 0.2, 95% CI 0.0524 to 0.3339
    lo, hi = kpis.wilson(0, 10)
    assert (lo, round(hi, 4)) == (0.0, 0.2775)  # Wilson (1927): 0/10
    d, lo, hi = kpis.newcombe(48, 80, 56, 70)
    assert (round(d, 4), round(lo, 4), round(hi, 4)) == (0.2, 0.0524, 0.3339)


def test_small_samples_say_too_little_data_instead_of_a_number():
    result = kpis.compare(days(3, sessions=5), days(3, sessions=5, failed=5))
    row = result["session_success_rate"]
    assert row["verdict"] == kpis.TOO_LITTLE and row["difference"] is None
    assert row["n"] == {"before": 5, "after": 5}


def test_a_clear_worsening_is_worse_and_noise_is_not_significant():
    result = kpis.compare(days(30, sessions=200, failed=4), days(30, sessions=200, failed=60))
    row = result["session_success_rate"]
    assert row["verdict"] == "worse" and row["ci95"][1] < 0
    faults = kpis.compare(days(30, faults=1), days(30, faults=45))["faults_per_charger_day"]
    assert faults["verdict"] == "worse" and faults["difference"] == pytest.approx(44 / 30)
    same = kpis.compare(days(30, sessions=200, failed=10), days(30, sessions=200, failed=11))
    assert same["session_success_rate"]["verdict"] == "no significant difference"


@given(st.integers(0, 200), st.integers(1, 200), st.integers(0, 200), st.integers(1, 200))
def test_newcombe_interval_contains_the_difference(x1: int, n1: int, x2: int, n2: int):
    x1, x2 = min(x1, n1), min(x2, n2)
    d, lo, hi = kpis.newcombe(x1, n1, x2, n2)
    assert -1 <= lo <= d + 1e-12 and d - 1e-12 <= hi <= 1


def test_regression_needs_significance_a_minimum_sample_and_a_real_rise():
    old, new = days(60, sessions=300, failed=6), days(60, sessions=300, failed=40)
    found = regression.regressions(old, new)
    assert [f.metric for f in found] == ["session_failure_rate"]
    assert found[0].z > regression.Z_ONE_SIDED_99
    assert "worse than 1.0" in found[0].message("2.0", "1.0")
    assert regression.regressions(new, old) == []  # better is not a regression
    small = regression.regressions(days(10, sessions=20), days(10, sessions=20, failed=20))
    assert small == []  # below the minimum sample, however bad
    faults = regression.regressions(days(60, faults=2), days(60, faults=30))
    assert [f.metric for f in faults] == ["fault_rate"]
