"""Gates: the Wilson bound, post-update health against the charger's own baseline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from evota.rollout.campaign import JobView
from evota.rollout.gate import (
    OPERATIVE,
    AfterBoot,
    GateOutcome,
    Health,
    StatusReport,
    evaluate_gate,
    health_after_boot,
    judge,
    more_to_pass,
    wilson_lower,
    wilson_upper,
)
from evota.rollout.policy import Policy
from evota.selection import ChargerSnapshot

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


def test_wilson_upper_mirrors_the_lower_bound() -> None:
    assert wilson_upper(0, 0) == 1 and wilson_upper(5, 5) == 1
    assert abs(wilson_upper(0, 2) - 0.6576) < 1e-3
    assert abs(wilson_upper(50, 100) - 0.5962) < 1e-3


@given(st.integers(0, 300), st.integers(0, 300), st.floats(0, 1))
def test_three_outcomes_follow_the_interval(s: int, f: int, threshold: float) -> None:
    v = judge(s, s + f, threshold)
    assert v.lower <= v.upper
    if s + f == 0:
        assert v.outcome is GateOutcome.INCONCLUSIVE
    elif v.lower >= threshold:
        assert v.outcome is GateOutcome.PASSED and v.more == 0
    elif v.upper < threshold:
        assert v.outcome is GateOutcome.FAILED
    else:
        assert v.outcome is GateOutcome.INCONCLUSIVE
    # never both: a rate cannot be proven above and below the same threshold
    assert not (v.lower >= threshold and v.upper < threshold)


@given(st.integers(0, 200), st.integers(0, 50), st.floats(0.01, 0.999))
def test_more_to_pass_is_the_smallest_run_of_successes_that_passes(
    s: int, f: int, threshold: float
) -> None:
    n = s + f
    k = more_to_pass(s, n, threshold)
    assert k is not None  # below 1 some run always passes
    assert wilson_lower(s + k, n + k) >= threshold
    if k > 0:
        assert wilson_lower(s + k - 1, n + k - 1) < threshold


def test_more_to_pass_at_the_edges() -> None:
    assert more_to_pass(5, 5, 1.0) is None  # a lower bound never reaches 1
    assert more_to_pass(0, 0, 0.0) == 0
    assert more_to_pass(6, 6, 0.5) == 0
    assert more_to_pass(2, 2, 0.5) == 2  # 4/4: 0.510
    assert more_to_pass(5, 5, 0.95) == 68  # 73/73 is the first all-success run past 0.95


def test_small_fleet_words() -> None:
    """The reasons an operator reads at a small fleet's gates."""
    two = "2/2 healthy; 2 more would pass 0.5 at 95% (Wilson 0.342..1.000)"
    assert judge(2, 2, 0.5).words() == two
    assert judge(6, 6, 0.5).words() == "6/6 healthy: Wilson lower bound 0.610 >= 0.5"
    assert judge(0, 4, 0.5).words() == "0/4 healthy: Wilson upper bound 0.490 < 0.5"
    assert judge(0, 0, 0.5).words() == "no charger has executed its update yet"


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
    assert r.passed and (r.executed, r.succeeded) == (40, 40)
    assert r.reasons == ("40/40 healthy: Wilson lower bound 0.912 >= 0.9",)
    assert r.by_model["AC"]["executed"] == 20 and set(r.by_site) == {"s0", "s1", "s2"}
    d = r.to_dict()
    assert d["wave"] == 2 and d["health"]["faulted"] == 0 and isinstance(d["reasons"], list)


def test_one_of_one_does_not_pass_095() -> None:
    r = evaluate_gate(0, [job("c0", "succeeded")], CHARGERS, {}, Policy())
    assert r.outcome == "inconclusive" and "1/1 healthy; 72 more would pass 0.95" in r.reasons[0]
    nothing = evaluate_gate(0, [], CHARGERS, {}, Policy(success_threshold=0))
    assert nothing.outcome == "inconclusive" and nothing.executed == 0


def test_faulted_and_unavailable_count_as_failures() -> None:
    jobs = [job(cid, "succeeded") for cid in CHARGERS]
    health = {"c1": Health(faulted_after=True), "c2": Health(available_after=False)}
    r = evaluate_gate(0, jobs, CHARGERS, health, Policy(success_threshold=0.9))
    assert (r.succeeded, r.failed) == (38, 2) and r.outcome == "inconclusive"
    assert "38/40 healthy; " in r.reasons[0] and "1 Faulted, 1 not Available" in r.reasons[0]
    assert r.health["faulted"] == 1 and r.health["not_available"] == 1


