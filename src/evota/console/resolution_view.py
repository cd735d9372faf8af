"""The console's "Remote resolution" page: the form's fields as API parameters, and the
chart of resolution rates with their 95% intervals (the numbers come from
``GET /api/v1/analytics/resolution``; docs/analytics.md)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup

from evota.client import ApiError
from evota.console import charts
from evota.console.client import Api

GROUPS = (
    ("command", "Command"),
    ("model", "Model"),
    ("site", "Site"),
    ("vendor", "Vendor"),
    ("error_code", "Error code before the command"),
)
FIELDS = ("group_by", "since", "until", "window_minutes", "truck_roll_cost")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
API = "/api/v1/analytics/resolution"


def api_query(filters: Mapping[str, str]) -> dict[str, str]:
    """The page's filters as the API's parameters: a date ``since`` is its midnight (UTC),
    a date ``until`` the end of that day; anything else goes as typed (the API says what is
    wrong with it)."""
    query: dict[str, str] = {}
    for name, value in filters.items():
        if name == "since" and _DATE.match(value):
            value = f"{value}T00:00:00Z"
        elif name == "until" and _DATE.match(value):
            with contextlib.suppress(ValueError):  # not a calendar date: the API names it
                value = f"{date.fromisoformat(value) + timedelta(days=1)}T00:00:00Z"
        query[name] = value
    return query


def duration(seconds: float | None) -> str:
    """Time to resolution in words: ``45 s``, ``12.5 min``; ``–`` when there is none."""
    if seconds is None:
        return "–"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def csv_url(query: Mapping[str, str]) -> str:
    return f"{API}?{urlencode({**query, 'format': 'csv'})}"


def rate_chart(body: Mapping[str, Any], url: str) -> Markup:
    """Resolution rate per group (percent) with its Wilson 95% interval; groups without a
    decided faulted command have no rate and are left out of the bars (the table has them)."""
    label = dict(GROUPS).get(str(body.get("group_by")), "Group")
    estimates = [
        charts.Estimate(
            f"{r['key']} ({r['resolved']}/{r['faulted']})",
            100 * r["resolution_rate"],
            100 * r["resolution_low"],
            100 * r["resolution_high"],
            group="resolution rate",
        )
        for r in body.get("rows", [])
        if r.get("resolution_rate") is not None
    ]
    return charts.comparison(
        "resolution-rates",
        f"Resolution rate by {label.lower()}",
        estimates,
        unit="%",
        description=(
            "Share of commands to a faulted charger after which, within the window, every "
            "connector was available and a session started; whiskers: 95% Wilson interval."
        ),
        csv_url=url,
    )


async def resolution_context(api: Api, params: Mapping[str, str]) -> dict[str, Any]:
    """The page's data: the report for the filters given, or the API's 422 beside the form
    (the page answers 422 too) so the operator sees which field to fix."""
    filters = {k: params[k].strip() for k in FIELDS if params.get(k, "").strip()}
    query = api_query(filters)
    groups = [(v, label) for v, label in GROUPS]
    base = {"filters": filters, "groups": groups, "duration": duration}
    try:
        body = await api.get(API, **query)
    except ApiError as exc:
        if exc.status != 422:
            raise
        return {**base, "error": exc, "report": None, "status": 422}
    url = csv_url(query)
    return {
        **base,
        "error": None,
        "report": body,
        "csv": url,
        "chart": rate_chart(body, url),
        "group_label": dict(GROUPS).get(body["group_by"], "Group"),
    }
