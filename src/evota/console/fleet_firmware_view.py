"""The console's "Firmware over time" page: the fleet's versions day by day and who is behind
the latest release (numbers from ``GET /api/v1/fleet/firmware`` and ``…/behind``;
docs/fleet-firmware.md), and the scorecard section of an image's page."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup

from evota.client import ApiError
from evota.console import charts
from evota.console.client import Api

API = "/api/v1/fleet/firmware"
FIELDS = ("days", "vendor", "model")
#: The chart names this many versions (the largest on the last day); the rest are "other".
MAX_LAYERS = 8
OTHER = "other versions"


def export_url(path: str, query: Mapping[str, str], fmt: str) -> str:
    return f"{path}?{urlencode({**query, 'format': fmt})}"


def history_chart(body: Mapping[str, Any], csv_url: str) -> Markup:
    """Chargers per (vendor, version) per day, stacked; the versions most chargers run on the
    last day are named, the rest summed as "other versions" (the CSV has them all)."""
    items = body.get("items", [])
    times = [
        datetime.combine(date.fromisoformat(d["day"]), datetime.min.time(), UTC) for d in items
    ]
    per_day = [{(v["vendor"], v["version"]): v["chargers"] for v in d["versions"]} for d in items]
    last = per_day[-1] if per_day else {}
    series = [(s["vendor"], s["version"]) for s in body.get("series", [])]
    named = sorted(series, key=lambda k: -last.get(k, 0))[:MAX_LAYERS]
    named = [k for k in series if k in named]  # keep the API's order: vendor, newest first
    layers = [
        charts.Layer(
            f"{vendor} {version}", [float(day.get((vendor, version), 0)) for day in per_day]
        )
        for vendor, version in named
    ]
    rest = [float(sum(n for k, n in day.items() if k not in named)) for day in per_day]
    if any(rest):
        layers.append(charts.Layer(OTHER, rest))
    return charts.stacked_area(
        "chart-version-history",
        "Chargers per firmware version, day by day",
        times,
        layers,
        unit="chargers",
        description=(
            "Each band is the number of chargers that ran one firmware version at the end of "
            "each UTC day, rebuilt from boots, finished update and rollback jobs and the "
            "chargers' current versions."
        ),
        csv_url=csv_url,
    )


async def fleet_firmware_context(api: Api, params: Mapping[str, str]) -> dict[str, Any]:
    """The page's data for the filters given, or the API's 422 beside the form (the page
    answers 422 too) so the operator sees which field to fix."""
    filters = {k: params[k].strip() for k in FIELDS if params.get(k, "").strip()}
    behind_filters = {k: v for k, v in filters.items() if k != "days"}
    base = {"filters": filters}
    try:
        history = await api.get(API, **filters)
        behind = await api.get(f"{API}/behind", **behind_filters)
    except ApiError as exc:
        if exc.status != 422:
            raise
        return {**base, "error": exc, "history": None, "behind": None, "status": 422}
    csv_url = export_url(API, filters, "csv")
    return {
        **base,
        "error": None,
        "history": history,
        "behind": behind,
        "chart": history_chart(history, csv_url),
        "charger_list_url": charger_list_url,
        "exports": {
            "history_csv": csv_url,
            "history_json": export_url(API, filters, "json"),
            "behind_csv": export_url(f"{API}/behind", behind_filters, "csv"),
            "behind_json": export_url(f"{API}/behind", behind_filters, "json"),
        },
    }


def charger_list_url(row: Mapping[str, Any]) -> str:
    """The console's charger list filtered to one behind row's chargers."""
    query = {"vendor": row["vendor"], "model": row["model"], "firmware_version": row["version"]}
    return f"/console/chargers?{urlencode(query)}"
