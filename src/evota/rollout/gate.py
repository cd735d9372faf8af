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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from evota.rollout.policy import Policy
from evota.rollout.target import ChargerSnapshot

if TYPE_CHECKING:
    from evota.rollout.engine import JobView

__all__ = ["GateResult", "Health", "evaluate_gate", "wilson_lower"]

Z95 = 1.959964


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
        },
        by_model={k: _group(e, s) for k, (e, s) in sorted(groups_model.items())},
        by_site={k: _group(e, s) for k, (e, s) in sorted(groups_site.items())},
    )
