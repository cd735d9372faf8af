"""OCPP 2.0.1 firmware updates on the simulated charger (L01 signed, L02 unsigned), every
status and answer the CSMS-side conformance cases TC_L_01 … TC_L_13 expect, and the faults.

The fake CSMS speaks 2.0.1 and validates everything; images come over real HTTP from the
Range-capable file server of the 1.6 firmware tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from evota.sim.charger import SimConfig, SimulatedCharger
from evota.sim.fleet import FaultProfile
from evota.sim.runner import wait_until

from . import test_sim_firmware as fw
from .conftest import FakeCsms, fast, spec
from .test_sim_firmware import FileServer, Keys, now

files, keys = fw.files, fw.keys  # the 1.6 firmware tests' file server and signing keys

V201 = "ocpp2.0.1"
BOOT_EVENTS = ("StartupOfTheDevice", "ResetOrReboot")  # every boot's: tested elsewhere


def config(**kw: Any) -> SimConfig:
    return fast(install_duration=5.0, download_retry_interval=6.0, **kw)


@asynccontextmanager
async def running(
    csms: FakeCsms, keys: Keys, *, cfg: SimConfig | None = None, **kw: Any
) -> AsyncIterator[SimulatedCharger]:
    kw.setdefault("firmware_version", "1.0.0")
    kw.setdefault("firmware_roots", (keys.root,))
    charger = SimulatedCharger(spec("CP-1", protocol=V201, **kw), csms.url, cfg or config())
    charger.start()
    try:
        await wait_until(lambda: charger.accepted and len(csms.payloads("StatusNotification")) >= 2)
        yield charger
    finally:
        await charger.stop()
    assert csms.invalid == [], csms.invalid
    assert charger.stats.invalid_results == 0


def timeline(csms: FakeCsms) -> list[str]:
    """Boots, firmware statuses (with request ids) and security events, in order."""
    out: list[str] = []
    for _, action, p in csms.received:
        if action == "BootNotification":
            out.append(f"boot {p['chargingStation']['firmwareVersion']} {p['reason']}")
        elif action == "FirmwareStatusNotification":
            out.append(f"{p['status']}#{p.get('requestId')}")
        elif action == "SecurityEventNotification" and p["type"] not in BOOT_EVENTS:
            out.append(f"event {p['type']}")
    return out


def update(
    location: str,
    request_id: int = 7,
    keys: Keys | None = None,
    *,
    cert: str | None = None,
    signature: str | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """UpdateFirmwareRequest: signed (L01) when ``keys`` are given, unsigned (L02) if not."""
    firmware: dict[str, Any] = {"location": location, "retrieveDateTime": kw.pop("retrieve", now())}
    if keys is not None:
        firmware["signingCertificate"] = cert or keys.cert
        firmware["signature"] = signature or keys.signature
    if "install" in kw:
        firmware["installDateTime"] = kw.pop("install")
    return {"requestId": request_id, "firmware": firmware, **kw}


async def answer(csms: FakeCsms, payload: dict[str, Any]) -> Any:
    result = await csms.call("CP-1", "UpdateFirmware", payload)
    return result.payload


BOOT = "boot 1.0.0 PowerUp"
HAPPY_L01 = [
    BOOT,
    "Downloading#7",
    "Downloaded#7",
    "SignatureVerified#7",
    "Installing#7",
    "InstallRebooting#7",
    "boot 2.0.0 FirmwareUpdate",
    "Installed#7",
    "event FirmwareUpdated",
]


async def test_l01_signed_update_installs_and_reboots_with_reason_firmware_update(
    csms201: FakeCsms, files: FileServer, keys: Keys
) -> None:
    """TC_L_01: installation successful."""
    async with running(csms201, keys) as c:
        assert await answer(csms201, update(files.url("/fw.bin"), keys=keys)) == {
            "status": "Accepted"
        }
        await wait_until(lambda: "event FirmwareUpdated" in timeline(csms201), 5)
        assert c.firmware_version == "2.0.0" and c.stats.reboots == 1
    assert timeline(csms201) == HAPPY_L01


async def test_l02_unsigned_update_skips_the_signature(
    csms201: FakeCsms, files: FileServer, keys: Keys
) -> None:
    async with running(csms201, keys) as c:
        assert await answer(csms201, update(files.url("/fw.bin"))) == {"status": "Accepted"}
        await wait_until(lambda: "event FirmwareUpdated" in timeline(csms201), 5)
        assert c.firmware_version == "2.0.0"
    assert timeline(csms201) == [s for s in HAPPY_L01 if not s.startswith("SignatureVerified")]


@pytest.mark.parametrize(("capability", "signed"), [("signed", False), ("plain", True)])
async def test_a_charger_refuses_the_kind_of_update_it_does_not_take(
    csms201: FakeCsms, files: FileServer, keys: Keys, capability: str, signed: bool
) -> None:
    async with running(csms201, keys, firmware_update=capability) as c:
        payload = update(files.url("/fw.bin"), keys=keys if signed else None)
        assert await answer(csms201, payload) == {"status": "Rejected"}
        await asyncio.sleep(0.1)
    assert c.firmware_history == [] and files.requests == []


async def test_download_scheduled_until_the_retrieve_time(
    csms201: FakeCsms, files: FileServer, keys: Keys
) -> None:
    """TC_L_03: DownloadScheduled."""
    async with running(csms201, keys) as c:
        payload = update(files.url("/fw.bin"), keys=keys, retrieve=now(1.5))
        assert await answer(csms201, payload) == {"status": "Accepted"}
        await wait_until(lambda: c.firmware_history == ["DownloadScheduled"], 1)
        await asyncio.sleep(0.5)
        assert files.requests == []
        await wait_until(lambda: c.firmware_state == "Installed", 5)
    assert timeline(csms201)[:3] == [BOOT, "DownloadScheduled#7", "Downloading#7"]


async def test_install_scheduled_until_the_install_time(
    csms201: FakeCsms, files: FileServer, keys: Keys
) -> None:
    """TC_L_02: InstallScheduled."""
    async with running(csms201, keys) as c:
        payload = update(files.url("/fw.bin"), keys=keys, install=now(1.0))
        assert await answer(csms201, payload) == {"status": "Accepted"}
        await wait_until(lambda: c.firmware_state == "InstallScheduled", 3)
        await asyncio.sleep(0.3)
        assert c.firmware_state == "InstallScheduled"
        await wait_until(lambda: c.firmware_state == "Installed", 5)
    assert timeline(csms201)[4:6] == ["InstallScheduled#7", "Installing#7"]


@pytest.mark.parametrize("allow_sessions", [False, True])
async def test_an_update_during_a_transaction_waits_for_its_end(
    csms201: FakeCsms, files: FileServer, keys: Keys, allow_sessions: bool
) -> None:
    """TC_L_13: update during an ongoing transaction (InstallScheduled, idle EVSEs held
    Unavailable unless AllowNewSessionsPendingFirmwareUpdate)."""
    async with running(csms201, keys) as c:
        if allow_sessions:
            item = {
                "component": {"name": "ChargingStation"},
                "variable": {"name": "AllowNewSessionsPendingFirmwareUpdate"},
                "attributeValue": "true",
            }
            await csms201.call("CP-1", "SetVariables", {"setVariableData": [item]})
        c.begin_session(1, "T", duration=10**9)
        await wait_until(lambda: c.transactions.get(1) and c.transactions[1].transaction_id, 3)
        assert await answer(csms201, update(files.url("/fw.bin"), keys=keys)) == {
            "status": "Accepted"
        }
        await wait_until(lambda: c.firmware_state == "InstallScheduled", 3)
        await asyncio.sleep(0.2)
        evse2 = [
            p["connectorStatus"] for p in csms201.payloads("StatusNotification") if p["evseId"] == 2
        ]
        assert evse2[-1] == ("Available" if allow_sessions else "Unavailable")
        assert "Installing" not in c.firmware_history
        tx = c.transactions[1].transaction_id
        await csms201.call("CP-1", "RequestStopTransaction", {"transactionId": tx})
        await wait_until(lambda: c.firmware_state == "Installed", 5)
    assert timeline(csms201)[4:6] == ["InstallScheduled#7", "Installing#7"]
    ended = csms201.payloads("TransactionEvent")[-1]
    assert ended["transactionInfo"]["stoppedReason"] == "Remote"  # not cut by the install


@pytest.mark.parametrize(
    ("fault", "status"),
    [("revoked", "RevokedCertificate"), ("invalid", "InvalidCertificate"), (None, "stranger")],
)
async def test_untrusted_or_revoked_certificates_are_refused(
    csms201: FakeCsms, files: FileServer, keys: Keys, fault: str | None, status: str
) -> None:
    """TC_L_04 RevokedCertificate, TC_L_05 InvalidCertificate."""
    profile = FaultProfile(certificate_status=fault)
    async with running(csms201, keys, faults=profile) as c:
        cert = keys.stranger_cert if fault is None else None
        reply = await answer(csms201, update(files.url("/fw.bin"), keys=keys, cert=cert))
        await wait_until(lambda: len(timeline(csms201)) == 2, 3)
    expected = "InvalidCertificate" if fault is None else status
    assert reply == {"status": expected}
    assert timeline(csms201) == [BOOT, "event InvalidFirmwareSigningCertificate"]
    assert c.firmware_history == [] and files.requests == []


async def test_a_bad_signature_is_found_after_the_download(
    csms201: FakeCsms, files: FileServer, keys: Keys
) -> None:
    """TC_L_06: InvalidSignature."""
    async with running(csms201, keys) as c:
        payload = update(files.url("/fw.bin"), keys=keys, signature=keys.signature_other)
        assert await answer(csms201, payload) == {"status": "Accepted"}
        await wait_until(lambda: "event InvalidFirmwareSignature" in timeline(csms201), 5)
        assert c.firmware_version == "1.0.0"
    assert timeline(csms201) == [
        BOOT,
        "Downloading#7",
        "Downloaded#7",
        "InvalidSignature#7",
        "event InvalidFirmwareSignature",
    ]


@pytest.mark.parametrize(
    ("faults", "location", "tail"),
    [
        ({}, "/missing.bin", ["Downloading#7", "DownloadFailed#7"]),  # TC_L_07
        (
            {"install_verification_fails": 1.0},  # TC_L_08
            "/fw.bin",
            ["Downloading#7", "Downloaded#7", "SignatureVerified#7", "InstallVerificationFailed#7"],
        ),
        (
            {"install_fails": 1.0},  # TC_L_09
            "/fw.bin",
            [
                "Downloading#7",
                "Downloaded#7",
                "SignatureVerified#7",
                "Installing#7",
                "InstallationFailed#7",
            ],
        ),
    ],
)
async def test_failures_end_the_update_on_the_old_version(
    csms201: FakeCsms,
    files: FileServer,
    keys: Keys,
    faults: dict[str, Any],
    location: str,
    tail: list[str],
) -> None:
    """TC_L_07 DownloadFailed, TC_L_08 InstallVerificationFailed, TC_L_09 InstallationFailed."""
    async with running(csms201, keys, faults=FaultProfile(**faults)) as c:
        assert await answer(csms201, update(files.url(location), keys=keys)) == {
            "status": "Accepted"
        }
        await wait_until(lambda: timeline(csms201)[-1:] == tail[-1:], 5)
        await asyncio.sleep(0.1)
        assert c.firmware_version == "1.0.0" and c.stats.reboots == 0
    assert timeline(csms201) == [BOOT, *tail]


async def test_a_second_update_cancels_the_first(
    csms201: FakeCsms, files: FileServer, keys: Keys
) -> None:
    """TC_L_10: AcceptedCanceled."""
    async with running(csms201, keys) as c:
        first = update(files.url("/fw.bin"), 1, keys, retrieve=now(30))
        assert await answer(csms201, first) == {"status": "Accepted"}
        # the CSMS has the first update's status (the charger notes it before sending it, and
        # the second update cancels a notification still in flight)
        await wait_until(lambda: "DownloadScheduled#1" in timeline(csms201), 3)
        second = update(files.url("/fw.bin"), 2, keys)
        assert await answer(csms201, second) == {"status": "AcceptedCanceled"}
        await wait_until(lambda: "event FirmwareUpdated" in timeline(csms201), 5)
        assert c.firmware_version == "2.0.0"
    assert timeline(csms201)[:3] == [BOOT, "DownloadScheduled#1", "Downloading#2"]
    assert [s for s in timeline(csms201) if s.endswith("#1")] == ["DownloadScheduled#1"]


@pytest.mark.parametrize("why", ["refuse_cancel", "installing"])
async def test_an_update_that_cannot_be_cancelled_goes_on(
    csms201: FakeCsms, files: FileServer, keys: Keys, why: str
) -> None:
    """TC_L_11: unable to cancel (the fault, or an install already running)."""
    faults = FaultProfile(refuse_cancel=1.0 if why == "refuse_cancel" else 0.0)
    cfg = config() if why == "refuse_cancel" else fast(install_duration=3000.0)  # 0.5 s
    async with running(csms201, keys, faults=faults, cfg=cfg) as c:
        later = 1.5 if why == "refuse_cancel" else 0.0
        first = update(files.url("/fw.bin"), 1, keys, retrieve=now(later))
        assert await answer(csms201, first) == {"status": "Accepted"}
        if why == "installing":
            await wait_until(lambda: c.firmware_state == "Installing", 3)
        else:
            await wait_until(lambda: c.firmware_state == "DownloadScheduled", 3)
        second = update(files.url("/fw.bin"), 2, keys)
        reply = await answer(csms201, second)
        assert reply["status"] == "Rejected"
        await wait_until(lambda: "event FirmwareUpdated" in timeline(csms201), 5)
    assert "Installed#1" in timeline(csms201)
    assert [s for s in timeline(csms201) if s.endswith("#2")] == []


async def test_power_loss_boots_the_old_version_with_reason_power_up(
    csms201: FakeCsms, files: FileServer, keys: Keys
) -> None:
    async with running(csms201, keys, faults=FaultProfile(power_loss=1.0)) as c:
        await answer(csms201, update(files.url("/fw.bin"), keys=keys))
        await wait_until(lambda: c.stats.boots_accepted == 2 and c.accepted, 5)
        assert c.firmware_version == "1.0.0"
    assert timeline(csms201)[-2:] == ["Installing#7", "boot 1.0.0 PowerUp"]


async def test_a_link_drop_resumes_the_download_without_a_boot(
    csms201: FakeCsms, files: FileServer, keys: Keys
) -> None:
    async with running(csms201, keys, faults=FaultProfile(link_drop=1.0)) as c:
        await answer(csms201, update(files.url("/fw.bin"), keys=keys))
        await wait_until(lambda: c.firmware_state == "Installed", 5)
        assert c.stats.connects == 3  # the first, after the drop, after the install's reboot
        assert c.firmware_agent is not None and c.firmware_agent.last_download is not None
        assert c.firmware_agent.last_download.resumed == 1
    boots = [s for s in timeline(csms201) if s.startswith("boot")]
    assert boots == [BOOT, "boot 2.0.0 FirmwareUpdate"]  # the reconnect was not a reboot
    assert len(files.requests) == 2 and files.requests[1][1] is not None  # a Range request


async def test_trigger_reports_the_running_update_with_its_request_id(
    csms201: FakeCsms, files: FileServer, keys: Keys
) -> None:
    async with running(csms201, keys) as c:
        await answer(csms201, update(files.url("/fw.bin"), 9, keys, retrieve=now(30)))
        await wait_until(lambda: c.firmware_state == "DownloadScheduled", 3)
        trigger = {"requestedMessage": "FirmwareStatusNotification"}
        await csms201.call("CP-1", "TriggerMessage", trigger)
        await wait_until(lambda: len(csms201.payloads("FirmwareStatusNotification")) == 2, 3)
    assert csms201.payloads("FirmwareStatusNotification")[-1] == {
        "status": "DownloadScheduled",
        "requestId": 9,
    }


async def test_defer_download_waits_for_the_sessions_to_end(
    csms201: FakeCsms, files: FileServer, keys: Keys
) -> None:
    """The DownloadScheduled of TC_L_03 when the CSMS sends no future retrieve time."""
    async with running(csms201, keys, faults=FaultProfile(defer_download=1.0)) as c:
        c.begin_session(2, "T", duration=10**9)
        await wait_until(lambda: c.transactions.get(2) and c.transactions[2].transaction_id, 3)
        assert await answer(csms201, update(files.url("/fw.bin"), keys=keys)) == {
            "status": "Accepted"
        }
        await wait_until(lambda: c.firmware_state == "DownloadScheduled", 3)
        await asyncio.sleep(0.2)
        assert files.requests == []
        tx = c.transactions[2].transaction_id
        await csms201.call("CP-1", "RequestStopTransaction", {"transactionId": tx})
        await wait_until(lambda: c.firmware_state == "Installed", 5)
    assert timeline(csms201)[1:3] == ["DownloadScheduled#7", "Downloading#7"]
    assert "InstallScheduled#7" not in timeline(csms201)  # the session was over by then
