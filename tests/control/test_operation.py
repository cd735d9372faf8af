"""The bulk operation core: stage planning, the send decision and its invariants, simulated in
virtual time with random answers, latencies and limits."""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evota.control.operation import (
    ACTIVE,
    FINAL,
    TERMINAL,
    TRANSITIONS,
    Limits,
    OperationError,
    OperationEvent,
    OperationState,
    Plan,
    Progress,
    Query,
    ResultState,
    decide,
    plan_stages,
    query_from_dict,
    select_chargers,
    split,
    summarize,
    transition,
)
from evota.selection import ChargerSnapshot

# -- stage planning --------------------------------------------------------------------------


@given(st.integers(1, 5000))
def test_default_stages_are_ten_percent_then_the_rest(count: int) -> None:
    sizes = plan_stages(count)
    assert sum(sizes) == count
    assert sizes[0] == max(1, math.ceil(count / 10))
    assert len(sizes) == (1 if sizes[0] == count else 2)


@given(st.integers(1, 500), st.lists(st.integers(1, 100), min_size=1, max_size=8))
def test_explicit_stages_cover_every_charger_once(count: int, sizes: list[int]) -> None:
    planned = plan_stages(count, sizes)
    assert sum(planned) == count
    assert all(s >= 1 for s in planned)
    # the given sizes are kept in order while chargers last; leftovers form one last stage
    for given_size, got in zip(sizes, planned, strict=False):
        assert got <= given_size
    if sum(sizes) < count:
        assert planned == (*sizes, count - sum(sizes))
    ids = [f"C{i}" for i in range(count)]
    stages = split(ids, planned)
    assert [c for s in stages for c in s] == ids


def test_fifty_chargers_go_five_then_forty_five() -> None:
    assert plan_stages(50) == (5, 45)
    assert plan_stages(1) == (1,)
    assert plan_stages(50, [10]) == (10, 40)
    assert plan_stages(5, [2, 10, 10]) == (2, 3)
    assert plan_stages(0) == ()


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_a_bad_stage_size_names_its_position(bad: object) -> None:
    with pytest.raises(OperationError) as exc:
        plan_stages(10, [3, bad])
    assert exc.value.field == "stages[1]"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_failure_rate", 1.5),
        ("max_failure_rate", -0.1),
        ("max_failure_rate", float("nan")),
        ("min_sample", 0),
        ("rate_per_second", 0),
        ("rate_per_second", 1e9),
        ("max_in_flight", 0),
        ("max_in_flight", 2.0),
    ],
)
def test_limits_refuse_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(OperationError) as exc:
        Limits(**{field: value})  # type: ignore[arg-type]
    assert exc.value.field == field


def test_fractional_rates_pace_one_send_per_window() -> None:
    assert (Limits(rate_per_second=0.5).burst, Limits(rate_per_second=0.5).window) == (1, 2.0)
    assert (Limits(rate_per_second=10).burst, Limits(rate_per_second=10).window) == (10, 1.0)
    assert Limits(rate_per_second=2.5).burst == 2


def test_transitions() -> None:
    assert transition("awaiting_approval", "approve") == "running"
    assert transition("awaiting_approval", "expire") == "expired"
    assert transition("running", "cancel") == "cancelled"
    assert transition("completed", "cancel") is None
    assert transition("running", "approve") is None
    assert transition("running", "warp") is None and transition("nope", "cancel") is None


def test_the_state_vocabulary_is_closed() -> None:
    """Every state is active or terminal; events apply only to active states and lead to a
    state of the vocabulary; terminal states absorb every event."""
    assert set(OperationState) == ACTIVE | TERMINAL and not ACTIVE & TERMINAL
    assert set(TRANSITIONS) == set(OperationEvent)
    for table in TRANSITIONS.values():
        assert set(table) <= ACTIVE and set(table.values()) <= set(OperationState)
    for state in TERMINAL:
        assert all(transition(state, event) is None for event in OperationEvent)
    assert set(ResultState) - {ResultState.PENDING, ResultState.SENT} == FINAL


# -- deciding in virtual time ----------------------------------------------------------------


def over_threshold(limits: Limits, members: tuple[str, ...], results: dict[str, str]) -> bool:
    """An independent reading of the stop rule, to check decide against."""
    failed = sum(1 for c in members if results.get(c) == "failed")
    succeeded = sum(1 for c in members if results.get(c) == "succeeded")
    executed = failed + succeeded
    return executed >= max(1, min(limits.min_sample, len(members))) and failed / executed > (
        limits.max_failure_rate
    )


