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
   judges everything executed so far (:mod:`evota.rollout.gate`): a pass advances (or
   completes after the last wave), ``pause_at_gate`` waits for ``gate_go``, a failure
   pauses, an inconclusive gate goes on or pauses as ``on_inconclusive`` says (one without
   a single executed update always pauses). ``gate_go`` is the operator's go: it also
   overrides a failed or inconclusive gate.
6. **Held groups** (``group_by``): a group whose own evidence fails a gate is held: its
   chargers get no new updates or retries (a pending one finishes), are left out of later
   gates and of auto-stop, and with ``on_group_failure = hold_and_rollback`` every one of
   them whose latest update succeeded gets one rollback job (in a paused campaign too); the
   campaign completes only once those rollbacks are settled.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from evota.firmware import versions
from evota.pacing import Pace
from evota.rollout import windows as win
from evota.rollout.campaign import EXECUTED, CampaignState, CampaignView, JobView
from evota.rollout.gate import GateOutcome, GateResult, Health, evaluate_gate, group_of
from evota.rollout.job import TERMINAL, JobState
from evota.rollout.policy import Policy, Window
from evota.selection import ChargerSnapshot

__all__ = ["Decision", "StartJob", "decide", "gate_due"]

_SEVERITY = {"pause": 0, "abort": 1, "abort_and_rollback": 2}
_MAX_NOTES = 8
# Enum members looked up once: these are compared for every charger of a 100,000-charger
# campaign, and a member lookup on the class costs more than the comparison.
_FAILED = JobState.FAILED
_SUCCEEDED = JobState.SUCCEEDED
_EXAMPLES = 3
# Holds that end by themselves (jobs finish, windows open): never a reason to skip.
_WAITING_HOLDS = frozenset({"site cap", "global cap", "start rate", "window closed"})


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
    state: CampaignState | None = None
    reason: str | None = None
    gate: GateResult | None = None
    advance_to: int | None = None
    wave_done_at: datetime | None = None
    wake_at: datetime | None = None
    notes: tuple[str, ...] = ()
    rollback: bool = False  # with state ABORTED: roll back every updated charger
    hold: Mapping[str, str] = field(default_factory=dict)  # groups to hold from now on, why


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
    return sum(1 for j in js if j.kind == "update" and j.state == _FAILED and j.failure == failure)


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
        and update.state == _FAILED
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
        rate = policy.start_rate_per_minute
        # Starts per minute as one sliding window (evota.pacing); rollbacks count, never wait.
        self.pace = None if rate is None else Pace(rate, period=60.0)
        self.now = now
        created: list[datetime] = []
        for cid, js in jobs.items():
            c = fleet.get(cid)
            site = c.site_id if c else None
            for j in js:
                if j.state not in TERMINAL:
                    self.active += 1
                    self.active_site[site] += 1
                if self.pace is not None:
                    created.append(j.created_at)
        # Jobs created within the window, then the starts decided now.
        self.starts = [] if self.pace is None else self.pace.recent(created, now)
        self.rate_budget = None if self.pace is None else self.pace.allowance(self.starts, now)
        self._rate_wake: datetime | None = None
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

    def blocked(self, site: str | None, *, rate: bool, model_cap: int | None = None) -> str | None:
        """What holds a start back; ``model_cap`` is the charger's vendor profile's safe
        concurrency per site: the smaller of it and the policy's cap applies."""
        cap = self.site_cap(site)
        if model_cap is not None and (cap is None or model_cap < cap):
            cap = model_cap
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
            self.starts.append(self.now)
            self._rate_wake = None

    @property
    def rate_wake(self) -> datetime:
        """When the start rate has room again (``now`` if it has room)."""
        if self._rate_wake is None:
            free = None if self.pace is None else self.pace.next_free(self.starts, self.now)
            self._rate_wake = self.now if free is None else free
        return self._rate_wake


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
    if campaign.state == CampaignState.PAUSED:
        starts, notes, wake = _repairs(campaign, jobs, fleet, now)
        return Decision(start=starts, notes=notes, wake_at=wake)
    if campaign.state != CampaignState.RUNNING:
        return Decision()
    stop = _auto_stop(campaign, jobs, _held_test(campaign, fleet))
    if stop is not None:
        action, reason = stop
        if action == "abort_and_rollback":
            starts = _rollback_all(campaign, jobs, fleet, now).start
            return Decision(start=starts, state=CampaignState.ABORTED, reason=reason, rollback=True)
        starts, notes, _ = _repairs(campaign, jobs, fleet, now)
        state = CampaignState.PAUSED if action == "pause" else CampaignState.ABORTED
        return Decision(start=starts, state=state, reason=reason, notes=notes)
    if campaign.current_wave >= len(campaign.waves):
        return Decision(
            state=CampaignState.COMPLETED, reason=f"all {len(campaign.waves)} waves done"
        )
    return _run_wave(campaign, jobs, fleet, health, now)


