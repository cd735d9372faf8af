"""The go/no-go check after a wave: statistically sound success and post-update health.

Evidence accumulates: a gate judges every charger the campaign has updated so far (the
pilot's successes count for every later wave) and shows the wave's own numbers beside it.
The healthy-success ratio is judged on the 95% Wilson score interval, with three outcomes:
*passed* (its lower bound reaches ``success_threshold``), *failed* (its upper bound is below
it: there is evidence the rate is too low) and *inconclusive* (too few results to tell; the
reason says how many more healthy successes would pass). 1 of 1 is "probably fine", not "at
least 95% fine" (its lower bound is 0.21). A job that succeeded but whose charger then
faulted or did not come back Available counts as a failure here. Health is compared with
each charger's own baseline before the update (session failure rate, reconnects per hour),
summed, with an absolute tolerance, so a gate is not failed by chargers that were always
flaky; a health regression fails the gate.

With ``group_by`` (model or site) each group is judged on its own evidence as well: a group
that fails is *held* (its chargers get no more updates, and are rolled back when the policy
says so) and the others go on, judged without it.
"""

from __future__ import annotations

import enum
import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from evota.rollout.campaign import EXECUTED, JobView
from evota.rollout.job import JobState
from evota.rollout.policy import Policy
from evota.selection import ChargerSnapshot

__all__ = [
    "OPERATIVE",
    "AfterBoot",
    "GateOutcome",
    "GateResult",
    "Health",
    "StatusReport",
    "Verdict",
    "evaluate_gate",
    "group_of",
    "health_after_boot",
    "judge",
    "more_to_pass",
    "wilson_lower",
    "wilson_upper",
]

Z95 = 1.959964
_EXAMPLES = 5
_SUCCEEDED = JobState.SUCCEEDED  # looked up once: compared for every charger of a wave


def wilson_lower(successes: int, n: int, z: float = Z95) -> float:
    """Lower bound of the Wilson score interval for ``successes`` out of ``n`` (0 if n=0)."""
    s = min(max(successes, 0), n)
    if n <= 0 or s <= 0:
        return 0.0  # exactly, not a rounding error above it
    p = s / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return min(1.0, max(0.0, (centre - spread) / (1 + z2 / n)))


def wilson_upper(successes: int, n: int, z: float = Z95) -> float:
    """Upper bound of the Wilson score interval for ``successes`` out of ``n`` (1 if n=0)."""
    s = min(max(successes, 0), n)
    if n <= 0 or s >= n:
        return 1.0  # exactly, not a rounding error below it
    return 1.0 - wilson_lower(n - s, n, z)  # the interval is symmetric in successes/failures


class GateOutcome(enum.StrEnum):
    PASSED = "passed"  # the lower bound reaches the threshold
    FAILED = "failed"  # the upper bound is below it, or health got worse
    INCONCLUSIVE = "inconclusive"  # too few results to tell either way


_MAX_MORE = 1 << 40


def more_to_pass(successes: int, n: int, threshold: float) -> int | None:
    """How many more healthy successes in a row would pass ``threshold``: 0 when it passes
    already, None when no number can (a threshold of 1: the lower bound is always below)."""
    if wilson_lower(successes, n) >= threshold:
        return 0
    if threshold >= 1:
        return None
    low, high = 0, 1  # wilson_lower(s + k, n + k) grows with k: find the first k that passes
    while wilson_lower(successes + high, n + high) < threshold:
        low, high = high, high * 2
        if high > _MAX_MORE:
            return None
    while high - low > 1:
        mid = (low + high) // 2
        if wilson_lower(successes + mid, n + mid) >= threshold:
            high = mid
        else:
            low = mid
    return high


