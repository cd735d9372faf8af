"""``evota operation …`` and ``evota profile …``: bulk operations and configuration profiles
over the REST API (rich tables, ``--json`` for scripts)."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote

import typer
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
    watch,
)
from evota.client import Client
from evota.control.operation import FINAL, TERMINAL, OperationState, ResultState

operation_app = typer.Typer(
    help="Bulk operations: one command to many chargers, in stages.", no_args_is_help=True
)
profile_app = typer.Typer(
    help="Configuration profiles: create, update, delete, drift, apply.", no_args_is_help=True
)

Many = Annotated[list[str] | None, typer.Option()]
ReasonOpt = Annotated[str, typer.Option("--reason", help="why (required, kept in the audit log)")]
StageOpt = Annotated[
    list[int] | None,
    typer.Option("--stage", help="a stage size, in order (repeat); default: 10 %, then the rest"),
]
RateOpt = Annotated[float, typer.Option("--rate", help="commands per second at most")]
FailOpt = Annotated[
    float, typer.Option("--max-failure-rate", help="stop when a stage fails above this share")
]


def _target(
    charger: list[str] | None,
    site: list[str] | None,
    region: list[str] | None,
    vendor: list[str] | None,
    model: list[str] | None,
    tag: list[str] | None,
    firmware: list[str] | None,
    connected: bool | None,
) -> dict[str, Any]:
    target: dict[str, Any] = {}
    for key, values in (
        ("charger_ids", charger),
        ("sites", site),
        ("regions", region),
        ("vendors", vendor),
        ("models", model),
        ("tags", tag),
        ("firmware_versions", firmware),
    ):
        if values:
            target[key] = values
    if connected is not None:
        target["connected"] = connected
    if not target:
        raise fail(
            "give a target: --charger, --site, --region, --vendor, --model, --tag, --firmware"
        )
    return target


def _params(pairs: list[str] | None, raw: str | None) -> dict[str, Any]:
    """``--param key=text`` (a string) and ``--param key:=JSON`` (a number, list, ...)."""
    params: dict[str, Any] = {}
    if raw:
        try:
            loaded = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise fail(f"--params: not JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise fail("--params: must be a JSON object")
        params.update(loaded)
    for pair in pairs or ():
        key, sep, text = pair.partition("=")
        if not sep:
            raise fail(f"--param: expected KEY=VALUE or KEY:=JSON (got {pair!r})")
        if key.endswith(":"):
            key = key[:-1]
            try:
                params[key] = json.loads(text)
            except json.JSONDecodeError:
                raise fail(f"--param {key}: not JSON: {text!r}") from None
        else:
            params[key] = text
        if not key:
            raise fail(f"--param: empty key in {pair!r}")
    return params


def _need(reason: str) -> None:
    if not reason.strip():
        raise fail("--reason: say why (it is kept in the audit log)")


def _progress(o: dict[str, Any]) -> str:
    p = o.get("progress") or {}
    return ", ".join(f"{k} {v}" for k, v in p.items() if v) or "-"


def _started(o: dict[str, Any]) -> None:
    line = f"operation {o['id']}: {o['state']}, {o['chargers']} chargers in stages " + ", ".join(
        str(s) for s in o["stage_sizes"]
    )
    if o.get("approval_id"):
        line += f" (approval {o['approval_id']} must be decided by a second operator)"
    out.print(line, highlight=False)


# -- operations ------------------------------------------------------------------------------


@operation_app.command("create")
def create(
    command: Annotated[str, typer.Argument(help="catalog command, e.g. reset")],
    reason: ReasonOpt = "",
    param: Annotated[
        list[str] | None, typer.Option("--param", help="KEY=text or KEY:=JSON (repeat)")
    ] = None,
    params_json: Annotated[str | None, typer.Option("--params", help="a JSON object")] = None,
    charger: Many = None,
    site: Many = None,
    region: Many = None,
    vendor: Many = None,
    model: Many = None,
    tag: Many = None,
    firmware: Many = None,
    connected: Annotated[
        bool | None, typer.Option("--connected/--disconnected", help="only (dis)connected")
    ] = None,
    stage: StageOpt = None,
    rate: RateOpt = 10.0,
    max_failure_rate: FailOpt = 0.2,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send COMMAND to every charger the target selects, in stages."""
    _need(reason)
    body = {
        "command": command,
        "params": _params(param, params_json),
        "target": _target(charger, site, region, vendor, model, tag, firmware, connected),
        "stages": stage or None,
        "rate_per_second": rate,
        "max_failure_rate": max_failure_rate,
        "reason": reason,
    }
    o = call(client(url, token), "POST", "/api/v1/operations", json=body)
    if as_json:
        return print_json(o)
    _started(o)


