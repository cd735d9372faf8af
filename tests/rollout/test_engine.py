"""The campaign engine: rules one by one, then multi-day campaigns in virtual time."""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta

from evota.rollout.campaign import CampaignState, CampaignView, JobView
from evota.rollout.engine import Decision, StartJob, decide
from evota.rollout.gate import Health
from evota.rollout.policy import AutoStopRule, Policy, Window
from evota.rollout.windows import window_open
from evota.selection import ChargerSnapshot

T0 = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)  # a Friday; Berlin springs forward on Sunday
SEC = timedelta(seconds=1)


def ch(cid: str, site: str = "s0", **kw: object) -> ChargerSnapshot:
    base: dict[str, object] = {
        "vendor": "Acme",
        "model": "AC22",
        "firmware_version": "1.0",
        "site_id": site,
        "connected": True,
        "last_seen": T0,
    }
    base.update(kw)
    return ChargerSnapshot(id=cid, **base)  # type: ignore[arg-type]


def view(waves: list[list[str]], policy: Policy | None = None, **kw: object) -> CampaignView:
    base: dict[str, object] = {
        "id": "c",
        "state": "running",
        "waves": tuple(tuple(w) for w in waves),
        "current_wave": 0,
        "policy": policy or Policy(soak_seconds=60, health_window_seconds=60),
        "target_version": "2.0",
        "wave_started_at": T0,
        "wave_done_at": None,
    }
    base.update(kw)
    return CampaignView(**base)  # type: ignore[arg-type]


def jv(cid: str, job_id: int, state: str, failure: str | None = None, **kw: object) -> JobView:
    base: dict[str, object] = {
        "kind": "update",
        "previous_version": "1.0",
        "target_version": "2.0",
        "created_at": T0,
        "finished_at": T0 if state in ("succeeded", "failed", "cancelled") else None,
    }
    base.update(kw)
    return JobView(charger_id=cid, job_id=job_id, state=state, failure=failure, **base)  # type: ignore[arg-type]


def ids(d: Decision, kind: str = "update") -> list[str]:
    return [s.charger_id for s in d.start if s.kind == kind]


# -- rules ---------------------------------------------------------------------------------


def test_only_running_campaigns_start_updates() -> None:
    fleet = {c: ch(c) for c in "ab"}
    for state in ("draft", "awaiting_approval", "scheduled", "paused", "completed", "aborted"):
        assert decide(view([["a", "b"]], state=state), {}, fleet, {}, T0).start == ()
    d = decide(view([["a", "b"]]), {}, fleet, {}, T0)
    assert ids(d) == ["a", "b"]
    s = d.start[0]
    assert (s.kind, s.to_version, s.retrieve_at, s.install_at) == ("update", "2.0", T0, None)


def test_holds_offline_in_session_and_closed_window() -> None:
    fleet = {
        "a": ch("a"),
        "off": ch("off", connected=False),
        "busy": ch("busy", in_session=True),
        "tokyo": ch("tokyo", site="jp", timezone="Asia/Tokyo"),
    }
    night = Window(frozenset(range(7)), time(22), time(6))
    policy = Policy(site_windows={"jp": (night,)})
    d = decide(view([list(fleet)], policy), {}, fleet, {}, T0)  # 21:00 in Tokyo
    assert ids(d) == ["a"]
    assert d.wake_at == T0 + timedelta(hours=1)  # the Tokyo window opens
    text = " ".join(d.notes)
    assert "offline" in text and "in session" in text and "window closed" in text
    d = decide(view([list(fleet)], policy), {}, fleet, {}, T0 + timedelta(hours=1))
    assert "tokyo" in ids(d)


def test_window_margin() -> None:
    fleet = {"a": ch("a")}
    w = Window(frozenset(range(7)), time(10), time(12, 30))
    policy = Policy(windows=(w,), window_margin_seconds=3600)
    assert ids(decide(view([["a"]], policy), {}, fleet, {}, T0)) == []  # closes in 30 min
    assert ids(decide(view([["a"]], policy), {}, fleet, {}, T0 - timedelta(hours=1))) == ["a"]


