"""Gates: the Wilson bound, post-update health against the charger's own baseline."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from evota.rollout.engine import JobView
from evota.rollout.gate import Health, evaluate_gate, wilson_lower
from evota.rollout.policy import Policy
from evota.rollout.target import ChargerSnapshot

T = datetime(2026, 1, 1, tzinfo=UTC)


def test_wilson_known_values() -> None:
    assert wilson_lower(0, 0) == 0
    assert 0.20 < wilson_lower(1, 1) < 0.21  # 1 of 1 is nowhere near 95%
    assert wilson_lower(1, 1) < 0.95
    assert wilson_lower(100, 100) > 0.96
    assert wilson_lower(73, 74) < 0.95 < wilson_lower(74, 74)
    assert abs(wilson_lower(50, 100) - 0.4038) < 1e-3


@given(st.integers(1, 5000), st.data())
def test_wilson_bounds_and_monotone(n: int, data: st.DataObject) -> None:
    s = data.draw(st.integers(0, n - 1))
    lo, hi = wilson_lower(s, n), wilson_lower(s + 1, n)
    assert 0 <= lo <= hi <= 1
    assert lo <= s / n and hi <= (s + 1) / n  # a lower bound never exceeds the ratio
    assert wilson_lower(s, n + 1) <= lo + 1e-12  # one more failure never helps


def job(cid: str, state: str, job_id: int = 1, failure: str | None = None) -> JobView:
    return JobView(cid, job_id, "update", state, failure, "1.0", "2.0", T, T)


CHARGERS = {
    f"c{i}": ChargerSnapshot(id=f"c{i}", model="AC" if i % 2 else "DC", site_id=f"s{i % 3}")
    for i in range(40)
}


def test_gate_passes_and_breaks_down_by_model_and_site() -> None:
    jobs = [job(cid, "succeeded") for cid in CHARGERS]
    jobs.append(job("c0", "failed", job_id=0, failure="timed_out"))  # an older attempt
    r = evaluate_gate(2, jobs, CHARGERS, {}, Policy(success_threshold=0.9))
    assert r.passed and r.reasons == () and (r.executed, r.succeeded) == (40, 40)
    assert r.by_model["AC"]["executed"] == 20 and set(r.by_site) == {"s0", "s1", "s2"}
    d = r.to_dict()
    assert d["wave"] == 2 and d["health"]["faulted"] == 0 and isinstance(d["reasons"], list)


def test_one_of_one_does_not_pass_095() -> None:
    r = evaluate_gate(0, [job("c0", "succeeded")], CHARGERS, {}, Policy())
    assert not r.passed and "Wilson" in r.reasons[0]
    assert not evaluate_gate(0, [], CHARGERS, {}, Policy(success_threshold=0)).passed


def test_faulted_and_unavailable_count_as_failures() -> None:
    jobs = [job(cid, "succeeded") for cid in CHARGERS]
    health = {"c1": Health(faulted_after=True), "c2": Health(available_after=False)}
    r = evaluate_gate(0, jobs, CHARGERS, health, Policy(success_threshold=0.9))
    assert (r.succeeded, r.failed) == (38, 2) and not r.passed
    assert r.health["faulted"] == 1 and r.health["not_available"] == 1


def test_health_compared_with_baseline() -> None:
    jobs = [job(cid, "succeeded") for cid in CHARGERS]
    flaky = Health(10, 3, 1, 1.0, 10, 3, 1, 1.0)  # always 30% failed sessions: not worse
    policy = Policy(success_threshold=0.9)
    assert evaluate_gate(0, jobs, CHARGERS, dict.fromkeys(CHARGERS, flaky), policy).passed
    worse = Health(10, 0, 0, 1.0, 10, 3, 0, 1.0)
    r = evaluate_gate(0, jobs, CHARGERS, dict.fromkeys(CHARGERS, worse), policy)
    assert not r.passed and "session failure rate" in r.reasons[0]
    reconnecting = Health(5, 0, 0, 1.0, 5, 0, 2, 1.0)
    r = evaluate_gate(0, jobs, CHARGERS, dict.fromkeys(CHARGERS, reconnecting), policy)
    assert not r.passed and "reconnects" in r.reasons[0]
