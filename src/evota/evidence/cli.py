"""``evota campaign kpis ID`` and ``evota firmware kpis ID``: post-rollout KPIs over the API
(registered on the campaign and firmware command groups by :mod:`evota.cli`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from evota.cli_support import JsonOpt, TokenOpt, UrlOpt, call, client, out, print_json

DaysOpt = Annotated[int, typer.Option(min=1, max=90, help="days compared (1-90)")]


#: Short names, so the tables fit a terminal.
LABELS = {
    "availability": "availability",
    "session_success_rate": "session success",
    "offline_episodes_per_charger_day": "offline/day",
    "faults_per_charger_day": "faults/day",
    "reconnects_per_charger_hour": "reconnects/h",
    "mttr_seconds": "MTTR s",
}


def _value(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _comparison(title: str, rows: dict[str, Any], labels: tuple[str, str]) -> Table:
    t = Table(title=title)
    t.add_column("KPI", no_wrap=True)
    for column in (*labels, "difference", "95% CI", "n", "verdict"):
        t.add_column(column)
    for metric, row in rows.items():
        ci = row.get("ci95")
        n = row.get("n") or {}
        t.add_row(
            LABELS.get(metric, metric),
            _value(row.get(labels[0])),
            _value(row.get(labels[1])),
            _value(row.get("difference")),
            f"{_value(ci[0])}…{_value(ci[1])}" if ci else "—",
            "/".join(str(n.get(k, 0)) for k in labels),
            str(row.get("verdict", "")),
        )
    return t


def _faults(title: str, sides: dict[str, dict[str, Any]]) -> Table:
    t = Table(title=title)
    t.add_column("error code")
    for side in sides:
        t.add_column(side)
    codes = sorted({c for k in sides.values() for c in (k.get("faults_by_code") or {})})
    for code in codes:
        t.add_row(
            code, *(str((k.get("faults_by_code") or {}).get(code, 0)) for k in sides.values())
        )
    return t


def campaign_kpis(
    campaign_id: str,
    days: DaysOpt = 7,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """KPIs of a campaign's updated chargers before vs after, and against the control group."""
    k = call(
        client(url, token), "GET", f"/api/v1/campaigns/{campaign_id}/kpis", params={"days": days}
    )
    if as_json:
        return print_json(k)
    out.print(
        f"{k['name']} → {k['target_version']}: {k['updated_chargers']} chargers updated on "
        f"{', '.join(k['update_days']) or 'no day yet'}; complete days up to "
        f"{k['last_complete_day']}"
    )
    out.print(_comparison(f"{days} days before vs after", k["before_after"], ("before", "after")))
    control = k["control"]
    span = " to ".join(control["days"]) or "no complete day after an update yet"
    out.print(
        _comparison(
            f"updated vs not yet updated ({', '.join(control['models']) or '—'}; {span})",
            control["comparison"],
            ("not_updated", "updated"),
        )
    )
    out.print(_faults("faults by error code", {"before": k["before"], "after": k["after"]}))


def firmware_kpis(
    firmware_id: str,
    days: DaysOpt = 30,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A version's KPIs against its predecessor's over the last complete days."""
    k = call(
        client(url, token), "GET", f"/api/v1/firmware/{firmware_id}/kpis", params={"days": days}
    )
    if as_json:
        return print_json(k)
    out.print(
        f"{k['vendor']} {k['version']} vs {k['predecessor'] or 'no predecessor'}, "
        f"{k['from']} to {k['to']}"
    )
    if k["comparison"]:
        out.print(
            _comparison("version vs predecessor", k["comparison"], ("predecessor", "version"))
        )
    else:
        t = Table(title=f"{k['version']}")
        t.add_column("KPI")
        t.add_column("value")
        for name, value in k["kpis"].items():
            if not isinstance(value, dict):
                t.add_row(name, _value(value))
        out.print(t)
    for r in k["regressions"]:
        out.print(
            f"[red]regression:[/red] {r['metric']} {r['predecessor_rate']:.1%} → "
            f"{r['version_rate']:.1%} (z={r['z']:.2f})"
        )
