"""``evota sim``: run a simulated charger fleet against a CSMS from the command line.

A plain function with typer-annotated parameters, so the main CLI registers it with
``app.command("sim")(sim_command)``. Bad input ends with one ``evota sim: ...`` line on stderr
and exit code 2, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from evota.logging import configure as configure_logging
from evota.sim.charger import SimConfig
from evota.sim.fleet import (
    DEFAULT_CONNECTORS,
    DEFAULT_DOWNLOAD_PROTOCOLS,
    DEFAULT_FIRMWARE,
    DEFAULT_MODEL,
    DEFAULT_SEED,
    DEFAULT_VENDOR,
    FleetError,
    FleetSpec,
    fleet_from_flags,
    load_fleet,
)
from evota.sim.runner import Fleet, FleetSummary, ProvisionError

DEFAULT_COUNT = 10


class _UsageError(Exception):
    pass


def sim_command(
    url: Annotated[
        str, typer.Option(help="OCPP endpoint; each charger appends /{identity}.")
    ] = "ws://127.0.0.1:9000/ocpp",
    count: Annotated[
        int | None, typer.Option("--count", "-n", help=f"Chargers to simulate [{DEFAULT_COUNT}].")
    ] = None,
    fleet: Annotated[
        Path | None, typer.Option("--fleet", "-f", help="Fleet file (YAML) instead of flags.")
    ] = None,
    prefix: Annotated[str | None, typer.Option(help="Identity prefix [SIM-].")] = None,
    vendor: Annotated[str | None, typer.Option(help=f"Vendor [{DEFAULT_VENDOR}].")] = None,
    model: Annotated[str | None, typer.Option(help=f"Model [{DEFAULT_MODEL}].")] = None,
    firmware: Annotated[
        str | None, typer.Option(help=f"Firmware version [{DEFAULT_FIRMWARE}].")
    ] = None,
    connectors: Annotated[
        int | None, typer.Option(help=f"Connectors per charger [{DEFAULT_CONNECTORS}].")
    ] = None,
    seed: Annotated[
        str | None, typer.Option(help=f"Key derivation seed for flag fleets [{DEFAULT_SEED}].")
    ] = None,
    firmware_update: Annotated[
        str | None,
        typer.Option(
            help="Firmware updates the chargers take: plain (UpdateFirmware), signed "
            "(SignedUpdateFirmware) or both [both]."
        ),
    ] = None,
    firmware_root: Annotated[
        list[Path] | None,
        typer.Option(
            "--firmware-root",
            help="PEM file of a trusted firmware signing root (repeatable).",
        ),
    ] = None,
    protocol: Annotated[
        str | None,
        typer.Option(help="OCPP version of every charger: ocpp1.6 or ocpp2.0.1 [ocpp1.6]."),
    ] = None,
    download_protocol: Annotated[
        list[str] | None,
        typer.Option(
            "--download-protocol",
            help="URL scheme the chargers download firmware from: http, https, ftp or ftps "
            "(repeatable) [http, https]; --download-protocol ftp makes FTP-only chargers.",
        ),
    ] = None,
    download_ca: Annotated[
        Path | None,
        typer.Option(help="PEM CA certificate the chargers trust for FTPS (and HTTPS) servers."),
    ] = None,
    ca: Annotated[
        Path | None,
        typer.Option(
            "--ca",
            help="PEM file of the CSMS root(s) the chargers check a wss:// server with "
            "[system CAs].",
        ),
    ] = None,
    client_cert: Annotated[
        Path | None,
        typer.Option(help="PEM client certificate (chain) for profile 3 (one charger: -n 1)."),
    ] = None,
    client_key: Annotated[
        Path | None, typer.Option(help="PEM private key of --client-cert.")
    ] = None,
    client_ca: Annotated[
        Path | None,
        typer.Option(help="PEM CA certificate that mints each charger a client certificate."),
    ] = None,
    client_ca_key: Annotated[
        Path | None, typer.Option(help="PEM private key of --client-ca.")
    ] = None,
    security_profile: Annotated[
        int | None,
        typer.Option(
            help="Security profile the chargers believe they are on: 1, 2 or 3 [3 with a "
            "client certificate, 2 on wss://, else 1]."
        ),
    ] = None,
    organization: Annotated[
        str | None,
        typer.Option(help="O of the chargers' CSRs and minted certificates (CpoName)."),
    ] = None,
    tls_url: Annotated[
        str | None,
        typer.Option(
            help="wss:// endpoint chargers use on profile 2 or 3 when --url is ws:// "
            "(after a security profile switch)."
        ),
    ] = None,
    v201_fraction: Annotated[
        float | None,
        typer.Option(
            "--v201-fraction",
            help="Mixed fleet: this share (0-1) of the chargers speaks ocpp2.0.1, spread "
            "evenly, the rest ocpp1.6.",
        ),
    ] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            "--fault",
            help="Firmware update fault NAME=VALUE (repeatable), e.g. link_drop=0.5, "
            "slow_link_bps=200000, bad_versions=2.0.1,2.0.2; see docs/simulator.md.",
        ),
    ] = None,
    session_rate: Annotated[
        float, typer.Option(help="Charging sessions per charger per (simulated) hour.")
    ] = 1.0,
    id_tag: Annotated[
        list[str] | None,
        typer.Option(
            "--id-tag",
            help="A card drivers present (repeatable; provision them with evota id-token). "
            "Default: a random tag per session, which evota refuses unless "
            "EVOTA_AUTHORIZE_ALL is set.",
        ),
    ] = None,
    speed: Annotated[
        float, typer.Option(help="Simulated seconds per real second (sessions, heartbeats).")
    ] = 1.0,
    ramp_up: Annotated[
        float | None, typer.Option(help="Seconds over which to spread first connects [n/200].")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: until Ctrl-C).")
    ] = None,
    provision: Annotated[
        bool, typer.Option("--provision", help="Create sites and chargers via the REST API first.")
    ] = False,
    api_url: Annotated[
        str, typer.Option(envvar="EVOTA_URL", help="evota HTTP API for --provision.")
    ] = "http://127.0.0.1:8000",
    token: Annotated[
        str | None, typer.Option(envvar="EVOTA_TOKEN", help="API bearer token for --provision.")
    ] = None,
    refresh: Annotated[float, typer.Option(help="Seconds between summary updates.")] = 2.0,
    log_level: Annotated[
        str, typer.Option(help="debug, info, warning or error (per-charger events are info).")
    ] = "warning",
) -> None:
    """Simulate OCPP 1.6J and 2.0.1 chargers: sessions, commands, firmware updates, faults."""
    try:
        spec = _fleet_spec(
            fleet, count, prefix, vendor, model, firmware, connectors, seed,
            firmware_update, firmware_root, fault, protocol, v201_fraction,
            download_protocol, download_ca,
            tls=_Tls(ca, client_cert, client_key, client_ca, client_ca_key, security_profile,
                     organization),
        )  # fmt: skip
        if not url.startswith(("ws://", "wss://")):
            raise _UsageError(f"--url must start with ws:// or wss:// (got {url!r})")
        if tls_url is not None and not tls_url.startswith("wss://"):
            raise _UsageError(f"--tls-url must start with wss:// (got {tls_url!r})")
        if provision and not token:
            raise _UsageError("--provision needs --token (or EVOTA_TOKEN)")
        if refresh <= 0:
            raise _UsageError("--refresh must be positive")
        if duration is not None and duration <= 0:
            raise _UsageError("--duration must be positive")
        if ramp_up is not None and ramp_up < 0:
            raise _UsageError("--ramp-up must not be negative")
        try:
            config = SimConfig(speed=speed, session_rate=session_rate, id_tags=tuple(id_tag or ()))
        except ValueError as exc:
            raise _UsageError(f"--speed/--session-rate: {exc}") from None
        if log_level.lower() not in ("debug", "info", "warning", "error"):
            raise _UsageError(
                f"--log-level must be debug, info, warning or error (got {log_level!r})"
            )
        configure_logging(log_level)
        sim = Fleet.from_spec(spec, url, config=config, ramp_up=ramp_up, tls_url=tls_url)
        asyncio.run(
            _run(sim, provision=provision, api_url=api_url, token=token or "",
                 duration=duration, refresh=refresh)
        )  # fmt: skip
    except (FleetError, _UsageError, ProvisionError) as exc:
        typer.echo(f"evota sim: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:  # a second Ctrl-C, or one during provisioning
        typer.echo("evota sim: interrupted", err=True)
        raise typer.Exit(130) from None


@dataclass(frozen=True)
class _Tls:
    """The security-profile flags (the fleet file's keys of the same names)."""

    ca: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    client_ca: Path | None = None
    client_ca_key: Path | None = None
    security_profile: int | None = None
    organization: str | None = None

    def flags(self) -> dict[str, object]:
        return {
            "--ca": self.ca,
            "--client-cert": self.client_cert,
            "--client-key": self.client_key,
            "--client-ca": self.client_ca,
            "--client-ca-key": self.client_ca_key,
            "--security-profile": self.security_profile,
            "--organization": self.organization,
        }


def _fleet_spec(
    fleet: Path | None,
    count: int | None,
    prefix: str | None,
    vendor: str | None,
    model: str | None,
    firmware: str | None,
    connectors: int | None,
    seed: str | None,
    firmware_update: str | None = None,
    firmware_roots: list[Path] | None = None,
    faults: list[str] | None = None,
    protocol: str | None = None,
    v201_fraction: float | None = None,
    download_protocols: list[str] | None = None,
    download_ca: Path | None = None,
    tls: _Tls = _Tls(),
) -> FleetSpec:
    if protocol is not None and v201_fraction is not None:
        raise _UsageError("give --protocol or --v201-fraction, not both")
    if fleet is not None:
        flags = {
            "--count": count,
            "--prefix": prefix,
            "--vendor": vendor,
            "--model": model,
            "--firmware": firmware,
            "--connectors": connectors,
            "--seed": seed,
            "--firmware-update": firmware_update,
            "--firmware-root": firmware_roots or None,
            "--fault": faults or None,
            "--protocol": protocol,
            "--v201-fraction": v201_fraction,
            "--download-protocol": download_protocols or None,
            "--download-ca": download_ca,
            **tls.flags(),
        }
        clash = [name for name, value in flags.items() if value is not None]
        if clash:
            raise _UsageError(f"{clash[0]} cannot be combined with --fleet (set it in the file)")
        return load_fleet(fleet)
    return fleet_from_flags(
        DEFAULT_COUNT if count is None else count,
        prefix="SIM-" if prefix is None else prefix,
        vendor=vendor or DEFAULT_VENDOR,
        model=model or DEFAULT_MODEL,
        firmware_version=firmware or DEFAULT_FIRMWARE,
        connectors=DEFAULT_CONNECTORS if connectors is None else connectors,
        seed=DEFAULT_SEED if seed is None else seed,
        firmware_update="both" if firmware_update is None else firmware_update,
        firmware_roots=firmware_roots or (),
        faults=faults or (),
        protocol=protocol or "ocpp1.6",
        v201_fraction=v201_fraction,
        download_protocols=tuple(download_protocols or DEFAULT_DOWNLOAD_PROTOCOLS),
        download_ca=download_ca,
        security_profile=tls.security_profile,
        ocpp_ca=tls.ca,
        organization=tls.organization or "",
        client_cert=tls.client_cert,
        client_key=tls.client_key,
        client_ca=tls.client_ca,
        client_ca_key=tls.client_ca_key,
    )


async def _run(
    sim: Fleet, *, provision: bool, api_url: str, token: str, duration: float | None, refresh: float
) -> None:
    console = Console(soft_wrap=True)  # plain lines stay one line each when piped
    if provision:
        report = await sim.provision(api_url, token)
        console.print(f"provisioned: {report.created} created, {report.existing} already there")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    await sim.start()
    try:
        if console.is_terminal:
            with Live(_table(sim.summary(), 0), console=console, auto_refresh=False) as live:
                while not await _wait(stop, refresh, started, duration):
                    live.update(_table(sim.summary(), time.monotonic() - started), refresh=True)
        else:
            while not await _wait(stop, refresh, started, duration):
                console.print(f"[{time.monotonic() - started:6.0f}s] {sim.summary().line()}")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await sim.stop()
    console.print(f"stopped after {time.monotonic() - started:.0f}s: {sim.summary().line()}")


async def _wait(
    stop: asyncio.Event, refresh: float, started: float, duration: float | None
) -> bool:
    """Sleep one refresh period; True when it is time to stop (signal or --duration)."""
    timeout = refresh
    if duration is not None:
        timeout = max(0.0, min(refresh, started + duration - time.monotonic()))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout)
    return stop.is_set() or (duration is not None and time.monotonic() - started >= duration)


def _table(s: FleetSummary, elapsed: float) -> Table:
    table = Table(title=f"evota sim — {s.total} chargers, {elapsed:.0f}s", show_header=True)
    for column in ("connected", "accepted", "pending", "charging", "sessions", "kWh"):
        table.add_column(column, justify="right")
    for column in ("CALLERRORs", "invalid", "timeouts", "failed connects", "401/404"):
        table.add_column(column, justify="right")
    table.add_row(
        str(s.connected),
        str(s.accepted),
        str(s.pending),
        str(s.sessions_active),
        str(s.sessions_completed),
        f"{s.energy_kwh:.1f}",
        str(s.callerrors),
        str(s.invalid_results),
        str(s.call_timeouts),
        str(s.connect_failures),
        f"{s.http_401}/{s.http_404}",
    )
    return table
