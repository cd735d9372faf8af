"""Post-rollout KPIs over a set of charger-days, and comparisons with 95% intervals, pure.

The shell sums ``charger_days`` rows in SQL into :class:`Sums` (one per group: before/after,
updated/control, a version/its predecessor); everything here is arithmetic on those sums.
The methods (docs/kpis.md "The maths"):

- **proportions** (session success rate): the Newcombe hybrid score interval (method 10) for
  the difference of two proportions, built from each group's Wilson interval; it keeps its
  95% coverage at small n and at rates near 0 or 1, where the Wald interval does not.
- **rates** (offline episodes and faults per charger-day, reconnects per charger-hour):
  counts over an exposure, treated as Poisson; the difference's interval is the normal
  approximation ``d ± 1.96·sqrt(c1/E1² + c2/E2²)``. Charger-days are not independent
  (one charger contributes many), so this is optimistic when faults cluster on few chargers.
- **means** (availability, the mean of each charger-day's available share; MTTR, the mean
  repair time): Welch's normal approximation from each group's sum and sum of squares.

Small-n honesty: a comparison whose either side has fewer than :data:`MIN_UNITS` units (sessions,
charger-days, repairs) says ``too little data`` and gives no difference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from evota.rollout.gate import Z95, wilson_lower, wilson_upper

#: Fewest sessions / charger-days / repairs on each side before a comparison is shown.
MIN_UNITS = {"sessions": 20, "charger_days": 7, "repairs": 5}
TOO_LITTLE = "too little data"


@dataclass(frozen=True, slots=True)
class Sums:
    """Sums over a set of charger-days (what one SQL aggregate returns)."""

    charger_days: int = 0
    observed_s: float = 0.0
    connected_s: float = 0.0
    available_s: float = 0.0
    available_share: float = 0.0  # Σ available_s / observed_s over the charger-days
    available_share2: float = 0.0  # Σ (available_s / observed_s)²
    offline_episodes: int = 0
    reconnects: int = 0
    faults: int = 0
    faulty_days: int = 0  # charger-days with at least one fault
    faults_by_code: Mapping[str, int] = field(default_factory=dict)
    sessions: int = 0
    failed_sessions: int = 0
    repairs: int = 0
    repair_s: float = 0.0
    repair_s2: float = 0.0
    chargers: int = 0

    @property
    def session_success(self) -> int:
        return self.sessions - self.failed_sessions


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def kpis(s: Sums) -> dict[str, Any]:
    """The KPIs of one set of charger-days (None where there is nothing to divide by)."""
    hours = s.observed_s / 3600.0
    return {
        "chargers": s.chargers,
        "charger_days": s.charger_days,
        "availability": _ratio(s.available_s, s.observed_s),
        "connected_share": _ratio(s.connected_s, s.observed_s),
        "offline_episodes_per_charger_day": _ratio(s.offline_episodes, s.charger_days),
        "faults_per_charger_day": _ratio(s.faults, s.charger_days),
        "faults_per_charger_day_by_code": {
            code: n / s.charger_days for code, n in sorted(s.faults_by_code.items())
        }
        if s.charger_days
        else {},
        "faults": s.faults,
        "faults_by_code": dict(sorted(s.faults_by_code.items())),
        "sessions": s.sessions,
        "failed_sessions": s.failed_sessions,
        "session_success_rate": _ratio(s.session_success, s.sessions),
        "reconnects_per_charger_hour": _ratio(s.reconnects, hours),
        "repairs": s.repairs,
        "mttr_seconds": _ratio(s.repair_s, s.repairs),
    }


# -- intervals ----------------------------------------------------------------------------------
def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (the gates' own bounds, evota.rollout.gate)."""
    return wilson_lower(successes, n, z), wilson_upper(successes, n, z)


