"""``evota fleet firmware``: the fleet's firmware picture from a running server's API.

Without options it prints the version counts of the last ``--days`` days (one column per
day would not fit a terminal: the first day, the last, and the change); ``--behind`` prints
who is not on the newest released version. ``--csv`` writes the API's CSV export as is
(spreadsheet-safe cells), ``--json`` its JSON. Failures are one line on stderr, exit 1.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from evota.cli_support import (
    JsonOpt,
    TokenOpt,
    UrlOpt,
    api,
    client,
    fail,
    out,
    print_json,
    query,
    table,
)
from evota.client import ApiError

app = typer.Typer(
    help="The fleet as a whole: firmware versions over time, who is behind.", no_args_is_help=True
)

MAX_DAYS = 366  # the API's bound (evota.evidence.fleet_versions.MAX_DAYS)


@app.command("firmware")
def firmware(
    behind: Annotated[
        bool, typer.Option("--behind", help="chargers not on the newest released version")
    ] = False,
    days: Annotated[int, typer.Option(min=1, max=MAX_DAYS, help="days of history")] = 30,
    vendor: Annotated[str | None, typer.Option(help="only this vendor (any case)")] = None,
    model: Annotated[str | None, typer.Option(help="only this model")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="the CSV export, to stdout")] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Firmware versions across the fleet over time, or (--behind) who is behind."""
    path = "/api/v1/fleet/firmware" + ("/behind" if behind else "")
    params = query(vendor=vendor, model=model, days=None if behind else days)
    if as_csv:
        try:
            body = client(url, token).raw("GET", path, params={**params, "format": "csv"})
        except ApiError as exc:
            raise fail(str(exc)) from None
        sys.stdout.buffer.write(body)
        return
    data = api(url, token, "GET", path, params=params)
    if as_json:
        return print_json(data)
    if behind:
        _print_behind(data)
    else:
        _print_history(data)


def _print_behind(data: dict[str, Any]) -> None:
    rows = [
        (r["vendor"], r["model"], r["version"], r["chargers"], r["latest"], r["releases_behind"])
        for r in data["items"]
    ]
    columns = ("vendor", "model", "version", "chargers", "latest", "releases behind")
    out.print(table(f"Behind the latest release: {data['behind']} chargers", columns, rows))


def _print_history(data: dict[str, Any]) -> None:
    items = data["items"]
    first, last = items[0], items[-1]

    def counts(day: dict[str, Any]) -> dict[tuple[str, str], int]:
        return {(v["vendor"], v["version"]): v["chargers"] for v in day["versions"]}

    start, end = counts(first), counts(last)
    rows = [
        (vendor, version, start.get((vendor, version), 0), end.get((vendor, version), 0),
         f"{end.get((vendor, version), 0) - start.get((vendor, version), 0):+d}")
        for vendor, version in ((s["vendor"], s["version"]) for s in data["series"])
    ]  # fmt: skip
    columns = ("vendor", "version", first["day"], last["day"], "change")
    title = (
        f"Firmware versions, {data['from']} to {data['to']} "
        f"(fragmentation {first['fragmentation']:.2f} -> {last['fragmentation']:.2f})"
    )
    out.print(table(title, columns, rows))