def test_health_compared_with_baseline() -> None:
    jobs = [job(cid, "succeeded") for cid in CHARGERS]
    flaky = Health(10, 3, 1, 1.0, 10, 3, 1, 1.0)  # always 30% failed sessions: not worse
    policy = Policy(success_threshold=0.9)
    assert evaluate_gate(0, jobs, CHARGERS, dict.fromkeys(CHARGERS, flaky), policy).passed
    worse = Health(10, 0, 0, 1.0, 10, 3, 0, 1.0)
    r = evaluate_gate(0, jobs, CHARGERS, dict.fromkeys(CHARGERS, worse), policy)
    assert r.outcome == "failed" and "session failure rate" in r.reasons[-1]
    reconnecting = Health(5, 0, 0, 1.0, 5, 0, 2, 1.0)
    r = evaluate_gate(0, jobs, CHARGERS, dict.fromkeys(CHARGERS, reconnecting), policy)
    assert r.outcome == "failed" and "reconnects" in r.reasons[-1]


def test_evidence_accumulates_and_the_wave_is_shown_beside_it() -> None:
    """12 chargers, waves 4 / 50% / 100% at 0.5: the second wave's 2/2 alone is inconclusive
    (0.342), but with the pilot's 4/4 it is 6/6 and passes (0.610)."""
    pilot = [job(f"c{i}", "succeeded", job_id=i) for i in range(4)]
    wave1 = [job(f"c{i}", "succeeded", job_id=i) for i in (4, 5)]
    policy = Policy(success_threshold=0.5)
    r = evaluate_gate(1, pilot + wave1, CHARGERS, {}, policy, wave=["c4", "c5"])
    assert r.outcome == "passed" and (r.executed, r.succeeded) == (6, 6)
    assert r.wave_numbers == {"executed": 2, "succeeded": 2, "failed": 0}
    alone = evaluate_gate(1, wave1, CHARGERS, {}, policy, wave=["c4", "c5"])
    assert alone.outcome == "inconclusive" and alone.more_to_pass == 2


def test_a_failing_group_is_held_and_the_rest_judged_without_it() -> None:
    """Odd chargers are model AC, even ones DC; every DC charger faults after its update."""
    jobs = [job(f"c{i}", "succeeded", job_id=i) for i in range(12)]
    sick = {f"c{i}": Health(faulted_after=True) for i in range(0, 12, 2)}
    policy = Policy(success_threshold=0.5, group_by="model")
    r = evaluate_gate(0, jobs, CHARGERS, sick, policy)
    assert r.hold == {"DC": "model DC: 0/6 healthy: Wilson upper bound 0.390 < 0.5"}
    assert r.outcome == "passed" and (r.executed, r.succeeded) == (6, 6)
    assert r.by_model == {"AC": r.by_model["AC"]} and r.by_model["AC"]["outcome"] == "passed"
    assert "held model DC: 0/6 healthy" in r.reasons[1]
    # a later gate leaves the held group out, and holds it no more
    later = evaluate_gate(1, jobs, CHARGERS, sick, policy, held=["DC"])
    assert later.hold == {} and later.held == ("DC",) and later.executed == 6
    # without group_by the same evidence fails the whole campaign
    whole = evaluate_gate(0, jobs, CHARGERS, sick, Policy(success_threshold=0.5))
    assert whole.hold == {} and whole.outcome == "inconclusive" and whole.executed == 12
    # every group failing leaves nothing to go on with: inconclusive for want of evidence
    all_sick = dict.fromkeys((f"c{i}" for i in range(12)), Health(faulted_after=True))
    r = evaluate_gate(0, jobs, CHARGERS, all_sick, policy)
    assert set(r.hold) == {"AC", "DC"} and r.executed == 0 and r.outcome == "inconclusive"


# -- connectors after the boot with the new version ----------------------------------------

BOOT = T + timedelta(minutes=5)
WITHIN = timedelta(seconds=600)
WINDOW = timedelta(seconds=3600)


def at(seconds: float) -> datetime:
    return BOOT + timedelta(seconds=seconds)


def after_boot(reports: list[StatusReport], now: float = 4000, connectors=(1, 2)) -> AfterBoot:
    return health_after_boot(BOOT, reports, connectors, at(now), WITHIN, WINDOW)


