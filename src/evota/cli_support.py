"""What every ``evota`` client command shares: options, the API call, errors, JSON output.

One line on stderr and exit status 1 for every error; ``--json`` prints the API's answer.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console, RenderableType
from rich.errors import MarkupError
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from evota import logging as evota_logging
from evota.client import ApiError, Client


class _Console(Console):
    """Shows text from outside (what chargers report, operators' notes) instead of performing
    it: control characters are escaped, so a charger's vendor string cannot send escape
    sequences to the operator's terminal, and text that is not valid markup (``[/red]``) is
    printed as it is instead of raising."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        text = evota_logging.escape(text, keep_newlines=True)
        try:
            return super().render_str(text, **kwargs)
        except MarkupError:
            return super().render_str(text, **{**kwargs, "markup": False})


out = _Console()
err = _Console(stderr=True)

UrlOpt = Annotated[str | None, typer.Option("--url", envvar="EVOTA_URL", help="evota HTTP URL")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="EVOTA_TOKEN", help="API token")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]
LimitOpt = Annotated[int, typer.Option(min=1, max=1000, help="items per page")]
OffsetOpt = Annotated[int, typer.Option(min=0, help="items to skip")]
IntervalOpt = Annotated[float, typer.Option(min=0.2, help="seconds between refreshes")]


def fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def client(url: str | None, token: str | None) -> Client:
    try:
        return Client(url, token)
    except ApiError as exc:
        raise fail(str(exc)) from None


def call(c: Client, method: str, path: str, **kwargs: Any) -> Any:
    try:
        return c.request(method, path, **kwargs)
    except ApiError as exc:
        raise fail(str(exc)) from None


def api(url: str | None, token: str | None, method: str, path: str, **kwargs: Any) -> Any:
    """One request with a fresh client."""
    return call(client(url, token), method, path, **kwargs)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def resolve_firmware(c: Client, ref: str, vendor: str | None) -> dict[str, Any]:
    """A firmware id, or a version (of ``vendor`` when given)."""
    try:
        found: dict[str, Any] = c.request("GET", f"/api/v1/firmware/{quote(ref, safe='')}")
        return found
    except ApiError:
        pass
    params: dict[str, Any] = {"version": ref, "limit": 2}
    if vendor:
        params["vendor"] = vendor
    page = call(c, "GET", "/api/v1/firmware", params=params)
    if not page["items"]:
        raise fail(f"no firmware with id or version {ref!r}" + (f" for {vendor}" if vendor else ""))
    if len(page["items"]) > 1:
        raise fail(f"version {ref!r} is ambiguous: use the firmware id")
    item: dict[str, Any] = page["items"][0]
    return item


def when(value: str | None, option: str = "--at") -> str | None:
    """ISO 8601 with an offset; a bare time is taken as UTC. A bad one fails naming
    ``option`` (the flag the operator typed)."""
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        example = "2026-12-01T02:00+01:00"
        raise fail(f"{option}: not an ISO 8601 time: {value!r} (e.g. {example})") from None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()


def query(**params: Any) -> dict[str, Any]:
    """Query parameters without the options left unset (``None``, empty lists)."""
    return {k: v for k, v in params.items() if v is not None and v != []}


def page_title(what: str, page: Mapping[str, Any]) -> str:
    """``Chargers (1-100 of 250)``: where this page is in the whole list."""
    shown = len(page["items"])
    if not shown:
        return f"{what} (0 of {page['total']})"
    first = page.get("offset", 0) + 1
    return f"{what} ({first}-{first + shown - 1} of {page['total']})"


def table(title: str, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> Table:
    """A rich table of text cells (``None`` shows as empty); a short first column (charger
    and site ids) never wraps, long ones (UUIDs) fold when the terminal is narrow."""
    cells = [["" if c is None else c if isinstance(c, str) else str(c) for c in r] for r in rows]
    t = Table(title=title)
    for i, column in enumerate(columns):
        widest = max((len(r[0]) for r in cells if r), default=0)
        if i == 0 and widest <= 24:
            t.add_column(column, no_wrap=True, min_width=max(widest, len(column)))
        else:
            t.add_column(column)
    for row in cells:
        t.add_row(*row)
    return t


def bar(done: int, total: int, width: int = 24) -> ProgressBar:
    """A progress bar cell for live views (an empty stage shows as complete)."""
    return ProgressBar(total=max(total, 1), completed=done if total else 1, width=width)


def watch(
    fetch: Callable[[], dict[str, Any]],
    render: Callable[[dict[str, Any]], RenderableType],
    finished: Callable[[dict[str, Any]], bool],
    interval: float,
    as_json: bool,
) -> dict[str, Any]:
    """Poll until ``finished``: a live view with progress bars, or with ``--json`` one JSON
    line per change (for scripts). Ctrl-C leaves early; returns the last state seen."""
    current = fetch()
    try:
        if as_json:
            last = ""
            while True:
                text = json.dumps(current, default=str)
                if text != last:
                    sys.stdout.write(text + "\n")
                    sys.stdout.flush()
                    last = text
                if finished(current):
                    break
                time.sleep(interval)
                current = fetch()
        else:
            with Live(render(current), console=out, refresh_per_second=4) as live:
                while not finished(current):
                    time.sleep(interval)
                    current = fetch()
                    live.update(render(current))
            if not out.is_terminal:  # piped: Live printed the last view without a newline
                out.line()
    except KeyboardInterrupt:
        pass
    return current


def complete_chargers(incomplete: str) -> list[str]:
    """Shell completion of charger ids from the server in EVOTA_URL/EVOTA_TOKEN (nothing
    when it cannot be asked: completion must never print an error)."""
    try:
        page = Client().request(
            "GET",
            "/api/v1/chargers",
            params={"q": incomplete, "limit": 50} if incomplete else {"limit": 50},
        )
    except (ApiError, OSError, ValueError):
        return []
    return [c["id"] for c in page["items"] if c["id"].startswith(incomplete)]


ChargerArg = Annotated[
    str, typer.Argument(help="charger id (OCPP identity)", autocompletion=complete_chargers)
]