@dataclass
class Trace:
    sends: list[tuple[float, str]] = field(default_factory=list)
    max_in_flight: int = 0
    finish: str | None = None
    reason: str | None = None
    stage_at_finish: int = 0
    results: dict[str, str] = field(default_factory=dict)


def simulate(plan: Plan, ok: dict[str, bool], latency: dict[str, float]) -> Trace:
    """Drive decide like the shell does: decide, send, sleep until an answer or the wake time."""
    limits = plan.limits
    now = 0.0
    results: dict[str, str] = {}
    sends: list[float] = []
    stage = 0
    answers: list[tuple[float, str]] = []
    trace = Trace(results=results)
    for _ in range(100_000):
        current = plan.stages[stage]
        expect_stop = over_threshold(limits, current, results)
        step = decide(
            plan, Progress("running", stage, dict(results), tuple(sends[-limits.burst :])), now
        )
        assert (step.finish == "stopped") == expect_stop, (step, results)
        assert step.stage >= stage
        for earlier in range(stage, step.stage):  # advancing needs the whole stage answered
            assert all(results.get(c) in FINAL for c in plan.stages[earlier])
        stage = step.stage
        if step.finish:
            trace.finish, trace.reason, trace.stage_at_finish = step.finish, step.reason, stage
            return trace
        for cid in step.send:
            assert cid in plan.stages[stage], "only the current stage is sent"
            assert results.get(cid, "pending") == "pending", "never sent twice"
            results[cid] = "sent"
            sends.append(now)
            trace.sends.append((now, cid))
            heapq.heappush(answers, (now + latency[cid], cid))
        trace.max_in_flight = max(
            trace.max_in_flight, sum(1 for v in results.values() if v == "sent")
        )
        if step.send:
            continue
        wake = step.wake_at if step.wake_at is not None else math.inf
        assert wake > now, "a wake time in the past would spin"
        nxt = min(wake, answers[0][0] if answers else math.inf)
        assert nxt < math.inf, "stuck: nothing to wait for"
        now = nxt
        while answers and answers[0][0] <= now:
            _, cid = heapq.heappop(answers)
            results[cid] = "succeeded" if ok[cid] else "failed"
    raise AssertionError("did not finish")


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Plan, dict[str, bool], dict[str, float]]:
    count = draw(st.integers(1, 60))
    ids = [f"CP{i:03d}" for i in range(count)]
    sizes = draw(st.none() | st.lists(st.integers(1, 30), min_size=1, max_size=4))
    limits = Limits(
        max_failure_rate=draw(st.sampled_from([0.0, 0.1, 0.2, 0.5, 1.0])),
        min_sample=draw(st.integers(1, 10)),
        rate_per_second=draw(st.sampled_from([0.5, 1.0, 2.5, 10.0, 100.0])),
        max_in_flight=draw(st.integers(1, 30)),
    )
    fail_share = draw(st.sampled_from([0.0, 0.05, 0.3, 0.8]))
    ok = {c: draw(st.floats(0, 1)) >= fail_share for c in ids}
    latency = {c: draw(st.sampled_from([0.001, 0.05, 0.3, 2.0])) for c in ids}
    return Plan(split(ids, plan_stages(count, sizes)), limits), ok, latency


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_operation_invariants(scenario: tuple[Plan, dict[str, bool], dict[str, float]]) -> None:
    plan, ok, latency = scenario
    limits = plan.limits
    trace = simulate(plan, ok, latency)
    sent = [c for _, c in trace.sends]
    assert len(sent) == len(set(sent)), "a charger was sent to twice"
    times = [t for t, _ in trace.sends]
    for i in range(len(times) - limits.burst):
        assert times[i + limits.burst] >= times[i] + limits.window, "rate exceeded"
    assert trace.max_in_flight <= limits.max_in_flight
    if trace.finish == "completed":
        assert sorted(sent) == sorted(c for s in plan.stages for c in s)
        for members in plan.stages:  # every stage ended at or under the threshold
            failed = sum(1 for c in members if not ok[c])
            assert failed <= limits.max_failure_rate * len(members)
    else:
        assert trace.finish == "stopped" and trace.reason
        later = {c for s in plan.stages[trace.stage_at_finish + 1 :] for c in s}
        assert not later & set(sent), "a later stage was started before the stop"


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 40),
    st.dictionaries(
        st.integers(0, 39), st.sampled_from(["sent", "succeeded", "failed", "skipped"])
    ),
    st.lists(st.floats(0, 10), max_size=12),
    st.floats(0, 12),
    st.sampled_from([0.5, 3.0, 50.0]),
)
def test_decide_from_any_state_sends_only_pending_chargers_within_the_limits(
    count: int, states: dict[int, str], sends: list[float], now: float, rate: float
) -> None:
    ids = [f"C{i}" for i in range(count)]
    results = {ids[i]: s for i, s in states.items() if i < count}
    limits = Limits(rate_per_second=rate, max_in_flight=7, max_failure_rate=1.0)
    plan = Plan((tuple(ids),), limits)
    past = tuple(sorted(t for t in sends if t <= now))
    step = decide(plan, Progress("running", 0, results, past), now)
    assert all(results.get(c, "pending") == "pending" for c in step.send)
    in_flight = sum(1 for s in results.values() if s == "sent")
    assert len(step.send) <= max(0, 7 - in_flight)
    recent = sum(1 for t in past[-limits.burst :] if now < t + limits.window)
    assert len(step.send) <= limits.burst - recent or not step.send
    if step.wake_at is not None:
        assert step.wake_at > now


