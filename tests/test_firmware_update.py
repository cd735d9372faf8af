"""Single-charger firmware updates end to end: evota + the simulator, real HTTP downloads,
real signatures, on loopback. Mirrors the OCPP 1.6 conformance cases TC_044_1/2/3 (download
and install, download failed, installation failed) and TC_080/081 (secure update, invalid
signature), plus resume, token misuse, revocation, power loss, restart and every refusal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import update

from evota.firmware import signing
from evota.runtime import Runtime
from evota.sim import Fleet, fleet_from_flags
from evota.sim.charger import SimulatedCharger
from evota.sim.fleet import ChargerSpec, FaultProfile
from evota.store.models import Charger

from .conftest import TOKEN, Keys, api_client, start_runtime
from .sim.conftest import fast
from .support import until

VENDOR = "Evota"
MODEL = "Sim-AC22"

# Short phases so failures show within a test's patience; the verify window is the health
# watch after the boot on the target version.
FAST_JOBS: dict[str, Any] = {
    "job_verify_seconds": 0.3,
    "job_download_start_timeout": 20,
    "job_download_timeout": 20,
    "job_install_timeout": 20,
    "job_reboot_timeout": 3,
}


def image_bytes(version: str, size: int = 256 * 1024) -> bytes:
    """The simulator reads the version it will boot from this header line."""
    return f"EVOTA-SIM-FIRMWARE {version}\n".encode() + os.urandom(size)


async def upload(
    api: httpx.AsyncClient,
    tmp_path: Path,
    keys: Keys | None,
    version: str,
    *,
    size: int = 256 * 1024,
    models: tuple[str, ...] = (MODEL,),
    vendor: str = VENDOR,
    **fields: str,
) -> dict[str, Any]:
    path = tmp_path / f"fw-{version}.bin"
    path.write_bytes(image_bytes(version, size))
    data: dict[str, Any] = {
        "version": version,
        "vendor": vendor,
        "models": list(models),
        "release_notes": f"release {version}",
        **fields,
    }
    if keys is not None:
        data["signature"] = signing.sign_file(path, keys.key)
        data["signing_certificate"] = keys.cert.decode()
    with path.open("rb") as f:
        r = await api.post("/api/v1/firmware", data=data, files={"file": (path.name, f)})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def trust(api: httpx.AsyncClient, keys: Keys) -> None:
    r = await api.post(
        "/api/v1/firmware/trusted-roots",
        json={"vendor": VENDOR, "certificate": keys.ca_cert.decode()},
    )
    assert r.status_code == 201, r.text


async def allow_unsigned(api: httpx.AsyncClient) -> None:
    r = await api.put(f"/api/v1/firmware/vendors/{VENDOR}", json={"allow_unsigned": True})
    assert r.status_code in (200, 201), r.text


class Bench:
    """One evota, an API client and simulated chargers started on demand."""

    def __init__(self, rt: Runtime, api: httpx.AsyncClient, keys: Keys, tmp_path: Path):
        self.rt = rt
        self.api = api
        self.keys = keys
        self.tmp_path = tmp_path
        self.fleets: list[Fleet] = []

    async def charger(
        self,
        identity: str = "FW-0001",
        *,
        roots: bool = True,
        capability: str = "both",
        faults: FaultProfile | None = None,
        version: str = "1.0.0",
        wait: bool = True,
    ) -> SimulatedCharger:
        base = fleet_from_flags(1, prefix=identity[:-4], seed="fw", firmware_version=version)
        spec: ChargerSpec = replace(
            base.chargers[0],
            firmware_update=capability,
            firmware_roots=(self.keys.ca_cert.decode(),) if roots else (),
            faults=faults or FaultProfile(),
        )
        fleet_spec = replace(base, chargers=(spec,))
        config = fast(speed=600.0, install_duration=1.0, download_retry_interval=0.2)
        fleet = Fleet.from_spec(
            fleet_spec, f"ws://127.0.0.1:{self.rt.ocpp_port}/ocpp", config=config
        )
        await fleet.provision(f"http://127.0.0.1:{self.rt.http_port}", TOKEN)
        self.fleets.append(fleet)
        await fleet.start()
        charger = fleet[spec.identity]
        if wait:
            await fleet.wait_until(lambda f: charger.accepted, 10)
            await until(lambda: self.charger_row(spec.identity), lambda c: c["vendor"])
        return charger

    async def charger_row(self, charger_id: str) -> dict[str, Any]:
        r = await self.api.get(f"/api/v1/chargers/{charger_id}")
        return dict(r.json())

    async def update(self, charger_id: str, firmware_id: str, **body: Any) -> httpx.Response:
        return await self.api.post(
            f"/api/v1/chargers/{charger_id}/firmware-update",
            json={"firmware_id": firmware_id, **body},
        )

    async def job(self, job_id: int) -> dict[str, Any]:
        r = await self.api.get(f"/api/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def finished(self, job_id: int, timeout: float = 20) -> dict[str, Any]:
        job: dict[str, Any] = await until(
            lambda: self.job(job_id),
            lambda j: j["state"] in ("succeeded", "failed", "cancelled"),
            timeout=timeout,
        )
        return job

    async def close(self) -> None:
        for fleet in self.fleets:
            await fleet.stop()


B = TypeVar("B", bound="Bench")


@contextlib.asynccontextmanager
async def running(
    cls: type[B], tmp_path: Path, database_url: str, keys: Keys, **overrides: Any
) -> AsyncIterator[B]:
    """evota with fast job phases, the test root trusted, and a ``cls`` around it."""
    rt = await start_runtime(tmp_path, database_url, **{**FAST_JOBS, **overrides})
    api = api_client(rt)
    await trust(api, keys)
    b = cls(rt, api, keys, tmp_path)
    try:
        yield b
    finally:  # the test may have replaced the runtime (restart tests)
        await b.close()
        await b.api.aclose()
        await b.rt.stop()


@pytest.fixture
async def bench(tmp_path: Path, database_url: str, keys: Keys) -> AsyncIterator[Bench]:
    async with running(Bench, tmp_path, database_url, keys) as b:
        yield b


@pytest.fixture
async def sqlite_bench(tmp_path: Path, sqlite_url: str, keys: Keys) -> AsyncIterator[Bench]:
    async with running(Bench, tmp_path, sqlite_url, keys) as b:
        yield b


def events(job: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [e for e in job["history"] if e["event"] == name]


def statuses(job: dict[str, Any]) -> list[str]:
    return [e["detail"]["status"] for e in events(job, "firmware_status")]


# -- TC_080: secure firmware update ---------------------------------------------------------


async def test_signed_update_succeeds_only_after_the_boot_on_the_new_version(bench: Bench):
    fw = await upload(bench.api, bench.tmp_path, bench.keys, "2.0.0")
    charger = await bench.charger()
    r = await bench.update(charger.identity, fw["id"])
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    job = await bench.finished(job_id)
    assert job["state"] == "succeeded", job
    assert job["method"] == "signed"
    assert job["bytes_served"] >= fw["size"]
    sent = events(job, "sent")
    assert sent[0]["detail"]["action"] == "SignedUpdateFirmware"
    assert "<token>" in sent[0]["detail"]["location"]  # the secret is not in the history
    assert statuses(job)[:4] == ["Downloading", "Downloaded", "SignatureVerified", "Installing"]
    boots = events(job, "boot")
    assert boots and boots[-1]["detail"]["firmware_version"] == "2.0.0"
    # success came after the boot, never before
    order = [e["event"] for e in job["history"]]
    assert order.index("boot") < len(order) - 1 and job["history"][-1]["state"] == "succeeded"
    assert charger.firmware_version == "2.0.0"
    row = await bench.charger_row(charger.identity)
    assert row["firmware_version"] == "2.0.0"
    listed = (await bench.api.get("/api/v1/jobs", params={"charger_id": charger.identity})).json()
    assert [j["id"] for j in listed["items"]] == [job_id]


# -- TC_081: invalid signature ---------------------------------------------------------------


async def test_invalid_signature_reported_by_the_charger_fails_the_job(sqlite_bench: Bench):
    b = sqlite_bench
    fw = await upload(b.api, b.tmp_path, b.keys, "2.0.0")
    charger = await b.charger(faults=FaultProfile(invalid_signature=1.0))
    job = await b.finished((await b.update(charger.identity, fw["id"])).json()["job_id"])
    assert (job["state"], job["failure"]) == ("failed", "invalid_signature")
    assert "InvalidSignature" in statuses(job)
    assert charger.firmware_version == "1.0.0"


async def test_charger_that_does_not_trust_the_certificate_refuses(sqlite_bench: Bench):
    b = sqlite_bench
    fw = await upload(b.api, b.tmp_path, b.keys, "2.0.0")
    charger = await b.charger(roots=False)
    job = await b.finished((await b.update(charger.identity, fw["id"])).json()["job_id"])
    assert (job["state"], job["failure"]) == ("failed", "invalid_signature")
    assert "certificate" in job["detail"]


# -- TC_044_1/2/3: plain update, download failed, installation failed ------------------------


async def test_plain_only_charger_gets_plain_update_after_not_implemented(sqlite_bench: Bench):
    b = sqlite_bench
    fw = await upload(b.api, b.tmp_path, b.keys, "2.0.0")
    charger = await b.charger(capability="plain")
    job = await b.finished((await b.update(charger.identity, fw["id"])).json()["job_id"])
    assert job["state"] == "succeeded", job
    assert job["method"] == "plain"
    assert [e["detail"]["action"] for e in events(job, "sent")] == [
        "SignedUpdateFirmware",
        "UpdateFirmware",
    ]
    assert statuses(job)[:3] == ["Downloading", "Downloaded", "Installing"]
    assert (await b.charger_row(charger.identity))["firmware_delivery"] == "plain"
    # remembered: the next update goes plain straight away
    fw3 = await upload(b.api, b.tmp_path, b.keys, "3.0.0")
    job = await b.finished((await b.update(charger.identity, fw3["id"])).json()["job_id"])
    assert [e["detail"]["action"] for e in events(job, "sent")] == ["UpdateFirmware"]


async def test_unsigned_image_goes_plain(sqlite_bench: Bench):
    b = sqlite_bench
    await allow_unsigned(b.api)
    fw = await upload(b.api, b.tmp_path, None, "2.0.0")
    charger = await b.charger()
    job = await b.finished((await b.update(charger.identity, fw["id"])).json()["job_id"])
    assert job["state"] == "succeeded" and job["method"] == "plain"


async def test_download_failed(sqlite_bench: Bench):
    b = sqlite_bench
    fw = await upload(b.api, b.tmp_path, b.keys, "2.0.0")
    charger = await b.charger(faults=FaultProfile(download_fails=1.0))
    job = await b.finished((await b.update(charger.identity, fw["id"])).json()["job_id"])
    assert (job["state"], job["failure"]) == ("failed", "download_failed")


async def test_installation_failed(sqlite_bench: Bench):
    b = sqlite_bench
    fw = await upload(b.api, b.tmp_path, b.keys, "2.0.0")
    charger = await b.charger(faults=FaultProfile(install_fails=1.0))
    job = await b.finished((await b.update(charger.identity, fw["id"])).json()["job_id"])
    assert (job["state"], job["failure"]) == ("failed", "installation_failed")


async def test_power_loss_during_install_comes_back_on_the_previous_version(sqlite_bench: Bench):
    b = sqlite_bench
    fw = await upload(b.api, b.tmp_path, b.keys, "2.0.0")
    charger = await b.charger(faults=FaultProfile(power_loss=1.0))
    job = await b.finished((await b.update(charger.identity, fw["id"])).json()["job_id"])
    assert (job["state"], job["failure"]) == ("failed", "booted_previous_version"), job


async def test_bad_version_is_unhealthy_after_boot(sqlite_bench: Bench):
    b = sqlite_bench
    fw = await upload(b.api, b.tmp_path, b.keys, "2.0.0")
    charger = await b.charger(faults=FaultProfile(bad_versions=("2.0.0",)))
    job = await b.finished((await b.update(charger.identity, fw["id"])).json()["job_id"])
    assert (job["state"], job["failure"]) == ("failed", "unhealthy"), job


async def test_rejected_and_silent_chargers(sqlite_bench: Bench):
    b = sqlite_bench
    fw = await upload(b.api, b.tmp_path, b.keys, "2.0.0")
    rejecting = await b.charger("REJ-0001", faults=FaultProfile(reject=1.0))
    job = await b.finished((await b.update(rejecting.identity, fw["id"])).json()["job_id"])
    assert (job["state"], job["failure"]) == ("failed", "rejected")
    silent = await b.charger("SIL-0001", faults=FaultProfile(silent=1.0))
    job_id = (await b.update(silent.identity, fw["id"])).json()["job_id"]
    job = await until(lambda: b.job(job_id), lambda j: j["state"] == "accepted")
    assert job["deadline"] is not None  # a timer watches the silence


# -- resume, tokens, revocation ----------------------------------------------------------------


async def test_download_resumes_after_a_dropped_link(sqlite_bench: Bench):
    b = sqlite_bench
    fw = await upload(b.api, b.tmp_path, b.keys, "2.0.0", size=2 * 1024 * 1024)
    charger = await b.charger(faults=FaultProfile(link_drop=1.0))
    job = await b.finished((await b.update(charger.identity, fw["id"])).json()["job_id"])
    assert job["state"] == "succeeded", job
    # bytes served are recorded once a second, so maybe after the job ended
    job = await until(lambda: b.job(job["id"]), lambda j: j["bytes_served"] >= fw["size"])
    # resumed, not restarted: less than two full copies went out
    assert fw["size"] <= job["bytes_served"] < 2 * fw["size"]


async def test_download_url_is_bound_to_the_charger_and_the_image(sqlite_bench: Bench):
    b = sqlite_bench
    fw = await upload(b.api, b.tmp_path, b.keys, "2.0.0")
    charger = await b.charger(faults=FaultProfile(silent=1.0))
    job_id = (await b.update(charger.identity, fw["id"])).json()["job_id"]
    await until(lambda: b.job(job_id), lambda j: j["state"] == "accepted")
    call = charger.last_call
    assert call is not None
    location = call.payload["firmware"]["location"]
    async with httpx.AsyncClient(timeout=5) as http:
        ok = await http.head(location)
        assert ok.status_code == 200 and ok.headers["etag"].strip('"') == fw["sha256"]
        stolen = location.replace(f"/{charger.identity}/", "/OTHER-0001/")
        r = await http.get(stolen)
        assert r.status_code == 403 and fw["sha256"] not in r.text
        tampered = location.replace("/firmware.bin", "").rstrip("/")
        tampered = tampered[:-2] + ("AA" if not tampered.endswith("AA") else "BB")
        assert (await http.get(tampered)).status_code == 403


async def test_revoking_cancels_queued_jobs_and_stops_downloads(sqlite_bench: Bench):
    b = sqlite_bench
    fw = await upload(b.api, b.tmp_path, b.keys, "2.0.0")
    silent = await b.charger("SIL-0001", faults=FaultProfile(silent=1.0))
    held = (await b.update(silent.identity, fw["id"])).json()["job_id"]
    await until(lambda: b.job(held), lambda j: j["state"] == "accepted")
    assert silent.last_call is not None
    location = silent.last_call.payload["firmware"]["location"]
    # a charger that is offline: its job waits in the queue
    r = await b.api.post("/api/v1/chargers", json={"id": "OFF-0001", "auth_key": "x" * 20})
    assert r.status_code == 201, r.text
    async with b.rt.engine.begin() as conn:  # as if it had booted once, long ago
        await conn.execute(
            update(Charger)
            .where(Charger.id == "OFF-0001")
            .values(vendor=VENDOR, model=MODEL, firmware_version="1.0.0")
        )
    queued = (await b.update("OFF-0001", fw["id"])).json()["job_id"]
    assert (await b.job(queued))["state"] == "queued"
    r = await b.api.post(f"/api/v1/firmware/{fw['id']}/revoke", json={"reason": "bricks chargers"})
    assert r.status_code == 200, r.text
    assert (await b.job(queued))["state"] == "cancelled"
    async with httpx.AsyncClient(timeout=5) as http:
        r = await http.get(location)
    assert r.status_code == 410 and len(r.content) < 500
    # and a revoked image is refused for new updates
    r = await b.update(silent.identity, fw["id"])
    assert r.status_code == 409


# -- restart ------------------------------------------------------------------------------------


async def test_a_job_survives_a_server_restart(tmp_path: Path, sqlite_url: str, keys: Keys):
    async with running(Bench, tmp_path, sqlite_url, keys) as b:
        ports = {
            "ocpp_port": b.rt.ocpp_port,
            "http_port": b.rt.http_port,
            "download_port": b.rt.download_port,
        }
        fw = await upload(b.api, tmp_path, keys, "2.0.0", size=4 * 1024 * 1024)
        charger = await b.charger(faults=FaultProfile(slow_link_bps=16_000_000))
        job_id = (await b.update(charger.identity, fw["id"])).json()["job_id"]
        await until(lambda: b.job(job_id), lambda j: j["state"] == "downloading")
        await b.api.aclose()
        await b.rt.stop()  # mid-download: the charger loses both links
        b.rt = await start_runtime(tmp_path, sqlite_url, **FAST_JOBS, **ports)
        b.api = api_client(b.rt)
        job = await b.finished(job_id, timeout=30)
        assert job["state"] == "succeeded", job
        assert charger.firmware_version == "2.0.0"
        sends = events(job, "sent")
        assert len(sends) == 1  # resumed, not re-sent


# -- refusals -----------------------------------------------------------------------------------


async def test_every_precheck_refusal(bench: Bench):
    b = bench
    fw2 = await upload(b.api, b.tmp_path, b.keys, "2.0.0")
    fw05 = await upload(b.api, b.tmp_path, b.keys, "0.5.0")
    other_model = await upload(b.api, b.tmp_path, b.keys, "2.1.0", models=("DC150",))
    fw1 = await upload(b.api, b.tmp_path, b.keys, "1.0.0")
    charger = await b.charger(faults=FaultProfile(silent=1.0))
    cid = charger.identity

    r = await b.update("NOPE-1", fw2["id"])
    assert r.status_code == 404 and r.json()["field"] == "charger_id"
    r = await b.update(cid, "no-such-firmware")
    assert r.status_code == 422 and r.json()["field"] == "firmware_id"
    r = await b.update(cid, other_model["id"])
    assert (r.status_code, r.json()["reason"]) == (409, "incompatible")
    r = await b.update(cid, fw1["id"])
    assert (r.status_code, r.json()["reason"]) == (409, "already_on_target")
    r = await b.update(cid, fw05["id"])
    assert (r.status_code, r.json()["reason"], r.json()["field"]) == (
        409,
        "downgrade",
        "allow_downgrade",
    )
    r = await b.update(cid, fw05["id"], allow_downgrade=True)
    assert r.status_code == 202
    r = await b.update(cid, fw2["id"])
    assert (r.status_code, r.json()["reason"]) == (409, "in_progress")
    r = await b.update(cid, fw2["id"], retrieve_at="2026-01-01T00:00:00")  # no offset
    assert r.status_code == 422 and r.json()["field"] == "retrieve_at"
    r = await b.api.post("/api/v1/firmware/" + fw2["id"] + "/revoke", json={"reason": "test"})
    assert r.status_code == 200
    r = await b.update(cid, fw2["id"], allow_downgrade=True)
    assert r.status_code == 409 and r.json()["reason"] in ("revoked", "in_progress")
    r = await b.api.get("/api/v1/jobs/999999")
    assert r.status_code == 404


async def test_scheduled_job_waits_and_can_be_cancelled(sqlite_bench: Bench):
    b = sqlite_bench
    fw = await upload(b.api, b.tmp_path, b.keys, "2.0.0")
    charger = await b.charger()
    r = await b.update(charger.identity, fw["id"], retrieve_at="2099-01-01T00:00:00+00:00")
    job_id = r.json()["job_id"]
    assert (await b.job(job_id))["state"] == "scheduled"
    await asyncio.sleep(0.3)
    assert charger.last_call is None or charger.last_call.action == "Reset"
    r = await b.api.post(f"/api/v1/jobs/{job_id}/cancel", json={"reason": "not tonight"})
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    r = await b.api.post(f"/api/v1/jobs/{job_id}/cancel", json={})
    assert r.status_code == 409


async def test_an_input_that_waited_for_a_cancel_does_not_bring_the_job_back(
    sqlite_bench: Bench,
):
    """An input for a charger's job that waits for the runner's lock while the job is
    cancelled (a campaign's abort) used to be applied to the stale copy it had read: the
    cancelled job came back active (a busy CI run left a charger on a bad image without its
    rollback). The interleaving is forced: the test holds the lock, queues the cancel and
    then a dispatch behind it, and lets go. The charger is offline, so the runner itself
    sends no input for the job meanwhile."""
    from evota.rollout import job as jm

    b = sqlite_bench
    fw = await upload(b.api, b.tmp_path, b.keys, "2.0.0")
    charger = await b.charger()
    await charger.stop()
    await until(lambda: not b.rt.gateway.is_connected(charger.identity))
    job_id = (await b.update(charger.identity, fw["id"])).json()["job_id"]
    assert (await b.job(job_id))["state"] == "queued"
    jobs = b.rt.jobs
    lock = jobs._lock
    async with lock:
        cancel = asyncio.create_task(jobs.cancel(job_id, "the campaign was aborted"))
        await until(lambda: len(lock._waiters or ()) == 1)
        jobs.notify(charger.identity, jm.Dispatch(), "dispatch")
        await until(lambda: len(lock._waiters or ()) == 2)  # the worker waits behind it
    step = await cancel
    assert step is not None and step.job.state is jm.JobState.CANCELLED
    for _ in range(3):  # the worker has had the lock and let it go again
        await until(lambda: not lock.locked() and not lock._waiters)
        await asyncio.sleep(0.05)
    assert charger.identity not in jobs.active
    assert (await b.job(job_id))["state"] == "cancelled"


# -- CLI and metrics ------------------------------------------------------------------------------


async def test_cli_updates_by_version_and_shows_the_job(sqlite_bench: Bench):
    from .test_cli import invoke

    b = sqlite_bench
    await upload(b.api, b.tmp_path, b.keys, "2.0.0")
    charger = await b.charger()
    r = await invoke(b.rt, "charger", "update-firmware", charger.identity, "--firmware", "9.9.9")
    assert r.exit_code == 1 and "no firmware with id or version '9.9.9'" in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = await invoke(
        b.rt,
        "charger",
        "update-firmware",
        charger.identity,
        "--firmware",
        "2.0.0",
        "--at",
        "tomorrow",
    )
    assert r.exit_code == 1 and "--at" in r.output
    r = await invoke(
        b.rt, "charger", "update-firmware", charger.identity, "--firmware", "2.0.0", "--json"
    )
    assert r.exit_code == 0, r.output
    job_id = json.loads(r.stdout)["job_id"]
    job = await b.finished(job_id)
    assert job["state"] == "succeeded"
    r = await invoke(b.rt, "job", "show", str(job_id))
    assert r.exit_code == 0 and "succeeded" in r.stdout and "sent" in r.stdout
    r = await invoke(b.rt, "job", "list", "--charger", charger.identity, "--json")
    assert [j["id"] for j in json.loads(r.stdout)["items"]] == [job_id]
    r = await invoke(b.rt, "job", "cancel", str(job_id))
    assert r.exit_code == 1 and "HTTP 409" in r.output
    metrics = (await b.api.get("/metrics")).text
    assert 'evota_firmware_jobs_finished_total{failure="",state="succeeded"}' in metrics
    assert "evota_firmware_bytes_served_total" in metrics


# -- hardware revisions ------------------------------------------------------------------------


async def test_image_for_one_hardware_revision_goes_only_to_chargers_with_that_revision(
    bench: Bench,
):
    """OCPP 1.6 reports no hardware revision: the operator records it, and an image restricted
    to a revision is offered to the charger that has it and refused, with the reason, to one
    that has another (or none)."""
    b = bench
    fw = await upload(b.api, b.tmp_path, b.keys, "2.0.0", hardware_revisions=["r2"])  # type: ignore[arg-type]
    assert fw["hardware_revisions"] == ["r2"]
    fits = await b.charger("HWA-0001")
    other = await b.charger("HWB-0001")
    r = await b.update(fits.identity, fw["id"])  # nothing recorded yet
    assert (r.status_code, r.json()["reason"]) == (409, "incompatible")
    assert r.json()["detail"] == "hardware revision unknown is not among r2"

    async def revision(cid: str, value: Any) -> httpx.Response:
        return await b.api.patch(f"/api/v1/chargers/{cid}", json={"hardware_revision": value})

    r = await revision(fits.identity, " r2 ")
    assert r.status_code == 200 and r.json()["hardware_revision"] == "r2", r.text
    assert (await revision(other.identity, "r1")).status_code == 200
    r = await b.update(other.identity, fw["id"])
    assert (r.status_code, r.json()["reason"]) == (409, "incompatible")
    assert r.json()["detail"] == "hardware revision r1 is not among r2"
    r = await b.update(fits.identity, fw["id"])
    assert r.status_code == 202, r.text
    job = await b.finished(r.json()["job_id"])
    assert job["state"] == "succeeded" and fits.firmware_version == "2.0.0"
    # a reboot (BootNotification has no revision) keeps what the operator recorded
    assert (await b.charger_row(fits.identity))["hardware_revision"] == "r2"
    for bad in ("x" * 51, "", "r\n2"):
        r = await revision(other.identity, bad)
        assert r.status_code == 422 and r.json()["field"] == "hardware_revision", r.text
    r = await revision(other.identity, None)  # null clears it
    assert r.status_code == 200 and r.json()["hardware_revision"] is None