def gate_due(campaign: CampaignView, now: datetime) -> bool:
    """Whether the next decision may judge a gate (the shell reads post-update health for
    it only then): the current wave is done and its soak is over."""
    done = campaign.wave_done_at
    if done is None or campaign.current_wave >= len(campaign.waves):
        return False
    policy = campaign.policy
    return now >= done + timedelta(seconds=max(policy.soak_seconds, policy.health_window_seconds))


def _held_test(
    campaign: CampaignView, fleet: Mapping[str, ChargerSnapshot]
) -> Callable[[str], bool]:
    """Whether a charger is in a group a gate held (always False without held groups)."""
    held, by = campaign.held, campaign.policy.group_by
    if not held or by is None:
        return lambda cid: False
    return lambda cid: group_of(fleet.get(cid), by) in held


def _auto_stop(
    campaign: CampaignView,
    jobs: Mapping[str, Sequence[JobView]],
    is_held: Callable[[str], bool],
) -> tuple[str, str] | None:
    rules = campaign.policy.auto_stop
    if not rules:
        return None
    policy = campaign.policy
    since = campaign.stop_counting_from
    executed = 0
    failed: dict[str, int] = defaultdict(int)
    for cid, js in jobs.items():
        if is_held(cid):
            continue  # its group is held already: its failures stopped what they should
        update, _ = _latest(js)
        if update is None or update.state not in EXECUTED:
            continue
        if since is not None and update.created_at < since:
            continue
        if update.state == _FAILED and _retry_at(policy, js, update) is not None:
            continue  # a retry is coming: not an outcome yet
        executed += 1
        if update.state == _FAILED:
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


class _Windows:
    """Whether a charger's maintenance window lets an update start now, and if not, when it
    opens; cached per window set and timezone (a fleet has few)."""

    def __init__(self, policy: Policy, now: datetime) -> None:
        self.policy = policy
        self.now = now
        self._cache: dict[tuple[int, str], tuple[bool, datetime | None]] = {}

    def state(self, c: ChargerSnapshot) -> tuple[bool, datetime | None]:
        """(may start now, next opening if not)."""
        ws = self.policy.windows_for(c.site_id)
        if not ws:
            return True, None
        key = (id(ws), c.timezone)
        if key not in self._cache:
            self._cache[key] = self._judge(ws, c.timezone)
        return self._cache[key]

    def _judge(self, ws: tuple[Window, ...], tz: str) -> tuple[bool, datetime | None]:
        now = self.now
        ok = win.window_open(ws, tz, now)
        if not ok:
            return False, win.next_opening(ws, tz, now)
        if self.policy.window_margin_seconds:
            close = win.current_close(ws, tz, now)
            margin = timedelta(seconds=self.policy.window_margin_seconds)
            if close is not None and close - now < margin:
                return False, win.next_opening(ws, tz, close)
        return True, None


