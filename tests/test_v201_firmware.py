"""OCPP 2.0.1 firmware updates end to end: evota + a simulated 2.0.1 charger on loopback, real
HTTP downloads and signatures. Mirrors the CSMS-side conformance cases TC_L_01 … TC_L_13 and
checks, for each, the job evota ends with (``GET /api/v1/jobs/{id}``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from evota.sim import Fleet, fleet_from_flags
from evota.sim.charger import SimulatedCharger
from evota.sim.fleet import FaultProfile
from evota.store.models import ChargerEvent, ChargingSession

from .conftest import TOKEN, Keys
from .sim.conftest import fast
from .support import until
from .test_firmware_update import Bench, allow_unsigned, running, upload

V201 = "ocpp2.0.1"


class Bench201(Bench):
    """Bench whose chargers speak OCPP 2.0.1."""

    async def charger201(
        self,
        identity: str = "L-0001",
        *,
        roots: bool = True,
        capability: str = "both",
        faults: FaultProfile | None = None,
        version: str = "1.0.0",
    ) -> SimulatedCharger:
        base = fleet_from_flags(
            1, prefix=identity[:-4], seed="fw201", firmware_version=version, protocol=V201
        )
        spec = replace(
            base.chargers[0],
            firmware_update=capability,
            firmware_roots=(self.keys.ca_cert.decode(),) if roots else (),
            faults=faults or FaultProfile(),
        )
        config = fast(speed=600.0, install_duration=1.0, download_retry_interval=0.2)
        fleet = Fleet.from_spec(
            replace(base, chargers=(spec,)),
            f"ws://127.0.0.1:{self.rt.ocpp_port}/ocpp",
            config=config,
        )
        await fleet.provision(f"http://127.0.0.1:{self.rt.http_port}", TOKEN)
        self.fleets.append(fleet)
        await fleet.start()
        charger = fleet[spec.identity]
        await fleet.wait_until(lambda f: charger.accepted, 10)
        await until(lambda: self.charger_row(spec.identity), lambda c: c["vendor"])
        return charger

    async def start(self, charger: SimulatedCharger, firmware_id: str) -> int:
        r = await self.update(charger.identity, firmware_id)
        assert r.status_code == 202, r.text
        return int(r.json()["job_id"])

    async def session(self, charger: SimulatedCharger, evse: int = 1) -> str:
        """A charging session that lasts until stopped; returns its transaction id."""
        charger.begin_session(evse, "RFID-201", duration=10**9)
        tx = await until(lambda: _tx(charger, evse), timeout=5)
        return str(tx)

    async def stop(self, charger: SimulatedCharger, tx: str) -> None:
        """Stop a session through evota's remote-stop command, as an operator would."""
        r = await self.api.post(
            f"/api/v1/chargers/{charger.identity}/commands/remote-stop",
            json={"transaction_id": tx, "reason": "test"},
        )
        assert r.status_code == 200 and r.json()["status"] == "Accepted", r.text

    async def events(self, charger_id: str, kind: str) -> list[str | None]:
        async with self.rt.engine.connect() as conn:
            rows = await conn.execute(
                select(ChargerEvent.status)
                .where(ChargerEvent.charger_id == charger_id, ChargerEvent.kind == kind)
                .order_by(ChargerEvent.id)
            )
        return [r.status for r in rows]

    async def state(self, job_id: int, state: str, timeout: float = 20) -> dict[str, Any]:
        job: dict[str, Any] = await until(
            lambda: self.job(job_id), lambda j: j["state"] == state, timeout=timeout
        )
        return job


def _tx(charger: SimulatedCharger, evse: int) -> str | int | None:
    txn = charger.transactions.get(evse)
    return None if txn is None else txn.transaction_id


def statuses(job: dict[str, Any]) -> list[str]:
    """The firmware statuses the job heard, oldest first."""
    return [
        e["detail"]["status"]
        for e in job["history"]
        if e["event"] not in ("answer",) and "status" in e["detail"] and "request_id" in e["detail"]
    ]


def _answers(job: dict[str, Any]) -> list[str]:
    return [e["detail"]["status"] for e in job["history"] if e["event"] == "answer"]


def boots(job: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (e["detail"]["firmware_version"], e["detail"]["reason"])
        for e in job["history"]
        if "firmware_version" in e["detail"]
    ]


def strict(fleets: list[Fleet]) -> None:
    """evota answered every CALL of every simulated charger, validly and without CALLERROR."""
    for fleet in fleets:
        for charger in fleet:
            s = charger.stats
            assert not s.callerrors and s.invalid_results == 0, (charger.identity, s.callerrors)


@pytest.fixture
async def bench(tmp_path: Path, sqlite_url: str, keys: Keys) -> AsyncIterator[Bench201]:
    async with running(Bench201, tmp_path, sqlite_url, keys) as b:
        yield b
        strict(b.fleets)


