"""Remote commands on the simulated charger (evota.sim.control), against the throwaway CSMS:
each handler's answer and what the charger then really does; property tests for the rules
(configuration values, the local authorization list, charging profile limits)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evota.firmware.signing import generate_ca
from evota.ocpp import rpc
from evota.sim.charger import SimConfig, SimulatedCharger
from evota.sim.control.certificates import certificate_hash
from evota.sim.control.keys import change_answer, core_configuration
from evota.sim.control.locallist import LocalList, apply_local_list
from evota.sim.control.schedules import limit_kw
from evota.sim.control.state import state
from evota.sim.runner import wait_until

from .conftest import CallErrorAnswer, FakeCsms, fast, spec


@asynccontextmanager
async def running(
    csms: FakeCsms, config: SimConfig | None = None, **kw: Any
) -> AsyncIterator[SimulatedCharger]:
    charger = SimulatedCharger(spec("CP-1", **kw), csms.url, config or fast())
    charger.start()
    try:
        await wait_until(lambda: charger.accepted, 3)
        await wait_until(lambda: all(charger.connector_status.values()), 3)
        yield charger
    finally:
        await charger.stop()


async def answer(csms: FakeCsms, action: str, payload: dict[str, Any]) -> Any:
    result = await csms.call("CP-1", action, payload)
    if isinstance(result, rpc.CallError):
        return result.code
    return result.payload


def statuses(csms: FakeCsms, connector: int) -> list[str]:
    return [
        p["status"] for p in csms.payloads("StatusNotification") if p["connectorId"] == connector
    ]


# -- sessions and availability ------------------------------------------------------------------


async def test_remote_start_and_stop_run_a_real_transaction(csms: FakeCsms) -> None:
    async with running(csms) as c:
        assert await answer(csms, "RemoteStartTransaction", {"idTag": "TAG-1"}) == {
            "status": "Accepted"
        }
        await wait_until(lambda: statuses(csms, 1)[-1:] == ["Charging"], 3)
        [start] = csms.payloads("StartTransaction")
        assert (start["connectorId"], start["idTag"]) == (1, "TAG-1")  # the first free one
        txn_id = c.transactions[1].transaction_id
        stopped = await answer(csms, "RemoteStopTransaction", {"transactionId": txn_id})
        assert stopped == {"status": "Accepted"}
        await wait_until(lambda: statuses(csms, 1)[-1:] == ["Available"], 3)
        [stop] = csms.payloads("StopTransaction")
        assert stop["reason"] == "Remote" and stop["transactionId"] == txn_id
        assert stop["meterStop"] >= start["meterStart"]
        assert await answer(csms, "RemoteStopTransaction", {"transactionId": txn_id}) == {
            "status": "Rejected"
        }
        # A connector that does not exist, or a profile that is not a TxProfile: Rejected.
        assert (await answer(csms, "RemoteStartTransaction", {"idTag": "T", "connectorId": 9}))[
            "status"
        ] == "Rejected"
    assert csms.invalid == [] and csms.overlaps == 0


async def test_unlock_ends_the_session_first(csms: FakeCsms) -> None:
    async with running(csms) as c:
        c.begin_session(2, "TAG-2", duration=10**9)
        await wait_until(lambda: "Charging" in statuses(csms, 2), 3)
        assert await answer(csms, "UnlockConnector", {"connectorId": 2}) == {"status": "Unlocked"}
        await wait_until(lambda: csms.payloads("StopTransaction"), 3)
        assert csms.payloads("StopTransaction")[0]["reason"] == "UnlockCommand"
        assert await answer(csms, "UnlockConnector", {"connectorId": 3}) == (
            "PropertyConstraintViolation"
        )
        assert await answer(csms, "UnlockConnector", {"connectorId": 1}) == {"status": "Unlocked"}
        assert state(c).unlocked == [2, 1]


async def test_inoperative_is_scheduled_during_a_session_and_survives_a_reboot(
    csms: FakeCsms,
) -> None:
    async with running(csms) as c:
        c.begin_session(1, duration=10**9)
        await wait_until(lambda: "Charging" in statuses(csms, 1), 3)
        got = await answer(csms, "ChangeAvailability", {"connectorId": 1, "type": "Inoperative"})
        assert got == {"status": "Scheduled"}
        assert statuses(csms, 1)[-1] == "Charging"
        got = await answer(csms, "ChangeAvailability", {"connectorId": 2, "type": "Inoperative"})
        assert got == {"status": "Accepted"}
        await wait_until(lambda: statuses(csms, 2)[-1:] == ["Unavailable"], 3)
        c.transactions[1].stop_requested = "Local"
        c.transactions[1].wake.set()
        await wait_until(lambda: statuses(csms, 1)[-1:] == ["Unavailable"], 3)
        # No session starts on an Unavailable connector, and the state survives a reboot.
        refused = await answer(csms, "RemoteStartTransaction", {"idTag": "X", "connectorId": 2})
        assert refused == {"status": "Rejected"}
        await answer(csms, "Reset", {"type": "Soft"})
        await wait_until(lambda: c.stats.boots_accepted == 2 and c.accepted, 3)
        await wait_until(lambda: len(statuses(csms, 2)) >= 3, 3)
        assert statuses(csms, 2)[-1] == "Unavailable"
        got = await answer(csms, "ChangeAvailability", {"connectorId": 0, "type": "Operative"})
        assert got == {"status": "Accepted"}
        await wait_until(lambda: [statuses(csms, n)[-1] for n in (1, 2)] == ["Available"] * 2, 3)


# -- configuration ----------------------------------------------------------------------------


async def test_configuration_store(csms: FakeCsms) -> None:
    async with running(csms) as c:
        got = await answer(csms, "GetConfiguration", {})
        keys = {k["key"]: k for k in got["configurationKey"]}
        assert keys["SupportedFeatureProfiles"]["readonly"] is True
        assert "AuthorizationKey" not in keys and "unknownKey" not in got
        got = await answer(csms, "GetConfiguration", {"key": ["AuthorizationKey", "X"]})
        assert got == {
            "configurationKey": [{"key": "AuthorizationKey", "readonly": False}],
            "unknownKey": ["X"],
        }
        change = {"key": "HeartbeatInterval", "value": "30"}
        assert await answer(csms, "ChangeConfiguration", change) == {"status": "Accepted"}
        assert c.heartbeat_interval == 30
        too_many = {"key": [f"K{i}" for i in range(101)]}
        assert await answer(csms, "GetConfiguration", too_many) == "OccurenceConstraintViolation"
        # The new AuthorizationKey is what the charger presents on its next connection.
        new_key = {"key": "AuthorizationKey", "value": "0123456789abcdef0123"}
        assert await answer(csms, "ChangeConfiguration", new_key) == {"status": "Accepted"}
        c.drop_connection()
        await wait_until(lambda: [s for _, s, _ in csms.handshakes][-1:] == [401], 3)


@given(
    key=st.sampled_from(sorted(core_configuration(2, 60, 60, security=True))),
    value=st.text(max_size=20),
)
def test_read_only_keys_are_never_changed_and_answers_are_1_6_statuses(
    key: str, value: str
) -> None:
    keys = core_configuration(2, 60, 60, security=True)
    status = change_answer(keys, key, value)
    assert status in {"Accepted", "Rejected", "RebootRequired"}
    if keys[key].readonly:
        assert status == "Rejected"
    if keys[key].kind == "int" and not (value.isascii() and value.isdigit()):
        assert status == "Rejected"


@given(st.text(min_size=1, max_size=50))
def test_unknown_keys_are_not_supported(key: str) -> None:
    keys = core_configuration(2, 60, 60, security=False)
    if key not in keys:
        assert change_answer(keys, key, "1") == "NotSupported"


# -- local list (pure) ------------------------------------------------------------------------

tags = st.sampled_from(["A", "B", "C", "D", "E"])
entry = st.builds(
    lambda tag, status: {"idTag": tag, **({"idTagInfo": {"status": status}} if status else {})},
    tags,
    st.sampled_from([None, "Accepted", "Blocked"]),
)


@given(
    start=st.dictionaries(tags, st.just({"status": "Accepted"})),
    version=st.integers(0, 5),
    new_version=st.integers(1, 8),
    update=st.sampled_from(["Full", "Differential"]),
    entries=st.lists(entry, max_size=6, unique_by=lambda e: e["idTag"]),
    max_length=st.integers(0, 6),
)
def test_local_list_updates(
    start: dict[str, Any],
    version: int,
    new_version: int,
    update: str,
    entries: list[dict[str, Any]],
    max_length: int,
) -> None:
    current = LocalList(version, start)
    status, after = apply_local_list(
        current, new_version, update, entries, max_send=5, max_length=max_length
    )
    if status != "Accepted":
        assert after == current
    if len(entries) > 5:
        assert status == "Failed"
    elif update == "Differential" and new_version <= version:
        assert status == "VersionMismatch"
    if status == "Accepted":
        assert after.version == new_version and len(after.entries) <= max_length
        given_info = {e["idTag"]: e.get("idTagInfo") for e in entries}
        for tag in "ABCDE":
            if tag in given_info:
                assert after.entries.get(tag) == given_info[tag]
            elif update == "Full":
                assert tag not in after.entries
            else:
                assert after.entries.get(tag) == start.get(tag)


async def test_local_list_over_ocpp(csms: FakeCsms) -> None:
    async with running(csms):
        assert await answer(csms, "GetLocalListVersion", {}) == {"listVersion": 0}
        full = {
            "listVersion": 2,
            "updateType": "Full",
            "localAuthorizationList": [{"idTag": "A", "idTagInfo": {"status": "Accepted"}}],
        }
        assert await answer(csms, "SendLocalList", full) == {"status": "Accepted"}
        assert await answer(csms, "GetLocalListVersion", {}) == {"listVersion": 2}
        change = {"key": "LocalAuthListEnabled", "value": "false"}
        await answer(csms, "ChangeConfiguration", change)
        assert await answer(csms, "GetLocalListVersion", {}) == {"listVersion": -1}
        assert await answer(csms, "SendLocalList", full) == {"status": "NotSupported"}
        assert await answer(csms, "ClearCache", {}) == {"status": "Accepted"}


# -- charging profiles --------------------------------------------------------------------------

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def _profile(periods: list[tuple[int, float]], unit: str = "W", **extra: Any) -> dict[str, Any]:
    schedule: dict[str, Any] = {
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": [{"startPeriod": s, "limit": lim} for s, lim in periods],
        "startSchedule": T0.isoformat(),
    }
    schedule.update(extra.pop("schedule", {}))
    return {
        "chargingProfileId": 1,
        "stackLevel": 0,
        "chargingProfilePurpose": "ChargePointMaxProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": schedule,
        **extra,
    }


@given(
    starts=st.lists(st.integers(1, 10_000), max_size=5, unique=True).map(sorted),
    limits=st.lists(st.integers(0, 50_000), min_size=6, max_size=6),
    at=st.integers(-100, 20_000),
)
def test_an_absolute_schedule_applies_the_period_in_force(
    starts: list[int], limits: list[int], at: int
) -> None:
    periods = list(zip([0, *starts], limits, strict=False))
    got = limit_kw(_profile(periods), T0 + dt.timedelta(seconds=at), T0)
    if at < 0:
        assert got is None
    else:
        in_force = [lim for s, lim in periods if s <= at][-1]
        assert got == pytest.approx(in_force / 1000)


def test_amperes_validity_recurrence_and_duration() -> None:
    amps = _profile([(0, 16.0)], unit="A")
    assert limit_kw(amps, T0, T0) == pytest.approx(16 * 230 * 3 / 1000)
    one_phase = _profile([(0, 16.0)], unit="A")
    one_phase["chargingSchedule"]["chargingSchedulePeriod"][0]["numberPhases"] = 1
    assert limit_kw(one_phase, T0, T0) == pytest.approx(16 * 230 / 1000)
    daily = _profile(
        [(0, 1000.0), (3600, 2000.0)], chargingProfileKind="Recurring", recurrencyKind="Daily"
    )
    assert limit_kw(daily, T0 + dt.timedelta(days=3, minutes=90), T0) == pytest.approx(2.0)
    assert limit_kw(daily, T0 + dt.timedelta(days=3, minutes=30), T0) == pytest.approx(1.0)
    short = _profile([(0, 1000.0)], schedule={"duration": 600})
    assert limit_kw(short, T0 + dt.timedelta(seconds=599), T0) == pytest.approx(1.0)
    assert limit_kw(short, T0 + dt.timedelta(seconds=600), T0) is None
    later = _profile([(0, 1000.0)], validFrom=(T0 + dt.timedelta(hours=1)).isoformat())
    assert limit_kw(later, T0, T0) is None


async def test_set_and_clear_charging_profiles(csms: FakeCsms) -> None:
    async with running(csms) as c:
        site = _profile([(0, 3000.0)])
        site["chargingSchedule"].pop("startSchedule")
        payload = {"connectorId": 0, "csChargingProfiles": site}
        assert await answer(csms, "SetChargingProfile", payload) == {"status": "Accepted"}
        assert c.charging_power_kw(1) == pytest.approx(3.0)
        on_connector = {"connectorId": 1, "csChargingProfiles": site}
        assert await answer(csms, "SetChargingProfile", on_connector) == {"status": "Rejected"}
        tx = {**site, "chargingProfileId": 2, "chargingProfilePurpose": "TxProfile"}
        no_session = {"connectorId": 1, "csChargingProfiles": tx}
        assert await answer(csms, "SetChargingProfile", no_session) == {"status": "Rejected"}
        too_high = {**site, "chargingProfileId": 3, "stackLevel": 11}
        refused = {"connectorId": 0, "csChargingProfiles": too_high}
        assert await answer(csms, "SetChargingProfile", refused) == {"status": "Rejected"}
        # Same purpose and stack level on the same connector: the new one replaces the old.
        replacement = {**site, "chargingProfileId": 4}
        replacement["chargingSchedule"] = {
            **site["chargingSchedule"],
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 5000.0}],
        }
        payload = {"connectorId": 0, "csChargingProfiles": replacement}
        assert await answer(csms, "SetChargingProfile", payload) == {"status": "Accepted"}
        assert list(state(c).profiles) == [4]
        assert c.charging_power_kw(2) == pytest.approx(5.0)
        assert await answer(csms, "ClearChargingProfile", {"id": 1}) == {"status": "Unknown"}
        assert await answer(
            csms, "ClearChargingProfile", {"chargingProfilePurpose": "ChargePointMaxProfile"}
        ) == {"status": "Accepted"}
        assert c.charging_power_kw(2) == pytest.approx(c.config.power_kw)


async def test_a_site_limit_slows_the_meter(csms: FakeCsms) -> None:
    async with running(csms, fast(power_kw=10.0)) as c:
        site = _profile([(0, 1000.0)])
        site["chargingSchedule"].pop("startSchedule")
        await answer(csms, "SetChargingProfile", {"connectorId": 0, "csChargingProfiles": site})
        before = c.meter_wh[1]
        c.begin_session(1, duration=3600)
        await wait_until(lambda: csms.payloads("StopTransaction"), 5)
        # One simulated hour at the 1 kW cap (not the charger's 10 kW): about 1 kWh.
        assert c.meter_wh[1] - before == pytest.approx(1000, rel=0.05)


# -- trigger message ----------------------------------------------------------------------------


async def test_trigger_message_sends_the_requested_message(csms: FakeCsms) -> None:
    csms.overrides["SignCertificate"] = lambda i, p: {"status": "Accepted"}
    async with running(csms) as c:
        for message, action in [
            ("BootNotification", "BootNotification"),
            ("Heartbeat", "Heartbeat"),
            ("FirmwareStatusNotification", "FirmwareStatusNotification"),
            ("DiagnosticsStatusNotification", "DiagnosticsStatusNotification"),
        ]:
            before = len(csms.payloads(action))
            got = await answer(csms, "TriggerMessage", {"requestedMessage": message})
            assert got == {"status": "Accepted"}
            await wait_until(lambda a=action, b=before: len(csms.payloads(a)) > b, 3)
        assert csms.payloads("FirmwareStatusNotification")[-1] == {"status": "Idle"}
        assert csms.payloads("DiagnosticsStatusNotification")[-1] == {"status": "Idle"}
        got = await answer(
            csms, "TriggerMessage", {"requestedMessage": "MeterValues", "connectorId": 2}
        )
        await wait_until(lambda: csms.payloads("MeterValues"), 3)
        assert csms.payloads("MeterValues")[-1]["connectorId"] == 2
        got = await answer(
            csms, "TriggerMessage", {"requestedMessage": "StatusNotification", "connectorId": 7}
        )
        assert got == {"status": "Rejected"}
        extended = {"requestedMessage": "SignChargePointCertificate"}
        assert await answer(csms, "ExtendedTriggerMessage", extended) == {"status": "Accepted"}
        await wait_until(lambda: csms.payloads("SignCertificate"), 3)
        assert csms.payloads("SignCertificate")[0]["csr"].startswith(
            "-----BEGIN CERTIFICATE REQUEST-----"
        )
        log_status = {"requestedMessage": "LogStatusNotification"}
        assert await answer(csms, "ExtendedTriggerMessage", log_status) == {"status": "Accepted"}
        await wait_until(lambda: csms.payloads("LogStatusNotification") == [{"status": "Idle"}], 3)
        assert c.stats.boots_accepted == 1  # a triggered boot is a message, not a reboot
    assert csms.invalid == []


# -- uploads ------------------------------------------------------------------------------------


@dataclass
class Receiver:
    """A tiny HTTP server that stores what chargers upload."""

    status: int = 201
    received: list[tuple[str, str, bytes]] = field(default_factory=list)  # method, path, body
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _store(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            server.received.append((self.command, self.path, self.rfile.read(length)))
            self.send_response(server.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_PUT = _store
        do_POST = _store

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    server.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield server
    httpd.shutdown()
    httpd.server_close()


async def test_get_diagnostics_uploads_multipart_and_reports(
    csms: FakeCsms, receiver: Receiver
) -> None:
    async with running(csms, fast(upload_bytes=5000)) as c:
        got = await answer(csms, "GetDiagnostics", {"location": receiver.url("/up")})
        name = got["fileName"]
        assert name.startswith("diagnostics-CP-1-") and name.endswith(".log")
        await wait_until(lambda: len(csms.payloads("DiagnosticsStatusNotification")) == 2, 3)
        assert csms.payloads("DiagnosticsStatusNotification") == [
            {"status": "Uploading"},
            {"status": "Uploaded"},
        ]
        [(method, path, body)] = receiver.received
        assert (method, path) == ("POST", "/up")
        [upload] = state(c).uploads
        assert f'filename="{name}"'.encode() in body and upload.size == 5000
        start = body.index(b"\r\n\r\n") + 4
        content = body[start : body.rindex(b"\r\n--")]
        assert hashlib.sha256(content).hexdigest() == upload.sha256


async def test_get_log_puts_the_file_and_reports_per_request(
    csms: FakeCsms, receiver: Receiver
) -> None:
    async with running(csms) as c:
        payload = {
            "logType": "SecurityLog",
            "requestId": 9,
            "log": {"remoteLocation": receiver.url("/logs/")},
        }
        got = await answer(csms, "GetLog", payload)
        assert got["status"] == "Accepted" and got["filename"].startswith("security-log-")
        await wait_until(lambda: len(csms.payloads("LogStatusNotification")) == 2, 3)
        assert csms.payloads("LogStatusNotification") == [
            {"status": "Uploading", "requestId": 9},
            {"status": "Uploaded", "requestId": 9},
        ]
        [(method, path, body)] = receiver.received
        assert (method, path) == ("PUT", f"/logs/{got['filename']}")
        assert hashlib.sha256(body).hexdigest() == state(c).uploads[0].sha256


async def test_uploads_that_fail_are_retried_then_reported(
    csms: FakeCsms, receiver: Receiver
) -> None:
    receiver.status = 500
    async with running(csms, fast(download_retry_interval=1.0)) as c:
        payload = {"location": receiver.url("/up"), "retries": 2, "retryInterval": 1}
        await answer(csms, "GetDiagnostics", payload)
        await wait_until(lambda: len(csms.payloads("DiagnosticsStatusNotification")) == 2, 3)
        assert csms.payloads("DiagnosticsStatusNotification")[-1] == {"status": "UploadFailed"}
        assert len(receiver.received) == 3 and state(c).uploads[0].error == "HTTP 500"
        ftp = {"logType": "DiagnosticsLog", "requestId": 1, "log": {"remoteLocation": "ftp://x/"}}
        await answer(csms, "GetLog", ftp)
        await wait_until(lambda: len(csms.payloads("LogStatusNotification")) == 2, 3)
        assert csms.payloads("LogStatusNotification")[-1] == {
            "status": "UploadFailure",
            "requestId": 1,
        }


# -- certificates, security extension, data transfer --------------------------------------------


async def test_certificates(csms: FakeCsms) -> None:
    _, root = generate_ca("CSMS Root", "Evota")
    async with running(csms):
        kind = {"certificateType": "CentralSystemRootCertificate"}
        assert await answer(csms, "GetInstalledCertificateIds", kind) == {"status": "NotFound"}
        install = {**kind, "certificate": root.decode()}
        assert await answer(csms, "InstallCertificate", install) == {"status": "Accepted"}
        assert await answer(csms, "InstallCertificate", install) == {"status": "Accepted"}
        bad = {**kind, "certificate": "-----BEGIN CERTIFICATE-----\nnope"}
        assert await answer(csms, "InstallCertificate", bad) == {"status": "Rejected"}
        listed = await answer(csms, "GetInstalledCertificateIds", kind)
        assert listed["certificateHashData"] == [certificate_hash(root.decode())]
        hash_data = listed["certificateHashData"][0]
        # Hex is compared without regard to case.
        upper = {k: v.upper() if k != "hashAlgorithm" else v for k, v in hash_data.items()}
        delete = {"certificateHashData": upper}
        assert await answer(csms, "DeleteCertificate", delete) == {"status": "Accepted"}
        assert await answer(csms, "DeleteCertificate", delete) == {"status": "NotFound"}


async def test_a_plain_charger_has_no_security_extension(csms: FakeCsms) -> None:
    async with running(csms, firmware_update="plain"):
        kind = {"certificateType": "ManufacturerRootCertificate"}
        assert await answer(csms, "GetInstalledCertificateIds", kind) == "NotImplemented"
        trigger = {"requestedMessage": "Heartbeat"}
        assert await answer(csms, "ExtendedTriggerMessage", trigger) == "NotImplemented"
        keys = await answer(csms, "GetConfiguration", {"key": ["SecurityProfile"]})
        assert keys == {"configurationKey": [], "unknownKey": ["SecurityProfile"]}


async def test_data_transfer(csms: FakeCsms) -> None:
    async with running(csms, vendor="Acme") as c:
        echo = {"vendorId": "Acme", "messageId": "echo", "data": "hi"}
        assert await answer(csms, "DataTransfer", echo) == {"status": "Accepted", "data": "hi"}
        other = {"vendorId": "Acme", "messageId": "reboot-modem"}
        assert await answer(csms, "DataTransfer", other) == {"status": "UnknownMessageId"}
        assert await answer(csms, "DataTransfer", {"vendorId": "X"}) == {
            "status": "UnknownVendorId"
        }
        assert len(state(c).data_transfers) == 3


async def test_csms_errors_for_notifications_do_not_break_the_charger(csms: FakeCsms) -> None:
    csms.overrides["DiagnosticsStatusNotification"] = lambda i, p: CallErrorAnswer("InternalError")
    async with running(csms) as c:
        await answer(csms, "GetDiagnostics", {"location": "ftp://nowhere/"})
        await wait_until(lambda: len(csms.payloads("DiagnosticsStatusNotification")) == 2, 3)
        await asyncio.sleep(0.05)
        assert c.accepted
