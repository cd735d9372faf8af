"""Firmware updates on the simulated charger: plain 1.6, signed (Security Whitepaper), faults.

The charger talks to the throwaway CSMS from conftest and downloads real bytes from a tiny
HTTP server with Range support running in a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from evota.firmware.signing import generate_ca, generate_signing_key, sign_file
from evota.ocpp import rpc
from evota.sim.charger import SimConfig, SimulatedCharger
from evota.sim.cli import _fleet_spec, sim_command
from evota.sim.firmware import derived_version, image_version
from evota.sim.fleet import (
    FaultProfile,
    FleetError,
    FleetFileError,
    dump_fleet,
    fleet_from_flags,
    load_fleet,
    parse_fleet,
)
from evota.sim.runner import wait_until

from .conftest import FakeCsms, fast, spec

IMAGE = b"EVOTA-SIM-FIRMWARE 2.0.0\n" + os.urandom(40_000)
OTHER = os.urandom(1000)  # an image without a header


# -- a tiny HTTP server with Range support --------------------------------------------------


@dataclass
class FileServer:
    files: dict[str, bytes]
    honour_range: bool = True
    requests: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def etag(self, path: str) -> str:
        return '"' + hashlib.sha256(self.files[path]).hexdigest()[:16] + '"'


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer({"/fw.bin": IMAGE, "/other.bin": OTHER})

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            wanted = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            server.requests.append((self.path, wanted, if_range))
            body = server.files.get(self.path)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            etag = server.etag(self.path)
            start = 0
            if wanted and server.honour_range and if_range in (None, etag):
                start = int(wanted.removeprefix("bytes=").split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            with suppress(OSError):  # the charger hung up mid-download (link drop)
                self.wfile.write(body[start:])

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    server.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield server
    httpd.shutdown()
    httpd.server_close()


# -- keys, certificates, signatures -------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    root: str  # the manufacturer root the charger trusts
    other_root: str  # a root it does not trust
    cert: str  # signing certificate issued by root
    stranger_cert: str  # signing certificate issued by other_root
    signature: str  # of IMAGE
    signature_other: str  # of OTHER


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    ca_key, ca_cert = generate_ca("Acme Firmware Root", "Acme")
    key, cert = generate_signing_key("Acme Firmware", "Acme", ca_key=ca_key, ca_cert=ca_cert)
    other_key, other_cert = generate_ca("Evil Root", "Evil")
    _, stranger = generate_signing_key("Evil FW", "Evil", ca_key=other_key, ca_cert=other_cert)
    tmp = tmp_path_factory.mktemp("fw")
    (tmp / "fw.bin").write_bytes(IMAGE)
    (tmp / "other.bin").write_bytes(OTHER)
    return Keys(
        root=ca_cert.decode(),
        other_root=other_cert.decode(),
        cert=cert.decode(),
        stranger_cert=stranger.decode(),
        signature=sign_file(tmp / "fw.bin", key),
        signature_other=sign_file(tmp / "other.bin", key),
    )


# -- helpers ------------------------------------------------------------------------------------


def now(offset: float = 0.0) -> str:
    when = datetime.now(UTC) + timedelta(seconds=offset)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def config(**kw: Any) -> SimConfig:
    return fast(install_duration=5.0, download_retry_interval=6.0, **kw)


@asynccontextmanager
async def running(
    csms: FakeCsms, *, cfg: SimConfig | None = None, **kw: Any
) -> AsyncIterator[SimulatedCharger]:
    kw.setdefault("firmware_version", "1.0.0")
    charger = SimulatedCharger(spec("CP-1", **kw), csms.url, cfg or config())
    charger.start()
    try:
        await wait_until(lambda: charger.accepted and len(csms.payloads("StatusNotification")) >= 3)
        yield charger
    finally:
        await charger.stop()
    assert csms.invalid == []


def timeline(csms: FakeCsms) -> list[str]:
    """Boots, firmware statuses and security events as the CSMS received them."""
    out: list[str] = []
    for _, action, p in csms.received:
        if action == "BootNotification":
            out.append(f"boot {p['firmwareVersion']}")
        elif action in ("FirmwareStatusNotification", "SignedFirmwareStatusNotification"):
            out.append(p["status"])
        elif action == "SecurityEventNotification":
            out.append(f"event {p['type']}")
    return out


def plain(location: str, **kw: Any) -> dict[str, Any]:
    return {"location": location, "retrieveDate": now(), **kw}


def signed(
    keys: Keys,
    location: str,
    request_id: int = 7,
    *,
    cert: str | None = None,
    signature: str | None = None,
    **kw: Any,
) -> dict[str, Any]:
    firmware = {
        "location": location,
        "retrieveDateTime": kw.pop("retrieve", now()),
        "signingCertificate": cert or keys.cert,
        "signature": signature or keys.signature,
    }
    if "install" in kw:
        firmware["installDateTime"] = kw.pop("install")
    return {"requestId": request_id, "firmware": firmware, **kw}


async def answer(csms: FakeCsms, action: str, payload: dict[str, Any]) -> Any:
    result = await csms.call("CP-1", action, payload)
    if isinstance(result, rpc.CallError):
        return result.code
    return result.payload


async def settle(seconds: float = 0.3) -> None:
    await asyncio.sleep(seconds)


# -- plain 1.6 --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["both", "plain"])
async def test_plain_update_downloads_installs_reboots_into_the_new_version(
    csms: FakeCsms, files: FileServer, mode: str
) -> None:
    async with running(csms, firmware_update=mode) as c:
        assert await answer(csms, "UpdateFirmware", plain(files.url("/fw.bin"))) == {}
        await wait_until(lambda: c.firmware_state == "Installed", 5)
        await wait_until(lambda: "event FirmwareUpdated" in timeline(csms) or mode == "plain")
        assert c.firmware_version == "2.0.0"
        assert c.accepted and c.stats.reboots == 1
    expected = ["boot 1.0.0", "Downloading", "Downloaded", "Installing", "boot 2.0.0", "Installed"]
    if mode == "both":  # a charger with the security extension also reports the event
        expected.append("event FirmwareUpdated")
    assert timeline(csms) == expected
    assert c.firmware_history == ["Downloading", "Downloaded", "Installing", "Installed"]
    assert all(set(p) == {"status"} for p in csms.payloads("FirmwareStatusNotification"))
    assert c.firmware_agent is not None and c.firmware_agent.last_download is not None
    assert c.firmware_agent.last_download.sha256 == hashlib.sha256(IMAGE).digest()


async def test_an_image_without_header_gets_a_version_derived_from_its_hash(
    csms: FakeCsms, files: FileServer
) -> None:
    async with running(csms) as c:
        await answer(csms, "UpdateFirmware", plain(files.url("/other.bin")))
        await wait_until(lambda: c.firmware_state == "Installed", 5)
    digest = hashlib.sha256(OTHER).digest()
    assert c.firmware_version == f"1.0.0+{digest.hex()[:8]}" == derived_version("1.0.0", digest)
    assert image_version(b"EVOTA-SIM-FIRMWARE 3.1\r\nxyz") == "3.1"
    assert image_version(b"EVOTA-SIM-FIRMWARE no newline") is None
    assert derived_version("v" * 50, digest) == "v" * 41 + "+" + digest.hex()[:8]


async def test_the_download_waits_for_the_retrieve_date_in_real_time(
    csms: FakeCsms, files: FileServer
) -> None:
    async with running(csms) as c:
        start = time.monotonic()
        await answer(csms, "UpdateFirmware", plain(files.url("/fw.bin"), retrieveDate=now(0.4)))
        await wait_until(lambda: "Downloading" in c.firmware_history, 3)
        assert time.monotonic() - start >= 0.3  # not divided by the speed of 6000


async def test_a_missing_image_fails_after_the_retries(csms: FakeCsms, files: FileServer) -> None:
    async with running(csms) as c:
        payload = plain(files.url("/missing.bin"), retries=2, retryInterval=6)
        await answer(csms, "UpdateFirmware", payload)
        await wait_until(lambda: c.firmware_state == "DownloadFailed", 5)
        await settle(0.1)
    assert timeline(csms) == ["boot 1.0.0", "Downloading", "DownloadFailed"]
    assert [r[0] for r in files.requests] == ["/missing.bin"] * 3  # 1 attempt + 2 retries
    assert c.firmware_version == "1.0.0"


async def test_the_download_fails_fault_fails_every_attempt(
    csms: FakeCsms, files: FileServer
) -> None:
    async with running(csms, faults=FaultProfile(download_fails=1.0)) as c:
        await answer(csms, "UpdateFirmware", plain(files.url("/fw.bin"), retries=1))
        await wait_until(lambda: c.firmware_state == "DownloadFailed", 5)
    assert files.requests == []


async def test_a_signed_only_charger_answers_plain_update_with_not_supported(
    csms: FakeCsms, files: FileServer
) -> None:
    async with running(csms, firmware_update="signed") as c:
        code = await answer(csms, "UpdateFirmware", plain(files.url("/fw.bin")))
        await settle(0.1)
    assert code == "NotSupported"
    assert c.firmware_history == [] and files.requests == []


# -- signed (Security Whitepaper) -------------------------------------------------------------


async def test_signed_update_verifies_the_signature_and_reports_every_step(
    csms: FakeCsms, files: FileServer, keys: Keys
) -> None:
    async with running(csms, firmware_update="signed", firmware_roots=(keys.root,)) as c:
        reply = await answer(csms, "SignedUpdateFirmware", signed(keys, files.url("/fw.bin")))
        assert reply == {"status": "Accepted"}
        await wait_until(lambda: "event FirmwareUpdated" in timeline(csms), 5)
    assert timeline(csms) == [
        "boot 1.0.0",
        "Downloading",
        "Downloaded",
        "SignatureVerified",
        "Installing",
        "InstallRebooting",
        "boot 2.0.0",
        "Installed",
        "event FirmwareUpdated",
    ]
    assert {p["requestId"] for p in csms.payloads("SignedFirmwareStatusNotification")} == {7}
    assert csms.payloads("FirmwareStatusNotification") == []
    assert c.firmware_version == "2.0.0" and c.firmware_state == "Installed"


@pytest.mark.parametrize("roots", ["other", "none"])
async def test_an_untrusted_certificate_is_refused(
    csms: FakeCsms, files: FileServer, keys: Keys, roots: str
) -> None:
    trusted = (keys.other_root,) if roots == "other" else ()
    async with running(csms, firmware_roots=trusted) as c:
        reply = await answer(csms, "SignedUpdateFirmware", signed(keys, files.url("/fw.bin")))
        await wait_until(lambda: "event InvalidFirmwareSigningCertificate" in timeline(csms))
    assert reply == {"status": "InvalidCertificate"}
    assert timeline(csms) == ["boot 1.0.0", "event InvalidFirmwareSigningCertificate"]
    assert c.firmware_history == [] and files.requests == []


async def test_a_certificate_from_another_root_is_invalid(
    csms: FakeCsms, files: FileServer, keys: Keys
) -> None:
    async with running(csms, firmware_roots=(keys.root,)):
        payload = signed(keys, files.url("/fw.bin"), cert=keys.stranger_cert)
        assert await answer(csms, "SignedUpdateFirmware", payload) == {
            "status": "InvalidCertificate"
        }


@pytest.mark.parametrize("how", ["wrong signature", "fault"])
async def test_an_invalid_signature_stops_the_update(
    csms: FakeCsms, files: FileServer, keys: Keys, how: str
) -> None:
    faults = FaultProfile(invalid_signature=1.0 if how == "fault" else 0.0)
    async with running(csms, firmware_roots=(keys.root,), faults=faults) as c:
        bad = keys.signature_other if how == "wrong signature" else None
        payload = signed(keys, files.url("/fw.bin"), signature=bad)
        assert await answer(csms, "SignedUpdateFirmware", payload) == {"status": "Accepted"}
        await wait_until(lambda: "event InvalidFirmwareSignature" in timeline(csms), 5)
        await settle(0.1)
    assert timeline(csms) == [
        "boot 1.0.0",
        "Downloading",
        "Downloaded",
        "InvalidSignature",
        "event InvalidFirmwareSignature",
    ]
    assert c.firmware_version == "1.0.0" and c.stats.reboots == 0


async def test_a_plain_only_charger_does_not_know_signed_update(
    csms: FakeCsms, files: FileServer, keys: Keys
) -> None:
    async with running(csms, firmware_update="plain", firmware_roots=(keys.root,)):
        code = await answer(csms, "SignedUpdateFirmware", signed(keys, files.url("/fw.bin")))
    assert code == "NotImplemented"


async def test_a_new_request_cancels_the_running_one(
    csms: FakeCsms, files: FileServer, keys: Keys
) -> None:
    async with running(csms, firmware_roots=(keys.root,)) as c:
        first = signed(keys, files.url("/fw.bin"), 1, retrieve=now(30))
        assert await answer(csms, "SignedUpdateFirmware", first) == {"status": "Accepted"}
        second = signed(keys, files.url("/fw.bin"), 2)
        reply = await answer(csms, "SignedUpdateFirmware", second)
        assert reply == {"status": "AcceptedCanceled"}
        await wait_until(lambda: c.firmware_state == "Installed", 5)
    assert {p["requestId"] for p in csms.payloads("SignedFirmwareStatusNotification")} == {2}


async def test_install_waits_for_the_install_date(
    csms: FakeCsms, files: FileServer, keys: Keys
) -> None:
    async with running(csms, firmware_roots=(keys.root,)) as c:
        install_at = datetime.now(UTC) + timedelta(seconds=0.8)
        payload = signed(keys, files.url("/fw.bin"), install=install_at.isoformat())
        await answer(csms, "SignedUpdateFirmware", payload)
        await wait_until(lambda: "Installing" in c.firmware_history, 5, poll=0.005)
        assert datetime.now(UTC) >= install_at
        # the CSMS reads the notification a moment after the charger records it
        await wait_until(lambda: "Installing" in timeline(csms), 3)
    assert timeline(csms)[1:6] == [
        "Downloading",
        "Downloaded",
        "SignatureVerified",
        "InstallScheduled",
        "Installing",
    ]


async def test_install_waits_for_sessions_and_blocks_new_ones(
    csms: FakeCsms, files: FileServer, keys: Keys
) -> None:
    async with running(csms, firmware_roots=(keys.root,)) as c:
        session = c.begin_session(1, duration=3000.0)  # 0.5 s at test speed
        await wait_until(lambda: "StartTransaction" in csms.actions())
        await answer(csms, "SignedUpdateFirmware", signed(keys, files.url("/fw.bin")))
        await wait_until(lambda: c.firmware_state == "InstallScheduled", 5)
        await wait_until(lambda: c.connector_status[2] == "Unavailable")
        assert c.firmware_state == "InstallScheduled" and not session.done()
        assert await session
        await wait_until(lambda: c.firmware_state == "Installed", 5)
        assert c.connector_status == {0: "Available", 1: "Available", 2: "Available"}
    events: list[str] = []
    for _, action, p in csms.received:
        if action == "StatusNotification" and p["status"] in ("Unavailable", "Finishing"):
            events.append(f"{p['connectorId']} {p['status']}")
        elif action in ("SignedFirmwareStatusNotification", "StopTransaction"):
            events.append(p.get("status", action))
    assert events == [
        "Downloading",
        "Downloaded",
        "SignatureVerified",
        "InstallScheduled",
        "2 Unavailable",
        "StopTransaction",
        "1 Finishing",
        "1 Unavailable",  # the connector stays out of use until the update is done
        "Installing",
        "InstallRebooting",
        "Installed",
    ]


# -- faults -----------------------------------------------------------------------------------


async def test_a_dropped_link_resumes_the_download_with_range(
    csms: FakeCsms, files: FileServer, keys: Keys
) -> None:
    faults = FaultProfile(link_drop=1.0)
    async with running(csms, firmware_roots=(keys.root,), faults=faults) as c:
        await answer(csms, "SignedUpdateFirmware", signed(keys, files.url("/fw.bin")))
        await wait_until(lambda: c.firmware_state == "Installed", 5)
        assert c.stats.disconnects == 2  # the link drop, then the reboot
    (_, r1, _), (_, r2, if_range) = files.requests
    assert r1 is None and r2 is not None and r2.startswith("bytes=") and r2 != "bytes=0-"
    assert if_range == files.etag("/fw.bin")
    download = c.firmware_agent.last_download if c.firmware_agent else None
    assert download is not None and download.resumed == 1 and download.restarts == 0
    assert download.sha256 == hashlib.sha256(IMAGE).digest() and download.size == len(IMAGE)
    # statuses sent while the link was down arrive after the reconnect, in order
    assert timeline(csms) == [
        "boot 1.0.0",
        "Downloading",
        "boot 1.0.0",
        "Downloaded",
        "SignatureVerified",
        "Installing",
        "InstallRebooting",
        "boot 2.0.0",
        "Installed",
        "event FirmwareUpdated",
    ]


async def test_a_server_without_range_support_means_starting_over(
    csms: FakeCsms, files: FileServer
) -> None:
    files.honour_range = False
    async with running(csms, faults=FaultProfile(link_drop=1.0)) as c:
        await answer(csms, "UpdateFirmware", plain(files.url("/fw.bin")))
        await wait_until(lambda: c.firmware_state == "Installed", 5)
    download = c.firmware_agent.last_download if c.firmware_agent else None
    assert download is not None and download.restarts == 1 and download.resumed == 0
    assert download.sha256 == hashlib.sha256(IMAGE).digest()
    assert c.firmware_version == "2.0.0"


async def test_a_slow_link_throttles_the_download(csms: FakeCsms, files: FileServer) -> None:
    bps = len(IMAGE) * 8 * 2  # half a second for the image
    async with running(csms, faults=FaultProfile(slow_link_bps=bps)) as c:
        await answer(csms, "UpdateFirmware", plain(files.url("/fw.bin")))
        await wait_until(lambda: "Downloading" in c.firmware_history, 3)
        start = time.monotonic()
        await wait_until(lambda: "Downloaded" in c.firmware_history, 5, poll=0.005)
        assert 0.4 <= time.monotonic() - start < 2.0


async def test_power_loss_during_install_comes_back_on_the_old_version(
    csms: FakeCsms, files: FileServer, keys: Keys
) -> None:
    faults = FaultProfile(power_loss=1.0)
    async with running(csms, firmware_roots=(keys.root,), faults=faults) as c:
        await answer(csms, "SignedUpdateFirmware", signed(keys, files.url("/fw.bin")))
        await wait_until(lambda: c.stats.boots_accepted == 2, 5)
        await settle()
        assert c.firmware_version == "1.0.0" and c.firmware_state == "Installing"
    assert timeline(csms) == [
        "boot 1.0.0",
        "Downloading",
        "Downloaded",
        "SignatureVerified",
        "Installing",
        "boot 1.0.0",
    ]


async def test_install_failure_reports_and_keeps_the_old_version(
    csms: FakeCsms, files: FileServer
) -> None:
    async with running(csms, faults=FaultProfile(install_fails=1.0)) as c:
        await answer(csms, "UpdateFirmware", plain(files.url("/fw.bin")))
        await wait_until(lambda: c.firmware_state == "InstallationFailed", 5)
        await settle()
        assert c.firmware_version == "1.0.0" and c.stats.boots_accepted == 1
    assert timeline(csms) == [
        "boot 1.0.0",
        "Downloading",
        "Downloaded",
        "Installing",
        "InstallationFailed",
    ]


async def test_booting_into_a_bad_version_faults_the_charger(
    csms: FakeCsms, files: FileServer
) -> None:
    async with running(csms, faults=FaultProfile(bad_versions=("2.0.0",))) as c:
        await answer(csms, "UpdateFirmware", plain(files.url("/fw.bin")))
        await wait_until(lambda: c.firmware_state == "Installed", 5)
        await wait_until(lambda: len(csms.payloads("StatusNotification")) >= 6)
        assert c.faulted
        faulted = csms.payloads("StatusNotification")[3:6]
        assert [(p["connectorId"], p["status"], p["errorCode"]) for p in faulted] == [
            (0, "Faulted", "OtherError"),
            (1, "Faulted", "OtherError"),
            (2, "Faulted", "OtherError"),
        ]
        assert await c.begin_session(1) is False
    (stop,) = csms.payloads("StopTransaction")
    (start,) = csms.payloads("StartTransaction")
    assert stop["reason"] == "Other" and stop["meterStop"] == start["meterStart"]


async def test_a_silent_charger_accepts_and_then_does_nothing(
    csms: FakeCsms, files: FileServer, keys: Keys
) -> None:
    faults = FaultProfile(silent=1.0)
    async with running(csms, firmware_roots=(keys.root,), faults=faults) as c:
        reply = await answer(csms, "SignedUpdateFirmware", signed(keys, files.url("/fw.bin")))
        assert await answer(csms, "UpdateFirmware", plain(files.url("/fw.bin"))) == {}
        await settle()
    assert reply == {"status": "Accepted"}
    assert timeline(csms) == ["boot 1.0.0"] and files.requests == []
    assert c.firmware_version == "1.0.0"


async def test_a_rejecting_charger_says_rejected_or_nothing(
    csms: FakeCsms, files: FileServer, keys: Keys
) -> None:
    faults = FaultProfile(reject=1.0)
    async with running(csms, firmware_roots=(keys.root,), faults=faults) as c:
        reply = await answer(csms, "SignedUpdateFirmware", signed(keys, files.url("/fw.bin")))
        assert await answer(csms, "UpdateFirmware", plain(files.url("/fw.bin"))) == {}
        await settle()
    assert reply == {"status": "Rejected"}
    assert timeline(csms) == ["boot 1.0.0"] and files.requests == []
    assert c.firmware_history == []


def test_fault_rates_are_drawn_per_update_with_the_chargers_rng() -> None:
    from evota.sim.firmware import _draw

    charger = SimulatedCharger(spec(faults=FaultProfile(link_drop=0.5)), "ws://unused")
    draws = [_draw(charger).link_drop for _ in range(200)]
    assert 60 < sum(draws) < 140
    quiet = SimulatedCharger(spec(), "ws://unused")
    state = quiet.rng.getstate()
    assert not any(vars_of(_draw(quiet)))
    assert quiet.rng.getstate() == state  # no faults: the rng is untouched


def vars_of(drawn: Any) -> list[bool]:
    return [getattr(drawn, name) for name in drawn.__slots__]


# -- fleet files and flags ----------------------------------------------------------------------


def test_fleet_files_set_capabilities_roots_and_faults(tmp_path: Path, keys: Keys) -> None:
    (tmp_path / "roots").mkdir()
    (tmp_path / "roots" / "acme.pem").write_text(keys.root)
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "defaults: {firmware_update: signed, firmware_roots: [roots/acme.pem]}\n"
        "groups:\n"
        "  - prefix: A-\n"
        "    count: 2\n"
        "    faults: {download_fails: 0.1, link_drop: 0.5, slow_link_bps: 200000,\n"
        "             power_loss: 0.1, bad_versions: ['2.0.1', 2.1], invalid_signature: 0,\n"
        "             silent: 0.0, reject: 1, unavailable_versions: ['2.0.2']}\n"
        "chargers:\n"
        "  - {identity: P-1, firmware_update: plain, firmware_roots: []}\n"
    )
    spec = load_fleet(fleet)
    a, _, p = spec.chargers
    assert a.firmware_update == "signed" and a.firmware_roots == (keys.root,)
    assert a.faults == FaultProfile(
        download_fails=0.1,
        link_drop=0.5,
        slow_link_bps=200000,
        power_loss=0.1,
        bad_versions=("2.0.1", "2.1"),
        reject=1,
        unavailable_versions=("2.0.2",),
    )
    assert p.firmware_update == "plain" and p.firmware_roots == () and p.faults == FaultProfile()
    assert parse_fleet(dump_fleet(spec)) == spec  # roots travel inline as PEM


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("defaults: {firmware_update: sometimes}", "line 1, defaults.firmware_update: must be "
         "plain, signed or both (got 'sometimes')"),
        ("defaults: {firmware_roots: [missing.pem]}", "defaults.firmware_roots[0]: cannot read "
         "'missing.pem': No such file or directory"),
        ("defaults: {firmware_roots: [junk.pem]}", "'junk.pem' is not a PEM X.509 certificate"),
        ("defaults: {firmware_roots: roots.pem}", "firmware_roots must be a list"),
        ("defaults:\n  faults: {link_drop: 1.5}", "line 2, defaults.faults.link_drop: must be a "
         "number from 0 to 1 (got 1.5)"),
        ("defaults: {faults: {link_drop: yes}}", "must be a number from 0 to 1 (got True)"),
        ("defaults: {faults: {lightning: 0.1}}", "defaults.faults.lightning: unknown key "
         "'lightning'"),
        ("defaults: {faults: {slow_link_bps: -1}}", "slow_link_bps: must be a whole number of "
         "bits per second"),
        ("defaults: {faults: {slow_link_bps: 1.5}}", "must be a whole number"),
        ("defaults: {faults: {bad_versions: 2.0.1}}", "bad_versions must be a list"),
        ("defaults: {faults: {bad_versions: ['']}}", "bad_versions[0]: must not be empty"),
        ("defaults: {faults: {unavailable_versions: 2}}", "unavailable_versions must be a list"),
        ("defaults: {faults: [link_drop]}", "faults must be a mapping"),
    ],
)  # fmt: skip
def test_bad_firmware_keys_give_one_precise_error(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(FleetFileError) as info:
        parse_fleet(
            text + "\ngroups: [{prefix: A, count: 1}]\n", source="f.yaml", base_dir=tmp_path
        )
    assert message in str(info.value)
    assert str(info.value).startswith("f.yaml")


def test_flags_set_capabilities_roots_and_faults(tmp_path: Path, keys: Keys) -> None:
    root = tmp_path / "root.pem"
    root.write_text(keys.root)
    fleet = fleet_from_flags(
        2,
        firmware_update="signed",
        firmware_roots=[root],
        faults=["link_drop=0.5", "bad_versions=2.0.1, 2.0.2", "slow_link_bps=8000", "silent=0"],
    )
    c = fleet.chargers[0]
    assert c.firmware_update == "signed" and c.firmware_roots == (keys.root,)
    assert c.faults == FaultProfile(
        link_drop=0.5, bad_versions=("2.0.1", "2.0.2"), slow_link_bps=8000
    )
    assert fleet_from_flags(1).chargers[0].faults == FaultProfile()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"firmware_update": "never"}, "--firmware-update: must be plain, signed or both"),
        ({"firmware_roots": ["/nonexistent.pem"]}, "--firmware-root: cannot read"),
        ({"faults": ["link_drop"]}, "--fault: expected NAME=VALUE (got 'link_drop')"),
        ({"faults": ["link_drop=often"]}, "--fault: link_drop: must be a number from 0 to 1"),
        ({"faults": ["power_loss=2"]}, "--fault: power_loss: must be a number from 0 to 1"),
        ({"faults": ["hail=1"]}, "--fault: unknown fault 'hail'"),
        ({"faults": ["slow_link_bps=fast"]}, "--fault: slow_link_bps: must be a whole number"),
    ],
)
def test_bad_firmware_flags_raise_fleet_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(FleetError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        fleet_from_flags(1, **kwargs)


def test_fault_profiles_check_their_values() -> None:
    with pytest.raises(ValueError, match="link_drop: must be a number from 0 to 1"):
        FaultProfile(link_drop=-0.1)
    with pytest.raises(ValueError, match="bad_versions: must be a list"):
        FaultProfile(bad_versions=["2.0"])  # type: ignore[arg-type]


def test_cli_flags_reach_the_fleet(tmp_path: Path, keys: Keys) -> None:
    root = tmp_path / "root.pem"
    root.write_text(keys.root)
    spec = _fleet_spec(
        None, 1, None, None, None, None, None, None, "plain", [root], ["reject=0.25"]
    )
    c = spec.chargers[0]
    assert (c.firmware_update, c.firmware_roots, c.faults.reject) == ("plain", (keys.root,), 0.25)

    app = typer.Typer()
    app.command()(sim_command)
    env = {"EVOTA_TOKEN": "", "EVOTA_URL": ""}
    result = CliRunner().invoke(app, ["--fault", "hail=1"], env=env)
    assert result.exit_code == 2 and "evota sim: --fault: unknown fault 'hail'" in result.stderr
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("groups: [{prefix: A, count: 1}]\n")
    result = CliRunner().invoke(app, ["--fleet", str(fleet), "--fault", "silent=1"], env=env)
    assert result.exit_code == 2
    assert "--fault cannot be combined with --fleet" in result.stderr
