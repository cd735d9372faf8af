"""The campaign engine: one pure function from what is known now to what to do next.

:func:`decide` reads the campaign, its jobs, a fleet snapshot, post-update health and the
time, and returns a :class:`Decision` (jobs to start, a state change with its reason, a gate
result, a wave advance, and when to call again). It keeps no state of its own: the shell
stores what it returns and calls again on every event or at ``wake_at``, so a restart loses
nothing and the same inputs always give the same decision.

Rules, in the order they apply:

1. **Rollback mode** (``campaign.rollback``, after abort-and-rollback): every charger whose
   latest update succeeded, or failed with a ``rollback_on_failure`` failure, gets one
   rollback job to its previous version; nothing else starts.
2. **Auto-stop** (running only): per rule, failures of its types among the *executed*
   chargers (latest update terminal, no retry pending; cancelled is not executed) — once
   ``min_executed`` is reached and the share exceeds ``max_failure_percent`` the campaign
   pauses or aborts (the most severe triggered rule wins).
3. **Per-charger repair**: a retryable failure with attempts left gets a new update job after
   ``retry_backoff_seconds * 2**(n-1)`` (n = failures of that type so far); otherwise a
   ``rollback_on_failure`` failure with a known previous version gets one rollback job.
   Retries win over rollback while attempts are left. Rollbacks also start in a paused
   campaign, so a pause never leaves a charger on a bad image.
4. **Starting updates** in the current wave: connected, not in a session, its site's window
   open (and not closing within ``window_margin_seconds``), under the per-site, global and
   start-rate caps. ``retrieve_at`` is now (inside the window); ``install_at`` is left None so
   the charger installs right after the download, inside the same window. Rollbacks ignore
   windows and the start rate (a broken charger should not wait for the night) but respect
   sessions and the concurrency caps.
5. **Wave end**: a charger is *settled* when its latest job is terminal with nothing pending
   (or it needs no job: already on the target version, or gone from the fleet). A charger
   that never got a job because it is offline or in a session is *skipped* once the wave
   has run ``max_wait_seconds`` (one held by a cap or a closed window just waits); it stays
   a candidate in every later wave (carried over). When all are settled,
   ``wave_done_at = now``; after ``max(soak_seconds, health_window_seconds)`` more the gate
   is evaluated; a pass advances (or completes after the last wave), ``pause_at_gate``
   waits for ``gate_go``, a failure pauses. ``gate_go`` is the operator's go: it also
   overrides a failed gate.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from evota.firmware import versions
from evota.rollout import windows as win
from evota.rollout.gate import GateResult, Health, evaluate_gate
from evota.rollout.policy import Policy
from evota.selection import ChargerSnapshot

__all__ = ["CampaignView", "Decision", "JobView", "StartJob", "decide"]

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
_SEVERITY = {"pause": 0, "abort": 1, "abort_and_rollback": 2}
_MAX_NOTES = 8
_EXAMPLES = 3
# Holds that end by themselves (jobs finish, windows open): never a reason to skip.
_WAITING_HOLDS = frozenset({"site cap", "global cap", "start rate", "window closed"})


@dataclass(frozen=True, slots=True)
class JobView:
    charger_id: str
    job_id: int
    kind: str  # "update" | "rollback"
    state: str
    failure: str | None
    previous_version: str | None
    target_version: str
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class CampaignView:
    id: str
    state: str  # draft|awaiting_approval|scheduled|running|paused|completed|aborted
    waves: tuple[tuple[str, ...], ...]
    current_wave: int
    policy: Policy
    target_version: str
    wave_started_at: datetime | None
    wave_done_at: datetime | None
    gate_go: bool = False
    rollback: bool = False
    # Auto-stop counts only update jobs created at or after this instant; set it when an
    # operator resumes a campaign that auto-stop paused, or the same numbers stop it again.
    stop_counting_from: datetime | None = None


@dataclass(frozen=True, slots=True)
class StartJob:
    charger_id: str
    kind: str  # "update" | "rollback"
    to_version: str
    retrieve_at: datetime
    install_at: datetime | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    start: tuple[StartJob, ...] = ()
    state: str | None = None
    reason: str | None = None
    gate: GateResult | None = None
    advance_to: int | None = None
    wave_done_at: datetime | None = None
    wake_at: datetime | None = None
    notes: tuple[str, ...] = ()
    rollback: bool = False  # with state="aborted": roll back every updated charger


# -- per-charger facts ---------------------------------------------------------------------


def _latest(js: Sequence[JobView]) -> tuple[JobView | None, JobView]:
    """(latest update job, latest job of any kind), by job id."""
    last = js[-1]
    update = last if last.kind == "update" else None
    if len(js) > 1:
        for j in js:
            if j.job_id > last.job_id:
                last = j
            if j.kind == "update" and (update is None or j.job_id > update.job_id):
                update = j
    return update, last


def _failures_of(js: Sequence[JobView], failure: str) -> int:
    return sum(1 for j in js if j.kind == "update" and j.state == "failed" and j.failure == failure)


def _retry_at(policy: Policy, js: Sequence[JobView], update: JobView) -> datetime | None:
    """When a failed update may be retried, or None when it may not."""
    failure = update.failure or ""
    extra = policy.retries.get(failure, 0)
    if extra <= 0:
        return None
    n = _failures_of(js, failure)
    if n > extra:
        return None
    since = update.finished_at or update.created_at
    return since + timedelta(seconds=policy.retry_backoff_seconds * 2 ** (n - 1))


def _wants_rollback(policy: Policy, update: JobView, last: JobView) -> bool:
    return (
        last is update
        and update.state == "failed"
        and update.failure in policy.rollback_on_failure
        and bool(update.previous_version)
    )


class _Caps:
    """Concurrency and rate limits, counted over every unfinished job of the campaign."""

    def __init__(
        self,
        policy: Policy,
        jobs: Mapping[str, Sequence[JobView]],
        fleet: Mapping[str, ChargerSnapshot],
        now: datetime,
    ) -> None:
        self.policy = policy
        self.fleet = fleet
        self.active_site: dict[str | None, int] = defaultdict(int)
        self.active = 0
        self.rate_wake = now
        rate = policy.start_rate_per_minute
        # Rate r/min: at most k = max(1, floor(r)) starts in any k/r minutes.
        self.rate_budget: int | None = None
        self.rate_span = timedelta(0)
        recent: list[datetime] = []
        if rate is not None:
            k = max(1, int(rate))
            self.rate_span = timedelta(seconds=60 * k / rate)
            self.rate_budget = k
        since = now - self.rate_span
        for cid, js in jobs.items():
            c = fleet.get(cid)
            site = c.site_id if c else None
            for j in js:
                if j.state not in TERMINAL:
                    self.active += 1
                    self.active_site[site] += 1
                if rate is not None and j.created_at > since:
                    recent.append(j.created_at)
        if self.rate_budget is not None:
            self.rate_budget -= len(recent)
            # The oldest start in the span leaves it first (starts made now leave later).
            self.rate_wake = min(recent, default=now) + self.rate_span
        self._site_cap: dict[str | None, int | None] = {}
        self._site_size: dict[str | None, int] | None = None

    def site_cap(self, site: str | None) -> int | None:
        if site not in self._site_cap:
            cap = self.policy.max_per_site
            fraction = self.policy.max_per_site_fraction
            if fraction is not None and site is not None:
                if self._site_size is None:
                    sizes: dict[str | None, int] = defaultdict(int)
                    for c in self.fleet.values():
                        sizes[c.site_id] += 1
                    self._site_size = sizes
                by_fraction = max(1, int(fraction * self._site_size.get(site, 0) + 1e-9))
                cap = by_fraction if cap is None else min(cap, by_fraction)
            self._site_cap[site] = cap
        return self._site_cap[site]

    def blocked(self, site: str | None, *, rate: bool) -> str | None:
        cap = self.site_cap(site)
        if cap is not None and self.active_site[site] >= cap:
            return "site cap"
        if self.policy.max_concurrent is not None and self.active >= self.policy.max_concurrent:
            return "global cap"
        if rate and self.rate_budget is not None and self.rate_budget <= 0:
            return "start rate"
        return None

    def take(self, site: str | None, *, rate: bool) -> None:
        self.active += 1
        self.active_site[site] += 1
        if rate and self.rate_budget is not None:
            self.rate_budget -= 1


class _Notes:
    """Why chargers are held back, counted per reason with a few example ids (bounded)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}

    def add(self, reason: str, charger_id: str) -> None:
        n = self.counts.get(reason, 0)
        self.counts[reason] = n + 1
        if n < _EXAMPLES:
            self.examples.setdefault(reason, []).append(charger_id)

    def render(self, extra: Sequence[str] = ()) -> tuple[str, ...]:
        out = [*extra]
        for reason, n in sorted(self.counts.items(), key=lambda kv: -kv[1]):
            more = ", …" if n > _EXAMPLES else ""
            out.append(f"{n} held: {reason} (e.g. {', '.join(self.examples[reason])}{more})")
        return tuple(out[:_MAX_NOTES])


