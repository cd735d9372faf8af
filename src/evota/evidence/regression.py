"""Is a firmware version significantly worse than its predecessor? Pure.

Two rates are tested, each as a proportion: the **fault rate** (share of charger-days with at
least one fault) and the **session-failure rate** (share of sessions interrupted). The test is
the one-sided pooled two-proportion z-test of ``H0: p_new <= p_old`` against
``p_new > p_old``; a regression is raised when ``z >= 2.326`` (p < 0.01, one-sided), both
sides have at least :data:`MIN_SAMPLE` units and the new rate is at least
:data:`MIN_INCREASE` above the old one (a significant but negligible rise is not news).
The strict level keeps false alarms rare although the check runs after every rollup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from evota.evidence.kpis import Sums

Z_ONE_SIDED_99 = 2.3263478740408408
MIN_SAMPLE = 30
MIN_INCREASE = 0.02
RULE = "firmware_regression"


@dataclass(frozen=True, slots=True)
class Finding:
    metric: str  # fault_rate | session_failure_rate
    old_rate: float
    new_rate: float
    old_n: int
    new_n: int
    z: float

    def message(self, version: str, predecessor: str) -> str:
        what = "charger-days with a fault" if self.metric == "fault_rate" else "sessions failed"
        return (
            f"firmware {version} is worse than {predecessor}: {self.new_rate:.1%} of "
            f"{self.new_n} {what} vs {self.old_rate:.1%} of {self.old_n} (z={self.z:.2f}, "
            "one-sided p<0.01)"
        )


def z_statistic(x_old: int, n_old: int, x_new: int, n_new: int) -> float:
    """Pooled two-proportion z of ``p_new - p_old`` (0 when the pooled rate is 0 or 1)."""
    pooled = (x_old + x_new) / (n_old + n_new)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_old + 1 / n_new))
    if se == 0:
        return 0.0
    return (x_new / n_new - x_old / n_old) / se


def _test(metric: str, x_old: int, n_old: int, x_new: int, n_new: int) -> Finding | None:
    if min(n_old, n_new) < MIN_SAMPLE:
        return None
    old, new = x_old / n_old, x_new / n_new
    z = z_statistic(x_old, n_old, x_new, n_new)
    if z >= Z_ONE_SIDED_99 and new - old >= MIN_INCREASE:
        return Finding(metric, old, new, n_old, n_new, z)
    return None


def regressions(old: Sums, new: Sums) -> list[Finding]:
    """The rates in which ``new`` is significantly worse than ``old``."""
    found = [
        _test("fault_rate", old.faulty_days, old.charger_days, new.faulty_days, new.charger_days),
        _test(
            "session_failure_rate",
            old.failed_sessions,
            old.sessions,
            new.failed_sessions,
            new.sessions,
        ),
    ]
    return [f for f in found if f is not None]
