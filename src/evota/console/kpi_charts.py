"""The KPI sections' charts (campaign and firmware pages), from the API's comparison, pure.

One chart per comparison: the differences of the two share-valued KPIs (availability and
session success, in percentage points) with their 95% whiskers against a zero line, so a bar
whose whisker stays left of 0 reads "worse" at a glance; the table beside it has every KPI.
A KPI with too little data has no bar (its row in the table says so).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markupsafe import Markup

from evota.console import charts
from evota.console.charts import Estimate

#: KPI -> its label in the chart (templates/kpis.html labels the tables the same way).
LABELS = {"availability": "Availability", "session_success_rate": "Session success rate"}
SHARES = ("availability", "session_success_rate")


def difference_chart(chart_id: str, title: str, comparison: Mapping[str, Any] | None) -> Markup:
    """The share KPIs' differences (points) with their intervals; "no data" when none has
    enough data."""
    estimates = []
    for metric in SHARES:
        row = (comparison or {}).get(metric) or {}
        d, ci = row.get("difference"), row.get("ci95")
        if d is None or not ci:
            continue
        estimates.append(
            Estimate(LABELS[metric], 100 * d, 100 * ci[0], 100 * ci[1], group="difference")
        )
    return charts.comparison(
        chart_id,
        title,
        estimates,
        unit="points",
        reference=0.0,
        reference_label="no change",
        description="Differences in percentage points with 95% confidence intervals; "
        "KPIs with too little data are left out.",
    )