def test_a_stage_of_one_is_judged_on_its_single_answer() -> None:
    plan = Plan((("A",), ("B", "C")), Limits(max_failure_rate=0.2, min_sample=5))
    step = decide(plan, Progress("running", 0, {"A": "failed"}), 0.0)
    assert step.finish == "stopped" and step.reason and "stage 1: 1 of 1" in step.reason


def test_the_threshold_is_a_maximum_not_a_trigger() -> None:
    plan = Plan((tuple("ABCDE"), ("F",)), Limits(max_failure_rate=0.2, min_sample=5))
    one_in_five = {
        "A": "failed",
        "B": "succeeded",
        "C": "succeeded",
        "D": "succeeded",
        "E": "succeeded",
    }
    step = decide(plan, Progress("running", 0, one_in_five), 0.0)
    assert step.finish is None and step.stage == 1 and step.send == ("F",)
    two_in_five = {**one_in_five, "B": "failed"}
    assert decide(plan, Progress("running", 0, two_in_five), 0.0).finish == "stopped"


def test_only_a_running_operation_sends() -> None:
    plan = Plan((("A",),), Limits())
    for state in ("awaiting_approval", "cancelled", "completed", "stopped"):
        assert decide(plan, Progress(state, 0, {}), 0.0).send == ()


def test_summary_counts_per_state_and_stage() -> None:
    stages = (("A", "B"), ("C", "D", "E"))
    results = {"A": "succeeded", "B": "failed", "C": "sent", "D": "skipped"}
    s = summarize(stages, results, 1, "running")
    assert s["results"] == {"pending": 1, "sent": 1, "succeeded": 1, "failed": 1, "skipped": 1}
    assert [x["state"] for x in s["stages"]] == ["done", "running"]
    assert s["stages"][1]["results"] == {"sent": 1, "skipped": 1, "pending": 1}


# -- the target query ------------------------------------------------------------------------


def snap(cid: str, **kw: object) -> ChargerSnapshot:
    return ChargerSnapshot(id=cid, **kw)  # type: ignore[arg-type]


def test_query_filters_combine_and_keep_explicit_order() -> None:
    fleet = [
        snap("A", vendor="Acme", site_id="s1", firmware_version="1.0", connected=True),
        snap("B", vendor="acme", site_id="s2", firmware_version="1.1", tags=frozenset({"x"})),
        snap("C", vendor="Other", site_id="s1", firmware_version="1.0", connected=True),
    ]
    assert select_chargers(Query(vendors=("ACME",)), fleet) == ["A", "B"]
    assert select_chargers(Query(sites=("s1",), connected=True), fleet) == ["A", "C"]
    assert select_chargers(Query(firmware_versions=("1.1",)), fleet) == ["B"]
    assert select_chargers(Query(tags=("x", "y")), fleet) == ["B"]
    assert select_chargers(Query(charger_ids=("C", "A")), fleet) == ["C", "A"]
    assert select_chargers(Query(connected=False), fleet) == ["B"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"colour": ["red"]}, "target.colour"),
        ({"sites": "s1"}, "target.sites"),
        ({"sites": ["s1", 3]}, "target.sites[1]"),
        ({"connected": "yes"}, "target.connected"),
        ([], "target"),
    ],
)
def test_bad_queries_name_the_field(body: object, field: str) -> None:
    with pytest.raises(OperationError) as exc:
        query_from_dict(body)
    assert exc.value.field == field


def test_query_round_trips() -> None:
    q = query_from_dict({"sites": ["s1", "s1"], "connected": True})
    assert q.to_dict() == {"sites": ["s1"], "connected": True}
    assert query_from_dict(q.to_dict()) == q
    assert Query().empty and not q.empty
