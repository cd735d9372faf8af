"""``evota campaign …``: create, show, steer and watch rollout campaigns over the REST API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Group
from rich.table import Table

from evota.cli_support import (
    IntervalOpt,
    JsonOpt,
    LimitOpt,
    OffsetOpt,
    TokenOpt,
    UrlOpt,
    bar,
    call,
    client,
    fail,
    out,
    page_title,
    print_json,
    query,
    resolve_firmware,
    watch,
    when,
)
from evota.rollout.campaign import TERMINAL
from evota.rollout.job import TERMINAL as JOB_TERMINAL

app = typer.Typer(help="Rollout campaigns: create, show, start, pause, resume, abort, watch.")


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
    for note in campaign.get("notes") or []:
        out.print(f"  note: {note}")


def finished(jobs: dict[str, int]) -> int:
    """Chargers of a wave whose update has ended, one way or the other."""
    return sum(n for state, n in jobs.items() if state in JOB_TERMINAL)


def gate_line(g: dict[str, Any]) -> str:
    """A gate in a table cell: its outcome, the cumulative and the wave's own numbers, and
    the Wilson interval against the threshold."""
    outcome = g.get("outcome") or ("passed" if g.get("passed") else "failed")
    wave = g.get("wave_numbers") or {}
    own = f" (wave {wave['succeeded']}/{wave['executed']})" if wave else ""
    upper = g.get("wilson_upper", 1.0)
    line = (
        f"{outcome.upper() if outcome == 'failed' else outcome} "
        f"{g['succeeded']}/{g['executed']}{own} "
        f"wilson {g['wilson_lower']:.2f}..{upper:.2f} vs {g['threshold']:g}"
    )
    more = g.get("more_to_pass")
    if outcome == "inconclusive" and more:
        line += f", {more} more would pass"
    return line


def _table(c: dict[str, Any]) -> Table:
    table = Table(
        title=f"{c['name']} → {c['vendor']} {c['target_version']}: {c['state']}"
        + (f" ({c['state_reason']})" if c.get("state_reason") else "")
    )
    for col in ("wave", "progress", "done", "state", "jobs", "gate"):
        table.add_column(col)
    for w in c["waves"]:
        jobs = ", ".join(f"{k} {v}" for k, v in sorted(w["jobs"].items()))
        done = finished(w["jobs"])
        gate = ""
        if w["gates"]:
            gate = gate_line(w["gates"][-1])
        marker = "▶ " if w["index"] == c["current_wave"] and c["state"] == "running" else ""
        table.add_row(
            f"{marker}{w['index']}",
            bar(done, w["size"]),
            f"{done}/{w['size']}",
            w["state"],
            jobs,
            gate,
        )
    if c.get("failures"):
        table.caption = "failures: " + ", ".join(f"{k} {v}" for k, v in c["failures"].items())
    if c.get("held_groups"):
        table.caption = (table.caption or "") + "  held: " + "; ".join(c["held_groups"].values())
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
    out.print(_view(c))


def _overall(c: dict[str, Any]) -> Table:
    """One bar for the whole campaign: every eligible charger's update, ended or not."""
    done = sum(finished(w["jobs"]) for w in c["waves"])
    grid = Table.grid(padding=(0, 1))
    grid.add_row("overall", bar(done, c["eligible"], 40), f"{done}/{c['eligible']}")
    return grid


def _view(c: dict[str, Any]) -> Group:
    return Group(_table(c), _overall(c))


def _done(c: dict[str, Any], path: str, as_json: bool) -> None:
    """What an action answered: the campaign, or that it waits for a second operator."""
    if as_json:
        return print_json(c)
    if c.get("state") == "awaiting_approval" and c.get("approval_id"):
        out.print(
            f"{path}: waits for a second operator (approval {c['approval_id']}; "
            "evota approval list)",
            highlight=False,
        )
        return
    out.print(f"{path}: {c['state']}", highlight=False)


def _action(action: str) -> Any:
    def command(
        campaign_id: str,
        reason: Annotated[str, typer.Option(help="why (kept in the history)")] = "",
        url: UrlOpt = None,
        token: TokenOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        body = {"reason": reason or action}
        c = call(client(url, token), "POST", f"/api/v1/campaigns/{campaign_id}/{action}", json=body)
        _done(c, f"campaign {campaign_id}", as_json)

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
    as_json: JsonOpt = False,
) -> None:
    """Start a campaign now, or schedule it with --at (may wait for a second operator)."""
    body = {"reason": reason or "start", "at": when(at)}
    c = call(client(url, token), "POST", f"/api/v1/campaigns/{campaign_id}/start", json=body)
    _done(c, f"campaign {campaign_id}", as_json)


@app.command("abort")
def abort(
    campaign_id: str,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="roll updated chargers back")
    ] = False,
    reason: Annotated[str, typer.Option(help="why (kept in the history)")] = "",
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop a campaign for good, optionally rolling back every charger it updated."""
    body = {"reason": reason or "abort", "rollback": rollback}
    c = call(client(url, token), "POST", f"/api/v1/campaigns/{campaign_id}/abort", json=body)
    if as_json:
        return print_json(c)
    out.print(f"campaign {campaign_id}: {c['state']}" + (" (rolling back)" if rollback else ""))


@app.command("list")
def list_(
    state: Annotated[str | None, typer.Option(help="e.g. draft, running, completed")] = None,
    firmware: Annotated[str | None, typer.Option(help="campaigns of this firmware id")] = None,
    name: Annotated[str | None, typer.Option("--name", help="name contains")] = None,
    limit: LimitOpt = 100,
    offset: OffsetOpt = 0,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Campaigns, newest first."""
    params = query(state=state, firmware_id=firmware, q=name, limit=limit, offset=offset)
    page = call(client(url, token), "GET", "/api/v1/campaigns", params=params)
    if as_json:
        return print_json(page)
    table = Table(title=page_title("Campaigns", page))
    for col in ("id", "name", "state", "wave", "created"):
        table.add_column(col)
    for c in page["items"]:
        table.add_row(c["id"], c["name"], c["state"], str(c["current_wave"]), str(c["created_at"]))
    out.print(table)


@app.command("watch")
def watch_campaign(
    campaign_id: str,
    interval: IntervalOpt = 1.0,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Live progress bars per wave, job states and gate numbers until the campaign ends
    (Ctrl-C to leave); with --json, one JSON document per change."""
    api = client(url, token)
    path = f"/api/v1/campaigns/{campaign_id}"
    c = watch(
        lambda: call(api, "GET", path),
        _view,
        lambda c: c["state"] in TERMINAL and not c.get("rollback"),
        interval,
        as_json,
    )
    if not as_json:
        out.print(json.dumps({"state": c["state"], "reason": c.get("state_reason")}))