@dataclass(frozen=True, slots=True)
class Verdict:
    """What ``succeeded`` healthy successes out of ``executed`` say against a threshold."""

    outcome: GateOutcome
    succeeded: int
    executed: int
    lower: float
    upper: float
    threshold: float
    more: int | None  # healthy successes that would pass it (0 when passed, None: none can)

    def words(self) -> str:
        """One line for an operator: "6/6 healthy; 3 more would pass 0.5 at 95%"."""
        head = f"{self.succeeded}/{self.executed} healthy"
        t = f"{self.threshold:g}"
        if self.outcome is GateOutcome.PASSED:
            return f"{head}: Wilson lower bound {self.lower:.3f} >= {t}"
        if self.outcome is GateOutcome.FAILED:
            return f"{head}: Wilson upper bound {self.upper:.3f} < {t}"
        if self.executed == 0:
            return "no charger has executed its update yet"
        more = (
            f"{self.more} more would pass {t} at 95%"
            if self.more is not None
            else f"no number of successes passes {t}"
        )
        return f"{head}; {more} (Wilson {self.lower:.3f}..{self.upper:.3f})"


def judge(succeeded: int, executed: int, threshold: float, *, count_more: bool = True) -> Verdict:
    """Passed, failed or inconclusive: the 95% Wilson interval against the threshold.
    ``count_more=False`` skips the search for how many more would pass (``more`` is None):
    a breakdown over 12,500 sites need not search 12,500 times."""
    lower = wilson_lower(succeeded, executed)
    upper = wilson_upper(succeeded, executed)
    if executed > 0 and lower >= threshold:
        outcome = GateOutcome.PASSED
    elif executed > 0 and upper < threshold:
        outcome = GateOutcome.FAILED
    else:
        outcome = GateOutcome.INCONCLUSIVE
    if outcome is GateOutcome.PASSED:
        more: int | None = 0
    else:
        more = more_to_pass(succeeded, executed, threshold) if count_more else None
    return Verdict(outcome, succeeded, executed, lower, upper, threshold, more)


@dataclass(frozen=True, slots=True)
class Health:
    """One updated charger, the same window before and after its update.

    ``available_after``: back online and Available within ``available_within_seconds``.
    Counts after the update should exclude the update's own reboot.
    """

    sessions_before: int = 0
    sessions_failed_before: int = 0
    reconnects_before: int = 0
    hours_before: float = 0.0
    sessions_after: int = 0
    sessions_failed_after: int = 0
    reconnects_after: int = 0
    hours_after: float = 0.0
    faulted_after: bool = False
    available_after: bool = True
    problem: str | None = None  # why it is not healthy, in words (from health_after_boot)


#: Connector (1.6) and EVSE (2.0.1) statuses that prove a connector works: idle and ready,
#: reserved, or in a session. ``Unavailable`` and ``Faulted`` prove nothing.
OPERATIVE = frozenset(
    {
        "Available",
        "Preparing",
        "Charging",
        "SuspendedEV",
        "SuspendedEVSE",
        "Finishing",
        "Reserved",
        "Occupied",
    }
)


@dataclass(frozen=True, slots=True)
class StatusReport:
    """One connector status as received (connector 0 is the whole 1.6 charger)."""

    connector_id: int
    status: str
    at: datetime


@dataclass(frozen=True, slots=True)
class AfterBoot:
    """What the statuses after the boot with the new version say about one charger."""

    available: bool
    faulted: bool
    problem: str | None = None