def test_every_connector_available_soon_after_the_boot_is_healthy() -> None:
    reports = [StatusReport(0, "Available", at(0)), StatusReport(1, "Available", at(1))]
    reports.append(StatusReport(2, "Charging", at(30)))  # a session proves it works too
    assert after_boot(reports) == AfterBoot(available=True, faulted=False)


def test_booted_but_unavailable_is_not_available() -> None:
    reports = [StatusReport(c, "Unavailable", at(1)) for c in (0, 1, 2)]
    verdict = after_boot(reports)
    assert not verdict.available and not verdict.faulted
    assert verdict.problem == "connector 1 not Available within 600s of the boot (last Unavailable)"


def test_available_too_late_or_only_before_the_boot_does_not_count() -> None:
    late = [StatusReport(1, "Available", at(601)), StatusReport(2, "Available", at(1))]
    assert not after_boot(late).available
    before = [StatusReport(1, "Available", at(-1)), StatusReport(2, "Available", at(1))]
    assert "connector 1" in (after_boot(before).problem or "")
    assert not after_boot([], connectors=()).available  # nothing reported proves nothing


def test_flapping_faulted_then_available_is_faulted() -> None:
    reports = [StatusReport(1, "Available", at(1)), StatusReport(2, "Available", at(1))]
    reports += [StatusReport(2, "Faulted", at(900)), StatusReport(2, "Available", at(901))]
    verdict = after_boot(reports)
    assert verdict.available and verdict.faulted
    assert verdict.problem == "connector 2 Faulted 900s after the boot"
    # after the health window only a fault that is still there counts
    cleared = [
        *reports[:2],
        StatusReport(2, "Faulted", at(3700)),
        StatusReport(2, "Available", at(3701)),
    ]
    assert not after_boot(cleared).faulted
    assert after_boot(cleared[:3]).faulted


def test_unhealthy_chargers_are_named_in_the_gate() -> None:
    health = {"c1": Health(available_after=False, problem="connector 1 not Available")}
    r = evaluate_gate(
        0, [job("c1", "succeeded"), job("c2", "succeeded")], CHARGERS, health, Policy()
    )
    assert r.health["not_available"] == 1
    assert r.health["unhealthy_examples"] == {"c1": "connector 1 not Available"}


STATUSES = ["Available", "Unavailable", "Faulted", "Charging", "Occupied", "Preparing"]
report_st = st.builds(
    StatusReport,
    st.integers(0, 3),
    st.sampled_from(STATUSES),
    st.integers(-200, 5000).map(lambda s: at(s)),
)


def reference(
    reports: list[StatusReport], connectors: set[int], now: datetime
) -> tuple[bool, bool]:
    """The rules of docs/campaigns.md written plainly, to compare the function with."""
    seen = [r for r in reports if BOOT <= r.at <= now]
    wanted = {c for c in connectors if c > 0} | {r.connector_id for r in seen if r.connector_id}
    available = bool(wanted) and all(
        any(r.connector_id == c and r.status in OPERATIVE and r.at <= BOOT + WITHIN for r in seen)
        for c in wanted
    )
    latest: dict[int, str] = {}
    for r in sorted(seen, key=lambda r: r.at):
        latest[r.connector_id] = r.status
    faulted = any(r.status == "Faulted" and r.at <= BOOT + WINDOW for r in seen) or (
        "Faulted" in latest.values()
    )
    return available, faulted


@given(
    st.lists(report_st, max_size=12),
    st.sets(st.integers(0, 3), max_size=3),
    st.integers(0, 5000),
)
def test_health_after_boot_follows_the_documented_rules(
    reports: list[StatusReport], connectors: set[int], now_s: int
) -> None:
    now = at(now_s)
    verdict = health_after_boot(BOOT, reports, connectors, now, WITHIN, WINDOW)
    assert (verdict.available, verdict.faulted) == reference(reports, connectors, now)
    assert (verdict.problem is None) == (verdict.available and not verdict.faulted)
    # the order reports are given in, and what happened before the boot or after now, change
    # nothing (reports received at the same instant keep their order)
    noise = [StatusReport(1, "Faulted", at(-1)), StatusReport(2, "Faulted", now + timedelta(1))]
    again = health_after_boot(BOOT, [*noise, *reports], connectors, now, WITHIN, WINDOW)
    assert again == verdict
    # one more Faulted report inside the window always makes it faulted
    if now >= BOOT:
        worse = [*reports, StatusReport(1, "Faulted", min(now, BOOT + WINDOW))]
        assert health_after_boot(BOOT, worse, connectors, now, WITHIN, WINDOW).faulted
