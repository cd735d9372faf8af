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
from typing import TYPE_CHECKING, Any

from evota.rollout.policy import Policy
from evota.selection import ChargerSnapshot

if TYPE_CHECKING:
    from evota.rollout.engine import JobView

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
    latest: dict[str, JobView] = {}
    for j in jobs:
        if j.kind != "update":
            continue
        seen = latest.get(j.charger_id)
        if seen is None or j.job_id > seen.job_id:
            latest[j.charger_id] = j
    executed = succeeded = faulted = unavailable = 0
    sb = sfb = rb = sa = sfa = ra = 0
    hb = ha = 0.0
    groups_model: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    groups_site: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    examples: dict[str, str] = {}  # a few unhealthy chargers and why, for the operator
    for cid, j in latest.items():
        if j.state not in ("succeeded", "failed"):
            continue
        executed += 1
        ok = j.state == "succeeded"
        h = health.get(cid) if ok else None
        if h is not None:
            sb += h.sessions_before
            sfb += h.sessions_failed_before
            rb += h.reconnects_before
            hb += h.hours_before
            sa += h.sessions_after
            sfa += h.sessions_failed_after
            ra += h.reconnects_after
            ha += h.hours_after
            if h.faulted_after:
                faulted += 1
                ok = False
            elif not h.available_after:
                unavailable += 1
                ok = False
            if not ok and len(examples) < _EXAMPLES:
                examples[cid] = h.problem or ("Faulted" if h.faulted_after else "not Available")
        succeeded += ok
        c = chargers.get(cid)
        gm = groups_model[(c.model if c else None) or "unknown"]
        gs = groups_site[(c.site_id if c else None) or "unknown"]
        gm[0] += 1
        gs[0] += 1
        gm[1] += ok
        gs[1] += ok
    lower = wilson_lower(succeeded, executed)
    threshold = policy.success_threshold
    tol = policy.health_tolerance
    reasons: list[str] = []
    if executed == 0:
        reasons.append("no charger of the wave executed its update")
    elif lower < threshold:
        unhealthy = ""
        if faulted or unavailable:
            unhealthy = f"; {faulted} Faulted, {unavailable} not Available"
        reasons.append(
            f"success {succeeded}/{executed}{unhealthy}: Wilson lower bound {lower:.3f}"
            f" < {threshold:g}"
        )
    sess_before, sess_after = _rate(sfb, sb), _rate(sfa, sa)
    if sess_after is not None and sess_after - (sess_before or 0.0) > tol:
        reasons.append(
            f"session failure rate {sess_after:.3f} vs baseline {sess_before or 0.0:.3f}"
            f" (tolerance {tol:g})"
        )
    rec_before, rec_after = _rate(rb, hb), _rate(ra, ha)
    if rec_after is not None and rec_after - (rec_before or 0.0) > tol:
        reasons.append(
            f"reconnects per hour {rec_after:.3f} vs baseline {rec_before or 0.0:.3f}"
            f" (tolerance {tol:g})"
        )
    return GateResult(
        wave=wave_index,
        passed=not reasons,
        reasons=tuple(reasons),
        executed=executed,
        succeeded=succeeded,
        failed=executed - succeeded,
        success_ratio=succeeded / executed if executed else 0.0,
        wilson_lower=lower,
        threshold=threshold,
        health={
            "faulted": faulted,
            "not_available": unavailable,
            "session_failure_rate_before": sess_before,
            "session_failure_rate_after": sess_after,
            "reconnect_rate_before": rec_before,
            "reconnect_rate_after": rec_after,
            "sessions_before": sb,
            "sessions_after": sa,
            "tolerance": tol,
            "unhealthy_examples": dict(sorted(examples.items())),
        },
        by_model={k: _group(e, s) for k, (e, s) in sorted(groups_model.items())},
        by_site={k: _group(e, s) for k, (e, s) in sorted(groups_site.items())},
    )
