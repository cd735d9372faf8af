"""``evota demo``: evota on SQLite with three sites and a simulated mixed fleet, one process."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from evota.sim.charger import SimConfig
from evota.sim.fleet import FleetSpec, parse_fleet
from evota.sim.runner import Fleet

console = Console(stderr=True)

SITES = """\
sites:
  - {id: berlin, name: Berlin Hauptbahnhof, timezone: Europe/Berlin, region: EU-Central}
  - {id: new-york, name: New York Hudson Yards, timezone: America/New_York, region: US-East}
  - {id: tokyo, name: Tokyo Shinagawa, timezone: Asia/Tokyo, region: APAC}
"""

# (prefix, vendor, model, firmware, connectors, share of the fleet)
GROUPS = [
    ("ACME-AC-", "Acme", "AC22", "2.3.1", 2, 0.45),
    ("ACME-DC-", "Acme", "DC150", "4.0.7", 2, 0.25),
    ("VOLT-", "VoltWorks", "VW-11", "1.8.0", 1, 0.30),
]


def demo_fleet(count: int) -> FleetSpec:
    """A fleet of ``count`` chargers: 2 vendors, 3 models, spread over the 3 sites."""
    counts = [max(1, int(count * share)) for *_, share in GROUPS]
    counts[0] += count - sum(counts)
    lines = ["seed: evota-demo", SITES, "groups:"]
    for (prefix, vendor, model, firmware, connectors, _), n in zip(GROUPS, counts, strict=True):
        if n <= 0:
            continue
        lines.append(
            f"  - {{prefix: {prefix}, count: {n}, vendor: {vendor}, model: {model}, "
            f'firmware_version: "{firmware}", connectors: {connectors}, '
            "sites: [berlin, new-york, tokyo], tags: [demo]}"
        )
    return parse_fleet("\n".join(lines), source="demo fleet")


async def run_demo(
    data_dir: Path,
    chargers: int,
    http_port: int,
    ocpp_port: int,
    make_settings: Callable[..., Any],
    serve: Callable[[Any, Callable[[Any, asyncio.Event], Awaitable[None]]], Awaitable[None]],
) -> None:
    token = "evota_demo_" + secrets.token_urlsafe(24)
    settings = make_settings(
        data_dir=data_dir,
        http_port=http_port,
        ocpp_port=ocpp_port,
        admin_token=token,
        registration="known-only",
        log_level="warning",
    )
    spec = demo_fleet(chargers)

    async def with_fleet(runtime: Any, stop: asyncio.Event) -> None:
        api = f"http://{settings.host}:{runtime.http_port}"
        fleet = Fleet.from_spec(
            spec,
            f"ws://{settings.host}:{runtime.ocpp_port}/ocpp",
            config=SimConfig(session_rate=3.0, session_duration=(300, 1800), meter_interval=60),
        )
        report = await fleet.provision(api, token)
        console.print(
            f"provisioned {len(fleet)} simulated chargers at 3 sites "
            f"({report.created} new, {report.existing} already known)"
        )
        await fleet.start()
        console.print(
            "\n[bold]evota demo is running[/bold]\n"
            f"  console        {api}/\n"
            f"  API docs       {api}/api/docs\n"
            f"  admin token    {token}\n"
            f"  OCPP endpoint  ws://{settings.host}:{runtime.ocpp_port}/ocpp/{{chargerId}}\n"
            f"  try:           EVOTA_URL={api} EVOTA_TOKEN={token} evota charger list\n"
            "Press Ctrl-C to stop.\n",
            soft_wrap=True,
        )
        try:
            await stop.wait()
        finally:
            await fleet.stop()

    await serve(settings, with_fleet)