def test_site_global_caps_and_start_rate() -> None:
    fleet = {f"{s}{i}": ch(f"{s}{i}", site=s) for s in "xy" for i in range(8)}
    wave = [sorted(fleet)]
    d = decide(view(wave, Policy(max_per_site_fraction=0.25)), {}, fleet, {}, T0)
    assert Counter(fleet[c].site_id for c in ids(d)) == {"x": 2, "y": 2}
    d = decide(view(wave, Policy(max_per_site=3, max_per_site_fraction=0.5)), {}, fleet, {}, T0)
    assert Counter(fleet[c].site_id for c in ids(d)) == {"x": 3, "y": 3}
    # running jobs (rollbacks too) count against the caps
    running = {"x0": [jv("x0", 1, "downloading")], "x1": [jv("x1", 2, "queued", kind="rollback")]}
    d = decide(view(wave, Policy(max_per_site=2, max_concurrent=3)), running, fleet, {}, T0)
    assert [fleet[c].site_id for c in ids(d)] == ["y"]
    assert any("cap" in n for n in d.notes)
    # rate: 2 per minute, one created 30 s ago -> one more now; wake when the minute ends
    recent = {"x0": [jv("x0", 1, "succeeded", created_at=T0 - 30 * SEC)]}
    d = decide(view(wave, Policy(start_rate_per_minute=2)), recent, fleet, {}, T0)
    assert len(d.start) == 1 and d.wake_at == T0 + 30 * SEC
    d = decide(view(wave, Policy(start_rate_per_minute=0.5)), recent, fleet, {}, T0)
    assert d.start == () and d.wake_at == T0 + 90 * SEC  # one per two minutes


def test_the_start_rate_wakes_when_it_has_room_again() -> None:
    """Rollbacks count against the start rate (they are never held by it), so the window can
    hold more jobs than the burst: the wake is when a start is allowed again (evota.pacing),
    not when the oldest job leaves the window."""
    fleet = {c: ch(c) for c in "abcd"}
    jobs = {
        "a": [jv("a", 1, "succeeded", created_at=T0 - 50 * SEC)],
        "b": [jv("b", 2, "succeeded", created_at=T0 - 40 * SEC)],
        "c": [
            jv("c", 3, "failed", "unhealthy", created_at=T0 - 90 * SEC),
            jv("c", 4, "queued", kind="rollback", created_at=T0 - 20 * SEC),
        ],
    }
    campaign = view([list("abcd")], Policy(start_rate_per_minute=2))
    d = decide(campaign, jobs, fleet, {}, T0)
    assert d.start == () and d.wake_at == T0 + 20 * SEC  # 2 per minute: b's job leaves then
    assert decide(campaign, jobs, fleet, {}, T0 + 10 * SEC).start == ()  # a's leaving: no room
    assert ids(decide(campaign, jobs, fleet, {}, T0 + 20 * SEC)) == ["d"]


def test_retry_with_backoff_then_rollback_when_exhausted() -> None:
    fleet = {"a": ch("a")}
    policy = Policy(
        retries={"booted_previous_version": 2},
        retry_backoff_seconds=100,
        rollback_on_failure=("booted_previous_version",),
    )
    first = [jv("a", 1, "failed", "booted_previous_version")]
    d = decide(view([["a"]], policy), {"a": first}, fleet, {}, T0 + 50 * SEC)
    assert d.start == () and d.wake_at == T0 + 100 * SEC
    d = decide(view([["a"]], policy), {"a": first}, fleet, {}, T0 + 100 * SEC)
    assert ids(d) == ["a"] and "retry 1" in d.start[0].reason
    two = [*first, jv("a", 2, "failed", "booted_previous_version")]
    d = decide(view([["a"]], policy), {"a": two}, fleet, {}, T0 + 150 * SEC)
    assert d.wake_at == T0 + 200 * SEC  # doubled backoff
    three = [*two, jv("a", 3, "failed", "booted_previous_version")]
    d = decide(view([["a"]], policy), {"a": three}, fleet, {}, T0 + 10_000 * SEC)
    assert ids(d, "rollback") == ["a"] and d.start[0].to_version == "1.0"
    rolled = [*three, jv("a", 4, "succeeded", kind="rollback", target_version="1.0")]
    d = decide(view([["a"]], policy), {"a": rolled}, fleet, {}, T0 + 10_000 * SEC)
    assert d.start == () and d.wave_done_at is not None  # no endless rollbacks


