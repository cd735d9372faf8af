"""The ``evota`` command line: run the server, the demo, the simulator, and talk to the API."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import signal
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from evota.cli_support import (
    ChargerArg,
    JsonOpt,
    LimitOpt,
    OffsetOpt,
    TokenOpt,
    UrlOpt,
    call,
    client,
    err,
    fail,
    out,
    page_title,
    print_json,
    query,
    resolve_firmware,
    table,
    when,
)
from evota.client import ApiError

app = typer.Typer(
    help="evota: OTA firmware lifecycle and control for EV charger fleets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
charger_app = typer.Typer(
    help="Chargers: list, show, register, update, files, remote commands.", no_args_is_help=True
)
site_app = typer.Typer(help="Sites: add, list, show, update, delete.", no_args_is_help=True)
job_app = typer.Typer(help="Firmware update jobs: list, show, cancel.", no_args_is_help=True)
file_app = typer.Typer(
    help="Files chargers uploaded (diagnostics, logs): list, download.", no_args_is_help=True
)
app.add_typer(charger_app, name="charger")
app.add_typer(site_app, name="site")
app.add_typer(job_app, name="job")
app.add_typer(file_app, name="file")


def _register_firmware() -> None:
    from evota.firmware.cli import app as firmware_app

    app.add_typer(
        firmware_app,
        name="firmware",
        help="Firmware: add, list, show, lifecycle, vendor policy, trust; keygen, sign, verify.",
    )


_register_firmware()


def _run(coro: Any) -> None:
    """Run on uvloop: its C transports cut the gateway's per-message cost (docs/performance.md).

    ``EVOTA_PROFILE=FILE`` writes a cProfile of the whole run to FILE (for bench/ work).
    """
    import os

    import uvloop

    profile_to = os.environ.get("EVOTA_PROFILE")
    if not profile_to:
        uvloop.run(coro)
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        uvloop.run(coro)
    finally:
        profiler.disable()
        profiler.dump_stats(profile_to)


def _settings(**overrides: Any) -> Any:
    from pydantic_settings import SettingsError

    from evota.config import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise fail(f"invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    except SettingsError as exc:  # a list or object setting that is not JSON
        field = str(exc).split('"')[1] if '"' in str(exc) else ""
        raise fail(f"invalid setting EVOTA_{field.upper()}: not valid JSON") from None


async def _serve_until_stopped(settings: Any, on_started: Any = None) -> None:
    from evota.logging import configure
    from evota.runtime import Runtime

    configure(settings.log_level, settings.log_json)
    runtime = Runtime(settings)
    await runtime.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(NotImplementedError, AttributeError):  # SIGHUP: TLS files again
        loop.add_signal_handler(signal.SIGHUP, runtime.reload_tls)
    if runtime.generated_admin_token:
        err.print(
            "[bold yellow]Generated the bootstrap admin API token (shown only this once):[/]\n"
            f"  {runtime.generated_admin_token}"
        )
    listeners = [f"http://{settings.host}:{runtime.http_port}"]
    if settings.ocpp_plain:
        listeners.append(f"ocpp ws://{settings.host}:{runtime.ocpp_port}/ocpp/{{chargerId}}")
    if runtime.ocpp_tls_port:
        listeners.append(f"wss://{settings.host}:{runtime.ocpp_tls_port}/ocpp/{{chargerId}}")
    err.print(
        f"evota listening: {'  '.join(listeners)}",
        soft_wrap=True,
    )
    try:
        if on_started is not None:
            await on_started(runtime, stop)
        await stop.wait()
    finally:
        await runtime.stop()


@app.command()
def serve(
    data_dir: Annotated[
        Path | None, typer.Option(help="data directory [env EVOTA_DATA_DIR]")
    ] = None,
    host: Annotated[str | None, typer.Option(help="bind address [env EVOTA_HOST]")] = None,
    http_port: Annotated[int | None, typer.Option(help="HTTP port [env EVOTA_HTTP_PORT]")] = None,
    ocpp_port: Annotated[int | None, typer.Option(help="OCPP port [env EVOTA_OCPP_PORT]")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL [env EVOTA_DATABASE_URL]")
    ] = None,
    registration: Annotated[
        str | None, typer.Option(help="known-only | open [env EVOTA_REGISTRATION]")
    ] = None,
    components: Annotated[
        str | None,
        typer.Option(
            help="what this node runs: a comma list of ocpp, http, download, runners "
            "(default all) [env EVOTA_COMPONENTS]"
        ),
    ] = None,
) -> None:
    """Run the CSMS: OCPP gateway, REST API and console."""
    settings = _settings(
        data_dir=data_dir,
        host=host,
        http_port=http_port,
        ocpp_port=ocpp_port,
        database_url=database_url,
        registration=registration,
        components=components,
    )
    try:
        _run(_serve_until_stopped(settings))
    except OSError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        pass


@app.command()
def demo(
    data_dir: Annotated[Path, typer.Option(help="data directory")] = Path("./evota-demo"),
    chargers: Annotated[int, typer.Option(min=1, help="simulated chargers")] = 200,
    http_port: Annotated[int, typer.Option()] = 8000,
    ocpp_port: Annotated[int, typer.Option()] = 9000,
    install_seconds: Annotated[
        float | None,
        typer.Option(min=0.1, max=600, help="seconds a simulated firmware install takes"),
    ] = None,
) -> None:
    """Start evota on SQLite with 3 sites and a simulated fleet; runs until Ctrl-C."""
    from evota.demo import run_demo

    try:
        _run(
            run_demo(
                data_dir,
                chargers,
                http_port,
                ocpp_port,
                _settings,
                _serve_until_stopped,
                install_seconds=install_seconds,
            )
        )
    except OSError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        pass


@charger_app.command("list")
def charger_list(
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
    site: Annotated[str | None, typer.Option()] = None,
    vendor: Annotated[str | None, typer.Option()] = None,
    model: Annotated[str | None, typer.Option()] = None,
    firmware_version: Annotated[str | None, typer.Option("--firmware")] = None,
    connected: Annotated[bool | None, typer.Option("--connected/--disconnected")] = None,
    registration: Annotated[str | None, typer.Option(help="Accepted, Pending or Rejected")] = None,
    tag: Annotated[str | None, typer.Option()] = None,
    search: Annotated[str | None, typer.Option("--search", help="id contains")] = None,
    limit: LimitOpt = 100,
    offset: OffsetOpt = 0,
) -> None:
    """List chargers, filtered."""
    params = query(
        site=site,
        vendor=vendor,
        model=model,
        firmware_version=firmware_version,
        connected=connected,
        registration=registration,
        tag=tag,
        q=search,
        limit=limit,
        offset=offset,
    )
    page = call(client(url, token), "GET", "/api/v1/chargers", params=params)
    if as_json:
        return print_json(page)
    table = Table(title=page_title("Chargers", page))
    for col in (
        "id",
        "site",
        "vendor",
        "model",
        "firmware",
        "registration (profile)",
        "connected",
        "last seen",
    ):
        table.add_column(col)
    for c in page["items"]:
        table.add_row(
            c["id"],
            c["site_id"] or "",
            c["vendor"] or "",
            c["model"] or "",
            c["firmware_version"] or "",
            f"{c['registration']} ({c['security_profile']})",  # the security profile
            "yes" if c["connected"] else "no",
            str(c["last_seen"] or ""),
        )
    out.print(table)


@charger_app.command("show")
def charger_show(
    charger_id: ChargerArg, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Show one charger with its connectors and recent events."""
    from urllib.parse import quote

    c = call(client(url, token), "GET", f"/api/v1/chargers/{quote(charger_id, safe='')}")
    if as_json:
        return print_json(c)
    table = Table(show_header=False, title=f"Charger {c['id']}")
    for key in (
        "registration",
        "security_profile",
        "connected",
        "site_id",
        "vendor",
        "model",
        "serial_number",
        "firmware_version",
        "protocol",
        "last_seen",
        "last_boot_at",
    ):
        table.add_row(key, str(c[key]))
    out.print(table)
    conns = Table(title="Connectors")
    for col in ("connector", "status", "error", "updated"):
        conns.add_column(col)
    for k in c["connectors"]:
        conns.add_row(str(k["connector_id"]), k["status"], k["error_code"], str(k["updated_at"]))
    out.print(conns)
    events = Table(title="Recent events")
    for col in ("received", "kind", "status"):
        events.add_column(col)
    for e in c["recent_events"]:
        events.add_row(str(e["received_at"]), e["kind"], e["status"] or "")
    out.print(events)


