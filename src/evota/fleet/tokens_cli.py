"""``evota id-token add|list|show|block|unblock|delete|import|sync``: the token store over the
REST API (docs/id-tokens.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

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
    fail,
    out,
    print_json,
    query,
    when,
)

app = typer.Typer(
    help="Id tokens (RFID cards, app tokens) that may charge: add, list, show, block, "
    "unblock, delete, import a CSV file, sync chargers' local lists.",
    no_args_is_help=True,
)

TokenArg = Annotated[str, typer.Argument(help="the id token (card id)")]


def _path(id_token: str) -> str:
    return f"/api/v1/id-tokens/{quote(id_token, safe='')}"


def _show(token: dict[str, Any]) -> None:
    sites = ", ".join(token["sites"]) or "all"
    out.print(
        f"{escape(token['id_token'])}  {token['status']}  type {token['type'] or 'any'}  "
        f"expires {token['expires_at'] or 'never'}  group {escape(token['parent_id'] or '-')}  "
        f"sites {escape(sites)}",
        soft_wrap=True,
    )


@app.command("add")
def add(
    id_token: TokenArg,
    status: Annotated[str, typer.Option(help="Accepted, Blocked, Expired or Invalid")] = "Accepted",
    token_type: Annotated[
        str | None, typer.Option("--type", help="2.0.1 idToken type (e.g. ISO14443); any if unset")
    ] = None,
    expires: Annotated[
        str | None, typer.Option("--expires", help="ISO 8601 time; a bare time is UTC")
    ] = None,
    parent: Annotated[str | None, typer.Option("--parent", help="group id")] = None,
    site: Annotated[
        list[str] | None, typer.Option("--site", help="only at this site (repeatable)")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a token: chargers accept it at once."""
    body = query(
        id_token=id_token,
        status=status,
        type=token_type,
        expires_at=when(expires, "--expires"),
        parent_id=parent,
        sites=site or [],
    )
    created = api(url, token, "POST", "/api/v1/id-tokens", json=body)
    if as_json:
        print_json(created)
        return
    _show(created)


@app.command("list")
def list_tokens(
    status: Annotated[str | None, typer.Option(help="Accepted, Blocked, Expired, Invalid")] = None,
    token_type: Annotated[str | None, typer.Option("--type")] = None,
    site: Annotated[str | None, typer.Option(help="allowed at this site")] = None,
    parent: Annotated[str | None, typer.Option("--parent", help="group id")] = None,
    search: Annotated[str | None, typer.Option("--search", help="id token contains")] = None,
    limit: LimitOpt = 100,
    offset: OffsetOpt = 0,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Tokens by value."""
    params = query(
        status=status,
        type=token_type,
        site=site,
        parent_id=parent,
        q=search,
        limit=limit,
        offset=offset,
    )
    page = api(url, token, "GET", "/api/v1/id-tokens", params=params)
    if as_json:
        print_json(page)
        return
    table = Table("id token", "status", "type", "expires", "group", "sites")
    for t in page["items"]:
        table.add_row(
            escape(t["id_token"]),
            t["status"],
            t["type"] or "any",
            (t["expires_at"] or "never")[:19],
            escape(t["parent_id"] or ""),
            escape(", ".join(t["sites"]) or "all"),
        )
    out.print(table)
    out.print(f"{page['total']} id token(s)")


@app.command("show")
def show(
    id_token: TokenArg, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """One token."""
    found = api(url, token, "GET", _path(id_token))
    if as_json:
        print_json(found)
        return
    _show(found)


def _set_status(
    id_token: str, status: str, url: str | None, token: str | None, as_json: bool
) -> None:
    changed = api(url, token, "PATCH", _path(id_token), json={"status": status})
    if as_json:
        print_json(changed)
        return
    _show(changed)


@app.command("block")
def block(
    id_token: TokenArg, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Block a token: chargers refuse it at once (local lists at the next sync)."""
    _set_status(id_token, "Blocked", url, token, as_json)


@app.command("unblock")
def unblock(
    id_token: TokenArg, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Accept a token again."""
    _set_status(id_token, "Accepted", url, token, as_json)


@app.command("delete")
def delete(id_token: TokenArg, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Forget a token (it is then unknown: Invalid)."""
    api(url, token, "DELETE", _path(id_token))
    out.print(f"deleted {escape(id_token)}")


@app.command("import")
def import_csv(
    file: Annotated[
        Path, typer.Argument(help="CSV: id_token[,status,type,expires_at,parent_id,sites]")
    ],
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create or replace tokens from a CSV file; one bad row and nothing is imported."""
    try:
        content = file.read_bytes()
    except OSError as exc:
        raise fail(f"{file}: {exc.strerror or exc}") from None
    result = api(
        url,
        token,
        "POST",
        "/api/v1/id-tokens/import",
        content=content,
        headers={"Content-Type": "text/csv"},
    )
    if as_json:
        print_json(result)
        return
    out.print(f"imported {file.name}: {result['created']} new, {result['updated']} replaced")


@app.command("sync")
def sync(
    charger_ids: Annotated[list[str], typer.Argument(help="charger ids")],
    full: Annotated[bool, typer.Option("--full", help="send whole lists")] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="why")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Push the token store to chargers' local authorization lists."""
    body = query(charger_ids=charger_ids, full=full, reason=reason)
    result = api(url, token, "POST", "/api/v1/id-tokens/sync", json=body)
    if as_json:
        print_json(result)
        return
    table = Table("charger", "answer", "update", "version", "entries")
    for r in result["results"]:
        table.add_row(
            escape(r["charger_id"]),
            escape(r["status"] + (f" ({r['message']})" if r["message"] else "")),
            r["update_type"] or "-",
            str(r["version"] if r["version"] is not None else "-"),
            str(r["entries"]),
        )
    out.print(table)
    failed = [r for r in result["results"] if r["status"] not in ("Accepted", "unchanged")]
    if failed:
        raise typer.Exit(1)
