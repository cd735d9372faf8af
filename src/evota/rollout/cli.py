"""``evota campaign …``: create, show, steer and watch rollout campaigns over the REST API."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.live import Live
from rich.table import Table

from evota.cli_support import (
    JsonOpt,
    TokenOpt,
    UrlOpt,
    call,
    client,
    fail,
    out,
    print_json,
    resolve_firmware,
    when,
)

app = typer.Typer(help="Rollout campaigns: create, show, start, pause, resume, abort, watch.")

TERMINAL = ("completed", "aborted")


def _wave(text: str) -> dict[str, Any]:
    """``4`` is a count, ``25%`` a cumulative share of the target."""
    try:
        if text.endswith("%"):
            return {"percent": float(text[:-1])}
        return {"count": int(text)}
    except ValueError:
        raise fail(f"--wave: expected a count like 4 or a share like 25% (got {text!r})") from None


def _spec(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise fail(f"--spec: cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise fail(f"--spec: {path} must hold a mapping with target, waves, pilot, policy")
    return data


@app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="campaign name")],
    firmware: Annotated[str, typer.Option("--firmware", help="firmware id or version")],
    spec: Annotated[
        Path | None,
        typer.Option("--spec", help="YAML/JSON file with target, waves, pilot and policy"),
    ] = None,
    vendor: Annotated[list[str] | None, typer.Option("--vendor")] = None,
    model: Annotated[list[str] | None, typer.Option("--model")] = None,
    site: Annotated[list[str] | None, typer.Option("--site")] = None,
    wave: Annotated[list[str] | None, typer.Option("--wave", help="e.g. 4, 25%, 100%")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a campaign (draft): prints the eligible count, exclusions and waves."""
    c = client(url, token)
    body = _spec(spec)
    target = dict(body.get("target") or {})
    for key, values in (("vendors", vendor), ("models", model), ("sites", site)):
        if values:
            target[key] = values
    fw = resolve_firmware(c, firmware, (target.get("vendors") or [None])[0])
    payload = {
        "name": name,
        "firmware_id": fw["id"],
        "target": target,
        "waves": [_wave(w) for w in wave] if wave else body.get("waves") or [{"percent": 100}],
        "pilot": body.get("pilot") or [],
        "policy": body.get("policy") or {},
    }
    campaign = call(c, "POST", "/api/v1/campaigns", json=payload)
    if as_json:
        return print_json(campaign)
    out.print(
        f"campaign {campaign['id']} ({campaign['state']}): {campaign['eligible']} eligible in "
        f"{len(campaign['waves'])} waves "
        f"({', '.join(str(w['size']) for w in campaign['waves'])}), "
        f"{len(campaign['excluded'])} excluded"
    )
    reasons: dict[str, int] = {}
    for e in campaign["excluded"]:
        reasons[e["reason"]] = reasons.get(e["reason"], 0) + 1
    for reason, count in sorted(reasons.items()):
        out.print(f"  excluded: {count} {reason}")


def _table(c: dict[str, Any]) -> Table:
    table = Table(
        title=f"{c['name']} → {c['vendor']} {c['target_version']}: {c['state']}"
        + (f" ({c['state_reason']})" if c.get("state_reason") else "")
    )
    for col in ("wave", "size", "state", "jobs", "gate"):
        table.add_column(col)
    for w in c["waves"]:
        jobs = ", ".join(f"{k} {v}" for k, v in sorted(w["jobs"].items()))
        gate = ""
        if w["gates"]:
            g = w["gates"][-1]
            gate = (
                f"{'pass' if g['passed'] else 'FAIL'} {g['succeeded']}/{g['executed']} "
                f"wilson {g['wilson_lower']:.2f} ≥ {g['threshold']:.2f}?"
            )
        marker = "▶ " if w["index"] == c["current_wave"] and c["state"] == "running" else ""
        table.add_row(f"{marker}{w['index']}", str(w["size"]), w["state"], jobs, gate)
    if c.get("failures"):
        table.caption = "failures: " + ", ".join(f"{k} {v}" for k, v in c["failures"].items())
    if c.get("rollbacks"):
        table.caption = (
            (table.caption or "")
            + "  rollbacks: "
            + ", ".join(f"{k} {v}" for k, v in c["rollbacks"].items())
        )
    return table


@app.command("show")
def show(
    campaign_id: str, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """A campaign's waves, job states and gate numbers."""
    c = call(client(url, token), "GET", f"/api/v1/campaigns/{campaign_id}")
    if as_json:
        return print_json(c)
    out.print(_table(c))


def _action(action: str) -> Any:
    def command(
        campaign_id: str,
        reason: Annotated[str, typer.Option(help="why (kept in the history)")] = "",
        url: UrlOpt = None,
        token: TokenOpt = None,
    ) -> None:
        body = {"reason": reason or action}
        c = call(client(url, token), "POST", f"/api/v1/campaigns/{campaign_id}/{action}", json=body)
        out.print(f"campaign {campaign_id}: {c['state']}")

    command.__doc__ = f"{action.capitalize()} a campaign."
    return command


for _name in ("pause", "resume"):
    app.command(_name)(_action(_name))


@app.command("start")
def start(
    campaign_id: str,
    at: Annotated[str | None, typer.Option("--at", help="start later (ISO 8601)")] = None,
    reason: Annotated[str, typer.Option(help="why (kept in the history)")] = "",
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Start a campaign now, or schedule it with --at."""
    body = {"reason": reason or "start", "at": when(at)}
    c = call(client(url, token), "POST", f"/api/v1/campaigns/{campaign_id}/start", json=body)
    out.print(f"campaign {campaign_id}: {c['state']}")


@app.command("abort")
def abort(
    campaign_id: str,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="roll updated chargers back")
    ] = False,
    reason: Annotated[str, typer.Option(help="why (kept in the history)")] = "",
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Stop a campaign for good, optionally rolling back every charger it updated."""
    body = {"reason": reason or "abort", "rollback": rollback}
    c = call(client(url, token), "POST", f"/api/v1/campaigns/{campaign_id}/abort", json=body)
    out.print(f"campaign {campaign_id}: {c['state']}" + (" (rolling back)" if rollback else ""))


@app.command("list")
def list_(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Campaigns, newest first."""
    page = call(client(url, token), "GET", "/api/v1/campaigns")
    if as_json:
        return print_json(page)
    table = Table(title=f"Campaigns ({page['total']})")
    for col in ("id", "name", "state", "wave", "created"):
        table.add_column(col)
    for c in page["items"]:
        table.add_row(c["id"], c["name"], c["state"], str(c["current_wave"]), str(c["created_at"]))
    out.print(table)


@app.command("watch")
def watch(
    campaign_id: str,
    interval: Annotated[float, typer.Option(min=0.2, help="seconds between refreshes")] = 1.0,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Live per-wave, per-state progress until the campaign ends (Ctrl-C to leave)."""
    api = client(url, token)
    path = f"/api/v1/campaigns/{campaign_id}"
    c = call(api, "GET", path)
    try:
        with Live(_table(c), console=out, refresh_per_second=4) as live:
            while not (c["state"] in TERMINAL and not c.get("rollback")):
                time.sleep(interval)
                c = call(api, "GET", path)
                live.update(_table(c))
    except KeyboardInterrupt:
        return
    out.print(json.dumps({"state": c["state"], "reason": c.get("state_reason")}))
