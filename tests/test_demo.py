"""`evota demo` as a user runs it: a real process, real ports, stopped with Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import httpx
import pytest

from .support import until

pytestmark = pytest.mark.slow  # a whole `evota demo` process and its fleet


async def test_demo_runs_a_fleet_and_stops_on_ctrl_c(tmp_path):
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
        "0",
        "--ocpp-port",
        "0",
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
        # the ports are the system's choice (port 0): the banner names them
        http = re.search(r"^  console\s+http://127\.0\.0\.1:(\d+)/$", output, re.M)
        assert http, output
        url = f"http://127.0.0.1:{http.group(1)}"
        assert re.search(r"^  OCPP endpoint\s+ws://127\.0\.0\.1:\d+/ocpp/", output, re.M)
        # what provisioning created, in words a newcomer can check (not "27 new")
        assert (
            "24 simulated chargers at 3 sites: 24 chargers and 3 sites created, 0 already known"
            in output
        )
        assert "demo speed: campaign gates after 20 s" in output
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}
        ) as api:
            await until(
                lambda: api.get("/healthz"),
                lambda r: r.json()["connected_chargers"] == 24,
                timeout=20,
                interval=0.2,
                describe=lambda r: r.text,
            )
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
            await until(  # connected first; the boot's vendor is written just behind
                lambda: api.get("/api/v1/chargers/ACME-AC-0001"), lambda r: r.json()["vendor"]
            )
            r = await api.post(
                "/api/v1/chargers/ACME-AC-0001/firmware-update", json={"firmware_id": fw["id"]}
            )
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]
            # the simulated charger downloads and verifies the real image; bytes served are
            # recorded once a second
            await until(
                lambda: api.get(f"/api/v1/jobs/{job_id}"),
                lambda r: (
                    r.json()["state"] in ("signature_verified", "installing", "rebooting")
                    and r.json()["bytes_served"] > 2 * 1024 * 1024
                ),
                timeout=10,
                interval=0.1,
                describe=lambda r: r.text,
            )

        # the console logins it printed work (no MFA in the demo), and the prepared release
        # uploads as `ann` with its signature checked
        logins = re.findall(r"console login\s+(\w+) / (\S+)", output)
        assert [name for name, _ in logins] == ["ann", "ben"]
        folder = Path(re.search(r"to upload\s+(\S+)/", output).group(1))  # type: ignore[union-attr]
        async with httpx.AsyncClient(base_url=url) as web:
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