_PROFILE_HELP = (
    "the least OCPP security profile it may connect with: 1 ws://, 2 wss://, 3 wss:// with a "
    "client certificate (lowering waits for approval)"
)


@charger_app.command("add")
def charger_add(
    charger_id: str,
    auth_key: Annotated[
        str,
        typer.Option(
            "--auth-key", prompt=True, hide_input=True, help="the charger's AuthorizationKey"
        ),
    ],
    site: Annotated[str | None, typer.Option()] = None,
    tag: Annotated[list[str] | None, typer.Option(help="repeatable")] = None,
    security_profile: Annotated[
        int, typer.Option("--security-profile", min=1, max=3, help=_PROFILE_HELP)
    ] = 1,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a charger and its AuthorizationKey."""
    body = {
        "id": charger_id,
        "auth_key": auth_key,
        "site_id": site,
        "tags": tag or [],
        "security_profile": security_profile,
    }
    c = call(client(url, token), "POST", "/api/v1/chargers", json=body)
    if as_json:
        return print_json(c)
    out.print(f"registered charger {c['id']}")


ReasonOpt = Annotated[
    str | None, typer.Option("--reason", help="why (required for critical commands)")
]


@charger_app.command("update")
def charger_update(
    charger_id: ChargerArg,
    site: Annotated[str | None, typer.Option(help="move it to this site")] = None,
    no_site: Annotated[bool, typer.Option("--no-site", help="take it off its site")] = False,
    tag: Annotated[list[str] | None, typer.Option(help="replace its tags (repeatable)")] = None,
    registration: Annotated[
        str | None,
        typer.Option(help="Accepted, Pending or Rejected (rejecting waits for approval)"),
    ] = None,
    rotate_key: Annotated[
        bool,
        typer.Option("--rotate-key", help="prompt for a new AuthorizationKey (waits for approval)"),
    ] = False,
    hardware_revision: Annotated[
        str | None,
        typer.Option(help="its hardware revision (for images restricted by revision); '' clears"),
    ] = None,
    security_profile: Annotated[
        int | None, typer.Option("--security-profile", min=1, max=3, help=_PROFILE_HELP)
    ] = None,
    reason: Annotated[str | None, typer.Option(help="why (needed when it waits)")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Accept or reject a charger, move it to a site, retag it, rotate its key or set its
    hardware revision."""
    from urllib.parse import quote

    body: dict[str, Any] = {}
    if site is not None:
        body["site_id"] = site
    if no_site:
        body["site_id"] = None
    if tag is not None:
        body["tags"] = tag
    if registration is not None:
        body["registration"] = registration
    if rotate_key:
        body["auth_key"] = typer.prompt("New AuthorizationKey", hide_input=True)
    if hardware_revision is not None:
        body["hardware_revision"] = hardware_revision.strip() or None
    if security_profile is not None:
        body["security_profile"] = security_profile
    if not body:
        raise fail(
            "nothing to change: give --site, --no-site, --tag, --registration, --rotate-key,"
            " --hardware-revision or --security-profile"
        )
    if reason:
        body["reason"] = reason
    r = call(
        client(url, token), "PATCH", f"/api/v1/chargers/{quote(charger_id, safe='')}", json=body
    )
    if as_json:
        return print_json(r)
    if r.get("state") == "awaiting_approval":
        out.print(
            f"{charger_id}: waits for a second operator (approval {r['approval_id']})",
            highlight=False,
        )
        return
    out.print(
        f"{charger_id}: {r['registration']}, site {r['site_id'] or '-'}, "
        f"tags {', '.join(r['tags']) or '-'}, security profile {r['security_profile']}",
        highlight=False,
    )


@charger_app.command("files")
def charger_files(
    charger_id: ChargerArg,
    kind: Annotated[str | None, typer.Option(help="diagnostics or log")] = None,
    limit: LimitOpt = 100,
    offset: OffsetOpt = 0,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Files the charger uploaded (diagnostics, logs), newest first."""
    _files(query(charger_id=charger_id, kind=kind, limit=limit, offset=offset), url, token, as_json)


def _files(params: dict[str, Any], url: str | None, token: str | None, as_json: bool) -> None:
    page = call(client(url, token), "GET", "/api/v1/files", params=params)
    if as_json:
        return print_json(page)
    out.print(
        table(
            page_title("Files", page),
            ("id", "charger", "kind", "name", "bytes", "uploaded"),
            (
                (f["id"], f["charger_id"], f["kind"], f["filename"], f["size"], f["created_at"])
                for f in page["items"]
            ),
        )
    )


@file_app.command("list")
def file_list(
    charger: Annotated[str | None, typer.Option("--charger")] = None,
    kind: Annotated[str | None, typer.Option(help="diagnostics or log")] = None,
    limit: LimitOpt = 100,
    offset: OffsetOpt = 0,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Files uploaded by the chargers you can see, newest first."""
    _files(query(charger_id=charger, kind=kind, limit=limit, offset=offset), url, token, as_json)


@file_app.command("download")
def file_download(
    file_id: str,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="where to write (default: its name)")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download an uploaded file, byte for byte; checks its SHA-256."""
    import hashlib
    from urllib.parse import quote

    c = client(url, token)
    try:
        response = c.response("GET", f"/api/v1/files/{quote(file_id, safe='')}")
    except ApiError as exc:
        raise fail(str(exc)) from None
    expected = response.headers.get("x-content-sha256", "")
    if expected and hashlib.sha256(response.content).hexdigest() != expected:
        raise fail(f"file {file_id}: the download does not match its SHA-256")
    disposition = response.headers.get("content-disposition", "")
    name = disposition.rpartition("filename=")[2].strip('"') or file_id
    target = output or Path(Path(name).name)
    try:
        target.write_bytes(response.content)
    except OSError as exc:
        raise fail(f"cannot write {target}: {exc.strerror}") from None
    if as_json:
        return print_json({"id": file_id, "path": str(target), "size": len(response.content)})
    out.print(f"wrote {target} ({len(response.content)} bytes)", highlight=False)


@charger_app.command("reset")
def charger_reset(
    charger_id: ChargerArg,
    hard: Annotated[bool, typer.Option("--hard", help="hard reset instead of soft")] = False,
    reason: ReasonOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reset a charger (soft unless --hard) and print its answer."""
    body: dict[str, Any] = {"type": "Hard" if hard else "Soft"}
    _send_command(charger_id, "reset", body, reason, url, token, as_json)


def _send_command(
    charger_id: str,
    name: str,
    body: dict[str, Any],
    reason: str | None,
    url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """POST one remote command and print the charger's answer."""
    from urllib.parse import quote

    if reason is not None:
        body["reason"] = reason
    r = call(
        client(url, token),
        "POST",
        f"/api/v1/chargers/{quote(charger_id, safe='')}/commands/{name}",
        json=body,
    )
    if as_json:
        return print_json(r)
    out.print(f"{charger_id}: {name} {escape(str(r['status']))}")
    details = dict(r.get("details") or {})
    config = details.pop("configuration", None)
    if isinstance(config, list):
        table = Table()
        for col in ("key", "value", "readonly"):
            table.add_column(col)
        for item in config:
            value = item.get("value")
            table.add_row(item["key"], "" if value is None else str(value), str(item["readonly"]))
        out.print(table)
    for key, value in details.items():
        shown = value if isinstance(value, str) else json.dumps(value)
        out.print(f"  {key}: {escape(shown)}", soft_wrap=True)


# Option names that read better than the field's own; fields read from a file with @PATH.
_OPTION_NAMES = {"keys": "--key"}
_FILE_FIELDS = frozenset({"certificate", "data"})


def _bare(annotation: Any) -> Any:
    """``X`` of ``X | None`` and of ``Annotated[X, ...]``."""
    import types
    import typing

    if typing.get_origin(annotation) is Annotated:
        return _bare(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _bare(args[0])
    return annotation


def _field_option(name: str, field: Any) -> tuple[inspect.Parameter, str]:
    """A typer option for one parameter field, and how to read its value (plain, json, file):
    scalars and choices are typed options, lists of text repeat, nested objects take JSON."""
    import typing

    from pydantic import AwareDatetime

    annotation = _bare(field.annotation)
    origin = typing.get_origin(annotation)
    cli_type: Any = str
    how = "plain"
    if name in _FILE_FIELDS:
        how = "file"
    elif origin is typing.Literal or annotation in (bool, int, float, str):
        cli_type = annotation
    elif origin is list and _bare(typing.get_args(annotation)[0]) is str:
        cli_type = list[str]
    elif annotation not in (datetime, AwareDatetime):  # datetimes go as ISO 8601 text
        how = "json"
    help_text = " ".join(
        p
        for p in (field.description, {"json": "(JSON or @FILE)", "file": "(or @FILE)"}.get(how))
        if p
    )
    option = typer.Option(_OPTION_NAMES.get(name, "--" + name.replace("_", "-")), help=help_text)
    required = field.is_required()
    default: Any = inspect.Parameter.empty
    if cli_type is bool:
        default = False if required else field.default
    elif not required:
        cli_type, default = cli_type | None, None
    parameter = inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[cli_type, option],
    )
    return parameter, how


def _read_value(name: str, value: Any, how: str) -> Any:
    if how == "plain" or not isinstance(value, str):
        return value
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise fail(
                f"--{name.replace('_', '-')}: cannot read {value[1:]}: {exc.strerror}"
            ) from None
    if how == "file":
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"--{name.replace('_', '-')}: not valid JSON: {exc.msg}") from None


def _register_commands() -> None:
    """One ``evota charger NAME`` per catalog command (reset is written out above)."""
    from evota.control import catalog

    for spec in catalog.COMMANDS.values():
        if spec.name == "reset":
            continue
        fields = [_field_option(n, f) for n, f in spec.params.model_fields.items()]
        charger_app.command(spec.name, help=_command_help(spec))(_command_function(spec, fields))


def _command_help(spec: Any) -> str:
    return spec.summary + "." + (" Critical: give --reason." if spec.critical else "")


def _command_function(spec: Any, fields: list[tuple[inspect.Parameter, str]]) -> Any:
    hows = {p.name: how for p, how in fields}

    def command(**kwargs: Any) -> None:
        charger_id = kwargs.pop("charger_id")
        reason, url, token = kwargs.pop("reason"), kwargs.pop("url"), kwargs.pop("token")
        as_json = kwargs.pop("as_json")
        body = {
            name: _read_value(name, value, hows[name])
            for name, value in kwargs.items()
            if value is not None and value != []
        }
        _send_command(charger_id, spec.name, body, reason, url, token, as_json)

    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(
                "charger_id", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=ChargerArg
            ),
            *(p for p, _ in fields),
            *(
                inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a)
                for n, a, d in (
                    ("reason", ReasonOpt, None),
                    ("url", UrlOpt, None),
                    ("token", TokenOpt, None),
                    ("as_json", JsonOpt, False),
                )
            ),
        ]
    )
    command.__name__ = "charger_" + spec.name.replace("-", "_")
    command.__doc__ = _command_help(spec)
    return command