class _Starter:
    """The jobs one decision starts, under the caps and windows; notes what holds chargers
    back and the earliest time a held charger may start (``wake``)."""

    def __init__(
        self,
        policy: Policy,
        jobs: Mapping[str, Sequence[JobView]],
        fleet: Mapping[str, ChargerSnapshot],
        now: datetime,
    ) -> None:
        self.fleet = fleet
        self.now = now
        self.caps = _Caps(policy, jobs, fleet, now)
        self.windows = _Windows(policy, now)
        self.notes = _Notes()
        self.starts: list[StartJob] = []
        self.wake: datetime | None = None

    def rollback(self, cid: str, update: JobView, why: str) -> None:
        """Roll back to the previous version unless a session or a cap holds the charger.
        Rollbacks ignore windows and the start rate: a broken charger should not wait."""
        c = self.fleet.get(cid)
        if c is not None and c.in_session:
            self.notes.add("in session (rollback waits)", cid)
            return
        site = c.site_id if c else None
        held = self.caps.blocked(site, rate=False, model_cap=c.max_per_site if c else None)
        if held:
            self.notes.add(f"{held} (rollback waits)", cid)
            return
        self.caps.take(site, rate=False)
        assert update.previous_version is not None
        self.starts.append(
            StartJob(
                charger_id=cid,
                kind="rollback",
                to_version=update.previous_version,
                retrieve_at=self.now,
                reason=why,
            )
        )

    def update(self, cid: str, to_version: str, reason: str) -> str | None:
        """Start an update job, or say what holds the charger back."""
        c = self.fleet[cid]
        held = self._hold(c)
        if held is not None:
            self.notes.add(held, cid)
            return held
        self.caps.take(c.site_id, rate=True)
        self.starts.append(
            StartJob(
                charger_id=cid,
                kind="update",
                to_version=to_version,
                retrieve_at=self.now,
                reason=reason,
            )
        )
        return None

    def _hold(self, c: ChargerSnapshot) -> str | None:
        if not c.connected:
            return "offline"
        if c.in_session:
            return "in session"
        ok, opening = self.windows.state(c)
        if not ok:
            self.wake = _min(self.wake, opening)
            return "window closed"
        held = self.caps.blocked(c.site_id, rate=True, model_cap=c.max_per_site)
        if held == "start rate":
            self.wake = _min(self.wake, self.caps.rate_wake)
        return held


def _rollback_all(
    campaign: CampaignView,
    jobs: Mapping[str, Sequence[JobView]],
    fleet: Mapping[str, ChargerSnapshot],
    now: datetime,
) -> Decision:
    policy = campaign.policy
    starter = _Starter(policy, jobs, fleet, now)
    for cid in sorted(jobs):
        update, last = _latest(jobs[cid])
        if update is None or last is not update or not update.previous_version:
            continue
        if update.state == _SUCCEEDED or _wants_rollback(policy, update, last):
            starter.rollback(cid, update, "campaign aborted with rollback")
    return Decision(start=tuple(starter.starts), notes=starter.notes.render())


def _repairs(
    campaign: CampaignView,
    jobs: Mapping[str, Sequence[JobView]],
    fleet: Mapping[str, ChargerSnapshot],
    now: datetime,
) -> tuple[tuple[StartJob, ...], tuple[str, ...], datetime | None]:
    """Rollbacks for chargers whose failure calls for one, and for held groups (used while
    paused/stopping)."""
    policy = campaign.policy
    starter = _Starter(policy, jobs, fleet, now)
    for cid in sorted(jobs):
        js = jobs[cid]
        update, last = _latest(js)
        if update is None or not _wants_rollback(policy, update, last):
            continue
        if _retry_at(policy, js, update) is not None:
            continue
        starter.rollback(cid, update, f"rollback after {update.failure}")
    _group_rollbacks(campaign, campaign.held, jobs, fleet, starter)
    return tuple(starter.starts), starter.notes.render(), None


def _group_rollbacks(
    campaign: CampaignView,
    groups: Mapping[str, str],
    jobs: Mapping[str, Sequence[JobView]],
    fleet: Mapping[str, ChargerSnapshot],
    starter: _Starter,
) -> int:
    """Roll back the held ``groups``' chargers whose latest update succeeded (when the
    policy says so); how many of them are not settled yet (to start, or rolling back).
    Failed updates are left to the per-failure rule, so no charger gets two rollbacks."""
    policy = campaign.policy
    if not groups or policy.on_group_failure != "hold_and_rollback":
        return 0
    unsettled = 0
    for cid in sorted(jobs):
        if group_of(fleet.get(cid), policy.group_by) not in groups:
            continue
        update, last = _latest(jobs[cid])
        if last.kind == "rollback" and last.state not in TERMINAL:
            unsettled += 1
        elif (
            update is not None
            and last is update
            and update.state == _SUCCEEDED
            and update.previous_version
        ):
            group = group_of(fleet.get(cid), policy.group_by)
            starter.rollback(cid, update, f"{policy.group_by} {group} held")
            unsettled += 1
    return unsettled


# -- one wave: triage, starts, soak, gate ----------------------------------------------------


