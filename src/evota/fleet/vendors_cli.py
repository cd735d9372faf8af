"""``evota vendor-profile list|show|set|delete|suggest``: vendor and model profiles over the
REST API (docs/vendor-profiles.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from evota.cli_support import (
    JsonOpt,
    TokenOpt,
    UrlOpt,
    api,
    call,
    client,
    fail,
    out,
    print_json,
    query,
    table,
    when,
)

app = typer.Typer(
    help="Vendor and model profiles (known behaviour that jobs and campaigns follow): list, "
    "show (or a charger's effective profile), set, delete, suggest from job history.",
    no_args_is_help=True,
)

PATH = "/api/v1/vendor-profiles"
IdArg = Annotated[int, typer.Argument(min=1, help="the profile id (see list)")]
#: Fields ``set --clear`` can reset to "unknown".
CLEARABLE = (
    "model",
    "firmware_min",
    "firmware_max",
    "signed_updates",
    "installed_before_reboot",
    "download_seconds",
    "install_seconds",
    "reboot_seconds",
    "max_image_bytes",
    "config_keys",
    "trigger_messages",
    "max_per_site",
    "notes",
)
_META = ("id", "created_by", "created_at", "updated_by", "updated_at")


def _scope(p: dict[str, Any]) -> str:
    text = p["vendor"] + (f" {p['model']}" if p.get("model") else " (every model)")
    if p.get("firmware_min") or p.get("firmware_max"):
        text += f" firmware {p.get('firmware_min') or '…'}..{p.get('firmware_max') or '…'}"
    return text


def _show(p: dict[str, Any]) -> None:
    head = f"#{p['id']} " if p.get("id") else ""
    out.print(f"{head}{escape(_scope(p))}", soft_wrap=True)
    for name, value in p.items():
        if name in _META or name in ("vendor", "model", "firmware_min", "firmware_max"):
            continue
        if value in (None, "", {}, []):
            value = "-" if name != "trigger_messages" or value is None else "none"
        elif isinstance(value, dict):
            value = ", ".join(f"{k} -> {v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(value)
        out.print(f"  {name}: {escape(str(value))}", soft_wrap=True)


@app.command("list")
def list_profiles(
    vendor: Annotated[str | None, typer.Option(help="only this vendor")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Profiles by vendor, model and firmware range."""
    page = api(url, token, "GET", PATH, params=query(vendor=vendor, limit=1000))
    if as_json:
        print_json(page)
        return
    rows = [
        (
            str(p["id"]),
            p["vendor"],
            p["model"] or "(every model)",
            f"{p['firmware_min'] or ''}..{p['firmware_max'] or ''}".strip("."),
            {True: "yes", False: "no", None: "?"}[p["signed_updates"]],
            p["download_protocol"],
            str(p["max_per_site"] or "-"),
        )
        for p in page["items"]
    ]
    columns = ("id", "vendor", "model", "firmware", "signed", "download", "per site")
    out.print(table(f"Vendor profiles ({page['total']})", columns, rows))