@pytest.fixture
async def impatient(tmp_path: Path, sqlite_url: str, keys: Keys) -> AsyncIterator[Bench201]:
    """An evota that gives up on an install after a second (so the charger is still busy)."""
    async with running(Bench201, tmp_path, sqlite_url, keys, job_install_timeout=1.0) as b:
        yield b
        strict(b.fleets)


# -- TC_L_01 and L02 ---------------------------------------------------------------------------


async def test_tc_l_01_installation_successful(bench: Bench201) -> None:
    fw = await upload(bench.api, bench.tmp_path, bench.keys, "2.0.0", size=64 * 1024)
    charger = await bench.charger201()
    job = await bench.finished(await bench.start(charger, fw["id"]))
    assert (job["state"], job["failure"], job["method"]) == ("succeeded", None, "signed")
    assert charger.firmware_version == "2.0.0"
    assert statuses(job) == [
        "Downloading",
        "Downloaded",
        "SignatureVerified",
        "Installing",
        "InstallRebooting",
        "Installed",
    ]
    assert boots(job) == [("2.0.0", "FirmwareUpdate")]
    # What the charger got: UpdateFirmware with the job id as requestId, signed.
    update = charger.firmware_agent.last_update if charger.firmware_agent else None
    assert update is not None and update.request_id == job["id"]
    assert update.signed and update.certificate == bench.keys.cert.decode()
    row = await bench.charger_row(charger.identity)
    assert row["firmware_version"] == "2.0.0"


async def test_l02_unsigned_update_where_the_vendor_allows_it(bench: Bench201) -> None:
    await allow_unsigned(bench.api)
    fw = await upload(bench.api, bench.tmp_path, None, "2.0.0", size=32 * 1024)
    charger = await bench.charger201()
    job = await bench.finished(await bench.start(charger, fw["id"]))
    assert (job["state"], job["method"]) == ("succeeded", "plain")
    assert "SignatureVerified" not in statuses(job) and "Installed" in statuses(job)
    update = charger.firmware_agent.last_update if charger.firmware_agent else None
    assert update is not None and update.request_id == job["id"]
    assert not update.signed and update.signature == update.certificate == ""
    assert charger.firmware_version == "2.0.0"


# -- scheduled phases --------------------------------------------------------------------------


async def test_tc_l_02_install_scheduled_until_the_session_ends(bench: Bench201) -> None:
    fw = await upload(bench.api, bench.tmp_path, bench.keys, "2.0.0", size=32 * 1024)
    charger = await bench.charger201()
    tx = await bench.session(charger)
    job_id = await bench.start(charger, fw["id"])
    await until(lambda: bench.job(job_id), lambda j: "InstallScheduled" in statuses(j))
    job = await bench.job(job_id)
    assert job["state"] == "signature_verified" and job["deadline"] is not None
    assert charger.firmware_version == "1.0.0" and "Installing" not in charger.firmware_history
    await bench.stop(charger, tx)
    job = await bench.finished(job_id)
    assert job["state"] == "succeeded" and charger.firmware_version == "2.0.0"
    assert statuses(job)[3:5] == ["InstallScheduled", "Installing"]


async def test_tc_l_03_download_scheduled_by_a_busy_charger(bench: Bench201) -> None:
    fw = await upload(bench.api, bench.tmp_path, bench.keys, "2.0.0", size=32 * 1024)
    charger = await bench.charger201(faults=FaultProfile(defer_download=1.0))
    tx = await bench.session(charger, evse=2)
    job_id = await bench.start(charger, fw["id"])
    job = await until(
        lambda: bench.job(job_id),
        lambda j: "DownloadScheduled" in statuses(j) and j["state"] != "sending",
    )
    assert job["state"] == "accepted" and job["bytes_served"] == 0
    await bench.stop(charger, tx)
    job = await bench.finished(job_id)
    assert job["state"] == "succeeded"
    assert statuses(job)[:2] == ["DownloadScheduled", "Downloading"]


async def test_tc_l_13_update_during_an_ongoing_transaction(bench: Bench201) -> None:
    """The transaction is not cut: idle EVSEs go Unavailable, the install waits for its end."""
    fw = await upload(bench.api, bench.tmp_path, bench.keys, "2.0.0", size=32 * 1024)
    charger = await bench.charger201()
    tx = await bench.session(charger, evse=1)
    job_id = await bench.start(charger, fw["id"])
    await until(lambda: bench.job(job_id), lambda j: "InstallScheduled" in statuses(j))

    def evse(row: dict[str, Any], n: int) -> str | None:
        return {c["connector_id"]: c["status"] for c in row.get("connectors", [])}.get(n)

    row = await until(
        lambda: bench.charger_row(charger.identity), lambda r: evse(r, 2) == "Unavailable"
    )
    assert evse(row, 1) == "Occupied"
    await bench.stop(charger, tx)
    job = await bench.finished(job_id)
    assert job["state"] == "succeeded"
    async with bench.rt.engine.connect() as conn:
        session = (
            await conn.execute(
                select(ChargingSession).where(ChargingSession.charger_id == charger.identity)
            )
        ).one()
    assert (session.external_id, session.outcome, session.stop_reason) == (
        tx,
        "completed",
        "Remote",
    )
    await until(lambda: bench.charger_row(charger.identity), lambda r: evse(r, 2) == "Available")


