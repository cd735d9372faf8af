"""The go/no-go check after a wave: statistically sound success and post-update health.

The success ratio is judged on the lower bound of the 95% Wilson score interval, not the
raw ratio: 1 of 1 is "probably fine", not "at least 95% fine" (its lower bound is 0.21).
A job that succeeded but whose charger then faulted or did not come back Available counts
as a failure here. Health is compared with each charger's own baseline before the update
(session failure rate, reconnects per hour), summed over the wave, with an absolute
tolerance, so a wave is not failed by chargers that were always flaky.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
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
    "GateResult",
    "Health",
    "StatusReport",
    "evaluate_gate",
    "health_after_boot",
    "wilson_lower",
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
    wave: int
    passed: bool
    reasons: tuple[str, ...]
    executed: int
    succeeded: int
    failed: int
    success_ratio: float
    wilson_lower: float
    threshold: float
    health: dict[str, Any] = field(default_factory=dict)
    by_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_site: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return d


def _rate(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _group(executed: int, succeeded: int) -> dict[str, Any]:
    return {
        "executed": executed,
        "succeeded": succeeded,
        "failed": executed - succeeded,
        "wilson_lower": round(wilson_lower(succeeded, executed), 6),
    }


def evaluate_gate(
    wave_index: int,
    jobs: Sequence[JobView],
    chargers: Mapping[str, ChargerSnapshot],
    health: Mapping[str, Health],
    policy: Policy,
) -> GateResult:
    """Judge a finished wave from its update jobs (the latest per charger counts).

    Executed = latest update job succeeded or failed (cancelled is not executed). A charger
    without a Health entry is judged on its job alone (the job's verify window already saw
    it boot the new version). The gate passes when the Wilson lower bound of healthy
    successes reaches ``success_threshold`` and neither the session failure rate nor the
    reconnect rate (per charger-hour) is worse than the baseline by more than
    ``health_tolerance``.
    """
    tally = _Tally()
    for cid, job in _latest_updates(jobs).items():
        if job.state in EXECUTED:
            tally.add(cid, job, health.get(cid), chargers.get(cid))
    lower = wilson_lower(tally.succeeded, tally.executed)
    threshold = policy.success_threshold
    tol = policy.health_tolerance
    reasons = [
        *_success_problems(tally, lower, threshold),
        *_health_problems(tally.before, tally.after, tol),
    ]
    return GateResult(
        wave=wave_index,
        passed=not reasons,
        reasons=tuple(reasons),
        executed=tally.executed,
        succeeded=tally.succeeded,
        failed=tally.executed - tally.succeeded,
        success_ratio=tally.succeeded / tally.executed if tally.executed else 0.0,
        wilson_lower=lower,
        threshold=threshold,
        health=tally.health_summary(tol),
        by_model={k: _group(e, s) for k, (e, s) in sorted(tally.by_model.items())},
        by_site={k: _group(e, s) for k, (e, s) in sorted(tally.by_site.items())},
    )


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


def _pair() -> list[int]:
    return [0, 0]


@dataclass(slots=True)
class _Tally:
    """What the executed chargers of a wave add up to."""

    executed: int = 0
    succeeded: int = 0  # healthy successes: a success that then faulted counts as a failure
    faulted: int = 0
    unavailable: int = 0
    before: _Side = field(default_factory=_Side)
    after: _Side = field(default_factory=_Side)
    by_model: defaultdict[str, list[int]] = field(default_factory=lambda: defaultdict(_pair))
    by_site: defaultdict[str, list[int]] = field(default_factory=lambda: defaultdict(_pair))
    examples: dict[str, str] = field(default_factory=dict)  # a few unhealthy ones, and why

    def add(
        self, cid: str, job: JobView, health: Health | None, charger: ChargerSnapshot | None
    ) -> None:
        self.executed += 1
        ok = job.state == _SUCCEEDED
        if ok and health is not None:
            ok = self._healthy(cid, health)
        self.succeeded += ok
        for group in (
            self.by_model[(charger.model if charger else None) or "unknown"],
            self.by_site[(charger.site_id if charger else None) or "unknown"],
        ):
            group[0] += 1
            group[1] += ok

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


def _success_problems(tally: _Tally, lower: float, threshold: float) -> list[str]:
    """Why the wave's (healthy) successes are too few, if they are."""
    if tally.executed == 0:
        return ["no charger of the wave executed its update"]
    if lower >= threshold:
        return []
    unhealthy = ""
    if tally.faulted or tally.unavailable:
        unhealthy = f"; {tally.faulted} Faulted, {tally.unavailable} not Available"
    return [
        f"success {tally.succeeded}/{tally.executed}{unhealthy}: Wilson lower bound"
        f" {lower:.3f} < {threshold:g}"
    ]


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
