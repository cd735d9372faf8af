"""`evota demo` as a user runs it: a real process, real ports, stopped with Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_demo_runs_a_fleet_and_stops_on_ctrl_c(tmp_path):
    http, ocpp = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "evota",
        "demo",
        "--data-dir",
        str(tmp_path / "demo"),
        "--chargers",
        "24",
        "--http-port",
        str(http),
        "--ocpp-port",
        str(ocpp),
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.stderr is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(60):
            while not any("Press Ctrl-C" in line for line in seen):
                line = (await proc.stderr.readline()).decode()
                assert line, "demo exited early:\n" + "".join(seen)
                seen.append(line)
        output = "".join(seen)
        token = next(w for w in output.split() if w.startswith("evota_demo_"))
        assert f"http://127.0.0.1:{http}/" in output
        # what provisioning created, in words a newcomer can check (not "27 new")
        assert (
            "24 simulated chargers at 3 sites: 24 chargers and 3 sites created, 0 already known"
            in output
        )
        assert "demo speed: campaign gates after 20 s" in output
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{http}", headers={"Authorization": f"Bearer {token}"}
        ) as api:
            for _ in range(100):
                health = (await api.get("/healthz")).json()
                if health["connected_chargers"] == 24:
                    break
                await asyncio.sleep(0.2)
            assert health["connected_chargers"] == 24
            sites = (await api.get("/api/v1/sites")).json()
            assert {s["timezone"] for s in sites["items"]} == {
                "Europe/Berlin",
                "America/New_York",
                "Asia/Tokyo",
            }
            # the simulated drivers' cards are in the token store (evota accepts only those)
            cards = (await api.get("/api/v1/id-tokens", params={"limit": 1})).json()
            assert cards["total"] == 40
            firmware = (await api.get("/api/v1/firmware")).json()
            # a release per model, and the versions the fleet runs (a rollback goes back to one)
            assert sorted(f["version"] for f in firmware["items"]) == [
                "1.8.0",
                "1.9.0",
                "2.3.1",
                "2.4.0",
                "4.0.7",
                "4.1.0",
            ]
            assert all(f["state"] == "released" and f["signed"] for f in firmware["items"])
            fw = next(f for f in firmware["items"] if f["version"] == "2.4.0")
            for _ in range(100):  # connected first; the boot's vendor is written just behind
                if (await api.get("/api/v1/chargers/ACME-AC-0001")).json()["vendor"]:
                    break
                await asyncio.sleep(0.1)
            r = await api.post(
                "/api/v1/chargers/ACME-AC-0001/firmware-update", json={"firmware_id": fw["id"]}
            )
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]
            for _ in range(100):  # the simulated charger downloads and verifies the real image
                job = (await api.get(f"/api/v1/jobs/{job_id}")).json()
                progressed = job["state"] in ("signature_verified", "installing", "rebooting")
                if progressed and job["bytes_served"] > 2 * 1024 * 1024:
                    break  # bytes served are recorded once a second
                await asyncio.sleep(0.1)
            assert job["state"] in ("signature_verified", "installing", "rebooting"), job
            assert job["bytes_served"] > 2 * 1024 * 1024

        # the console logins it printed work (no MFA in the demo), and the prepared release
        # uploads as `ann` with its signature checked
        logins = re.findall(r"console login\s+(\w+) / (\S+)", output)
        assert [name for name, _ in logins] == ["ann", "ben"]
        folder = Path(re.search(r"to upload\s+(\S+)/", output).group(1))  # type: ignore[union-attr]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http}") as web:
            r = await web.post(
                "/api/v1/auth/login", json={"username": "ann", "password": logins[0][1]}
            )
            assert r.status_code == 200, r.text
            ann = {"Authorization": f"Bearer {r.json()['token']}"}
            image = folder / "Acme-AC22-2.5.0.bin"
            with image.open("rb") as f:
                r = await web.post(
                    "/api/v1/firmware",
                    headers=ann,
                    data={
                        "vendor": "Acme",
                        "version": "2.5.0",
                        "models": ["AC22"],
                        "signature": (folder / f"{image.name}.sig").read_text().strip(),
                        "signing_certificate": (folder / "signing.cert.pem").read_text(),
                    },
                    files={"file": (image.name, f)},
                )
            assert r.status_code == 201, r.text
            assert r.json()["signed"] is True
    finally:
        proc.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(proc.stderr.read(), 30)
        code = await proc.wait()
    assert code == 0, rest.decode()
    assert b"Traceback" not in rest
