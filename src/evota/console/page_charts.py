"""Which charts a console page shows, from the data the page already loads (pure).

The campaign page draws its waves' progress and its gates' evidence from the campaign summary
the API returns (``GET /api/v1/campaigns/{id}``); the overview draws the fleet's firmware from
the per-model summaries :mod:`evota.console.overview` computes, and the fleet's days from the
daily charger rollup (``charger_days``, summed per day over the operator's scope). Kept apart from
:mod:`evota.console.charts`, which knows nothing about campaigns or firmware.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from markupsafe import Markup

from evota.console import charts, overview
from evota.console.charts import Estimate, Layer, Series, WaveProgress
from evota.firmware import versions

#: The overview's version chart names this many versions; the rest are "older/other".
TOP_VERSIONS = 7
OTHER = "other versions"
#: How a version stands against its model's latest release, in the overview's words.
STANDING = {
    "latest": "on the latest release",
    "behind": "behind",
    "ahead": "newer than the release",
    "unknown": "no release or unreported",
}
_STANDING_COLOURS = {
    STANDING["latest"]: "#009E73",
    STANDING["behind"]: "#E69F00",
    STANDING["ahead"]: "#0072B2",
    STANDING["unknown"]: charts.STATE_COLOURS["pending"],
}


#: A gate's outcome and its colour: passed green, failed vermillion, inconclusive orange.
OUTCOME_COLOURS = {"passed": "#009E73", "failed": "#D55E00", "inconclusive": "#E69F00"}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def wave_label(index: int) -> str:
    return f"Wave {index + 1}" + (" (pilot)" if index == 0 else "")


def wave_progress(waves: Sequence[Mapping[str, Any]]) -> list[WaveProgress]:
    """Each wave's jobs by state class, as the waves table counts them: failed includes
    cancelled, pending is "no job yet" (or held by a gate), running is everything between."""
    out = []
    for w in waves:
        jobs = w.get("jobs") or {}
        size = _int(w.get("size"))
        ok = _int(jobs.get("succeeded"))
        bad = _int(jobs.get("failed")) + _int(jobs.get("cancelled"))
        waiting = _int(jobs.get("pending")) + _int(jobs.get("held"))
        out.append(
            WaveProgress(
                wave_label(_int(w.get("index"))),
                succeeded=ok,
                failed=bad,
                running=max(0, size - ok - bad - waiting),
                pending=waiting,
            )
        )
    return out


def _last_gates(waves: Sequence[Mapping[str, Any]]) -> list[tuple[int, Mapping[str, Any]]]:
    """Each wave's latest gate evaluation (a gate re-evaluated after a resume counts once)."""
    return [
        (_int(w.get("index")), w["gates"][-1])
        for w in waves
        if isinstance(w.get("gates"), list) and w["gates"]
    ]


