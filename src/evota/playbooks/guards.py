"""The guard rails, pure: may a run start now, may it send its next command now.

Every refusal has a name (:class:`Refusal`) that the run, the log and the docs use. Two
questions: :func:`admit` before a run starts (all rails) and :func:`may_send` before each
command a run sends (the rails that can change while a run waits: the kill switch, the
playbook's suspension, a session that began, the site's allowed hours). :func:`breaker`
says whether a playbook must be suspended: its recent runs fail too often, or triggers
arrive faster than a local fault explains (a fleet-wide fault must not become a fleet-wide
reboot storm). The caller passes the facts and ``now``; nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from evota.pacing import Pace
from evota.playbooks.spec import Guards
from evota.rollout.policy import Window
from evota.rollout.windows import window_open

__all__ = [
    "BREAKER_FAILURES",
    "TRANSIENT",
    "Refusal",
    "Situation",
    "Verdict",
    "admit",
    "breaker",
    "may_send",
]

#: Outcomes the failure-rate breaker counts against a playbook: it did not resolve the fault.
BREAKER_FAILURES = frozenset({"failed", "escalated"})
#: Finished runs the failure-rate breaker looks at (the latest ones, within a day).
BREAKER_WINDOW_RUNS = 20
_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)


class Refusal(StrEnum):
    KILL_SWITCH = "kill_switch"  # EVOTA_PLAYBOOKS_ENABLED=false or the API's switch
    SUSPENDED = "suspended"  # the breaker (or an operator) suspended the playbook
    BREAKER_TRIGGER_VOLUME = "breaker_trigger_volume"
    BREAKER_FAILURE_RATE = "breaker_failure_rate"
    ALREADY_RUNNING = "already_running"  # a run for this charger and fault is in progress
    IN_SESSION = "in_session"  # never during a session
    OUTSIDE_HOURS = "outside_hours"  # the site's allowed hours are closed
    DAILY_CAP = "daily_cap"  # K runs per (charger, fault) per day reached
    CONCURRENCY = "concurrency"  # runs in progress fleet-wide for this playbook
    SITE_CONCURRENCY = "site_concurrency"  # runs in progress at the charger's site
    START_RATE = "start_rate"  # starts per hour fleet-wide
    APPROVAL_REFUSED = "approval_refused"  # the step needs approval; the playbook refuses


#: Refusals that pass: a condition trigger tries again later instead of being refused.
TRANSIENT = frozenset(
    {
        Refusal.IN_SESSION,
        Refusal.OUTSIDE_HOURS,
        Refusal.CONCURRENCY,
        Refusal.SITE_CONCURRENCY,
        Refusal.START_RATE,
        Refusal.ALREADY_RUNNING,
    }
)


@dataclass(frozen=True, slots=True)
class Situation:
    """What the rails look at for one candidate run (the runner gathers it)."""

    now: datetime
    kill_switch: bool = False
    suspended: bool = False
    in_session: bool = False
    site_hours: Sequence[Window] = ()
    site_tz: str = "UTC"
    runs_today: int = 0  # runs of this playbook for this (charger, fault) this local day
    already_running: bool = False
    active_total: int = 0  # runs in progress for this playbook
    active_in_site: int = 0  # ... at the charger's site (no site: the charger alone)
    recent_starts: Sequence[datetime] = ()  # this playbook's run starts (latest hour is enough)
    recent_triggers: Sequence[datetime] = ()  # distinct firings, this one included
    recent_outcomes: Sequence[tuple[datetime, str]] = ()  # finished runs, oldest first


@dataclass(frozen=True, slots=True)
class Verdict:
    """``refusal`` None: start. ``suspend``: the breaker tripped (suspend the playbook)."""

    refusal: Refusal | None = None
    suspend: bool = False

    @property
    def start(self) -> bool:
        return self.refusal is None


def breaker(
    guards: Guards,
    now: datetime,
    recent_triggers: Sequence[datetime],
    recent_outcomes: Sequence[tuple[datetime, str]],
) -> Refusal | None:
    """Whether the playbook must be suspended: more than ``breaker_triggers_per_hour``
    firings in the last hour, or at least ``breaker_failure_rate`` of its latest finished
    runs (at least ``breaker_min_runs`` of them, within a day) did not resolve the fault."""
    if sum(1 for t in recent_triggers if now - t < _HOUR) > guards.breaker_triggers_per_hour:
        return Refusal.BREAKER_TRIGGER_VOLUME
    finished = [o for at, o in recent_outcomes if now - at < _DAY][-BREAKER_WINDOW_RUNS:]
    if len(finished) >= max(1, guards.breaker_min_runs):
        failed = sum(1 for o in finished if o in BREAKER_FAILURES)
        if failed / len(finished) >= guards.breaker_failure_rate:
            return Refusal.BREAKER_FAILURE_RATE
    return None


def may_send(
    *,
    now: datetime,
    kill_switch: bool,
    suspended: bool,
    in_session: bool,
    site_hours: Sequence[Window] = (),
    site_tz: str = "UTC",
) -> Refusal | None:
    """Whether a run may send its next command now (None: it may)."""
    if kill_switch:
        return Refusal.KILL_SWITCH
    if suspended:
        return Refusal.SUSPENDED
    if in_session:
        return Refusal.IN_SESSION
    if not window_open(site_hours, site_tz, now):
        return Refusal.OUTSIDE_HOURS
    return None


def admit(guards: Guards, s: Situation) -> Verdict:
    """Whether a run may start now, checked in a fixed order: the switches, the breaker
    (which trips here), then the charger, the day's cap, concurrency and the start rate."""
    if s.kill_switch:
        return Verdict(Refusal.KILL_SWITCH)
    if s.suspended:
        return Verdict(Refusal.SUSPENDED)
    tripped = breaker(guards, s.now, s.recent_triggers, s.recent_outcomes)
    if tripped is not None:
        return Verdict(tripped, suspend=True)
    if s.already_running:
        return Verdict(Refusal.ALREADY_RUNNING)
    if s.in_session:
        return Verdict(Refusal.IN_SESSION)
    if not window_open(s.site_hours, s.site_tz, s.now):
        return Verdict(Refusal.OUTSIDE_HOURS)
    if s.runs_today >= guards.max_runs_per_charger_per_day:
        return Verdict(Refusal.DAILY_CAP)
    if s.active_total >= guards.max_concurrent:
        return Verdict(Refusal.CONCURRENCY)
    if s.active_in_site >= guards.max_concurrent_per_site:
        return Verdict(Refusal.SITE_CONCURRENCY)
    rate = guards.max_starts_per_hour
    if rate < 1 or Pace(rate, 3600.0).allowance(s.recent_starts, s.now) < 1:
        return Verdict(Refusal.START_RATE)
    return Verdict()