def test_unhealthy_is_rolled_back_even_when_paused() -> None:
    fleet = {"a": ch("a"), "b": ch("b")}
    jobs = {"a": [jv("a", 1, "failed", "unhealthy")], "b": [jv("b", 2, "failed", "rejected")]}
    d = decide(view([["a", "b"]], state="paused"), jobs, fleet, {}, T0)
    assert ids(d, "rollback") == ["a"] and ids(d) == []
    unknown = {"a": [jv("a", 1, "failed", "unhealthy", previous_version=None)]}
    assert decide(view([["a"]], state="paused"), unknown, fleet, {}, T0).start == ()


def test_auto_stop() -> None:
    fleet = {c: ch(c) for c in "abcdef"}
    rule = AutoStopRule(frozenset({"unhealthy"}), 2, 25, "pause")
    policy = Policy(auto_stop=(rule,))
    one = {"a": [jv("a", 1, "failed", "unhealthy")]}
    d = decide(view([list(fleet)], policy), one, fleet, {}, T0)
    assert d.state is None  # 1 executed < min_executed
    two = {**one, "b": [jv("b", 2, "failed", "rejected")]}  # 1 of 2 unhealthy = 50%
    d = decide(view([list(fleet)], policy), two, fleet, {}, T0)
    assert d.state == "paused" and "50.0% > 25%" in (d.reason or "")
    assert ids(d) == [] and ids(d, "rollback") == ["a"]
    # the most severe triggered rule wins; abort_and_rollback flags the shell
    severe = AutoStopRule(frozenset(), 2, 10, "abort_and_rollback")
    d = decide(view([list(fleet)], Policy(auto_stop=(rule, severe))), two, fleet, {}, T0)
    assert d.state == "aborted" and d.rollback and ids(d, "rollback") == ["a"]
    # a retry pending is not an outcome yet; counting restarts after an operator resume
    retrying = Policy(auto_stop=(rule,), retries={"unhealthy": 1})
    assert decide(view([list(fleet)], retrying), two, fleet, {}, T0).state is None
    resumed = view([list(fleet)], policy, stop_counting_from=T0 + SEC)
    assert decide(resumed, two, fleet, {}, T0 + 2 * SEC).state is None


def test_rollback_mode_rolls_back_every_updated_charger() -> None:
    fleet = {c: ch(c) for c in "abcd"}
    jobs = {
        "a": [jv("a", 1, "succeeded")],
        "b": [jv("b", 2, "failed", "unhealthy")],
        "c": [jv("c", 3, "failed", "download_failed")],  # never changed: nothing to undo
        "d": [jv("d", 4, "installing")],  # in flight: rolled back once it succeeds
    }
    d = decide(view([list(fleet)], rollback=True, state="aborted"), jobs, fleet, {}, T0)
    assert ids(d, "rollback") == ["a", "b"] and ids(d) == []
    assert {s.to_version for s in d.start} == {"1.0"}