def _run_wave(
    campaign: CampaignView,
    jobs: Mapping[str, Sequence[JobView]],
    fleet: Mapping[str, ChargerSnapshot],
    health: Mapping[str, Health],
    now: datetime,
) -> Decision:
    """Rules 3 to 5 for the current wave: repair, start, and once all are settled, the gate."""
    policy = campaign.policy
    wave_started = campaign.wave_started_at or now
    max_wait = policy.max_wait_seconds
    may_skip = max_wait is not None and now >= wave_started + timedelta(seconds=max_wait)

    is_held = _held_test(campaign, fleet)
    triage = _triage(campaign, _wave_members(campaign, jobs), jobs, fleet, now, is_held)
    starter = _Starter(policy, jobs, fleet, now)
    starter.wake = triage.wake
    for cid, update in triage.rollbacks:
        starter.rollback(cid, update, f"rollback after {update.failure}")
    unsettled = triage.unsettled + len(triage.rollbacks)
    unsettled += _group_rollbacks(campaign, campaign.held, jobs, fleet, starter)
    skipped = triage.skipped
    if campaign.wave_done_at is None:  # once the wave is done: soak and gate only
        still, left_out = _start_updates(campaign, triage, jobs, starter, may_skip=may_skip)
        unsettled += still
        skipped += left_out

    extra: list[str] = []
    if skipped:
        index = campaign.current_wave
        extra.append(f"{skipped} skipped in wave {index} (never startable, or left the fleet)")
    if triage.held:
        extra.append(f"{triage.held} not updated: their {policy.group_by} is held")
    if not may_skip and triage.fresh and max_wait is not None:
        starter.wake = _min(starter.wake, wave_started + timedelta(seconds=max_wait))
    notes = starter.notes.render(extra)
    if starter.starts or unsettled:
        return Decision(start=tuple(starter.starts), wake_at=starter.wake, notes=notes)
    return _soak_and_gate(campaign, jobs, fleet, health, now, notes)


def _wave_members(campaign: CampaignView, jobs: Mapping[str, Sequence[JobView]]) -> list[str]:
    """The current wave, after the chargers of earlier waves that never got a job (carried
    over: they stay candidates in every later wave)."""
    index = campaign.current_wave
    members = [cid for earlier in campaign.waves[:index] for cid in earlier if cid not in jobs]
    members.extend(campaign.waves[index])
    return members


@dataclass(slots=True)
class _Triage:
    """The wave's chargers sorted by what they need now."""

    fresh: list[str] = field(default_factory=list)  # no job yet: an update to start
    retries: list[tuple[str, JobView]] = field(default_factory=list)  # failed, retry due
    rollbacks: list[tuple[str, JobView]] = field(default_factory=list)  # failed, roll back
    unsettled: int = 0  # a job still running, or a retry not yet due
    skipped: int = 0  # gone from the fleet before it got a job
    held: int = 0  # in a held group: no update for it
    wake: datetime | None = None  # when the first retry not yet due is


def _triage(
    campaign: CampaignView,
    members: Sequence[str],
    jobs: Mapping[str, Sequence[JobView]],
    fleet: Mapping[str, ChargerSnapshot],
    now: datetime,
    is_held: Callable[[str], bool],
) -> _Triage:
    policy = campaign.policy
    target_key = versions.version_key(campaign.target_version)
    t = _Triage()
    for cid in members:
        js = jobs.get(cid)
        held = is_held(cid)
        if not js:
            c = fleet.get(cid)
            if held:
                t.held += 1
            elif c is None:
                t.skipped += 1
            elif c.firmware_version and versions.version_key(c.firmware_version) == target_key:
                pass  # updated outside the campaign: nothing to do
            else:
                t.fresh.append(cid)
            continue
        update, last = _latest(js)
        if last.state not in TERMINAL:
            t.unsettled += 1
            continue
        if last is not update or update is None or update.state != _FAILED:
            continue  # rolled back, succeeded or cancelled
        retry_at = None if held else _retry_at(policy, js, update)
        if retry_at is None:
            if _wants_rollback(policy, update, last):
                t.rollbacks.append((cid, update))
        elif retry_at <= now:
            t.retries.append((cid, update))
        else:
            t.unsettled += 1
            t.wake = _min(t.wake, retry_at)
    return t