def _ratio(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def campaign_charts(campaign: Mapping[str, Any]) -> dict[str, Markup]:
    """The campaign page's charts: ``waves`` always; ``gate_counts`` and ``gate_rates`` once
    a gate has been evaluated; ``gate_groups`` when the latest gate saw several models (or
    the policy groups by model or site).

    A gate's numbers are what it judged (the whole campaign so far, where the gate
    accumulates evidence); when the evaluation also carries the wave's own numbers
    (``wave_numbers``) they are drawn beside them.
    """
    waves = campaign.get("waves") or []
    out = {
        "waves": charts.wave_progress(
            "chart-waves",
            "Wave progress",
            wave_progress(waves),
        )
    }
    gates = _last_gates(waves)
    if not gates:
        return out
    labels = [f"Gate {i + 1}" + (" (pilot)" if i == 0 else "") for i, _ in gates]
    series = [
        Layer("executed", [_int(g.get("executed")) for _, g in gates]),
        Layer("succeeded", [_int(g.get("succeeded")) for _, g in gates]),
    ]
    own = [g.get("wave_numbers") for _, g in gates]
    if any(isinstance(o, Mapping) and o for o in own):
        series = [Layer(f"{s.name}, all waves so far", s.values) for s in series]
        series.append(
            Layer(
                "succeeded in the wave itself",
                [_int(o.get("succeeded")) if isinstance(o, Mapping) else 0 for o in own],
            )
        )
    out["gate_counts"] = charts.grouped_bars(
        "chart-gate-counts", "Gate evidence: jobs judged", labels, series, unit="jobs"
    )
    estimates = []
    for label, (_, g) in zip(labels, gates, strict=True):
        executed, succeeded = _int(g.get("executed")), _int(g.get("succeeded"))
        outcome = g.get("outcome") or ("passed" if g.get("passed") else "failed")
        estimates.append(
            Estimate(
                f"{label}: {succeeded}/{executed}",
                succeeded / executed if executed else float("nan"),
                _ratio(g.get("wilson_lower")),
                _ratio(g.get("wilson_upper")),
                group=str(outcome),
            )
        )
    threshold = _ratio(gates[-1][1].get("threshold"))
    groups = gate_groups(gates[-1][1], campaign.get("held_groups") or {})
    if groups is not None:
        dimension, estimates_by_group = groups
        out["gate_groups"] = charts.comparison(
            "chart-gate-groups",
            f"Latest gate by {dimension}: success rate and its 95% Wilson interval",
            estimates_by_group,
            reference=threshold,
            reference_label="threshold",
            interval_label="95% Wilson",
            colours=OUTCOME_COLOURS,
        )
    out["gate_rates"] = charts.comparison(
        "chart-gate-rates",
        "Gate evidence: success rate and its 95% Wilson interval",
        estimates,
        reference=threshold,
        reference_label="threshold",
        interval_label="95% Wilson",
        colours=OUTCOME_COLOURS,
    )
    return out


def gate_groups(
    gate: Mapping[str, Any], held: Mapping[str, Any]
) -> tuple[str, list[Estimate]] | None:
    """A gate's own numbers per model (or per site when the policy groups by site), each
    with its interval and outcome; a held group says so. None when there is one group only
    and the policy does not group: the gate's totals say it all."""
    dimension = gate.get("group_by") or "model"
    per = gate.get("by_site" if dimension == "site" else "by_model")
    if not isinstance(per, Mapping) or (len(per) < 2 and not gate.get("group_by")):
        return None
    holding = set(held) | set(gate.get("hold") or ())
    out = []
    for name, g in sorted(per.items()):
        if not isinstance(g, Mapping):
            continue
        executed, succeeded = _int(g.get("executed")), _int(g.get("succeeded"))
        label = f"{name}: {succeeded}/{executed}" + (" (held)" if name in holding else "")
        out.append(
            Estimate(
                label,
                succeeded / executed if executed else math.nan,
                _ratio(g.get("wilson_lower")),
                _ratio(g.get("wilson_upper")),
                group=str(g.get("outcome") or ""),
            )
        )
    return (str(dimension), out) if out else None


def _fleet_versions(models: Sequence[overview.ModelSummary]) -> list[str]:
    """The versions named in the chart: the most common ones, newest first."""
    total: Counter[str] = Counter()
    for m in models:
        for v, n in m.versions:
            if v != overview.UNKNOWN:
                total[v] += n
    top = [v for v, _ in total.most_common(TOP_VERSIONS)]
    return sorted(top, key=versions.version_key, reverse=True)


def overview_charts(
    models: Sequence[overview.ModelSummary],
    *,
    versions_csv: str | None = None,
    standing_csv: str | None = None,
) -> dict[str, Markup]:
    """The overview's fleet-wide charts: ``versions`` (each model's chargers by firmware
    version, as shares) and ``standing`` (each model against its latest release), each with
    a link to its CSV export when the operator may read it."""
    if not models:
        return {}
    named = _fleet_versions(models)
    categories = [f"{m.vendor} {m.model}" for m in models]
    layers = [Layer(v, [float(dict(m.versions).get(v, 0)) for m in models]) for v in named]
    rest = [
        float(sum(n for v, n in m.versions if v not in named and v != overview.UNKNOWN))
        for m in models
    ]
    if any(rest):
        layers.append(Layer(OTHER, rest))
    unknown = [float(m.unknown) for m in models]
    if any(unknown):
        layers.append(Layer("unreported", unknown))
    colours = {"unreported": charts.STATE_COLOURS["pending"]}
    out = {
        "versions": charts.stacked_bars(
            "chart-fleet-versions",
            "Firmware versions across the fleet (share of each model)",
            categories,
            layers,
            share=True,
            colours=colours,
            csv_url=versions_csv,
        )
    }
    by_standing: dict[str, list[float]] = {name: [0.0] * len(models) for name in STANDING.values()}
    for j, m in enumerate(models):
        for v, n in m.versions:
            by_standing[STANDING[overview.standing(m, v)]][j] += n
    out["standing"] = charts.stacked_bars(
        "chart-fleet-standing",
        "Chargers against their model's latest release",
        categories,
        [Layer(name, values) for name, values in by_standing.items() if any(values)],
        unit="chargers",
        colours=_STANDING_COLOURS,
        csv_url=standing_csv,
    )
    return out


@dataclass(frozen=True, slots=True)
class FleetDay:
    """The operator's chargers on one UTC day: the charger-day rollup summed."""

    day: date
    chargers: int  # charger-days rolled up
    observed_s: float
    available_s: float
    offline_episodes: int
    faults: int
    sessions: int
    failed_sessions: int


def _share(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole > 0 else math.nan


def _per(count: float, chargers: int) -> float:
    return count / chargers if chargers > 0 else math.nan


def fleet_day_charts(days: Sequence[FleetDay]) -> dict[str, Markup]:
    """The overview's time series: ``availability`` (share of observed time Available, and
    the share of sessions that succeeded) and ``incidents`` (faults and offline episodes per
    charger-day). A day without sessions is a gap in the session line, not 0 %."""
    at = [datetime(d.day.year, d.day.month, d.day.day, tzinfo=UTC) for d in days]
    availability = charts.time_series(
        "chart-fleet-availability",
        "Availability and session success per day",
        [
            Series(
                "available",
                [(t, _share(d.available_s, d.observed_s)) for t, d in zip(at, days, strict=True)],
            ),
            Series(
                "sessions succeeded",
                [
                    (t, _share(d.sessions - d.failed_sessions, d.sessions))
                    for t, d in zip(at, days, strict=True)
                ],
            ),
        ],
        unit="%",
        from_zero=False,
    )
    incidents = charts.time_series(
        "chart-fleet-incidents",
        "Faults and offline episodes per charger-day",
        [
            Series(
                "faults", [(t, _per(d.faults, d.chargers)) for t, d in zip(at, days, strict=True)]
            ),
            Series(
                "offline episodes",
                [(t, _per(d.offline_episodes, d.chargers)) for t, d in zip(at, days, strict=True)],
            ),
        ],
        unit="per charger-day",
    )
    return {"availability": availability, "incidents": incidents}
