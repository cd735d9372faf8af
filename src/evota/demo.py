"""``evota demo``: evota on SQLite with three sites and a simulated mixed fleet, one process."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from evota.files import private_dir
from evota.firmware import signing
from evota.firmware.lifecycle import FirmwareState
from evota.sim.charger import SimConfig
from evota.sim.fleet import FleetSpec, parse_fleet
from evota.sim.runner import Fleet, ProvisionReport

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


# New releases the demo repository offers, one per model: (vendor, model, version)
RELEASES = [("Acme", "AC22", "2.4.0"), ("Acme", "DC150", "4.1.0"), ("VoltWorks", "VW-11", "1.9.0")]
# The versions the fleet runs, in the repository too: a rollback goes back to one of them.
INSTALLED = [(vendor, model, firmware) for _, vendor, model, firmware, _, _ in GROUPS]

#: Campaign policy defaults at demo speed (``EVOTA_CAMPAIGN_DEFAULTS``, unless set): gates
#: after 20 s instead of an hour. The threshold is on the Wilson 95% lower bound, so a
#: 5-charger pilot passes with 5/5 healthy (bound 0.57), 4/5 is inconclusive (0.38..0.96); a
#: charger busy in a session is skipped after a minute; any failure in more than 20% of at
#: least 3 updates aborts the campaign and rolls the updated chargers back.
DEMO_CAMPAIGN_DEFAULTS: dict[str, Any] = {
    "soak_seconds": 20,
    "health_window_seconds": 20,
    "available_within_seconds": 15,
    "success_threshold": 0.5,
    "max_wait_seconds": 60,
    "auto_stop": [
        {
            "failures": [],
            "min_executed": 3,
            "max_failure_percent": 20,
            "action": "abort_and_rollback",
        }
    ],
}
#: Healthy this long after booting the new version, an update has succeeded (production: 30 s).
DEMO_JOB_VERIFY_SECONDS = 5.0


def demo_keys(data_dir: Path) -> tuple[bytes, bytes, bytes]:
    """A demo manufacturer root and signing key, made once and kept in the data directory
    (a real manufacturer keeps its keys off the server; evota only needs the root)."""
    keys = data_dir / "demo-keys"
    paths = [keys / n for n in ("root.cert.pem", "signing.key.pem", "signing.cert.pem")]
    if not all(p.exists() for p in paths):
        private_dir(keys)
        ca_key, ca_cert = signing.generate_ca("Demo Firmware Root", "evota demo")
        key, cert = signing.generate_signing_key(
            "Demo Release Signing", "evota demo", ca_key=ca_key, ca_cert=ca_cert
        )
        for path, data in zip(paths, (ca_cert, key, cert), strict=True):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
    root, key, cert = (p.read_bytes() for p in paths)
    return root, key, cert


async def seed_firmware(api: str, token: str, data_dir: Path) -> int:
    """Trust the demo root for both vendors and upload one signed release per model.

    Images start with the simulator's header line, so simulated chargers boot the version
    they installed. Idempotent: a restarted demo finds what it stored before.
    """
    root, key, cert = demo_keys(data_dir)
    added = 0
    async with httpx.AsyncClient(
        base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:
        for vendor in sorted({v for v, _, _ in RELEASES}):
            await http.post(
                "/api/v1/firmware/trusted-roots",
                json={"vendor": vendor, "certificate": root.decode()},
            )  # 409 when already trusted
        for vendor, model, version in INSTALLED + RELEASES:
            path = data_dir / "demo-keys" / f"{model}-{version}.bin"
            if not path.exists():
                path.write_bytes(
                    f"EVOTA-SIM-FIRMWARE {version}\n".encode() + os.urandom(2 * 1024 * 1024)
                )
            fields = {
                "vendor": vendor,
                "version": version,
                "models": [model],
                "state": FirmwareState.RELEASED,
                "release_notes": f"{model} {version}: demo "
                + ("release" if (vendor, model, version) in RELEASES else "installed version"),
                "signature": signing.sign_file(path, key),
                "signing_certificate": cert.decode(),
            }
            with path.open("rb") as f:
                r = await http.post("/api/v1/firmware", data=fields, files={"file": (path.name, f)})
            added += r.status_code == 201
    return added


TRY_IT = ("Acme", "AC22", "2.5.0")
#: A release that is signed and passes every check, but the simulated chargers that boot it
#: report Faulted (the fleet's ``bad_versions``): the campaign auto-stops and rolls back.
BAD = ("Acme", "AC22", "2.6.0")
BAD_SUFFIX = "-faulty"


def prepare_upload(data_dir: Path) -> Path:
    """Signed releases that are *not* uploaded, for a newcomer to upload (console or CLI):
    each image, its Base64 signature (``.sig``) and the signing certificate, side by side;
    one good (2.5.0) and one whose chargers fault after booting it (2.6.0)."""
    _, key, cert = demo_keys(data_dir)
    folder = data_dir / "try-it"
    folder.mkdir(parents=True, exist_ok=True)
    for (vendor, model, version), suffix in ((TRY_IT, ""), (BAD, BAD_SUFFIX)):
        image = folder / f"{vendor}-{model}-{version}{suffix}.bin"
        if not image.exists():
            header = f"EVOTA-SIM-FIRMWARE {version}\n".encode()
            image.write_bytes(header + os.urandom(1024 * 1024))
        (folder / f"{image.name}.sig").write_text(signing.sign_file(image, key) + "\n")
    (folder / "signing.cert.pem").write_bytes(cert)
    return folder


def campaign_commands(api: str, token: str) -> list[str]:
    """The headline flow, as commands that run as printed from the checkout (``evota`` is
    in ``.venv``, hence ``uv run``). ``ID`` and ``APPROVAL`` are what the command before
    printed; ``tests/test_demo_commands.py`` runs these lines verbatim."""
    return [
        f"export EVOTA_URL={api} EVOTA_TOKEN={token}",
        "uv run evota campaign create --name AC22 --firmware 2.4.0 --vendor Acme --model AC22"
        " --wave 5 --wave 25% --wave 100%",
        "uv run evota campaign start ID",
        "EVOTA_TOKEN=$(uv run evota login ben) uv run evota approval approve APPROVAL",
        "uv run evota campaign watch ID",
    ]


def bad_image_commands(folder: Path) -> list[str]:
    """Upload the faulty image and roll it out: the pilot faults, the campaign auto-stops
    and rolls the pilot back (run after the AC22 campaign, or on the fleet as it starts)."""
    vendor, model, version = BAD
    image = f"{_shown(folder)}/{vendor}-{model}-{version}{BAD_SUFFIX}.bin"
    return [
        f"uv run evota firmware add {image} --vendor {vendor} --version {version}"
        f" --model {model} --signature {image}.sig --cert {_shown(folder)}/signing.cert.pem"
        " --state released",
        f"uv run evota campaign create --name faulty --firmware {version} --vendor {vendor}"
        f" --model {model} --wave 5 --wave 100%",
        "uv run evota campaign start ID",
        "EVOTA_TOKEN=$(uv run evota login ben) uv run evota approval approve APPROVAL",
        "uv run evota campaign watch ID",
    ]


def _shown(path: Path) -> str:
    """A path as a newcomer types it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def provision_line(chargers: int, sites: int, report: ProvisionReport) -> str:
    """What provisioning created, in terms a newcomer can check against the console."""
    made, known = report.created_by_kind, report.existing_by_kind
    return (
        f"{chargers} simulated chargers at {sites} sites: {made['charger']} chargers and "
        f"{made['site']} sites created, {known['charger'] + known['site']} already known"
    )