def _start_updates(
    campaign: CampaignView,
    triage: _Triage,
    jobs: Mapping[str, Sequence[JobView]],
    starter: _Starter,
    *,
    may_skip: bool,
) -> tuple[int, int]:
    """Start the due retries, then the wave's first updates; (unsettled, skipped) of them."""
    unsettled = skipped = 0
    to_version = campaign.target_version
    for cid, update in triage.retries:
        n = _failures_of(jobs[cid], update.failure or "")
        starter.update(cid, to_version, f"retry {n} after {update.failure}")
        unsettled += 1  # started or waiting: either way not settled
    for cid in triage.fresh:
        held = starter.update(cid, to_version, f"wave {campaign.current_wave}")
        # Offline or busy chargers may stay so; caps and windows always clear up.
        if held is None or held in _WAITING_HOLDS or not may_skip:
            unsettled += 1
        else:
            skipped += 1
    return unsettled, skipped


def _soak_and_gate(
    campaign: CampaignView,
    jobs: Mapping[str, Sequence[JobView]],
    fleet: Mapping[str, ChargerSnapshot],
    health: Mapping[str, Health],
    now: datetime,
    notes: tuple[str, ...],
) -> Decision:
    """Every charger of the wave is settled: mark the wave done, soak, then judge the gate
    on everything the campaign has executed so far."""
    policy = campaign.policy
    wait = timedelta(seconds=max(policy.soak_seconds, policy.health_window_seconds))
    if campaign.wave_done_at is None:
        return Decision(wave_done_at=now, wake_at=now + wait, notes=notes)
    if now < campaign.wave_done_at + wait:
        return Decision(wake_at=campaign.wave_done_at + wait, notes=notes)
    every = [j for js in jobs.values() for j in js]
    gate = evaluate_gate(
        campaign.current_wave,
        every,
        fleet,
        health,
        policy,
        wave=_wave_members(campaign, jobs),
        held=tuple(campaign.held),
    )
    return _after_gate(campaign, gate, jobs, fleet, now)


def _after_gate(
    campaign: CampaignView,
    gate: GateResult,
    jobs: Mapping[str, Sequence[JobView]],
    fleet: Mapping[str, ChargerSnapshot],
    now: datetime,
) -> Decision:
    """What a judged gate leads to: a pause (it failed, it is inconclusive where the policy
    or a total lack of evidence says wait, or the operator wants to look first), the next
    wave, or completion. The operator's go overrides every kind of pause. Groups the gate
    holds are held in every case."""
    index = campaign.current_wave
    policy = campaign.policy
    go = campaign.gate_go
    hold = dict(gate.hold)
    why = "; ".join(gate.reasons)
    outcome = gate.outcome
    waits = outcome is GateOutcome.FAILED or (
        outcome is GateOutcome.INCONCLUSIVE
        and (policy.on_inconclusive == "pause" or gate.executed == 0)
    )
    if waits and not go:
        reason = f"gate {index} {outcome}: {why}"
        return Decision(state=CampaignState.PAUSED, reason=reason, gate=gate, hold=hold)
    if policy.pause_at_gate and not go:
        return Decision(
            state=CampaignState.PAUSED,
            reason=f"waiting for operator at gate {index} ({outcome}: {why})",
            gate=gate,
            hold=hold,
        )
    if waits:
        said = f"operator go overrides {outcome} gate {index}"
    elif outcome is GateOutcome.INCONCLUSIVE:
        said = f"gate {index} inconclusive ({gate.reasons[0]}), going on"
    else:
        said = f"gate {index} passed"
    if hold:
        said += f"; holding {policy.group_by} {', '.join(hold)}"
    if index + 1 < len(campaign.waves):
        return Decision(advance_to=index + 1, reason=said, gate=gate, wake_at=now, hold=hold)
    starter = _Starter(policy, jobs, fleet, now)
    if _group_rollbacks(campaign, hold, jobs, fleet, starter):
        # Not done while the held group is rolled back: the wave waits for its rollbacks,
        # then the gate is judged again, without the held group.
        return Decision(
            start=tuple(starter.starts),
            reason=f"{said}; rolling it back before completing",
            gate=gate,
            hold=hold,
            wake_at=now,
            notes=starter.notes.render(),
        )
    return Decision(
        state=CampaignState.COMPLETED,
        reason=f"{said}, all {len(campaign.waves)} waves done",
        gate=gate,
        hold=hold,
    )
