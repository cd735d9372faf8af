"""The playbook engine's pure core: triggers, guard rails and the run state machine, with
hypothesis properties for the invariants the issue names (never more runs at a site than
its cap, never a command to a charger in a session, a dry run never sends)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evota.playbooks import guards as g
from evota.playbooks import run as r
from evota.playbooks import triggers as t
from evota.playbooks.spec import (
    Approval,
    Condition,
    ConditionKind,
    Escalation,
    Guards,
    Playbook,
    Step,
    Trigger,
    TriggerKind,
)
from evota.rollout.policy import Window

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # a Monday
FAULTED = Trigger(TriggerKind.CONNECTOR_FAULTED, frozenset({"InternalError"}), for_minutes=10)
WAIT = Condition(ConditionKind.CONNECTOR_AVAILABLE, 5)
SOFT = Step("reset", {"type": "Soft"}, WAIT)
HARD = Step("reset", {"type": "Hard"}, WAIT)
ALERT = Step(escalate=Escalation())


def _playbook(*steps: Step, dry_run: bool = False, **guards: Any) -> Playbook:
    return Playbook("stuck", 3, FAULTED, steps, guards=Guards(**guards), dry_run=dry_run)


def _run(**kw: Any) -> r.Run:
    return r.Run("run-1", "stuck", 3, "CP-1", 1, "connector_faulted:1", T0, **kw)


def _status(connector: int, status: str, at: datetime, code: str = "InternalError") -> t.Observed:
    return t.Observed("CP-1", t.ObservationKind.STATUS, at, connector, status, code)


# -- triggers --------------------------------------------------------------------------------


def test_a_connector_faulted_long_enough_fires_once_per_episode() -> None:
    facts = t.observe(t.ChargerFacts(connected=True), _status(1, "Faulted", T0))
    assert t.due(FAULTED, "CP-1", facts, T0 + timedelta(minutes=9, seconds=59)) == []
    [firing] = t.due(FAULTED, "CP-1", facts, T0 + timedelta(minutes=10))
    assert (firing.connector_id, firing.fault_key, firing.since) == (1, "connector_faulted:1", T0)
    # reported again (after a reboot): the same episode
    again = t.observe(facts, _status(1, "Faulted", T0 + timedelta(minutes=12)))
    assert again.connectors[1].since == T0
    # another error code than the trigger's: nothing
    other = t.observe(t.ChargerFacts(), _status(1, "Faulted", T0, "GroundFailure"))
    assert t.due(FAULTED, "CP-1", other, T0 + timedelta(hours=1)) == []
    # offline: nothing can reach it, so nothing fires; back online, the episode goes on
    gone = t.observe(facts, t.Observed("CP-1", t.ObservationKind.DISCONNECTED, T0))
    assert t.due(FAULTED, "CP-1", gone, T0 + timedelta(hours=1)) == []
    back = t.observe(gone, t.Observed("CP-1", t.ObservationKind.CONNECTED, T0))
    assert [f.since for f in t.due(FAULTED, "CP-1", back, T0 + timedelta(hours=1))] == [T0]


def test_a_charger_cannot_grow_the_engines_memory() -> None:
    facts = t.ChargerFacts()
    for connector in range(10_000):
        facts = t.observe(facts, _status(connector, "Faulted", T0))
    assert len(facts.connectors) == t.MAX_CONNECTORS
    for minute in range(1000):
        facts = t.observe(
            facts, t.Observed("CP-1", t.ObservationKind.BOOT, T0 + timedelta(minutes=minute))
        )
    assert len(facts.boots) == t.MAX_BOOTS


def test_event_triggers() -> None:
    back = Trigger(TriggerKind.OFFLINE_THEN_BACK, offline_minutes=30)
    gone = t.observe(
        t.ChargerFacts(connected=True), t.Observed("CP-1", t.ObservationKind.DISCONNECTED, T0)
    )
    soon = t.Observed("CP-1", t.ObservationKind.CONNECTED, T0 + timedelta(minutes=30))
    late = t.Observed("CP-1", t.ObservationKind.CONNECTED, T0 + timedelta(minutes=31))
    assert t.on_event(back, gone, soon) is None
    firing = t.on_event(back, gone, late)
    assert firing is not None and firing.fault_key == "offline_then_back"

    boots = Trigger(TriggerKind.REPEATED_BOOTS, count=3, within_minutes=10)
    facts, fired = t.ChargerFacts(), []
    for minute in (0, 2, 4, 6, 30):
        o = t.Observed("CP-1", t.ObservationKind.BOOT, T0 + timedelta(minutes=minute))
        fired.append(t.on_event(boots, facts, o) is not None)
        facts = t.observe(facts, o)
    assert fired == [False, False, True, False, False]  # once per storm

    fw = Trigger(TriggerKind.FIRMWARE_STATUS, statuses=frozenset({"InstallationFailed"}))
    ok = t.Observed("CP-1", t.ObservationKind.FIRMWARE_STATUS, T0, status="Installed")
    bad = t.Observed("CP-1", t.ObservationKind.FIRMWARE_STATUS, T0, status="InstallationFailed")
    assert t.on_event(fw, t.ChargerFacts(), ok) is None
    assert t.on_event(fw, t.ChargerFacts(), bad) is not None


# -- guard rails ----------------------------------------------------------------------------


def test_every_refusal_has_its_reason() -> None:
    gd = Guards(max_runs_per_charger_per_day=2, max_concurrent=3, max_concurrent_per_site=1)
    ok = g.Situation(now=T0)
    assert g.admit(gd, ok).start
    cases = {
        g.Refusal.KILL_SWITCH: {"kill_switch": True},
        g.Refusal.SUSPENDED: {"suspended": True},
        g.Refusal.IN_SESSION: {"in_session": True},
        g.Refusal.DAILY_CAP: {"runs_today": 2},
        g.Refusal.CONCURRENCY: {"active_total": 3},
        g.Refusal.SITE_CONCURRENCY: {"active_in_site": 1},
        g.Refusal.ALREADY_RUNNING: {"already_running": True},
        g.Refusal.START_RATE: {"recent_starts": [T0 - timedelta(minutes=1)] * 30},
        g.Refusal.OUTSIDE_HOURS: {
            "site_hours": (Window(frozenset({0}), time(22), time(5)),),
            "site_tz": "Europe/Berlin",
        },
    }
    for refusal, changes in cases.items():
        verdict = g.admit(gd, g.Situation(now=T0, **changes))
        assert verdict.refusal is refusal and not verdict.suspend


def test_the_breaker_trips_on_trigger_volume_and_on_failure_rate() -> None:
    gd = Guards(breaker_triggers_per_hour=3, breaker_min_runs=4, breaker_failure_rate=0.5)
    three = [T0 - timedelta(minutes=m) for m in (1, 2, 3)]
    assert g.breaker(gd, T0, three, []) is None
    assert g.breaker(gd, T0, [*three, T0], []) is g.Refusal.BREAKER_TRIGGER_VOLUME
    old = [T0 - timedelta(minutes=61)] * 10  # an hour ago: forgotten
    assert g.breaker(gd, T0, [*old, T0], []) is None
    outcomes = [(T0, "resolved"), (T0, "failed"), (T0, "escalated")]
    assert g.breaker(gd, T0, [], outcomes) is None  # fewer than breaker_min_runs
    assert g.breaker(gd, T0, [], [*outcomes, (T0, "resolved")]) is g.Refusal.BREAKER_FAILURE_RATE
    assert g.breaker(gd, T0, [], [*outcomes, (T0, "resolved"), (T0, "resolved")]) is None
    verdict = g.admit(gd, g.Situation(now=T0, recent_triggers=[*three, T0]))
    assert verdict.refusal is g.Refusal.BREAKER_TRIGGER_VOLUME and verdict.suspend


situations = st.builds(
    g.Situation,
    now=st.just(T0),
    kill_switch=st.booleans(),
    suspended=st.booleans(),
    in_session=st.booleans(),
    runs_today=st.integers(0, 5),
    already_running=st.booleans(),
    active_total=st.integers(0, 12),
    active_in_site=st.integers(0, 3),
    recent_starts=st.lists(st.just(T0 - timedelta(minutes=5)), max_size=40),
    recent_triggers=st.lists(st.just(T0 - timedelta(minutes=5)), max_size=60),
    recent_outcomes=st.lists(
        st.tuples(st.just(T0), st.sampled_from(["resolved", "failed", "escalated"])), max_size=30
    ),
)


@settings(max_examples=500)
@given(situations, st.integers(1, 3), st.integers(1, 10))
def test_no_run_starts_where_a_rail_is_closed(s: g.Situation, per_site: int, total: int) -> None:
    gd = Guards(max_concurrent_per_site=per_site, max_concurrent=total)
    verdict = g.admit(gd, s)
    if verdict.start:
        assert not (s.kill_switch or s.suspended or s.in_session or s.already_running)
        assert s.active_in_site < per_site and s.active_total < total
        assert s.runs_today < gd.max_runs_per_charger_per_day
    breakers = (g.Refusal.BREAKER_TRIGGER_VOLUME, g.Refusal.BREAKER_FAILURE_RATE)
    assert verdict.suspend == (verdict.refusal in breakers)


@settings(max_examples=300)
@given(
    st.lists(st.tuples(st.sampled_from("ABC"), st.booleans()), max_size=80),
    st.integers(1, 3),
)
def test_never_more_runs_at_a_site_than_its_cap(events: list[tuple[str, bool]], cap: int) -> None:
    """Faults arrive at sites A, B, C and runs end, in any order: the rails never let more
    than ``cap`` runs be in progress at one site."""
    gd = Guards(max_concurrent_per_site=cap, max_concurrent=100, max_starts_per_hour=1000)
    active: dict[str, int] = {"A": 0, "B": 0, "C": 0}
    for site, starts in events:
        if starts:
            s = g.Situation(now=T0, active_in_site=active[site], active_total=sum(active.values()))
            if g.admit(gd, s).start:
                active[site] += 1
        elif active[site]:
            active[site] -= 1
        assert all(n <= cap for n in active.values())


@given(
    st.booleans(), st.booleans(), st.sampled_from([(), (Window(frozenset({3}), time(1), time(2)),)])
)
def test_no_command_goes_to_a_charger_in_a_session(kill: bool, suspended: bool, hours: Any) -> None:
    refusal = g.may_send(
        now=T0, kill_switch=kill, suspended=suspended, in_session=True, site_hours=hours
    )
    assert refusal is not None
    assert g.admit(Guards(), g.Situation(now=T0, in_session=True)).refusal is not None


# -- runs -----------------------------------------------------------------------------------


def _never(command: str, params: Any) -> bool:
    return False


def test_a_run_through_its_steps() -> None:
    p = _playbook(SOFT, HARD, ALERT)
    run = _run()
    assert r.plan(p, run, _never) == r.Send(0, "reset", {"type": "Soft"})
    run = r.apply(p, run, r.RunEvent.SENT, T0)
    assert run.state is r.RunState.WAITING and run.wait_until == T0 + timedelta(minutes=5)
    run = r.apply(p, run, r.RunEvent.DEADLINE, run.wait_until)
    assert (run.state, run.step, run.wait_until) == (r.RunState.RUNNING, 1, None)
    assert r.plan(p, run, _never) == r.Send(1, "reset", {"type": "Hard"})
    run = r.apply(p, r.apply(p, run, r.RunEvent.SENT, T0), r.RunEvent.DEADLINE, T0)
    assert r.plan(p, run, _never) == r.Escalate(2, Escalation())
    run = r.apply(p, run, r.RunEvent.ESCALATED, T0, reason="escalated")
    assert run.state is r.RunState.ESCALATED and not run.active
    with pytest.raises(r.RunError):
        r.apply(p, run, r.RunEvent.SENT, T0)


def test_the_last_wait_running_out_escalates_and_a_met_condition_resolves() -> None:
    p = _playbook(SOFT)
    run = r.apply(p, r.apply(p, _run(), r.RunEvent.SENT, T0), r.RunEvent.DEADLINE, T0)
    assert r.plan(p, run, _never) == r.Escalate(1, Escalation(), implicit=True)
    met = r.apply(p, r.apply(p, _run(), r.RunEvent.SENT, T0), r.RunEvent.MET, T0)
    assert met.state is r.RunState.RESOLVED


def test_guarded_steps_wait_or_are_refused() -> None:
    assert not r.guarded("reset", {"type": "Soft"}, True)
    assert not r.guarded("unlock-connector", {"connectorId": 1}, True)
    assert r.guarded("reset", {"type": "Hard"}, True)
    assert r.guarded("change-availability", {"type": "Inoperative"}, True)
    assert not r.guarded("trigger-message", {}, False)
    p = _playbook(HARD)
    assert isinstance(r.plan(p, _run(), lambda c, params: True), r.AskApproval)
    refuse = _playbook(HARD, approval=Approval.REFUSE)
    action = r.plan(refuse, _run(), lambda c, params: True)
    assert isinstance(action, r.Finish) and action.event is r.RunEvent.REFUSE


def test_the_connector_placeholder_and_the_log_bound() -> None:
    step = Step("unlock-connector", {"connectorId": "{connector}"})
    assert r.step_params(step, 2) == {"connectorId": 2}
    run = _run()
    for i in range(200):
        run = r.logged(run, T0, "x", i=i)
    assert len(run.log) == r.MAX_LOG and run.log[0]["i"] == 0 and run.log[-1]["i"] == 199


steps = st.lists(
    st.sampled_from([SOFT, HARD, ALERT, Step("reset", {"type": "Soft"})]), min_size=1, max_size=5
)
events = st.lists(st.sampled_from(list(r.RunEvent)), max_size=30)


@settings(max_examples=500)
@given(steps, events, st.booleans())
def test_the_state_machine_holds_its_table(
    chosen: list[Step], evs: list[r.RunEvent], dry: bool
) -> None:
    """Any sequence of events: a move the table does not allow raises and changes nothing;
    a terminal run takes no event; the step never goes back; wait_until is set exactly
    while waiting; a dry run's plan never sends, asks or escalates."""
    p = _playbook(*chosen, dry_run=dry)
    run = _run(dry_run=dry)
    for ev in evs:
        allowed = ev in r.TRANSITIONS and run.state in r.TRANSITIONS[ev]
        if ev is r.RunEvent.SENT and allowed and run.step >= len(p.steps):
            allowed = False
        if not allowed:
            with pytest.raises(r.RunError):
                r.apply(p, run, ev, T0)
            continue
        before = run
        run = r.apply(p, run, ev, T0, reason="x")
        assert run.step >= before.step
        assert (run.wait_until is not None) == (run.state is r.RunState.WAITING)
        if before.state in r.TERMINAL:
            raise AssertionError("a terminal run moved")
        if run.state is r.RunState.RUNNING:
            action = r.plan(p, run, lambda c, params: True)
            if dry:
                assert action == r.Finish(r.RunEvent.SIMULATE, "dry run: nothing sent")
            else:
                assert not isinstance(action, r.Finish) or action.event is not r.RunEvent.SIMULATE