def health_after_boot(
    booted_at: datetime,
    reports: Iterable[StatusReport],
    connectors: Iterable[int],
    now: datetime,
    available_within: timedelta,
    window: timedelta,
) -> AfterBoot:
    """Judge a charger's connectors after it booted the new version, as of ``now``.

    Available: every connector (``connectors``, the ones it had before, plus any that
    reported since the boot; connector 0 is not a connector) reported an :data:`OPERATIVE`
    status within ``available_within`` of the boot. A charger that reported no connector at
    all since the boot proves nothing and is not available. Faulted: any connector,
    connector 0 included, reported Faulted within ``window`` of the boot, or is Faulted now
    (its latest report). Reports before the boot or after ``now`` are ignored, so the
    verdict is a function of what was known at ``now``.
    """
    deadline = booted_at + available_within
    window_end = booted_at + window
    expected = {c for c in connectors if c > 0}
    proven: set[int] = set()
    latest: dict[int, StatusReport] = {}
    fault: StatusReport | None = None
    for r in sorted(reports, key=lambda r: r.at):
        if r.at < booted_at or r.at > now:
            continue
        if r.connector_id > 0:
            expected.add(r.connector_id)
        latest[r.connector_id] = r
        if r.status in OPERATIVE and r.at <= deadline:
            proven.add(r.connector_id)
        if r.status == "Faulted" and r.at <= window_end and fault is None:
            fault = r
    if fault is None:
        fault = next((r for r in latest.values() if r.status == "Faulted"), None)
    problem: str | None = None
    if fault is not None:
        after = (fault.at - booted_at).total_seconds()
        problem = f"connector {fault.connector_id} Faulted {after:g}s after the boot"
    missing = sorted(expected - proven)
    available = bool(expected) and not missing
    if not available and problem is None:
        within = f"{available_within.total_seconds():g}s"
        if not expected:
            problem = f"no connector reported a status within {within} of the boot"
        else:
            c = missing[0]
            seen = latest.get(c)
            status = f"last {seen.status}" if seen is not None else "no status"
            problem = f"connector {c} not Available within {within} of the boot ({status})"
    return AfterBoot(available=available, faulted=fault is not None, problem=problem)


@dataclass(frozen=True, slots=True)
class GateResult:
    """A gate's judgement. The numbers are cumulative (every charger updated so far, held
    groups left out); ``wave_numbers`` are the current wave's own."""

    wave: int
    outcome: GateOutcome
    reasons: tuple[str, ...]
    executed: int
    succeeded: int
    failed: int
    success_ratio: float
    wilson_lower: float
    wilson_upper: float
    threshold: float
    more_to_pass: int | None = None
    wave_numbers: dict[str, int] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)
    by_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_site: dict[str, dict[str, Any]] = field(default_factory=dict)
    group_by: str | None = None
    hold: dict[str, str] = field(default_factory=dict)  # groups this gate holds, and why
    held: tuple[str, ...] = ()  # groups held at earlier gates (left out of the numbers)

    @property
    def passed(self) -> bool:
        return self.outcome is GateOutcome.PASSED

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outcome"] = str(self.outcome)
        d["passed"] = self.passed
        d["reasons"] = list(self.reasons)
        d["held"] = list(self.held)
        return d