@operation_app.command("list")
def list_(
    state: Annotated[str | None, typer.Option(help="one of " + ", ".join(OperationState))] = None,
    command: Annotated[str | None, typer.Option(help="a catalog command, e.g. reset")] = None,
    by: Annotated[str | None, typer.Option("--by", help="who started it")] = None,
    limit: LimitOpt = 50,
    offset: OffsetOpt = 0,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Operations, newest first."""
    params = query(state=state, command=command, created_by=by, limit=limit, offset=offset)
    page = call(client(url, token), "GET", "/api/v1/operations", params=params)
    if as_json:
        return print_json(page)
    table = Table(title=page_title("Operations", page))
    table.add_column("id", no_wrap=True, min_width=36)
    for col in ("command", "state", "chargers", "stage", "by", "created"):
        table.add_column(col)
    for o in page["items"]:
        table.add_row(
            o["id"],
            o["command"],
            o["state"],
            str(o["chargers"]),
            f"{o['current_stage'] + 1}/{len(o['stage_sizes'])}",
            o["created_by"],
            str(o["created_at"]),
        )
    out.print(table)


def _ended(results: dict[str, int]) -> int:
    """Chargers of a stage that answered, failed or were skipped."""
    return sum(n for state, n in results.items() if state in FINAL)


def _tables(o: dict[str, Any], failures: int = 10) -> Group:
    title = f"{o['command']} on {o['chargers']} chargers: {o['state']}"
    if o.get("state_reason"):
        title += f" ({o['state_reason']})"
    total = sum(s["size"] for s in o["stages"])
    ended = sum(_ended(s["results"]) for s in o["stages"])
    stages = Table(title=title, caption=f"results: {_progress(o)}")
    for col in ("stage", "progress", "done", "state", "results"):
        stages.add_column(col)
    running = o["state"] == OperationState.RUNNING
    for s in o["stages"]:
        marker = "▶ " if running and s["index"] == o["current_stage"] else ""
        counts = ", ".join(f"{k} {v}" for k, v in sorted(s["results"].items()))
        done = _ended(s["results"])
        stages.add_row(
            f"{marker}{s['index'] + 1}",
            bar(done, s["size"]),
            f"{done}/{s['size']}",
            s["state"],
            counts,
        )
    stages.add_row("all", bar(ended, total), f"{ended}/{total}", o["state"], "")
    failed = [r for r in o.get("results", ()) if r["state"] == ResultState.FAILED][:failures]
    if not failed:
        return Group(stages)
    bad = Table(title="Failed chargers")
    for col in ("charger", "stage", "answer", "why"):
        bad.add_column(col)
    for r in failed:
        why = (r.get("detail") or {}).get("reason") or ""
        bad.add_row(r["charger_id"], str(r["stage"] + 1), r.get("status") or "-", str(why))
    return Group(stages, bad)


@operation_app.command("show")
def show(
    operation_id: str,
    results: Annotated[
        str | None, typer.Option("--results", help="only results in this state, e.g. failed")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """An operation's stages, progress and per-charger results."""
    params: dict[str, Any] = {}
    if results:
        params["results"] = results
    o = call(client(url, token), "GET", f"/api/v1/operations/{quote(operation_id)}", params=params)
    if as_json:
        return print_json(o)
    out.print(_tables(o))
    if results:
        table = Table(title=f"Results: {results} ({o['results_total']})")
        for col in ("charger", "stage", "state", "answer", "at"):
            table.add_column(col)
        for r in o["results"]:
            table.add_row(
                r["charger_id"],
                str(r["stage"] + 1),
                r["state"],
                r.get("status") or "-",
                str(r["at"]),
            )
        out.print(table)


@operation_app.command("cancel")
def cancel(
    operation_id: str,
    reason: Annotated[str, typer.Option(help="why (kept in the audit log)")] = "",
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop sending; chargers not yet sent are skipped."""
    o = call(
        client(url, token),
        "POST",
        f"/api/v1/operations/{quote(operation_id)}/cancel",
        json={"reason": reason},
    )
    if as_json:
        return print_json(o)
    out.print(f"operation {operation_id}: {o['state']} ({_progress(o)})", highlight=False)


@operation_app.command("watch")
def watch_operation(
    operation_id: str,
    interval: IntervalOpt = 1.0,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Live progress bars per stage until the operation ends (Ctrl-C to leave); with --json,
    one JSON document per change."""
    api = client(url, token)
    path = f"/api/v1/operations/{quote(operation_id)}"
    params = {"results": ResultState.FAILED.value, "limit": 10}
    o = watch(
        lambda: call(api, "GET", path, params=params),
        _tables,
        lambda o: o["state"] in TERMINAL and not o["progress"].get(ResultState.SENT),
        interval,
        as_json,
    )
    if not as_json:
        out.print(json.dumps({"state": o["state"], "reason": o.get("state_reason")}))


# -- profiles --------------------------------------------------------------------------------


def _profile(c: Client, ref: str) -> dict[str, Any]:
    """A profile by id or by name."""
    offset = 0
    while True:
        page = call(c, "GET", "/api/v1/config-profiles", params={"limit": 1000, "offset": offset})
        for p in page["items"]:
            if ref in (p["id"], p["name"]):
                found: dict[str, Any] = p
                return found
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            raise fail(f"no configuration profile with id or name {ref!r}")


def _settings(pairs: list[str] | None) -> dict[str, str]:
    settings: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise fail(f"--set: expected KEY=VALUE (got {pair!r})")
        settings[key] = value
    return settings


@profile_app.command("create")
def profile_create(
    name: str,
    set_: Annotated[list[str], typer.Option("--set", help="KEY=VALUE (repeat)")],
    charger: Many = None,
    site: Many = None,
    region: Many = None,
    vendor: Many = None,
    model: Many = None,
    tag: Many = None,
    firmware: Many = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Desired configuration for the chargers the target selects."""
    body = {
        "name": name,
        "target": _target(charger, site, region, vendor, model, tag, firmware, None),
        "settings": _settings(set_),
    }
    p = call(client(url, token), "POST", "/api/v1/config-profiles", json=body)
    if as_json:
        return print_json(p)
    out.print(f"profile {p['id']} ({p['name']}): {len(p['settings'])} settings", highlight=False)


@profile_app.command("update")
def profile_update(
    profile: str,
    name: Annotated[str | None, typer.Option("--name", help="rename")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="KEY=VALUE (repeat): replaces all settings"),
    ] = None,
    charger: Many = None,
    site: Many = None,
    region: Many = None,
    vendor: Many = None,
    model: Many = None,
    tag: Many = None,
    firmware: Many = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rename a profile, replace its settings (--set) or its target (any target option)."""
    c = client(url, token)
    p = _profile(c, profile)
    body: dict[str, Any] = {}
    if name:
        body["name"] = name
    if set_:
        body["settings"] = _settings(set_)
    if any((charger, site, region, vendor, model, tag, firmware)):
        body["target"] = _target(charger, site, region, vendor, model, tag, firmware, None)
    if not body:
        raise fail("nothing to change: give --name, --set or a target option")
    updated = call(c, "PATCH", f"/api/v1/config-profiles/{p['id']}", json=body)
    if as_json:
        return print_json(updated)
    out.print(
        f"profile {updated['id']} ({updated['name']}): {len(updated['settings'])} settings",
        highlight=False,
    )


@profile_app.command("delete")
def profile_delete(
    profile: str,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a profile (operations that applied it stay)."""
    c = client(url, token)
    p = _profile(c, profile)
    call(c, "DELETE", f"/api/v1/config-profiles/{p['id']}")
    if as_json:
        return print_json({"id": p["id"], "deleted": True})
    out.print(f"deleted profile {p['id']} ({p['name']})", highlight=False)


@profile_app.command("list")
def profile_list(
    name: Annotated[str | None, typer.Option("--name", help="name contains")] = None,
    limit: LimitOpt = 100,
    offset: OffsetOpt = 0,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Configuration profiles by name."""
    params = query(q=name, limit=limit, offset=offset)
    page = call(client(url, token), "GET", "/api/v1/config-profiles", params=params)
    if as_json:
        return print_json(page)
    table = Table(title=page_title("Configuration profiles", page))
    table.add_column("id", no_wrap=True, min_width=36)
    for col in ("name", "target", "settings"):
        table.add_column(col)
    for p in page["items"]:
        table.add_row(p["id"], p["name"], json.dumps(p["target"]), str(len(p["settings"])))
    out.print(table)


@profile_app.command("show")
def profile_show(
    profile: str, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """A profile's target and settings (by id or name)."""
    p = _profile(client(url, token), profile)
    if as_json:
        return print_json(p)
    table = Table(title=f"{p['name']} → {json.dumps(p['target'])}")
    table.add_column("key")
    table.add_column("value")
    for key, value in p["settings"].items():
        table.add_row(key, value)
    out.print(table)


@profile_app.command("drift")
def profile_drift(
    profile: str,
    kind: Annotated[
        str | None, typer.Option(help="differs, missing, unknown_key, readonly")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Which chargers differ from the profile, and how."""
    c = client(url, token)
    p = _profile(c, profile)
    params: dict[str, Any] = {"kind": kind} if kind else {}
    d = call(c, "GET", f"/api/v1/config-profiles/{p['id']}/drift", params=params)
    if as_json:
        return print_json(d)
    table = Table(
        title=f"{d['name']}: {d['drifted']} drifted, {d['in_sync']} in sync, "
        f"{d['not_fetched']} not fetched, {d['fixable']} fixable"
    )
    for col in ("charger", "key", "desired", "actual", "kind", "fixable"):
        table.add_column(col)
    for r in d["rows"]:
        table.add_row(
            r["charger_id"],
            r["key"],
            r["desired"],
            "-" if r["actual"] is None else r["actual"],
            r["kind"],
            "yes" if r["fixable"] else "no",
        )
    out.print(table)


@profile_app.command("apply")
def profile_apply(
    profile: str,
    reason: ReasonOpt = "",
    stage: StageOpt = None,
    rate: RateOpt = 10.0,
    max_failure_rate: FailOpt = 0.2,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fix the drift where ChangeConfiguration can, as a staged operation."""
    _need(reason)
    c = client(url, token)
    p = _profile(c, profile)
    body = {
        "reason": reason,
        "stages": stage or None,
        "rate_per_second": rate,
        "max_failure_rate": max_failure_rate,
    }
    o = call(c, "POST", f"/api/v1/config-profiles/{p['id']}/apply", json=body)
    if as_json:
        return print_json(o)
    _started(o)
