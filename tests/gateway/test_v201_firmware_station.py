"""Firmware updates to a strict 2.0.1 station: L01 signed, L02 unsigned, refusals and cancels."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ocpp.v201 import call

from tests.conftest import Keys
from tests.gateway.v201_station import MODEL, Station, boot_call, now, station
from tests.support import until
from tests.test_firmware_update import Bench, allow_unsigned, events, running, statuses, upload

# -- firmware: L01 signed, L02 unsigned --------------------------------------------------------


@pytest.fixture
async def fw_bench(tmp_path: Path, sqlite_url: str, keys: Keys) -> AsyncIterator[Bench]:
    async with running(Bench, tmp_path, sqlite_url, keys) as b:
        yield b


async def _start_update(b: Bench, cp: Station, fw: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    await b.rt.fleet.writer.flush()  # the boot's vendor and model, which the update checks
    r = await b.update(cp.id, fw["id"])
    assert r.status_code == 202, r.text
    job_id = int(r.json()["job_id"])
    (sent,) = await until(lambda: cp.calls("UpdateFirmware"))
    assert sent["requestId"] == job_id
    return job_id, sent


async def test_signed_update_l01_walks_to_succeeded(fw_bench: Bench) -> None:
    b = fw_bench
    fw = await upload(b.api, b.tmp_path, b.keys, "2.0.0", models=(MODEL,))
    async with station(b.rt, "V201-FW") as cp:
        job_id, sent = await _start_update(b, cp, fw)
        firmware = sent["firmware"]
        assert firmware["signature"] == fw["signature"]
        assert firmware["signingCertificate"] == b.keys.cert.decode()
        assert firmware["location"].startswith("http") and "retrieveDateTime" in firmware
        for status in (
            "Downloading",
            "Downloaded",
            "SignatureVerified",
            "Installing",
            "InstallRebooting",
        ):
            await cp.call(call.FirmwareStatusNotification(status=status, request_id=job_id))
    async with station(b.rt, "V201-FW", boot=False, provisioned=True) as cp:
        await cp.call(boot_call("2.0.0", reason="FirmwareUpdate"))
        await cp.call(call.FirmwareStatusNotification(status="Installed", request_id=job_id))
        await cp.call(call.SecurityEventNotification(type="FirmwareUpdated", timestamp=now()))
        job = await b.finished(job_id)
    assert job["state"] == "succeeded", job
    assert job["method"] == "signed"
    assert statuses(job) == [
        "Downloading",
        "Downloaded",
        "SignatureVerified",
        "Installing",
        "InstallRebooting",
        "Installed",
    ]
    boot = events(job, "boot")[-1]["detail"]
    assert boot == {"firmware_version": "2.0.0", "reason": "FirmwareUpdate"}
    assert (await b.charger_row("V201-FW"))["firmware_version"] == "2.0.0"


async def test_unsigned_update_l02_has_no_signature_and_no_fallback(fw_bench: Bench) -> None:
    b = fw_bench
    await allow_unsigned(b.api)
    fw = await upload(b.api, b.tmp_path, None, "2.1.0", models=(MODEL,))
    async with station(b.rt, "V201-L02") as cp:
        cp.answers["UpdateFirmware"] = {"status": "Accepted"}
        job_id, sent = await _start_update(b, cp, fw)
        assert "signature" not in sent["firmware"] and "signingCertificate" not in sent["firmware"]
        await cp.call(call.FirmwareStatusNotification(status="DownloadFailed", request_id=job_id))
        job = await b.finished(job_id)
    assert (job["state"], job["failure"], job["method"]) == ("failed", "download_failed", "plain")
    assert events(job, "sent")[0]["detail"]["action"] == "UpdateFirmware"


@pytest.mark.parametrize(
    ("statuses_sent", "failure"),
    [
        (["DownloadFailed"], "download_failed"),  # TC_L_07
        (["Downloading", "Downloaded", "InvalidSignature"], "invalid_signature"),  # TC_L_06
        (
            ["Downloaded", "SignatureVerified", "InstallVerificationFailed"],
            "install_verification_failed",
        ),
        (
            ["Downloaded", "SignatureVerified", "Installing", "InstallationFailed"],
            "installation_failed",
        ),
    ],
    ids=["DownloadFailed", "InvalidSignature", "InstallVerificationFailed", "InstallationFailed"],
)
async def test_failure_statuses_fail_the_job(fw_bench: Bench, statuses_sent, failure) -> None:
    b = fw_bench
    fw = await upload(b.api, b.tmp_path, b.keys, "2.0.0", models=(MODEL,))
    async with station(b.rt, "V201-FAIL") as cp:
        job_id, _ = await _start_update(b, cp, fw)
        for status in statuses_sent:
            await cp.call(call.FirmwareStatusNotification(status=status, request_id=job_id))
        job = await b.finished(job_id)
    assert (job["state"], job["failure"]) == ("failed", failure), job


@pytest.mark.parametrize(
    ("answer", "failure", "detail"),
    [
        ("InvalidCertificate", "invalid_signature", "certificate"),  # TC_L_05
        ("RevokedCertificate", "invalid_signature", "revoked"),  # TC_L_04
        ("Rejected", "rejected", "cancel"),  # TC_L_11: cannot cancel the running update
    ],
)
async def test_refusing_answers_fail_the_job(fw_bench: Bench, answer, failure, detail) -> None:
    b = fw_bench
    fw = await upload(b.api, b.tmp_path, b.keys, "2.0.0", models=(MODEL,))
    async with station(b.rt, "V201-NO") as cp:
        cp.answers["UpdateFirmware"] = {"status": answer}
        job_id, _ = await _start_update(b, cp, fw)
        job = await b.finished(job_id)
    assert (job["state"], job["failure"]) == ("failed", failure), job
    assert detail in job["detail"]


async def test_not_supported_answer_is_final_on_201(fw_bench: Bench) -> None:
    """A 1.6 charger's NotSupported makes evota switch signed <-> plain; a 2.0.1 charger has
    one UpdateFirmware for both, so there it is a refusal, and nothing is learned."""
    b = fw_bench
    fw = await upload(b.api, b.tmp_path, b.keys, "2.0.0", models=(MODEL,))
    async with station(b.rt, "V201-NS") as cp:

        def refuse(payload: dict[str, Any]) -> dict[str, Any]:
            raise NotImplementedError("no firmware updates here")  # the ocpp package's CALLERROR

        cp.answers["UpdateFirmware"] = refuse
        job_id, _ = await _start_update(b, cp, fw)
        job = await b.finished(job_id)
    assert (job["state"], job["failure"], job["method"]) == ("failed", "rejected", "signed")
    assert len(events(job, "sent")) == 1
    assert (await b.charger_row("V201-NS")).get("firmware_delivery") is None


async def test_accepted_canceled_replaces_the_running_update(fw_bench: Bench) -> None:
    """TC_L_10: an update evota gave up on is still running on the charger; the next one is
    answered AcceptedCanceled and proceeds; reports for the old request are ignored."""
    b = fw_bench
    fw = await upload(b.api, b.tmp_path, b.keys, "2.0.0", models=(MODEL,))
    async with station(b.rt, "V201-AC") as cp:
        old_id, _ = await _start_update(b, cp, fw)
        await until(lambda: b.job(old_id), lambda j: j["state"] == "accepted")
        # The charger holds it: 2.0.1 has no way to recall it, so evota does not pretend to.
        assert (await b.api.post(f"/api/v1/jobs/{old_id}/cancel", json={})).status_code == 409
        await cp.call(call.FirmwareStatusNotification(status="DownloadFailed", request_id=old_id))
        assert (await b.finished(old_id))["failure"] == "download_failed"
        cp.received.clear()
        cp.answers["UpdateFirmware"] = {"status": "AcceptedCanceled"}
        job_id, _ = await _start_update(b, cp, fw)
        await cp.call(call.FirmwareStatusNotification(status="Installing", request_id=old_id))
        await cp.call(call.FirmwareStatusNotification(status="Downloading", request_id=job_id))
        # The answer and the report travel separately (either may be applied first): wait
        # for both to have been applied.
        await until(
            lambda: b.job(job_id),
            lambda j: (
                j["state"] == "downloading"
                and "cancelled the update it had in progress" in (j["detail"] or "")
            ),
        )
