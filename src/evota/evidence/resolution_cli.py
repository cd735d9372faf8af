"""``evota analytics resolution``: remote-resolution analytics over the REST API."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.markup import escape

from evota.cli_support import (
    JsonOpt,
    TokenOpt,
    UrlOpt,
    api,
    out,
    print_json,
    query,
    table,
    when,
)

app = typer.Typer(
    help="Analytics: which remote commands bring faulted chargers back.", no_args_is_help=True
)


class By(StrEnum):
    command = "command"
    model = "model"
    site = "site"
    vendor = "vendor"
    error_code = "error_code"
    source = "source"


def _rate(part: int, whole: int, rate: float | None, low: float, high: float) -> str:
    """``1/2 50% (9–91%)``: the count, the rate and its 95% interval."""
    if rate is None:
        return f"{part}/{whole}"
    return f"{part}/{whole} {rate:.0%} ({low:.0%}–{high:.0%})"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def _cells(r: dict[str, Any], money: bool) -> list[str]:
    cells = [
        escape(r["key"]),
        str(r["actions"]),
        str(r["no_fault_before"]),
        str(r["pending"]),
        _rate(
            r["resolved"],
            r["faulted"],
            r["resolution_rate"],
            r["resolution_low"],
            r["resolution_high"],
        ),
        _rate(
            r["repeat_faults"], r["followed"], r["repeat_rate"], r["repeat_low"], r["repeat_high"]
        ),
        f"{_duration(r['median_seconds'])} / {_duration(r['p90_seconds'])}",
        str(r["truck_rolls_avoided"]),
    ]
    if money:
        cells.append(f"{r['money_saved']:,.2f}")
    return cells


@app.command("resolution")
def resolution(
    by: Annotated[By, typer.Option("--by", help="rows per command, model, site, …")] = By.command,
    since: Annotated[
        str | None, typer.Option("--since", help="ISO 8601; default: 30 days before --until")
    ] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO 8601; default: now")] = None,
    window: Annotated[
        int, typer.Option("--window", min=1, max=1440, help="minutes a command has to resolve")
    ] = 30,
    truck_roll_cost: Annotated[
        float | None, typer.Option("--truck-roll-cost", min=0, help="cost of one site visit")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resolution rate (Available and a session within the window), repeat faults within 7
    days, time to resolution and truck rolls avoided (docs/analytics.md)."""
    params = query(
        group_by=by.value,
        since=when(since, "--since"),
        until=when(until, "--until"),
        window_minutes=window,
        truck_roll_cost=truck_roll_cost,
    )
    body = api(url, token, "GET", "/api/v1/analytics/resolution", params=params)
    if as_json:
        print_json(body)
        return
    money = body["truck_roll_cost"] is not None
    columns = [
        by.value,
        "sent",
        "no fault",
        "pending",
        "resolved (95% CI)",
        "repeat in 7 d",
        "median / p90",
        "trucks avoided",
        *(["saved"] if money else []),
    ]
    rows = [_cells(r, money) for r in body["rows"]]
    rows.append(_cells({**body["total"], "key": "total"}, money))
    title = (
        f"Remote resolution {body['since'][:16]} – {body['until'][:16]}, "
        f"window {body['window_minutes']} min"
    )
    out.print(table(title, columns, rows))