def test_wave_end_soak_gate_and_advance() -> None:
    fleet = {c: ch(c) for c in ("a", "b", "c")}
    policy = Policy(success_threshold=0.2, soak_seconds=600, health_window_seconds=300)
    jobs = {c: [jv(c, i, "succeeded")] for i, c in enumerate("ab")}
    v = view([["a", "b"], ["c"]], policy)
    d = decide(v, jobs, fleet, {}, T0)
    assert d.wave_done_at == T0 and d.wake_at == T0 + 600 * SEC and d.gate is None
    v = replace(v, wave_done_at=T0)
    assert decide(v, jobs, fleet, {}, T0 + 599 * SEC).gate is None
    d = decide(v, jobs, fleet, {}, T0 + 600 * SEC)
    assert d.gate is not None and d.gate.passed and d.advance_to == 1 and d.state is None
    # pause at gate until the operator says go
    gated = replace(v, policy=replace(policy, pause_at_gate=True))
    d = decide(gated, jobs, fleet, {}, T0 + 600 * SEC)
    assert d.state == "paused"
    assert (
        d.reason
        == "waiting for operator at gate 0 (passed: 2/2 healthy: Wilson lower bound 0.342 >= 0.2)"
    )
    assert decide(replace(gated, gate_go=True), jobs, fleet, {}, T0 + 600 * SEC).advance_to == 1
    # too few results to tell: by default the campaign goes on, saying how many more would pass
    strict = replace(v, policy=replace(policy, success_threshold=0.99))
    d = decide(strict, jobs, fleet, {}, T0 + 600 * SEC)
    assert d.gate is not None and d.gate.outcome == "inconclusive" and d.advance_to == 1
    assert d.reason == (
        "gate 0 inconclusive (2/2 healthy; 379 more would pass 0.99 at 95%"
        " (Wilson 0.342..1.000)), going on"
    )
    waiting = replace(strict, policy=replace(strict.policy, on_inconclusive="pause"))
    d = decide(waiting, jobs, fleet, {}, T0 + 600 * SEC)
    assert d.state == "paused" and (d.reason or "").startswith("gate 0 inconclusive: 2/2 healthy")
    # a failed gate pauses, naming the gate; the operator's go overrides it
    bad = {c: [jv(c, i, "failed", "download_failed")] for i, c in enumerate("ab")}
    d = decide(strict, bad, fleet, {}, T0 + 600 * SEC)
    assert d.state == "paused" and (d.reason or "").startswith("gate 0 failed: 0/2 healthy")
    d = decide(replace(strict, gate_go=True), bad, fleet, {}, T0 + 600 * SEC)
    assert d.advance_to == 1 and "operator go overrides failed gate 0" in (d.reason or "")
    # the last wave completes the campaign
    jobs["c"] = [jv("c", 9, "succeeded")]
    last = replace(v, current_wave=1, wave_done_at=T0)
    d = decide(last, jobs, fleet, {"c": Health()}, T0 + 600 * SEC)
    assert d.state == "completed" and d.gate is not None and d.gate.wave == 1


def test_offline_chargers_are_skipped_after_max_wait_and_carried_over() -> None:
    fleet = {"a": ch("a"), "off": ch("off", connected=False), "b": ch("b")}
    policy = Policy(max_wait_seconds=3600, success_threshold=0.1)
    jobs = {"a": [jv("a", 1, "succeeded")]}
    v = view([["a", "off"], ["b"]], policy)
    d = decide(v, jobs, fleet, {}, T0 + 60 * SEC)
    assert d.wave_done_at is None and d.wake_at == T0 + 3600 * SEC
    d = decide(v, jobs, fleet, {}, T0 + 3600 * SEC)
    assert d.wave_done_at is not None and any("skipped" in n for n in d.notes)
    # in the next wave the skipped charger is a candidate again
    online = {**fleet, "off": ch("off")}
    d = decide(replace(v, current_wave=1), jobs, online, {}, T0 + 7200 * SEC)
    assert sorted(ids(d)) == ["b", "off"]
    # already on the target (updated elsewhere) or gone from the fleet: nothing to wait for
    gone = {"a": ch("a", firmware_version="2.0")}
    assert decide(view([["a", "zz"]]), {}, gone, {}, T0).wave_done_at == T0


# -- virtual-time simulation ---------------------------------------------------------------


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