def time_scale(defaults: dict[str, Any], settings: Any, install_seconds: float) -> str:
    """The banner's line on how fast campaigns go here (the demo's defaults, or the
    environment's ``EVOTA_CAMPAIGN_DEFAULTS``)."""
    from evota.rollout.policy import policy_from_dict

    p = policy_from_dict(defaults)
    return (
        f"demo speed: campaign gates after {max(p.soak_seconds, p.health_window_seconds):g} s"
        f" (soak {p.soak_seconds:g} s, health window {p.health_window_seconds:g} s), success"
        f" threshold {p.success_threshold:g} on the Wilson 95% interval of everything updated"
        f" so far (5/5 healthy: 0.57 passes; 4/5: 0.38-0.96 is inconclusive and goes on),"
        f" updates verified after {settings.job_verify_seconds:g}"
        f" s, installs take {install_seconds:g} s; `evota serve` keeps the production"
        " defaults (1 h, 0.95)"
    )


def demo_fleet(count: int) -> FleetSpec:
    """A fleet of ``count`` chargers: 2 vendors, 3 models, spread over the 3 sites."""
    return parse_fleet(demo_fleet_file(count), source="demo fleet")


def demo_fleet_file(count: int) -> str:
    """:func:`demo_fleet` as a fleet file (``evota sim --fleet``; scripts/cluster runs it)."""
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
    return "\n".join(lines) + "\n"