def _min(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


# -- the decision --------------------------------------------------------------------------


def decide(
    campaign: CampaignView,
    jobs: Mapping[str, Sequence[JobView]],
    fleet: Mapping[str, ChargerSnapshot],
    health: Mapping[str, Health],
    now: datetime,
) -> Decision:
    """What to do now; see the module docstring for the rules."""
    if campaign.rollback:
        return _rollback_all(campaign, jobs, fleet, now)
    if campaign.state == "paused":
        starts, notes, wake = _repairs(campaign, jobs, fleet, now)
        return Decision(start=starts, notes=notes, wake_at=wake)
    if campaign.state != "running":
        return Decision()
    stop = _auto_stop(campaign, jobs)
    if stop is not None:
        action, reason = stop
        if action == "abort_and_rollback":
            starts = _rollback_all(campaign, jobs, fleet, now).start
            return Decision(start=starts, state="aborted", reason=reason, rollback=True)
        starts, notes, _ = _repairs(campaign, jobs, fleet, now)
        state = "paused" if action == "pause" else "aborted"
        return Decision(start=starts, state=state, reason=reason, notes=notes)
    if campaign.current_wave >= len(campaign.waves):
        return Decision(state="completed", reason=f"all {len(campaign.waves)} waves done")
    return _run_wave(campaign, jobs, fleet, health, now)


def _auto_stop(
    campaign: CampaignView, jobs: Mapping[str, Sequence[JobView]]
) -> tuple[str, str] | None:
    rules = campaign.policy.auto_stop
    if not rules:
        return None
    policy = campaign.policy
    since = campaign.stop_counting_from
    executed = 0
    failed: dict[str, int] = defaultdict(int)
    for js in jobs.values():
        update, _ = _latest(js)
        if update is None or update.state not in ("succeeded", "failed"):
            continue
        if since is not None and update.created_at < since:
            continue
        if update.state == "failed" and _retry_at(policy, js, update) is not None:
            continue  # a retry is coming: not an outcome yet
        executed += 1
        if update.state == "failed":
            failed[update.failure or "unknown"] += 1
    worst: tuple[str, str] | None = None
    for i, rule in enumerate(rules):
        if executed < rule.min_executed:
            continue
        kinds_failed = (
            (failed.get(f, 0) for f in rule.failures) if rule.failures else failed.values()
        )
        n = sum(kinds_failed)
        percent = 100 * n / executed
        if percent > rule.max_failure_percent:
            kinds = ", ".join(sorted(rule.failures)) or "any failure"
            reason = (
                f"auto-stop rule {i}: {n} of {executed} executed jobs failed ({kinds}) ="
                f" {percent:.1f}% > {rule.max_failure_percent:g}%"
            )
            if worst is None or _SEVERITY[rule.action] > _SEVERITY[worst[0]]:
                worst = (rule.action, reason)
    return worst


def _rollback_start(update: JobView, now: datetime, why: str) -> StartJob:
    assert update.previous_version is not None
    return StartJob(
        charger_id=update.charger_id,
        kind="rollback",
        to_version=update.previous_version,
        retrieve_at=now,
        reason=why,
    )


def _try_rollback(c: ChargerSnapshot | None, caps: _Caps, notes: _Notes, cid: str) -> bool:
    if c is not None and c.in_session:
        notes.add("in session (rollback waits)", cid)
        return False
    site = c.site_id if c else None
    held = caps.blocked(site, rate=False)
    if held:
        notes.add(f"{held} (rollback waits)", cid)
        return False
    caps.take(site, rate=False)
    return True


def _rollback_all(
    campaign: CampaignView,
    jobs: Mapping[str, Sequence[JobView]],
    fleet: Mapping[str, ChargerSnapshot],
    now: datetime,
) -> Decision:
    policy = campaign.policy
    caps = _Caps(policy, jobs, fleet, now)
    notes = _Notes()
    starts: list[StartJob] = []
    for cid in sorted(jobs):
        update, last = _latest(jobs[cid])
        if update is None or last is not update or not update.previous_version:
            continue
        wanted = update.state == "succeeded" or _wants_rollback(policy, update, last)
        if wanted and _try_rollback(fleet.get(cid), caps, notes, cid):
            starts.append(_rollback_start(update, now, "campaign aborted with rollback"))
    return Decision(start=tuple(starts), notes=notes.render())


def _repairs(
    campaign: CampaignView,
    jobs: Mapping[str, Sequence[JobView]],
    fleet: Mapping[str, ChargerSnapshot],
    now: datetime,
) -> tuple[tuple[StartJob, ...], tuple[str, ...], datetime | None]:
    """Rollbacks for chargers whose failure calls for one (used while paused/stopping)."""
    policy = campaign.policy
    caps = _Caps(policy, jobs, fleet, now)
    notes = _Notes()
    starts: list[StartJob] = []
    for cid in sorted(jobs):
        js = jobs[cid]
        update, last = _latest(js)
        if update is None or not _wants_rollback(policy, update, last):
            continue
        if _retry_at(policy, js, update) is not None:
            continue
        if _try_rollback(fleet.get(cid), caps, notes, cid):
            starts.append(_rollback_start(update, now, f"rollback after {update.failure}"))
    return tuple(starts), notes.render(), None


def _run_wave(
    campaign: CampaignView,
    jobs: Mapping[str, Sequence[JobView]],
    fleet: Mapping[str, ChargerSnapshot],
    health: Mapping[str, Health],
    now: datetime,
) -> Decision:
    policy = campaign.policy
    index = campaign.current_wave
    target_key = versions.version_key(campaign.target_version)
    wave_started = campaign.wave_started_at or now
    may_skip = policy.max_wait_seconds is not None and now >= wave_started + timedelta(
        seconds=policy.max_wait_seconds
    )
    closed = campaign.wave_done_at is not None  # the wave is over: soak and gate only

    # The wave, plus chargers of earlier waves that never got a job (carried over).
    members: list[str] = []
    for earlier in campaign.waves[:index]:
        members.extend(cid for cid in earlier if cid not in jobs)
    members.extend(campaign.waves[index])

    rollbacks: list[tuple[str, JobView]] = []
    retries: list[tuple[str, JobView]] = []
    fresh: list[str] = []
    unsettled = 0
    skipped = 0
    wake: datetime | None = None
    wave_jobs: list[JobView] = []
    for cid in members:
        js = jobs.get(cid)
        if not js:
            c = fleet.get(cid)
            if c is None:
                skipped += 1
            elif c.firmware_version and versions.version_key(c.firmware_version) == target_key:
                pass  # updated outside the campaign: nothing to do
            else:
                fresh.append(cid)
            continue
        update, last = _latest(js)
        if update is not None:
            wave_jobs.append(update)
        if last.state not in TERMINAL:
            unsettled += 1
            continue
        if last is not update or update is None or update.state != "failed":
            continue  # rolled back, succeeded or cancelled
        retry_at = _retry_at(policy, js, update)
        if retry_at is not None:
            if retry_at <= now:
                retries.append((cid, update))
            else:
                unsettled += 1
                wake = _min(wake, retry_at)
        elif _wants_rollback(policy, update, last):
            rollbacks.append((cid, update))

    caps = _Caps(policy, jobs, fleet, now)
    notes = _Notes()
    starts: list[StartJob] = []
    for cid, update in rollbacks:
        if _try_rollback(fleet.get(cid), caps, notes, cid):
            starts.append(_rollback_start(update, now, f"rollback after {update.failure}"))
    unsettled += len(rollbacks)

    window_cache: dict[tuple[int, str], tuple[bool, datetime | None]] = {}

    def window_state(c: ChargerSnapshot) -> tuple[bool, datetime | None]:
        """(may start now, next opening if not)."""
        ws = policy.windows_for(c.site_id)
        if not ws:
            return True, None
        key = (id(ws), c.timezone)
        if key not in window_cache:
            ok = win.window_open(ws, c.timezone, now)
            opening: datetime | None = None
            if ok and policy.window_margin_seconds:
                close = win.current_close(ws, c.timezone, now)
                margin = timedelta(seconds=policy.window_margin_seconds)
                if close is not None and close - now < margin:
                    ok = False
                    opening = win.next_opening(ws, c.timezone, close)
            elif not ok:
                opening = win.next_opening(ws, c.timezone, now)
            window_cache[key] = (ok, opening)
        return window_cache[key]

    def try_update(cid: str, reason: str) -> str | None:
        """Start an update job, or say what holds the charger back."""
        nonlocal wake
        c = fleet[cid]
        held: str | None = None
        if not c.connected:
            held = "offline"
        elif c.in_session:
            held = "in session"
        else:
            ok, opening = window_state(c)
            if not ok:
                held = "window closed"
                wake = _min(wake, opening)
            else:
                held = caps.blocked(c.site_id, rate=True)
                if held == "start rate":
                    wake = _min(wake, caps.rate_wake)
        if held is not None:
            notes.add(held, cid)
            return held
        caps.take(c.site_id, rate=True)
        starts.append(
            StartJob(
                charger_id=cid,
                kind="update",
                to_version=campaign.target_version,
                retrieve_at=now,
                reason=reason,
            )
        )
        return None

    if not closed:
        for cid, update in retries:
            n = _failures_of(jobs[cid], update.failure or "")
            try_update(cid, f"retry {n} after {update.failure}")
            unsettled += 1  # started or waiting: either way not settled
        for cid in fresh:
            held = try_update(cid, f"wave {index}")
            # Offline or busy chargers may stay so; caps and windows always clear up.
            if held is None or held in _WAITING_HOLDS or not may_skip:
                unsettled += 1
            else:
                skipped += 1
    extra: list[str] = []
    if skipped:
        extra.append(f"{skipped} skipped in wave {index} (never startable, or left the fleet)")
    if not may_skip and fresh and policy.max_wait_seconds is not None:
        wake = _min(wake, wave_started + timedelta(seconds=policy.max_wait_seconds))

    if starts or unsettled:
        return Decision(start=tuple(starts), wake_at=wake, notes=notes.render(extra))

    wait = timedelta(seconds=max(policy.soak_seconds, policy.health_window_seconds))
    if campaign.wave_done_at is None:
        return Decision(wave_done_at=now, wake_at=now + wait, notes=notes.render(extra))
    if now < campaign.wave_done_at + wait:
        return Decision(wake_at=campaign.wave_done_at + wait, notes=notes.render(extra))

    gate = evaluate_gate(index, wave_jobs, fleet, health, policy)
    if not gate.passed and not campaign.gate_go:
        why = "; ".join(gate.reasons)
        return Decision(state="paused", reason=f"gate {index} failed: {why}", gate=gate)
    if policy.pause_at_gate and not campaign.gate_go:
        return Decision(state="paused", reason=f"waiting for operator at gate {index}", gate=gate)
    prefix = "" if gate.passed else f"operator go overrides failed gate {index}; "
    if index + 1 >= len(campaign.waves):
        return Decision(
            state="completed",
            reason=f"{prefix}gate {index} passed, all {len(campaign.waves)} waves done",
            gate=gate,
        )
    return Decision(
        advance_to=index + 1,
        reason=f"{prefix}gate {index} passed",
        gate=gate,
        wake_at=now,
    )