def _rate(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _group(executed: int, succeeded: int, threshold: float) -> dict[str, Any]:
    v = judge(succeeded, executed, threshold, count_more=False)
    return {
        "executed": executed,
        "succeeded": succeeded,
        "failed": executed - succeeded,
        "wilson_lower": round(v.lower, 6),
        "wilson_upper": round(v.upper, 6),
        "outcome": str(v.outcome),
    }


def group_of(charger: ChargerSnapshot | None, by: str | None) -> str | None:
    """The gate group a charger belongs to (its model or site; "unknown" when not known)."""
    if by is None:
        return None
    value = None if charger is None else (charger.model if by == "model" else charger.site_id)
    return value or "unknown"


def evaluate_gate(
    wave_index: int,
    jobs: Sequence[JobView],
    chargers: Mapping[str, ChargerSnapshot],
    health: Mapping[str, Health],
    policy: Policy,
    *,
    wave: Collection[str] = (),
    held: Collection[str] = (),
) -> GateResult:
    """Judge the campaign so far from its update jobs (the latest per charger counts).

    ``jobs`` are every update job of the campaign up to this gate; ``wave`` names the
    chargers of the current wave (for its own numbers); ``held`` the groups held at earlier
    gates, left out. Executed = latest update job succeeded or failed (cancelled is not
    executed). A charger without a Health entry is judged on its job alone (the job's verify
    window already saw it boot the new version). With ``policy.group_by`` each group is
    judged too: a failed group is held (``hold``) and the rest judged without it. Health
    fails the gate when the session failure rate or the reconnect rate (per charger-hour) is
    worse than the baseline by more than ``health_tolerance``.
    """
    by = policy.group_by
    threshold = policy.success_threshold
    executed = [
        (cid, j)
        for cid, j in _latest_updates(jobs).items()
        if j.state in EXECUTED and not (held and group_of(chargers.get(cid), by) in held)
    ]
    hold = _failed_groups(executed, chargers, health, policy) if by is not None else {}
    tally = _Tally()
    in_wave = _Pair()
    members = set(wave)
    for cid, j in executed:
        charger = chargers.get(cid)
        if hold and group_of(charger, by) in hold:
            continue
        ok = tally.add(cid, j, health.get(cid), charger)
        if cid in members:
            in_wave.add(ok)
    verdict = judge(tally.succeeded, tally.executed, threshold)
    tol = policy.health_tolerance
    problems = _health_problems(tally.before, tally.after, tol)
    outcome = GateOutcome.FAILED if problems else verdict.outcome
    reasons = _reasons(verdict, tally, hold, problems)
    return GateResult(
        wave=wave_index,
        outcome=outcome,
        reasons=tuple(reasons),
        executed=tally.executed,
        succeeded=tally.succeeded,
        failed=tally.executed - tally.succeeded,
        success_ratio=tally.succeeded / tally.executed if tally.executed else 0.0,
        wilson_lower=verdict.lower,
        wilson_upper=verdict.upper,
        threshold=threshold,
        more_to_pass=verdict.more,
        wave_numbers={
            "executed": in_wave.executed,
            "succeeded": in_wave.succeeded,
            "failed": in_wave.executed - in_wave.succeeded,
        },
        health=tally.health_summary(tol),
        by_model={k: _group(*p.pair, threshold) for k, p in sorted(tally.by_model.items())},
        by_site={k: _group(*p.pair, threshold) for k, p in sorted(tally.by_site.items())},
        group_by=by,
        hold=hold,
        held=tuple(sorted(held)),
    )


def _failed_groups(
    executed: Sequence[tuple[str, JobView]],
    chargers: Mapping[str, ChargerSnapshot],
    health: Mapping[str, Health],
    policy: Policy,
) -> dict[str, str]:
    """The groups whose own evidence fails the threshold, with the reason to hold each."""
    groups: defaultdict[str, _Pair] = defaultdict(_Pair)
    for cid, j in executed:
        key = group_of(chargers.get(cid), policy.group_by)
        assert key is not None
        groups[key].add(_is_healthy_success(j, health.get(cid)))
    hold = {}
    for key, p in sorted(groups.items()):
        v = judge(p.succeeded, p.executed, policy.success_threshold, count_more=False)
        if v.outcome is GateOutcome.FAILED:
            hold[key] = f"{policy.group_by} {key}: {v.words()}"
    return hold


def _reasons(
    verdict: Verdict, tally: _Tally, hold: Mapping[str, str], problems: Sequence[str]
) -> list[str]:
    """The lines that explain the outcome: the success verdict, then what else weighed."""
    line = verdict.words()
    if tally.faulted or tally.unavailable:
        line += f"; {tally.faulted} Faulted, {tally.unavailable} not Available"
    return [line, *(f"held {why}" for why in hold.values()), *problems]


def _latest_updates(jobs: Sequence[JobView]) -> dict[str, JobView]:
    """Each charger's latest update job (by id), in the order chargers first appear."""
    latest: dict[str, JobView] = {}
    for j in jobs:
        if j.kind != "update":
            continue
        seen = latest.get(j.charger_id)
        if seen is None or j.job_id > seen.job_id:
            latest[j.charger_id] = j
    return latest


@dataclass(slots=True)
class _Side:
    """Session and reconnect counts of the wave's chargers, summed, on one side of the update."""

    sessions: int = 0
    sessions_failed: int = 0
    reconnects: int = 0
    hours: float = 0.0

    @property
    def session_failure_rate(self) -> float | None:
        return _rate(self.sessions_failed, self.sessions)

    @property
    def reconnect_rate(self) -> float | None:
        return _rate(self.reconnects, self.hours)


@dataclass(slots=True)
class _Pair:
    """Executed and healthy successes of a set of chargers."""

    executed: int = 0
    succeeded: int = 0

    def add(self, ok: bool) -> None:
        self.executed += 1
        self.succeeded += ok

    @property
    def pair(self) -> tuple[int, int]:
        return self.executed, self.succeeded


def _is_healthy_success(job: JobView, health: Health | None) -> bool:
    """Succeeded, and (when its health is known) not Faulted and Available after the boot."""
    if job.state != _SUCCEEDED:
        return False
    return health is None or (not health.faulted_after and health.available_after)


@dataclass(slots=True)
class _Tally:
    """What the judged chargers add up to."""

    executed: int = 0
    succeeded: int = 0  # healthy successes: a success that then faulted counts as a failure
    faulted: int = 0
    unavailable: int = 0
    before: _Side = field(default_factory=_Side)
    after: _Side = field(default_factory=_Side)
    by_model: defaultdict[str, _Pair] = field(default_factory=lambda: defaultdict(_Pair))
    by_site: defaultdict[str, _Pair] = field(default_factory=lambda: defaultdict(_Pair))
    examples: dict[str, str] = field(default_factory=dict)  # a few unhealthy ones, and why

    def add(
        self, cid: str, job: JobView, health: Health | None, charger: ChargerSnapshot | None
    ) -> bool:
        """Count one executed charger; whether it is a healthy success."""
        self.executed += 1
        ok = job.state == _SUCCEEDED
        if ok and health is not None:
            ok = self._healthy(cid, health)
        self.succeeded += ok
        self.by_model[(charger.model if charger else None) or "unknown"].add(ok)
        self.by_site[(charger.site_id if charger else None) or "unknown"].add(ok)
        return ok

    def _healthy(self, cid: str, h: Health) -> bool:
        """Count a succeeded charger's health; whether it is healthy after its update."""
        self.before.sessions += h.sessions_before
        self.before.sessions_failed += h.sessions_failed_before
        self.before.reconnects += h.reconnects_before
        self.before.hours += h.hours_before
        self.after.sessions += h.sessions_after
        self.after.sessions_failed += h.sessions_failed_after
        self.after.reconnects += h.reconnects_after
        self.after.hours += h.hours_after
        if h.faulted_after:
            self.faulted += 1
        elif not h.available_after:
            self.unavailable += 1
        else:
            return True
        if len(self.examples) < _EXAMPLES:
            self.examples[cid] = h.problem or ("Faulted" if h.faulted_after else "not Available")
        return False

    def health_summary(self, tolerance: float) -> dict[str, Any]:
        return {
            "faulted": self.faulted,
            "not_available": self.unavailable,
            "session_failure_rate_before": self.before.session_failure_rate,
            "session_failure_rate_after": self.after.session_failure_rate,
            "reconnect_rate_before": self.before.reconnect_rate,
            "reconnect_rate_after": self.after.reconnect_rate,
            "sessions_before": self.before.sessions,
            "sessions_after": self.after.sessions,
            "tolerance": tolerance,
            "unhealthy_examples": dict(sorted(self.examples.items())),
        }


def _health_problems(before: _Side, after: _Side, tolerance: float) -> list[str]:
    """Which rates got worse than their baseline by more than the tolerance."""
    problems = []
    for name, was, now in (
        ("session failure rate", before.session_failure_rate, after.session_failure_rate),
        ("reconnects per hour", before.reconnect_rate, after.reconnect_rate),
    ):
        if now is not None and now - (was or 0.0) > tolerance:
            problems.append(
                f"{name} {now:.3f} vs baseline {was or 0.0:.3f} (tolerance {tolerance:g})"
            )
    return problems
