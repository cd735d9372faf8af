"""Done-when for the firmware issue: an independent OCPP 1.6J charger (the Node library
``ocpp-rpc`` in strict schema mode, Node's own HTTP and crypto) receives a signed update from
evota, downloads it with the token URL, verifies the signature with the certificate evota
sent, reboots onto the new version, and evota marks the job succeeded only after that boot.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from evota.runtime import Runtime

from .conftest import Keys, api_client, provision, start_runtime
from .node_clients import NODE_DIR, ensure_node_modules, same_worker
from .support import until
from .test_firmware_update import FAST_JOBS, trust, upload

KEY = "ocpp-rpc-key-0123456789"
IDENTITY = "RPC-FW-1"


@pytest.fixture
async def rt(tmp_path: Path, sqlite_url: str):
    runtime = await start_runtime(tmp_path, sqlite_url, **{**FAST_JOBS, "job_verify_seconds": 0.5})
    yield runtime
    await runtime.stop()


@same_worker
async def test_independent_strict_charger_takes_a_signed_update(
    rt: Runtime, tmp_path: Path, keys: Keys
) -> None:
    node = await ensure_node_modules()
    root = tmp_path / "root.pem"
    root.write_bytes(keys.ca_cert)
    await provision(rt, IDENTITY, KEY)
    async with api_client(rt) as api:
        await trust(api, keys)
        fw = await upload(api, tmp_path, keys, "2.0.0")
        proc = await asyncio.create_subprocess_exec(
            node,
            str(NODE_DIR / "firmware_client.js"),
            "--endpoint",
            f"ws://127.0.0.1:{rt.ocpp_port}/ocpp",
            "--identity",
            IDENTITY,
            "--key",
            KEY,
            "--root",
            str(root),
            cwd=NODE_DIR,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(30):
                assert (await proc.stdout.readline()).strip() == b"READY"
                await until(  # the boot is written behind, within 0.25 s
                    lambda: api.get(f"/api/v1/chargers/{IDENTITY}"), lambda r: r.json()["vendor"]
                )
                r = await api.post(
                    f"/api/v1/chargers/{IDENTITY}/firmware-update", json={"firmware_id": fw["id"]}
                )
                assert r.status_code == 202, r.text
                job_id = r.json()["job_id"]
                states = []
                while True:  # watch the job while the charger works
                    job = (await api.get(f"/api/v1/jobs/{job_id}")).json()
                    states.append(job["state"])
                    if job["state"] in ("succeeded", "failed", "cancelled"):
                        break
                    await asyncio.sleep(0.05)
                summary = json.loads((await proc.stdout.read()).decode().strip().splitlines()[-1])
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()

    assert summary["error"] is None, summary
    assert summary["strict_validation_failures"] == []
    assert summary["certificate_trusted"] is True
    assert summary["http_status"] == 200 and summary["etag"] == f'"{fw["sha256"]}"'
    assert summary["sha256"] == fw["sha256"] and summary["bytes"] == fw["size"]
    assert summary["signature_valid"] is True
    assert summary["request"]["requestId"] == job_id
    assert summary["boot_after"]["status"] == "Accepted"
    assert job["state"] == "succeeded", job
    # never succeeded before the boot on 2.0.0: verifying came first
    assert "verifying" in states and states.index("verifying") < states.index("succeeded")
    boot = [e for e in job["history"] if e["event"] == "boot"]
    assert boot[0]["detail"]["firmware_version"] == "2.0.0"
