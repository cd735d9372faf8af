"""``evota playbook …``: self-healing playbooks over the REST API (YAML or JSON documents,
switches, runs, the kill switch, the shipped defaults). One clear line for every error."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
import yaml

from evota.cli_support import (
    JsonOpt,
    LimitOpt,
    OffsetOpt,
    TokenOpt,
    UrlOpt,
    call,
    client,
    fail,
    out,
    page_title,
    print_json,
    query,
    table,
)
from evota.client import ApiError, Client
from evota.playbooks import builtin, spec

app = typer.Typer(
    help="Self-healing playbooks: apply, switch on and off, dry-run, runs, kill switch.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="the playbook's name")]
YAML_HEADERS = {"Content-Type": "application/yaml"}


def _path(name: str, tail: str = "") -> str:
    return f"/api/v1/playbooks/{quote(name, safe='')}{tail}"


def _state(p: dict[str, Any]) -> str:
    if p.get("suspended_reason"):
        return "suspended"
    if not p["enabled"]:
        return "off"
    return "dry-run" if p["dry_run"] else "on"


def _outcomes(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "-"


def _document(p: dict[str, Any]) -> dict[str, Any]:
    """The document ``apply`` takes back, from the API's answer."""
    keys = ("name", "version", "enabled", "dry_run", "description", "trigger", "target")
    return {k: p[k] for k in (*keys, "steps", "guards")}


def _done(verb: str, p: dict[str, Any]) -> None:
    out.print(f"{verb} {p['name']} v{p['version']} ({_state(p)})", highlight=False)


