"""``evota alert list|ack``: anomaly alerts over the REST API."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from evota.cli_support import (
    JsonOpt,
    LimitOpt,
    OffsetOpt,
    TokenOpt,
    UrlOpt,
    api,
    out,
    print_json,
    when,
)

app = typer.Typer(help="Anomaly alerts: list, summary, acknowledge.", no_args_is_help=True)


@app.command("list")
def list_alerts(
    rule: Annotated[str | None, typer.Option("--rule", help="e.g. repeated_resets")] = None,
    subject: Annotated[str | None, typer.Option("--subject", help="charger, operator, …")] = None,
    open_only: Annotated[bool, typer.Option("--open", help="only unacknowledged")] = False,
    since: Annotated[str | None, typer.Option("--since", help="ISO 8601 time")] = None,
    limit: LimitOpt = 100,
    offset: OffsetOpt = 0,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Alerts, newest first."""
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if rule:
        params["rule"] = rule
    if subject:
        params["subject"] = subject
    if open_only:
        params["open"] = "true"
    if since:
        params["since"] = when(since, "--since")
    page = api(url, token, "GET", "/api/v1/alerts", params=params)
    if as_json:
        print_json(page)
        return
    table = Table("id", "raised", "rule", "subject", "message", "acknowledged")
    for a in page["items"]:
        acked = f"{a['acknowledged_by']} {a['acknowledged_at'][:16]}" if not a["open"] else "open"
        table.add_row(
            str(a["id"]),
            a["created_at"][:19],
            a["rule"],
            escape(a["subject"]),
            escape(a["message"]),
            escape(acked),
        )
    out.print(table)
    out.print(f"{page['total']} alert(s)")


@app.command("summary")
def summary(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Open (unacknowledged) alerts by rule: the console's badge."""
    counts = api(url, token, "GET", "/api/v1/alerts/summary")
    if as_json:
        print_json(counts)
        return
    table = Table("rule", "open")
    for rule, n in counts["open"].items():
        table.add_row(rule, str(n))
    out.print(table)
    out.print(f"{counts['total_open']} open")


@app.command("ack")
def ack(
    alert_id: Annotated[int, typer.Argument(help="alert id (evota alert list)")],
    note: Annotated[str | None, typer.Option("--note", help="why it is fine")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Acknowledge an alert."""
    body = {"note": note} if note else {}
    alert = api(url, token, "POST", f"/api/v1/alerts/{alert_id}/acknowledge", json=body)
    if as_json:
        print_json(alert)
        return
    out.print(f"alert {alert['id']} ({alert['rule']}, {escape(alert['subject'])}) acknowledged")