DEMO_USERS = ("ann", "ben")
#: The simulated drivers' RFID cards: provisioned in the token store (evota accepts only
#: known cards), one of them blocked so refused sessions show up too.
DEMO_CARDS = tuple(f"DEMO-{n:04d}" for n in range(1, 41))
BLOCKED_CARD = DEMO_CARDS[-1]


async def seed_cards(api: str, token: str) -> int:
    """Import the demo cards (an audited CSV import); returns how many were new."""
    rows = ["id_token,status,parent_id"] + [
        f"{card},{'Blocked' if card == BLOCKED_CARD else 'Accepted'},DEMO-FLEET"
        for card in DEMO_CARDS
    ]
    async with httpx.AsyncClient(
        base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        r = await client.post(
            "/api/v1/id-tokens/import",
            content="\n".join(rows) + "\n",
            headers={"Content-Type": "text/csv"},
        )
        r.raise_for_status()
        return int(r.json()["created"])


async def seed_users(runtime: Any, data_dir: Path) -> dict[str, str]:
    """Two console users holding every role (two, so a campaign start can be approved by
    the other one). Passwords are random per data directory, kept beside the database
    (mode 0600) so a restarted demo prints the same ones."""
    from evota.operators import users as svc
    from evota.operators.permissions import ROLES

    path = data_dir / "demo-users.json"
    try:
        known: dict[str, str] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        known = {}
    for name in DEMO_USERS:
        if name in known:
            continue
        password = "demo-" + secrets.token_urlsafe(9)
        try:
            await svc.create_user(runtime.engine, runtime.clock.now(), name, password, ROLES)
        except svc.UserError:  # exists from an earlier run whose password file was lost
            await svc.set_password(runtime.engine, runtime.clock.now(), name, password)
        known[name] = password
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(known, f)
    return {name: known[name] for name in DEMO_USERS}


async def run_demo(
    data_dir: Path,
    chargers: int,
    http_port: int,
    ocpp_port: int,
    make_settings: Callable[..., Any],
    serve: Callable[[Any, Callable[[Any, asyncio.Event], Awaitable[None]]], Awaitable[None]],
    install_seconds: float | None = None,
) -> None:
    token = "evota_demo_" + secrets.token_urlsafe(24)
    settings = make_settings(
        data_dir=data_dir,
        http_port=http_port,
        ocpp_port=ocpp_port,
        admin_token=token,
        download_port=0,
        registration="known-only",
        log_level="warning",
        # The demo lets newcomers into the console without an authenticator app; every
        # other setting (approvals included) is the product's default.
        mfa_required_roles=None if "EVOTA_MFA_REQUIRED_ROLES" in os.environ else [],
        # The whole simulated fleet connects from this machine's one address, as in the load
        # benches: the per-address pre-auth cap (meant for junk from one source) is the total.
        ocpp_max_preauth_per_address=None
        if "EVOTA_OCPP_MAX_PREAUTH_PER_ADDRESS" in os.environ
        else 512,
        # Demo speed (the environment may choose other values): gates after seconds, not
        # hours; `evota serve` keeps the production defaults.
        campaign_defaults=None
        if "EVOTA_CAMPAIGN_DEFAULTS" in os.environ
        else DEMO_CAMPAIGN_DEFAULTS,
        job_verify_seconds=None
        if "EVOTA_JOB_VERIFY_SECONDS" in os.environ
        else DEMO_JOB_VERIFY_SECONDS,
    )
    root, _, _ = demo_keys(data_dir)
    fleet_spec = demo_fleet(chargers)
    # The chargers trust the demo root; VoltWorks chargers only take plain updates.
    spec = dataclasses.replace(
        fleet_spec,
        chargers=tuple(
            dataclasses.replace(
                c,
                firmware_roots=(root.decode(),),
                firmware_update="plain" if c.vendor == "VoltWorks" else "both",
                faults=dataclasses.replace(c.faults, bad_versions=(BAD[2],)),
            )
            for c in fleet_spec.chargers
        ),
    )

    async def with_fleet(runtime: Any, stop: asyncio.Event) -> None:
        api = f"http://{settings.host}:{runtime.http_port}"
        added = await seed_firmware(api, token, data_dir)
        console.print(
            f"firmware repository: {len(RELEASES) + len(INSTALLED)} signed images, a release"
            f" per model and the {len(INSTALLED)} versions the fleet runs ({added} new)"
        )
        users = await seed_users(runtime, data_dir)
        cards = await seed_cards(api, token)
        console.print(f"id tokens: {len(DEMO_CARDS)} simulated RFID cards ({cards} new)")
        try_it = prepare_upload(data_dir)
        # Short, sparse sessions: an update waits for a charger's session to end (the
        # campaign does not start one during a session; the charger installs after it).
        config = SimConfig(
            session_rate=0.5, session_duration=(30, 90), meter_interval=60, id_tags=DEMO_CARDS
        )
        if install_seconds is not None:
            config = dataclasses.replace(config, install_duration=install_seconds)
        fleet = Fleet.from_spec(
            spec, f"ws://{settings.host}:{runtime.ocpp_port}/ocpp", config=config
        )
        report = await fleet.provision(api, token)
        console.print(provision_line(len(fleet), len(fleet.sites), report))
        await fleet.start()
        try:  # the commands printed next target chargers by what their boot reported
            await fleet.wait_until(lambda f: f.summary().accepted == len(f), timeout=120)
        except TimeoutError as exc:
            console.print(f"not every simulated charger has booted yet ({exc})")
        cli = "\n".join(
            f"  {'campaign' if i == 0 else '':<14} {c}"
            for i, c in enumerate(campaign_commands(api, token))
        )
        bad = "\n".join(
            f"  {'bad image' if i == 0 else '':<14} {c}"
            for i, c in enumerate(bad_image_commands(try_it))
        )
        scale = time_scale(settings.campaign_defaults, settings, fleet.config.install_duration)
        console.print(
            "\n[bold]evota demo is running[/bold]\n"
            f"  console        {api}/\n"
            f"  API docs       {api}/api/docs\n"
            f"  admin token    {token}\n"
            + "".join(
                f"  console login  {name} / {password}  (all roles)\n"
                for name, password in users.items()
            )
            + "  four eyes      a campaign start waits for the other user's approval\n"
            f"  to upload      {try_it}/ (Acme AC22 2.5.0, and 2.6.0 that faults: image, .sig,"
            " certificate)\n"
            f"  OCPP endpoint  ws://{settings.host}:{runtime.ocpp_port}/ocpp/{{chargerId}}\n"
            f"  time scale     {scale}\n"
            "  commands       run them from this checkout; ID and APPROVAL are what the command"
            " before printed; the login asks for ben's password\n"
            f"{cli}\n"
            f"{bad}\n"
            "  more           uv run evota charger list\n"
            "                 uv run evota id-token list\n"
            "Press Ctrl-C to stop.\n",
            soft_wrap=True,
            highlight=False,
        )
        try:
            await stop.wait()
        finally:
            await fleet.stop()

    await serve(settings, with_fleet)