# -- refusals and failures ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "charger_kw", "answer"),
    [
        ("TC_L_04", {"faults": FaultProfile(certificate_status="revoked")}, "RevokedCertificate"),
        ("TC_L_05", {"roots": False}, "InvalidCertificate"),
    ],
)
async def test_tc_l_04_05_certificate_refusals_fail_the_job(
    bench: Bench201, case: str, charger_kw: dict[str, Any], answer: str
) -> None:
    fw = await upload(bench.api, bench.tmp_path, bench.keys, "2.0.0", size=16 * 1024)
    charger = await bench.charger201(**charger_kw)
    job = await bench.finished(await bench.start(charger, fw["id"]))
    assert (job["state"], job["failure"]) == ("failed", "invalid_signature"), case
    assert _answers(job) == [answer]
    assert job["bytes_served"] == 0 and charger.firmware_history == []
    await until(
        lambda: bench.events(charger.identity, "security_event"),
        lambda e: sorted(e) == ["InvalidFirmwareSigningCertificate", "StartupOfTheDevice"],
    )


@pytest.mark.parametrize(
    ("case", "faults", "failure", "last"),
    [
        ("TC_L_06", {"invalid_signature": 1.0}, "invalid_signature", "InvalidSignature"),
        ("TC_L_07", {"download_fails": 1.0}, "download_failed", "DownloadFailed"),
        (
            "TC_L_08",
            {"install_verification_fails": 1.0},
            "install_verification_failed",
            "InstallVerificationFailed",
        ),
        ("TC_L_09", {"install_fails": 1.0}, "installation_failed", "InstallationFailed"),
    ],
)
async def test_tc_l_06_to_09_failed_updates_fail_the_job_on_the_old_version(
    bench: Bench201, case: str, faults: dict[str, Any], failure: str, last: str
) -> None:
    fw = await upload(bench.api, bench.tmp_path, bench.keys, "2.0.0", size=16 * 1024)
    charger = await bench.charger201(faults=FaultProfile(**faults))
    job = await bench.finished(await bench.start(charger, fw["id"]))
    assert (job["state"], job["failure"]) == ("failed", failure), (case, job)
    assert statuses(job)[-1] == last
    assert charger.firmware_version == "1.0.0" and charger.stats.reboots == 0
    row = await bench.charger_row(charger.identity)
    assert row["firmware_version"] == "1.0.0"


# -- cancelling ----------------------------------------------------------------------------------


async def _busy_with_a_given_up_job(b: Bench201, charger: SimulatedCharger) -> tuple[int, str]:
    """Job A waits for a session to end (InstallScheduled); evota gives up on it (timed_out)
    while the charger still holds the update: the situation of TC_L_10/11."""
    first = await upload(b.api, b.tmp_path, b.keys, "2.0.0", size=16 * 1024)
    tx = await b.session(charger)
    job_a = await b.start(charger, first["id"])
    job = await b.state(job_a, "failed", timeout=15)
    assert job["failure"] == "timed_out" and "InstallScheduled" in statuses(job)
    assert charger.firmware_agent is not None and charger.firmware_agent.busy
    return job_a, tx


async def test_tc_l_10_accepted_canceled_replaces_the_running_update(impatient: Bench201) -> None:
    b = impatient
    charger = await b.charger201()
    job_a, tx = await _busy_with_a_given_up_job(b, charger)
    second = await upload(b.api, b.tmp_path, b.keys, "2.0.1", size=16 * 1024)
    job_b = await b.start(charger, second["id"])
    job = await until(lambda: b.job(job_b), lambda j: _answers(j) != [])
    assert _answers(job) == ["AcceptedCanceled"]
    assert job["state"] in ("accepted", "downloading", "downloaded", "signature_verified")
    await b.stop(charger, tx)
    job = await b.finished(job_b)
    assert job["state"] == "succeeded" and charger.firmware_version == "2.0.1"
    assert (await b.job(job_a))["state"] == "failed"  # A's late reports move nothing


async def test_tc_l_11_an_update_that_cannot_be_cancelled_rejects_the_new_one(
    impatient: Bench201,
) -> None:
    b = impatient
    charger = await b.charger201(faults=FaultProfile(refuse_cancel=1.0))
    _, tx = await _busy_with_a_given_up_job(b, charger)
    second = await upload(b.api, b.tmp_path, b.keys, "2.0.1", size=16 * 1024)
    job = await b.finished(await b.start(charger, second["id"]))
    assert (job["state"], job["failure"]) == ("failed", "rejected")
    # The charger goes on with the update it could not cancel once the session ends.
    await b.stop(charger, tx)
    await until(lambda: charger.firmware_version, lambda v: v == "2.0.0", timeout=10)
