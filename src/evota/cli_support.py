"""What every ``evota`` client command shares: options, the API call, errors, JSON output.

One line on stderr and exit status 1 for every error; ``--json`` prints the API's answer.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console
from rich.markup import escape

from evota.client import ApiError, Client

out = Console()
err = Console(stderr=True)

UrlOpt = Annotated[str | None, typer.Option("--url", envvar="EVOTA_URL", help="evota HTTP URL")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="EVOTA_TOKEN", help="API token")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]


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


def when(value: str | None) -> str | None:
    """ISO 8601 with an offset; a bare time is taken as UTC."""
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise fail(f"--at: not an ISO 8601 time: {value!r} (e.g. 2026-12-01T02:00+01:00)") from None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()