def newcombe(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float, float]:
    """``p2 - p1`` and its 95% Newcombe hybrid score interval."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1)
    l2, u2 = wilson(x2, n2)
    d = p2 - p1
    lo = d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    hi = d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    return d, max(-1.0, lo), min(1.0, hi)


def poisson_difference(c1: int, e1: float, c2: int, e2: float) -> tuple[float, float, float]:
    """``r2 - r1`` of two Poisson rates (count over exposure) and its normal 95% interval."""
    d = c2 / e2 - c1 / e1
    half = Z95 * math.sqrt(c1 / e1**2 + c2 / e2**2)
    return d, d - half, d + half


def welch_difference(
    n1: int, sum1: float, sq1: float, n2: int, sum2: float, sq2: float
) -> tuple[float, float, float]:
    """``mean2 - mean1`` from sums and sums of squares, with the normal 95% interval."""
    m1, m2 = sum1 / n1, sum2 / n2
    v1 = max(0.0, (sq1 - n1 * m1 * m1) / (n1 - 1)) if n1 > 1 else 0.0
    v2 = max(0.0, (sq2 - n2 * m2 * m2) / (n2 - 1)) if n2 > 1 else 0.0
    half = Z95 * math.sqrt(v1 / n1 + v2 / n2)
    d = m2 - m1
    return d, d - half, d + half


# -- comparisons --------------------------------------------------------------------------------
#: metric -> (unit of n, higher is better, method)
METRICS: dict[str, tuple[str, bool, str]] = {
    "availability": ("charger_days", True, "welch"),
    "session_success_rate": ("sessions", True, "newcombe"),
    "offline_episodes_per_charger_day": ("charger_days", False, "poisson"),
    "faults_per_charger_day": ("charger_days", False, "poisson"),
    "reconnects_per_charger_hour": ("charger_days", False, "poisson"),
    "mttr_seconds": ("repairs", False, "welch"),
}


def _units(s: Sums, unit: str) -> int:
    return {"sessions": s.sessions, "charger_days": s.charger_days, "repairs": s.repairs}[unit]


def _difference(metric: str, a: Sums, b: Sums) -> tuple[float, float, float]:
    if metric == "availability":
        return welch_difference(
            a.charger_days,
            a.available_share,
            a.available_share2,
            b.charger_days,
            b.available_share,
            b.available_share2,
        )
    if metric == "session_success_rate":
        return newcombe(a.session_success, a.sessions, b.session_success, b.sessions)
    if metric == "offline_episodes_per_charger_day":
        return poisson_difference(
            a.offline_episodes, a.charger_days, b.offline_episodes, b.charger_days
        )
    if metric == "faults_per_charger_day":
        return poisson_difference(a.faults, a.charger_days, b.faults, b.charger_days)
    if metric == "reconnects_per_charger_hour":
        return poisson_difference(
            a.reconnects, a.observed_s / 3600.0, b.reconnects, b.observed_s / 3600.0
        )
    if metric == "mttr_seconds":
        return welch_difference(
            a.repairs, a.repair_s, a.repair_s2, b.repairs, b.repair_s, b.repair_s2
        )
    raise KeyError(metric)


def compare(a: Sums, b: Sums, labels: tuple[str, str] = ("before", "after")) -> dict[str, Any]:
    """Each KPI of ``a`` and ``b``, ``b - a`` with its 95% interval, ``n`` on each side and a
    verdict: ``better``/``worse`` (the interval excludes 0), ``no significant difference``,
    or ``too little data`` (then no difference is given)."""
    ka, kb = kpis(a), kpis(b)
    out: dict[str, Any] = {}
    for metric, (unit, higher_better, method) in METRICS.items():
        na, nb = _units(a, unit), _units(b, unit)
        row: dict[str, Any] = {
            labels[0]: ka[metric],
            labels[1]: kb[metric],
            "n": {labels[0]: na, labels[1]: nb},
            "unit": unit,
            "method": method,
            "difference": None,
            "ci95": None,
        }
        if min(na, nb) < MIN_UNITS[unit]:
            row["verdict"] = TOO_LITTLE
        else:
            d, lo, hi = _difference(metric, a, b)
            row["difference"], row["ci95"] = d, [lo, hi]
            if lo > 0 or hi < 0:
                row["verdict"] = "better" if (lo > 0) == higher_better else "worse"
            else:
                row["verdict"] = "no significant difference"
        out[metric] = row
    return out
