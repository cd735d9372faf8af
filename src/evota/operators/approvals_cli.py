"""``evota approval list|show|approve|reject``: the four-eyes inbox from the terminal."""

from __future__ import annotations

from typing import Annotated, Any

import typer
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
    query,
)
from evota.operators.four_eyes import ApprovalState

app = typer.Typer(help="Four-eyes approvals: requests waiting for a second operator.")

NoteOpt = Annotated[str | None, typer.Option("--note", help="why (kept with the decision)")]


def _show(item: dict[str, Any]) -> None:
    out.print(
        f"[bold]{item['id']}[/bold]  {item['action']}  [cyan]{item['state']}[/cyan]\n"
        f"  {item['summary']}\n"
        f"  requested by {item['requested_by']} at {str(item['created_at'])[:19]}, "
        f"expires {str(item['expires_at'])[:19]}\n"
        f"  reason: {item['reason']}"
        + (f"\n  decided by {item['decided_by']}" if item.get("decided_by") else "")
        + (f"\n  result: {item['result']}" if item.get("result") else "")
    )


@app.command("list")
def list_approvals(
    url: UrlOpt = None,
    token: TokenOpt = None,
    state: Annotated[
        str | None, typer.Option(help=f"{', '.join(ApprovalState)} ('' for all)")
    ] = ApprovalState.PENDING.value,
    action: Annotated[str | None, typer.Option(help="e.g. campaign.start")] = None,
    by: Annotated[str | None, typer.Option("--by", help="who asked")] = None,
    limit: LimitOpt = 100,
    offset: OffsetOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Requests (pending ones by default), newest first."""
    params = query(state=state or None, action=action, requested_by=by, limit=limit, offset=offset)
    page = api(url, token, "GET", "/api/v1/approvals", params=params)
    if as_json:
        print_json(page)
        return
    table = Table("id", "action", "state", "requested by", "chargers", "summary", "expires")
    for a in page["items"]:
        table.add_row(
            a["id"][:8],
            a["action"],
            a["state"],
            a["requested_by"],
            str(a["charger_count"]),
            a["summary"],
            str(a["expires_at"])[:16],
        )
    out.print(table)


def _resolve(url: str | None, token: str | None, ref: str) -> str:
    """A full id, or a unique prefix of a pending request's id (as the list shows them)."""
    if len(ref) >= 36:
        return ref
    page = api(url, token, "GET", "/api/v1/approvals", params={"limit": 1000})
    matches = [a["id"] for a in page["items"] if a["id"].startswith(ref)]
    return matches[0] if len(matches) == 1 else ref


@app.command()
def show(
    approval_id: str, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    item = api(url, token, "GET", f"/api/v1/approvals/{_resolve(url, token, approval_id)}")
    print_json(item) if as_json else _show(item)


@app.command()
def approve(
    approval_id: str,
    url: UrlOpt = None,
    token: TokenOpt = None,
    note: NoteOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve another operator's request; the action runs at once."""
    ident = _resolve(url, token, approval_id)
    item = api(url, token, "POST", f"/api/v1/approvals/{ident}/approve", json={"note": note})
    print_json(item) if as_json else _show(item)


@app.command()
def reject(
    approval_id: str,
    url: UrlOpt = None,
    token: TokenOpt = None,
    note: NoteOpt = None,
    as_json: JsonOpt = False,
) -> None:
    ident = _resolve(url, token, approval_id)
    item = api(url, token, "POST", f"/api/v1/approvals/{ident}/reject", json={"note": note})
    print_json(item) if as_json else _show(item)