@dataclass
class Sim:
    """A tiny fake world: the shell's bookkeeping plus chargers that finish jobs later."""

    campaign: CampaignView
    fleet: dict[str, ChargerSnapshot]
    outcome: Callable[[StartJob, int], str | None]  # (start, attempt) -> failure or None
    now: datetime = T0
    jobs: dict[str, list[JobView]] = field(default_factory=lambda: defaultdict(list))
    heap: list[tuple[datetime, int, str]] = field(default_factory=list)
    next_id: int = 1
    calls: int = 0
    started: list[tuple[datetime, StartJob]] = field(default_factory=list)
    advances: list[tuple[datetime, int]] = field(default_factory=list)
    gates: list[object] = field(default_factory=list)
    max_site_active: int = 0
    session_slot: int = -1
    busy: set[str] = field(default_factory=set)
    session_share: int = 0  # one charger in N is in a session each half hour (0: none)
    checks: list[Callable[[Sim, StartJob], None]] = field(default_factory=list)
    session_holds: int = 0
    reason: str = ""

    def sessions(self) -> None:
        slot = int(self.now.timestamp() // 1800)
        if not self.session_share or slot == self.session_slot:
            return
        self.session_slot = slot
        now_busy = {c for c in self.fleet if _h(c, slot) % self.session_share == 0}
        for c in self.busy ^ now_busy:
            self.fleet[c] = replace(self.fleet[c], in_session=c in now_busy)
        self.busy = now_busy

    def finish_due(self) -> None:
        while self.heap and self.heap[0][0] <= self.now:
            at, _, cid = heapq.heappop(self.heap)
            js = self.jobs[cid]
            j = js[-1]
            attempt = sum(1 for x in js if x.kind == j.kind)
            start = StartJob(cid, j.kind, j.target_version, j.created_at)
            failure = self.outcome(start, attempt)
            state = "failed" if failure else "succeeded"
            js[-1] = replace(j, state=state, failure=failure, finished_at=at)
            if state == "succeeded":
                self.fleet[cid] = replace(self.fleet[cid], firmware_version=j.target_version)

    def apply(self, d: Decision) -> None:
        c = self.campaign
        for s in d.start:
            for check in self.checks:
                check(self, s)
            self.started.append((self.now, s))
            prev = self.fleet[s.charger_id].firmware_version
            job = JobView(s.charger_id, self.next_id, s.kind, "queued", None, prev,
                          s.to_version, self.now, None)  # fmt: skip
            self.next_id += 1
            self.jobs[s.charger_id].append(job)
            minutes = 20 + _h(s.charger_id, job.job_id) % 4 * 10  # 20..50 min, 10-min steps
            heapq.heappush(
                self.heap, (self.now + timedelta(minutes=minutes), job.job_id, s.charger_id)
            )
        active: Counter[str | None] = Counter()
        for cid, js in self.jobs.items():
            if js[-1].state not in ("succeeded", "failed", "cancelled"):
                active[self.fleet[cid].site_id] += 1
        self.max_site_active = max(self.max_site_active, max(active.values(), default=0))
        self.session_holds += any("in session" in n for n in d.notes)
        if d.gate is not None:
            self.gates.append(d.gate)
        if d.wave_done_at is not None:
            c = replace(c, wave_done_at=d.wave_done_at)
        if d.advance_to is not None:
            self.advances.append((self.now, d.advance_to))
            c = replace(c, current_wave=d.advance_to, wave_started_at=self.now,
                        wave_done_at=None, gate_go=False)  # fmt: skip
        if d.hold:
            c = replace(c, held={**c.held, **d.hold})
        if d.state is not None:
            self.reason = d.reason or ""
            c = replace(c, state=d.state, rollback=d.rollback or c.rollback)
        if (
            c.rollback
            and not d.start
            and all(
                js[-1].state in ("succeeded", "failed", "cancelled") for js in self.jobs.values()
            )
        ):
            c = replace(c, rollback=False)
        self.campaign = c

    def run(self, until: datetime, tick: timedelta = timedelta(minutes=30)) -> None:
        while self.now < until:
            self.sessions()
            self.finish_due()
            d = decide(self.campaign, self.jobs, self.fleet, {}, self.now)
            self.calls += 1
            self.apply(d)
            c = self.campaign
            if c.state in ("completed", "paused") or (c.state == "aborted" and not c.rollback):
                return
            nxt = self.now + tick
            if d.wake_at is not None and d.wake_at > self.now:
                nxt = min(nxt, d.wake_at)
            elif d.wake_at is not None or d.start:
                nxt = self.now + SEC  # something changed: look again at once
            if self.heap:
                nxt = min(nxt, self.heap[0][0])
            self.now = max(nxt, self.now + SEC)


ZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo")
NIGHT = Window(frozenset(range(7)), time(20), time(6))


def big_fleet(n: int = 10_000, per_site: int = 4) -> dict[str, ChargerSnapshot]:
    fleet = {}
    for i in range(n):
        site = i // per_site
        cid = f"CP-{i:05d}"
        fleet[cid] = ch(
            cid,
            site=f"site-{site}",
            model=("AC11", "AC22", "DC50")[_h(cid) % 3],
            timezone=ZONES[site % 3],
            connected=_h(cid, "online") % 500 != 0,  # 0.2% never come online
        )
    return fleet


def test_ten_thousand_chargers_three_days_four_waves() -> None:
    from evota.rollout.policy import WaveSpec
    from evota.rollout.waves import plan_waves

    fleet = big_fleet()
    waves = plan_waves(
        list(fleet.values()),
        [WaveSpec(count=50), WaveSpec(percent=10), WaveSpec(percent=40), WaveSpec(percent=100)],
        seed="sim",
    )
    assert [len(w) for w in waves] == [50, 950, 3000, 6000]
    policy = Policy(
        success_threshold=0.9,
        soak_seconds=3600,
        health_window_seconds=1800,
        windows=(NIGHT,),
        max_per_site_fraction=0.25,
        retries={"booted_previous_version": 1},
        retry_backoff_seconds=600,
        max_wait_seconds=6 * 3600,
        auto_stop=(AutoStopRule(frozenset({"unhealthy"}), 20, 5, "abort_and_rollback"),),
    )
    wave_of = {cid: i for i, w in enumerate(waves) for cid in w}

    def outcome(s: StartJob, attempt: int) -> str | None:
        # 5% lose power mid-install on the first attempt and come back on the old version.
        return "booted_previous_version" if attempt == 1 and _h(s.charger_id) % 20 == 0 else None

    def check(sim: Sim, s: StartJob) -> None:
        c = sim.fleet[s.charger_id]
        assert s.kind == "update" and c.connected and not c.in_session
        assert window_open((NIGHT,), c.timezone, sim.now), (s, sim.now)
        assert wave_of[s.charger_id] <= sim.campaign.current_wave  # never ahead of its wave

    sim = Sim(view([list(w) for w in waves], policy), fleet, outcome, session_share=20)
    sim.checks.append(check)
    sim.run(T0 + timedelta(days=3))

    assert sim.campaign.state == "completed", (sim.campaign.state, sim.campaign.current_wave)
    assert [w for _, w in sim.advances] == [1, 2, 3]  # in order, each after its gate
    assert len(sim.gates) == 4 and all(g.passed for g in sim.gates)  # type: ignore[attr-defined]
    assert sim.max_site_active == 1  # 1 of 4 per site, never more
    assert sim.now - T0 < timedelta(days=3)
    updated = [cid for cid, js in sim.jobs.items() if js[-1].state == "succeeded"]
    offline = [cid for cid, c in fleet.items() if not c.connected]
    assert len(updated) == len(fleet) - len(offline) and not set(offline) & set(sim.jobs)
    retried = [js for js in sim.jobs.values() if len(js) > 1]
    assert len(retried) > 300 and all(
        [j.state for j in js] == ["failed", "succeeded"]
        and js[0].failure == "booted_previous_version"
        and js[1].created_at - js[0].finished_at >= timedelta(seconds=600)  # type: ignore[operator]
        for js in retried
    )
    # Sessions really were in the way, and the Berlin DST night (29 March) was crossed.
    assert sim.session_holds > 10
    assert sim.now > datetime(2026, 3, 29, 1, tzinfo=UTC)
    assert sim.calls < 1000, sim.calls  # event-driven: wake_at says when to look again


def test_bad_image_stops_within_the_pilot_and_rolls_it_back() -> None:
    from evota.rollout.policy import WaveSpec
    from evota.rollout.waves import plan_waves

    fleet = big_fleet(2000)
    waves = plan_waves(list(fleet.values()), [WaveSpec(count=20), WaveSpec(percent=100)])
    policy = Policy(
        windows=(NIGHT,),
        max_per_site_fraction=0.25,
        auto_stop=(AutoStopRule(frozenset({"unhealthy"}), 3, 20, "abort_and_rollback"),),
    )

    def outcome(s: StartJob, attempt: int) -> str | None:
        return "unhealthy" if s.kind == "update" else None  # faults after booting it

    sim = Sim(view([list(w) for w in waves], policy), fleet, outcome)
    sim.run(T0 + timedelta(days=2))
    assert sim.campaign.state == "aborted" and not sim.campaign.rollback
    assert sim.campaign.current_wave == 0 and "unhealthy" in sim.reason
    updated = {s.charger_id for _, s in sim.started if s.kind == "update"}
    rolled = {s.charger_id for _, s in sim.started if s.kind == "rollback"}
    assert updated <= set(waves[0]) and len(updated) >= 3
    assert rolled == updated
    assert all(fleet[c].firmware_version == "1.0" for c in updated)
    assert all(
        js[-1].kind == "rollback" and js[-1].state == "succeeded" for js in sim.jobs.values()
    )


def test_twelve_chargers_four_then_half_then_all_at_half_complete() -> None:
    """Issue 13's small operator: the second wave's 2/2 alone would be inconclusive at 0.5,
    but evidence accumulates (6/6), so every gate passes and the campaign completes."""
    from evota.rollout.policy import WaveSpec
    from evota.rollout.waves import plan_waves

    fleet = big_fleet(12, per_site=3)
    waves = plan_waves(
        list(fleet.values()), [WaveSpec(count=4), WaveSpec(percent=50), WaveSpec(percent=100)]
    )
    assert [len(w) for w in waves] == [4, 2, 6]
    policy = Policy(success_threshold=0.5, soak_seconds=60, health_window_seconds=60)
    online = {cid: replace(c, connected=True) for cid, c in fleet.items()}
    sim = Sim(view([list(w) for w in waves], policy), online, lambda s, a: None)
    sim.run(T0 + timedelta(days=1))
    assert sim.campaign.state == "completed", sim.reason
    outcomes = [(g.outcome, g.executed, g.wave_numbers["executed"]) for g in sim.gates]  # type: ignore[attr-defined]
    assert outcomes == [("passed", 4, 4), ("passed", 6, 2), ("passed", 12, 6)]


def test_a_bad_image_for_one_model_holds_that_model_only() -> None:
    """DC50 chargers fail their update (they fault after booting it, and are rolled back);
    with group_by model the pilot's gate holds DC50 and the other models complete."""
    from evota.rollout.policy import WaveSpec
    from evota.rollout.waves import plan_waves

    fleet = {cid: replace(c, connected=True) for cid, c in big_fleet(600).items()}
    waves = plan_waves(list(fleet.values()), [WaveSpec(count=30), WaveSpec(percent=100)])
    policy = Policy(success_threshold=0.5, group_by="model", soak_seconds=60)

    def outcome(s: StartJob, attempt: int) -> str | None:
        bad = fleet[s.charger_id].model == "DC50" and s.kind == "update"
        return "unhealthy" if bad else None

    sim = Sim(view([list(w) for w in waves], policy), fleet, outcome)
    sim.run(T0 + timedelta(days=2))
    assert sim.campaign.state == "completed", sim.reason
    assert set(sim.campaign.held) == {"DC50"}
    assert sim.campaign.held["DC50"].startswith("model DC50: 0/")
    updated = {s.charger_id for _, s in sim.started if s.kind == "update"}
    dc = {cid for cid, c in fleet.items() if c.model == "DC50"}
    assert updated & dc <= set(waves[0])  # no DC50 charger after the pilot
    assert updated - dc == set(fleet) - dc  # every other charger updated
    rolled = {s.charger_id for _, s in sim.started if s.kind == "rollback"}
    assert rolled == updated & dc  # each failed DC50 update rolled back (rollback_on_failure)
    last = sim.gates[-1]
    assert last.outcome == "passed" and last.held == ("DC50",)  # type: ignore[attr-defined]


def test_hold_and_rollback_rolls_back_the_held_groups_successes_before_completing() -> None:
    dc = "cdgh"
    fleet = {c: ch(c, model="DC" if c in dc else "AC") for c in "abcdefgh"}
    policy = Policy(
        success_threshold=0.5,
        soak_seconds=60,
        health_window_seconds=60,
        group_by="model",
        on_group_failure="hold_and_rollback",
    )
    jobs = {c: [jv(c, i, "succeeded")] for i, c in enumerate("abcdefgh")}
    sick = {c: Health(faulted_after=True) for c in dc}  # 0/4 healthy: upper bound 0.490
    late = T0 + 60 * SEC
    # The last wave's gate holds DC and rolls its (succeeded but faulted) chargers back first.
    v = view([["a", "c"], list("bdefgh")], policy, current_wave=1, wave_done_at=T0)
    d = decide(v, jobs, fleet, sick, late)
    assert set(d.hold) == {"DC"} and d.state is None and ids(d, "rollback") == list(dc)
    assert d.gate is not None and d.gate.outcome == "passed" and d.gate.executed == 4
    # While they roll back nothing completes: in flight, the wave is not settled.
    held = replace(v, held=dict(d.hold))
    rolling = {
        c: [*js, jv(c, 10 + i, "installing", kind="rollback")] if c in dc else js
        for i, (c, js) in enumerate(jobs.items())
    }
    d = decide(held, rolling, fleet, sick, late + SEC)
    assert d.state is None and d.start == () and d.gate is None
    # Once settled, the gate is judged again without DC, and the campaign completes.
    done = {
        c: [*js[:-1], replace(js[-1], state="succeeded")] if c in dc else js
        for c, js in rolling.items()
    }
    d = decide(held, done, fleet, sick, late + 2 * SEC)
    assert d.state == "completed" and d.gate is not None and d.gate.held == ("DC",)
    assert d.hold == {}
    # Paused, a held group's rollbacks still start; a held charger gets no retry or update.
    paused = replace(held, state=CampaignState.PAUSED)
    assert ids(decide(paused, jobs, fleet, {}, late), "rollback") == list(dc)
    retries = replace(policy, retries={"download_failed": 3}, on_group_failure="hold")
    retrying = replace(held, policy=retries, current_wave=0, wave_done_at=None)
    failed = {"a": jobs["a"], "c": [jv("c", 1, "failed", "download_failed")]}
    d = decide(retrying, failed, fleet, {}, late + 3600 * SEC)
    assert ids(d) == [] and d.wave_done_at is not None


def test_auto_stop_leaves_a_held_group_out() -> None:
    fleet = {c: ch(c, model="DC" if c in "cd" else "AC") for c in "abcd"}
    rule = AutoStopRule(frozenset(), 2, 10, "pause")
    policy = Policy(auto_stop=(rule,), group_by="model")
    jobs = {
        "a": [jv("a", 1, "succeeded")],
        "b": [jv("b", 2, "succeeded")],
        "c": [jv("c", 3, "failed", "download_failed")],
        "d": [jv("d", 4, "failed", "download_failed")],
    }
    v = view([list(fleet)], policy)
    assert decide(v, jobs, fleet, {}, T0).state == "paused"
    assert decide(replace(v, held={"DC": "model DC failed"}), jobs, fleet, {}, T0).state is None