@app.command("show")
def show(
    profile_id: Annotated[int | None, typer.Argument(min=1, help="the profile id")] = None,
    charger: Annotated[
        str | None, typer.Option("--charger", help="the effective profile of this charger")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One profile, or the profile evota applies to a charger (--charger)."""
    if (profile_id is None) == (charger is None):
        raise fail("give a profile id or --charger, not both")
    if charger is not None:
        found = api(url, token, "GET", f"/api/v1/chargers/{charger}/vendor-profile")
        if as_json:
            print_json(found)
            return
        source = "defaults (no profile matches)" if found["default"] else f"#{found['profile_id']}"
        out.print(
            f"{escape(charger)}: {escape(str(found['vendor']))} {escape(str(found['model']))} "
            f"firmware {escape(str(found['firmware_version']))} -> {source}",
            soft_wrap=True,
        )
        _show({k: v for k, v in found["profile"].items()})
        return
    found = api(url, token, "GET", f"{PATH}/{profile_id}")
    if as_json:
        print_json(found)
        return
    _show(found)


def _pairs(values: list[str] | None, option: str) -> dict[str, str] | None:
    if not values:
        return None
    pairs = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise fail(f"{option}: expected STANDARD=VENDOR, got {item!r}")
        pairs[key.strip()] = value.strip()
    return pairs


@app.command("set")
def set_profile(
    vendor: Annotated[str, typer.Argument(help="the vendor, as chargers report it")],
    model: Annotated[str | None, typer.Option(help="one model (default: every model)")] = None,
    firmware_min: Annotated[str | None, typer.Option(help="from this version")] = None,
    firmware_max: Annotated[str | None, typer.Option(help="up to this version")] = None,
    signed: Annotated[
        bool | None, typer.Option("--signed/--no-signed", help="takes signed updates")
    ] = None,
    installed_before_reboot: Annotated[
        bool | None,
        typer.Option("--installed-before-reboot/--installed-after-reboot"),
    ] = None,
    download_seconds: Annotated[float | None, typer.Option(help="typical download")] = None,
    install_seconds: Annotated[float | None, typer.Option(help="typical install")] = None,
    reboot_seconds: Annotated[float | None, typer.Option(help="typical reboot")] = None,
    protocol: Annotated[
        str | None, typer.Option("--protocol", help="download protocol: http, https, ftp, ftps")
    ] = None,
    max_image_bytes: Annotated[int | None, typer.Option(help="largest image")] = None,
    config_key: Annotated[
        list[str] | None,
        typer.Option("--config-key", help="STANDARD=VENDOR key name (repeatable)"),
    ] = None,
    trigger: Annotated[
        list[str] | None,
        typer.Option("--trigger", help="a supported TriggerMessage (repeatable; the full list)"),
    ] = None,
    max_per_site: Annotated[int | None, typer.Option(help="safe updates per site")] = None,
    notes: Annotated[str | None, typer.Option(help="free text")] = None,
    clear: Annotated[
        list[str] | None,
        typer.Option("--clear", help="reset a field to unknown (repeatable)"),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create the profile for VENDOR (--model, --firmware-min/max) or change the given options."""
    for name in clear or ():
        if name not in CLEARABLE:
            raise fail(f"--clear: {name!r} is not one of {', '.join(CLEARABLE)}")
    c = client(url, token)
    scope = (vendor.casefold(), (model or "").casefold(), firmware_min or "", firmware_max or "")
    page = call(c, "GET", PATH, params={"vendor": vendor, "limit": 1000})
    current = next(
        (
            p
            for p in page["items"]
            if (
                p["vendor"].casefold(),
                (p["model"] or "").casefold(),
                p["firmware_min"] or "",
                p["firmware_max"] or "",
            )
            == scope
        ),
        None,
    )
    body: dict[str, Any] = (
        {k: v for k, v in current.items() if k not in _META} if current is not None else {}
    )
    body.update(vendor=vendor, model=model, firmware_min=firmware_min, firmware_max=firmware_max)
    body.update(
        query(
            signed_updates=signed,
            installed_before_reboot=installed_before_reboot,
            download_seconds=download_seconds,
            install_seconds=install_seconds,
            reboot_seconds=reboot_seconds,
            download_protocol=protocol,
            max_image_bytes=max_image_bytes,
            config_keys=_pairs(config_key, "--config-key"),
            trigger_messages=trigger,
            max_per_site=max_per_site,
            notes=notes,
        )
    )
    for name in clear or ():
        body[name] = {} if name == "config_keys" else ("" if name == "notes" else None)
    if current is None:
        saved = call(c, "POST", PATH, json=body)
    else:
        saved = call(c, "PUT", f"{PATH}/{current['id']}", json=body)
    if as_json:
        print_json(saved)
        return
    out.print("created" if current is None else "updated", end=" ")
    _show(saved)


@app.command("delete")
def delete(profile_id: IdArg, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Delete a profile: its chargers fall back to a less specific one or the defaults."""
    api(url, token, "DELETE", f"{PATH}/{profile_id}")
    out.print(f"deleted vendor profile {profile_id}")


@app.command("suggest")
def suggest(
    vendor: Annotated[str | None, typer.Option(help="exact vendor")] = None,
    model: Annotated[str | None, typer.Option(help="exact model")] = None,
    since: Annotated[str | None, typer.Option(help="jobs created since (ISO 8601)")] = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="write the suggestion into the --vendor/--model profile")
    ] = False,
    field: Annotated[
        list[str] | None, typer.Option("--field", help="apply only this field (repeatable)")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Observed durations per vendor and model and the values they suggest (--apply writes)."""
    at = when(since, "--since")
    if apply:
        if vendor is None:
            raise fail("--apply needs --vendor (and --model for one model)")
        body = query(vendor=vendor, model=model, fields=field, since=at)
        saved = api(url, token, "POST", f"{PATH}/suggestions/apply", json=body)
        if as_json:
            print_json(saved)
            return
        out.print("applied", end=" ")
        _show(saved)
        return
    found = api(
        url, token, "GET", f"{PATH}/suggestions", params=query(vendor=vendor, model=model, since=at)
    )
    if as_json:
        print_json(found)
        return

    def dur(d: dict[str, Any]) -> str:
        if not d["n"]:
            return "-"
        return f"{d['median']:g} / {d['p90']:g} s (n={d['n']})"

    rows = [
        (
            o["vendor"] or "?",
            o["model"] or "?",
            str(o["jobs"]),
            dur(o["download_seconds"]),
            dur(o["install_seconds"]),
            dur(o["reboot_seconds"]),
            f"{o['installed_before_reboot']['before']}/{o['installed_before_reboot']['after']}",
            ", ".join(f"{k}={v}" for k, v in o["suggested"].items()) or "-",
        )
        for o in found
    ]
    columns = (
        "vendor",
        "model",
        "jobs",
        "download median/p90",
        "install",
        "reboot",
        "installed before/after reboot",
        "suggested",
    )
    out.print(table("Observed in firmware jobs", columns, rows))