@app.command("list")
def list_playbooks(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Playbooks with their state, version and what their runs came to."""
    page = call(client(url, token), "GET", "/api/v1/playbooks")
    if as_json:
        return print_json(page)
    rows = [
        (p["name"], _state(p), f"v{p['version']}", p["trigger"]["kind"], _outcomes(p["outcomes"]))
        for p in page["items"]
    ]
    out.print(
        table(page_title("Playbooks", page), ("name", "state", "version", "trigger", "runs"), rows)
    )
    if page["kill_switch"]:
        out.print("kill switch ON: no playbook runs", highlight=False)


@app.command("show")
def show(
    name: NameArg, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """The playbook as a YAML document (edit it, then apply it), its hash and outcomes."""
    p = call(client(url, token), "GET", _path(name))
    if as_json:
        return print_json(p)
    out.print(
        f"# {p['name']} v{p['version']} ({_state(p)}), spec sha256 {p['spec_hash']}",
        highlight=False,
        soft_wrap=True,
    )
    if p.get("suspended_reason"):
        out.print(f"# suspended: {p['suspended_reason']}", highlight=False, soft_wrap=True)
    out.print(f"# runs: {_outcomes(p['outcomes'])}", highlight=False, soft_wrap=True)
    sys.stdout.write(yaml.safe_dump(_document(p), sort_keys=False, allow_unicode=True))


def _read(file: str) -> str:
    try:
        raw = (
            sys.stdin.buffer.read(spec.MAX_TEXT_BYTES + 1)
            if file == "-"
            else Path(file).read_bytes()
        )
    except OSError as exc:
        raise fail(f"{file}: {exc.strerror or exc}") from None
    if len(raw) > spec.MAX_TEXT_BYTES:
        raise fail(f"{file}: larger than {spec.MAX_TEXT_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise fail(f"{file}: not UTF-8 text") from None


def _name_of(text: str, file: str) -> str:
    try:
        data = spec.load_text(text)
    except spec.SpecError as exc:
        raise fail(f"{file}: {exc.message}") from None
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not spec.NAME.match(name):
        raise fail(f"{file}: name: give the playbook a name (lowercase letters, digits, '-')")
    return name


@app.command("apply")
def apply(
    file: Annotated[str, typer.Argument(help="a YAML or JSON document ('-': standard input)")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a playbook or change it (the next version); on/off and dry-run stay unless the
    document says enabled/dry_run."""
    text = _read(file)
    name = _name_of(text, file)
    c = client(url, token)
    try:
        before = c.request("GET", _path(name))
    except ApiError as exc:
        if exc.status != 404:
            raise fail(str(exc)) from None
        before = None
    p = _put(c, name, text)
    if as_json:
        return print_json(p)
    if before is None:
        _done("created", p)
    elif before["version"] == p["version"]:
        _done("unchanged", p)
    else:
        _done("updated", p)


def _put(c: Client, name: str, text: str) -> dict[str, Any]:
    try:
        p: dict[str, Any] = c.request(
            "PUT", _path(name), content=text.encode(), headers=YAML_HEADERS
        )
    except ApiError as exc:
        where = f"{exc.field}: " if exc.field and exc.status == 422 else ""
        raise fail(f"HTTP {exc.status}: {where}{exc.detail or exc.title}") from None
    return p


@app.command("enable")
def enable(
    name: NameArg, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Switch a playbook on (a suspended one resumes)."""
    p = call(client(url, token), "POST", _path(name, "/enable"))
    return print_json(p) if as_json else _done("enabled", p)


@app.command("disable")
def disable(
    name: NameArg, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Switch a playbook off: no new runs."""
    p = call(client(url, token), "POST", _path(name, "/disable"))
    return print_json(p) if as_json else _done("disabled", p)


@app.command("dry-run")
def dry_run(
    name: NameArg,
    mode: Annotated[str, typer.Argument(help="on: record what it would do; off: act")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Dry-run on or off."""
    if mode not in ("on", "off"):
        raise fail(f"dry-run: say on or off (got {mode!r})")
    p = call(client(url, token), "PUT", _path(name, "/dry-run"), json={"dry_run": mode == "on"})
    return print_json(p) if as_json else _done(f"dry-run {mode}:", p)


@app.command("delete")
def delete(name: NameArg, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Delete a playbook (its runs stay)."""
    call(client(url, token), "DELETE", _path(name))
    out.print(f"deleted {name}", highlight=False)


@app.command("runs")
def runs(
    playbook: Annotated[str | None, typer.Option("--playbook", help="only this playbook")] = None,
    charger: Annotated[str | None, typer.Option("--charger", help="only this charger")] = None,
    outcome: Annotated[
        str | None, typer.Option("--outcome", help="resolved, escalated, failed, ... in_progress")
    ] = None,
    limit: LimitOpt = 50,
    offset: OffsetOpt = 0,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Runs on the chargers you can see, newest first."""
    params = query(
        playbook=playbook, charger_id=charger, outcome=outcome, limit=limit, offset=offset
    )
    page = call(client(url, token), "GET", "/api/v1/playbooks/runs", params=params)
    if as_json:
        return print_json(page)
    rows = [
        (
            r["started_at"][:19],
            f"{r['playbook']}@{r['playbook_version']}",
            r["charger_id"] + (f"/{r['connector_id']}" if r["connector_id"] is not None else ""),
            r["state"] + (" (dry run)" if r["dry_run"] else ""),
            r["outcome"] or "-",
            r["reason"] or "",
        )
        for r in page["items"]
    ]
    columns = ("started", "playbook", "charger", "state", "outcome", "reason")
    out.print(table(page_title("Playbook runs", page), columns, rows))


@app.command("kill-switch")
def kill_switch(
    mode: Annotated[
        str | None, typer.Argument(help="on: stop every playbook; off: let them run")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the global kill switch, or turn it on (nothing runs) or off."""
    if mode not in (None, "on", "off"):
        raise fail(f"kill-switch: say on or off (got {mode!r})")
    c = client(url, token)
    if mode is None:
        state = call(c, "GET", "/api/v1/playbooks/kill-switch")
    else:
        state = call(c, "PUT", "/api/v1/playbooks/kill-switch", json={"kill_switch": mode == "on"})
    if as_json:
        return print_json(state)
    on = state["kill_switch"]
    out.print(
        "kill switch ON: no playbook runs" if on else "kill switch off: enabled playbooks run",
        highlight=False,
    )


@app.command("defaults")
def defaults(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Install the playbooks evota ships (switched off; a playbook of the same name is kept)."""
    c = client(url, token)
    done: dict[str, str] = {}
    for file, text in builtin.documents().items():
        name = _name_of(text, file)
        try:
            c.request("POST", "/api/v1/playbooks", content=text.encode(), headers=YAML_HEADERS)
            done[name] = "installed (off)"
        except ApiError as exc:
            if exc.status != 409:
                raise fail(f"{name}: {exc}") from None
            done[name] = "kept (a playbook of that name exists)"
    if as_json:
        return print_json(done)
    for name, what in done.items():
        out.print(f"{name}: {what}", highlight=False)