_register_commands()


@charger_app.command("update-firmware")
def charger_update_firmware(
    charger_id: ChargerArg,
    firmware: Annotated[str, typer.Option("--firmware", help="firmware id or version")],
    at: Annotated[str | None, typer.Option("--at", help="not before (ISO 8601)")] = None,
    allow_downgrade: Annotated[bool, typer.Option("--allow-downgrade")] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Update one charger's firmware; prints the job id to follow with `evota job show`."""
    from urllib.parse import quote

    c = client(url, token)
    path = f"/api/v1/chargers/{quote(charger_id, safe='')}"
    charger = call(c, "GET", path)
    fw = resolve_firmware(c, firmware, charger.get("vendor"))
    body = {"firmware_id": fw["id"], "retrieve_at": when(at), "allow_downgrade": allow_downgrade}
    r = call(c, "POST", f"{path}/firmware-update", json=body)
    if as_json:
        return print_json(r)
    out.print(f"{charger_id}: job {r['job_id']} {r['state']} (firmware {fw['version']})")


@job_app.command("list")
def job_list(
    charger: Annotated[str | None, typer.Option("--charger")] = None,
    state: Annotated[str | None, typer.Option("--state")] = None,
    firmware: Annotated[str | None, typer.Option("--firmware", help="firmware id")] = None,
    campaign: Annotated[str | None, typer.Option("--campaign", help="campaign id")] = None,
    kind: Annotated[str | None, typer.Option(help="update or rollback")] = None,
    limit: LimitOpt = 50,
    offset: OffsetOpt = 0,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List update jobs, newest first."""
    params = query(
        charger_id=charger,
        state=state,
        firmware_id=firmware,
        campaign_id=campaign,
        kind=kind,
        limit=limit,
        offset=offset,
    )
    page = call(client(url, token), "GET", "/api/v1/jobs", params=params)
    if as_json:
        return print_json(page)
    table = Table(title=page_title("Jobs", page))
    for col in ("id", "charger", "from", "to", "state", "failure", "bytes", "updated"):
        table.add_column(col)
    for j in page["items"]:
        table.add_row(
            str(j["id"]),
            j["charger_id"],
            j["previous_version"] or "",
            j["target_version"],
            j["state"],
            j["failure"] or "",
            str(j["bytes_served"]),
            j["updated_at"],
        )
    out.print(table)


@job_app.command("show")
def job_show(
    job_id: int, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """A job with its history."""
    j = call(client(url, token), "GET", f"/api/v1/jobs/{job_id}")
    if as_json:
        return print_json(j)
    outcome = j["state"] + (f" ({j['failure']})" if j["failure"] else "")
    out.print(
        f"job {j['id']}: {j['charger_id']} {j['previous_version']} -> {j['target_version']}: "
        f"{escape(outcome)}" + (f" - {escape(j['detail'])}" if j["detail"] else "")
    )
    table = Table()
    for col in ("at", "event", "state", "detail"):
        table.add_column(col)
    for e in j["history"]:
        detail = ", ".join(f"{k}={v}" for k, v in e["detail"].items() if v is not None)
        table.add_row(e["at"], e["event"], e["state"], escape(detail))
    out.print(table)


@job_app.command("cancel")
def job_cancel(
    job_id: int,
    reason: Annotated[str, typer.Option(help="why")] = "cancelled by operator",
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Cancel a job that has not reached the charger yet."""
    j = call(client(url, token), "POST", f"/api/v1/jobs/{job_id}/cancel", json={"reason": reason})
    if as_json:
        return print_json(j)
    out.print(f"job {j['id']}: {j['state']}")


@site_app.command("add")
def site_add(
    name: str,
    timezone: Annotated[str, typer.Option(help="IANA timezone, e.g. Europe/Berlin")] = "UTC",
    site_id: Annotated[str | None, typer.Option("--id")] = None,
    region: Annotated[str | None, typer.Option()] = None,
    tag: Annotated[list[str] | None, typer.Option(help="repeatable")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a site."""
    body = {"id": site_id, "name": name, "timezone": timezone, "region": region, "tags": tag or []}
    s = call(client(url, token), "POST", "/api/v1/sites", json=body)
    if as_json:
        return print_json(s)
    out.print(f"added site {s['id']} ({s['timezone']})")


@site_app.command("list")
def site_list(
    region: Annotated[str | None, typer.Option()] = None,
    tag: Annotated[str | None, typer.Option()] = None,
    search: Annotated[str | None, typer.Option("--search", help="id or name contains")] = None,
    limit: LimitOpt = 1000,
    offset: OffsetOpt = 0,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List sites."""
    params = query(region=region, tag=tag, q=search, limit=limit, offset=offset)
    page = call(client(url, token), "GET", "/api/v1/sites", params=params)
    if as_json:
        return print_json(page)
    out.print(_sites(page_title("Sites", page), page["items"]))


def _sites(title: str, items: list[dict[str, Any]]) -> Table:
    return table(
        title,
        ("id", "name", "timezone", "region", "tags"),
        ((s["id"], s["name"], s["timezone"], s["region"], ", ".join(s["tags"])) for s in items),
    )


def _site_path(site_id: str) -> str:
    from urllib.parse import quote

    return f"/api/v1/sites/{quote(site_id, safe='')}"


@site_app.command("show")
def site_show(
    site_id: str, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """One site, and how many chargers stand there."""
    c = client(url, token)
    s = call(c, "GET", _site_path(site_id))
    chargers = call(c, "GET", "/api/v1/chargers", params={"site": site_id, "limit": 1})
    if as_json:
        return print_json({**s, "chargers": chargers["total"]})
    out.print(_sites(f"Site {s['id']}: {chargers['total']} chargers", [s]))


@site_app.command("update")
def site_update(
    site_id: str,
    name: Annotated[str | None, typer.Option()] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA timezone")] = None,
    region: Annotated[str | None, typer.Option()] = None,
    tag: Annotated[list[str] | None, typer.Option(help="replace the tags (repeatable)")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rename a site or change its timezone (maintenance windows follow), region or tags."""
    body = query(name=name, timezone=timezone, region=region)
    if tag is not None:
        body["tags"] = tag
    if not body:
        raise fail("nothing to change: give --name, --timezone, --region or --tag")
    s = call(client(url, token), "PATCH", _site_path(site_id), json=body)
    if as_json:
        return print_json(s)
    out.print(f"updated site {s['id']} ({s['timezone']})", highlight=False)


@site_app.command("delete")
def site_delete(
    site_id: str, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Delete a site no charger stands at."""
    call(client(url, token), "DELETE", _site_path(site_id))
    if as_json:
        return print_json({"id": site_id, "deleted": True})
    out.print(f"deleted site {site_id}", highlight=False)


def _register_sim() -> None:
    try:
        from evota.sim.cli import sim_command
    except ImportError:  # pragma: no cover - the simulator ships with evota
        return
    app.command("sim", help="Run a simulated OCPP 1.6J charger fleet against a CSMS.")(sim_command)


_register_sim()


def _register_campaigns() -> None:
    from evota.rollout.cli import app as campaign_app

    app.add_typer(campaign_app, name="campaign")


_register_campaigns()


def _register_kpis() -> None:
    from evota.evidence.cli import campaign_kpis, firmware_kpis
    from evota.firmware.cli import app as firmware_app
    from evota.rollout.cli import app as campaign_app

    campaign_app.command("kpis")(campaign_kpis)
    firmware_app.command("kpis")(firmware_kpis)


_register_kpis()


def _register_audit() -> None:
    from evota.audit.cli import app as audit_app
    from evota.operators.approvals_cli import app as approval_app

    app.add_typer(audit_app, name="audit")
    app.add_typer(approval_app, name="approval")


_register_audit()


def _register_operators() -> None:
    from evota.operators.cli import (
        login_command,
        logout_command,
        mfa_app,
        token_app,
        user_app,
        whoami_command,
    )

    app.add_typer(user_app, name="user")
    app.add_typer(token_app, name="token")
    app.add_typer(mfa_app, name="mfa")
    app.command("login", help="Log in and print a session token for EVOTA_TOKEN.")(login_command)
    app.command("logout", help="End this login session.")(logout_command)
    app.command("whoami", help="Who this token is: roles, scopes, MFA.")(whoami_command)


_register_operators()


def _register_alerts() -> None:
    from evota.audit.alerts_cli import app as alert_app

    app.add_typer(alert_app, name="alert")


_register_alerts()


def _register_id_tokens() -> None:
    from evota.fleet.tokens_cli import app as id_token_app

    app.add_typer(id_token_app, name="id-token")


_register_id_tokens()


def _register_vendor_profiles() -> None:
    from evota.fleet.vendors_cli import app as vendor_profile_app

    app.add_typer(vendor_profile_app, name="vendor-profile")


_register_vendor_profiles()


def _register_certificates() -> None:
    from evota.control.certificates_cli import app as certificate_app

    app.add_typer(certificate_app, name="certificate")


_register_certificates()


def _register_charger_security() -> None:
    from evota.control.security_cli import app as charger_security_app

    app.add_typer(charger_security_app, name="charger-security")


_register_charger_security()


def _register_control() -> None:
    from evota.control.cli import operation_app, profile_app

    app.add_typer(operation_app, name="operation")
    app.add_typer(profile_app, name="profile")


_register_control()


def _register_fleet() -> None:
    from evota.evidence.fleet_cli import app as fleet_app

    app.add_typer(fleet_app, name="fleet")


_register_fleet()


def _register_analytics() -> None:
    from evota.evidence.resolution_cli import app as analytics_app

    app.add_typer(analytics_app, name="analytics")


_register_analytics()


def _register_playbooks() -> None:
    from evota.playbooks.cli import app as playbook_app

    app.add_typer(playbook_app, name="playbook")


_register_playbooks()


db_app = typer.Typer(
    help="The database: schema revision, migrations (run at every start too).",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")
DataDirOpt = Annotated[Path | None, typer.Option(help="data directory [env EVOTA_DATA_DIR]")]
DatabaseOpt = Annotated[str | None, typer.Option(help="SQLAlchemy URL [env EVOTA_DATABASE_URL]")]


def _database_url(data_dir: Path | None, database_url: str | None) -> str:
    settings = _settings(data_dir=data_dir, database_url=database_url)
    url: str = settings.resolved_database_url()
    if not settings.database_url and not (settings.data_dir / "evota.db").exists():
        raise fail(f"no database at {settings.data_dir / 'evota.db'} (wrong --data-dir?)")
    return url


async def _revisions(url: str, upgrade: bool) -> tuple[str | None, str | None]:
    """(revision before, revision after) of the database at ``url``."""
    from alembic.runtime.migration import MigrationContext

    from evota.store import db

    engine = db.create_engine(url)
    try:
        async with engine.connect() as conn:
            before = await conn.run_sync(
                lambda c: MigrationContext.configure(c).get_current_revision()
            )
        if upgrade:
            await db.migrate(engine)
            async with engine.connect() as conn:
                after = await conn.run_sync(
                    lambda c: MigrationContext.configure(c).get_current_revision()
                )
            return before, after
        return before, before
    finally:
        await engine.dispose()


def _head() -> str | None:
    from alembic.script import ScriptDirectory

    from evota.store import db

    head: str | None = ScriptDirectory.from_config(db.alembic_config()).get_current_head()
    return head


@db_app.command("status")
def db_status(
    data_dir: DataDirOpt = None, database_url: DatabaseOpt = None, as_json: JsonOpt = False
) -> None:
    """The schema revision of the database and the newest this evota knows (exit 1 when
    the database is newer than this evota: a downgrade of the software)."""
    url = _database_url(data_dir, database_url)
    try:
        current, _ = asyncio.run(_revisions(url, upgrade=False))
    except Exception as exc:  # connection refused, bad credentials: one line
        raise fail(f"cannot read the database: {exc}") from None
    head = _head()
    known = _known_revisions()
    if current == head:
        state = "current"
    elif current is None or current in known:
        state = "behind"  # evota serve (or evota db upgrade) migrates it
    else:
        state = "unknown"  # written by a newer evota
    if as_json:
        print_json({"revision": current, "head": head, "state": state})
    else:
        out.print(f"database revision {current or '(empty)'}, newest known {head}: {state}")
    if state == "unknown":
        raise typer.Exit(1)


def _known_revisions() -> set[str | None]:
    from alembic.script import ScriptDirectory

    from evota.store import db

    return {r.revision for r in ScriptDirectory.from_config(db.alembic_config()).walk_revisions()}


@db_app.command("upgrade")
def db_upgrade(
    data_dir: DataDirOpt = None, database_url: DatabaseOpt = None, as_json: JsonOpt = False
) -> None:
    """Migrate the database to the newest revision now (evota serve does this at start)."""
    url = _database_url(data_dir, database_url)
    try:
        before, after = asyncio.run(_revisions(url, upgrade=True))
    except Exception as exc:
        raise fail(f"migration failed: {exc}") from None
    if as_json:
        return print_json({"before": before, "after": after})
    out.print(f"database revision {before or '(empty)'} -> {after}")


@app.command("backup")
def backup_command(
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", help="a new directory")],
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    pg_dump: Annotated[
        Path | None, typer.Option("--pg-dump", help="pg_dump to use (default: from PATH)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Back up a running evota into OUT: the database (SQLite's online backup API, or
    pg_dump) and the data directory's keys, firmware images and uploads
    (docs/operations-guide.md#backup-and-restore)."""
    from evota.backup import BackupError, backup

    url = _database_url(data_dir, database_url)
    settings = _settings(data_dir=data_dir, database_url=database_url)
    try:
        made = backup(settings.data_dir, url, out_dir, pg_dump)
    except (BackupError, OSError) as exc:
        raise fail(str(exc)) from None
    if as_json:
        return print_json(
            {
                "out": str(made.out),
                "database": str(made.database),
                "database_bytes": made.database_bytes,
                "files": made.files,
            }
        )
    out.print(
        f"backup in {made.out}: {made.database.name} ({made.database_bytes} bytes)"
        f" and {made.files} files of the data directory",
        highlight=False,
    )


def main() -> None:
    app()
