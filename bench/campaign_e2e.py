"""End-to-end campaign benchmark: `evota serve` (its own process) updates a simulated fleet.

Starts evota on SQLite in a temporary directory, provisions N simulated chargers (in this
process), uploads a signed image, runs a campaign of a pilot plus growing waves with short
soak and health windows, and reports the wall time and evota's CPU time per job (from
/proc via psutil), with the delivery bytes. The simulator shares the machine's cores, so
wall time is an upper bound; CPU per job is evota's own cost.

    .venv/bin/python bench/campaign_e2e.py --chargers 2000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx
import psutil
from rich.console import Console
from rich.table import Table

from evota.firmware import signing
from evota.logging import configure as configure_logging
from evota.sim import Fleet, SiteSpec, fleet_from_flags
from evota.sim.charger import SimConfig

TOKEN = "bench-admin-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_http(url: str) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            try:
                if (await http.get(url + "/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("evota did not start")


async def main(args: argparse.Namespace) -> None:
    configure_logging("warning")
    tmp = Path(tempfile.mkdtemp(prefix="evota-campaign-bench-"))
    ports = {"http": free_port(), "ocpp": free_port(), "download": free_port()}
    env = {
        **os.environ,
        "EVOTA_DATA_DIR": str(tmp / "data"),
        "EVOTA_ADMIN_TOKEN": TOKEN,
        "EVOTA_HTTP_PORT": str(ports["http"]),
        "EVOTA_OCPP_PORT": str(ports["ocpp"]),
        "EVOTA_DOWNLOAD_PORT": str(ports["download"]),
        "EVOTA_JOB_VERIFY_SECONDS": "1",
        "EVOTA_APPROVAL_ACTIONS": "[]",  # campaign.start needs a second person by default
        "EVOTA_LOG_LEVEL": "warning",
        # every simulated charger connects from loopback: one source, as behind one NAT
        "EVOTA_OCPP_MAX_PREAUTH_PER_ADDRESS": "512",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "evota", "serve", env=env, stdout=asyncio.subprocess.DEVNULL
    )
    api_url = f"http://127.0.0.1:{ports['http']}"
    await wait_http(api_url)
    evota = psutil.Process(proc.pid)
    ca_key, ca_cert = signing.generate_ca("Bench Root", "Bench")
    key, cert = signing.generate_signing_key("Bench", "Bench", ca_key=ca_key, ca_cert=ca_cert)
    image = tmp / "fw.bin"
    image.write_bytes(b"EVOTA-SIM-FIRMWARE 2.0.0\n" + os.urandom(args.image_kb * 1024))
    sites = [SiteSpec(id=f"s{i}", name=f"Site {i}", timezone="UTC") for i in range(20)]
    base = fleet_from_flags(args.chargers, prefix="B-", seed="bench", sites=sites)
    spec = replace(
        base,
        chargers=tuple(replace(c, firmware_roots=(ca_cert.decode(),)) for c in base.chargers),
    )
    fleet = Fleet.from_spec(
        spec,
        f"ws://127.0.0.1:{ports['ocpp']}/ocpp",
        config=SimConfig(speed=600.0, install_duration=5.0, ping_interval=None),
        ramp_up=max(1.0, args.chargers / 500),
    )
    # Idle connections are dropped after 2 s, before the server's 5 s keep-alive closes them:
    # a request sent on one the server is closing fails "Server disconnected without sending
    # a response" (the baseline of a 20,000-charger cluster run once stopped that way).
    async with httpx.AsyncClient(
        base_url=api_url,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=120,
        limits=httpx.Limits(keepalive_expiry=2.0),
    ) as api:
        try:
            await api.post(
                "/api/v1/firmware/trusted-roots",
                json={"vendor": "Evota", "certificate": ca_cert.decode()},
            )
            with image.open("rb") as f:
                fw = (
                    await api.post(
                        "/api/v1/firmware",
                        data={
                            "vendor": "Evota",
                            "version": "2.0.0",
                            "models": ["Sim-AC22"],
                            "signature": signing.sign_file(image, key),
                            "signing_certificate": cert.decode(),
                        },
                        files={"file": ("fw.bin", f)},
                    )
                ).json()
            await fleet.provision(api_url, TOKEN)
            await fleet.start()
            await fleet.wait_for_all(lambda c: c.accepted, 120)
            await asyncio.sleep(2)
            body = {
                "name": "bench",
                "firmware_id": fw["id"],
                "waves": [{"count": 20}, {"percent": 10}, {"percent": 50}, {"percent": 100}],
                "policy": {
                    "success_threshold": 0.8,  # 20/20 has a Wilson lower bound of 0.84
                    "soak_seconds": 2,
                    "health_window_seconds": 2,
                    "max_per_site_fraction": 0.5,
                },
            }
            campaign = (await api.post("/api/v1/campaigns", json=body)).json()
            cpu0 = sum(evota.cpu_times()[:2])
            t0 = time.perf_counter()
            await api.post(f"/api/v1/campaigns/{campaign['id']}/start", json={})
            while True:
                c = (await api.get(f"/api/v1/campaigns/{campaign['id']}")).json()
                if c["state"] != "running":
                    break
                await asyncio.sleep(1)
            wall = time.perf_counter() - t0
            cpu = sum(evota.cpu_times()[:2]) - cpu0
        finally:
            await fleet.stop()
            proc.terminate()
            await proc.wait()
    jobs = sum(n for w in c["waves"] for state, n in w["jobs"].items() if state != "pending")
    table = Table(title=f"campaign of {args.chargers} chargers, {args.image_kb} KiB image")
    for col in ("state", "waves", "jobs", "wall s", "evota CPU s", "CPU ms / job"):
        table.add_column(col)
    table.add_row(
        c["state"],
        " ".join(str(w["size"]) for w in c["waves"]),
        str(jobs),
        f"{wall:.1f}",
        f"{cpu:.1f}",
        f"{1000 * cpu / max(1, jobs):.1f}",
    )
    Console().print(table)
    if c["state"] != "completed":
        Console().print(f"stopped: {c['state_reason']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chargers", type=int, default=2000)
    parser.add_argument("--image-kb", type=int, default=256)
    asyncio.run(main(parser.parse_args()))
