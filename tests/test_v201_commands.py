"""Every remote command end to end on an OCPP 2.0.1 charger: REST -> evota -> OCPP 2.0.1 ->
the simulated 2.0.1 charger, which really does it (transactions start and stop, EVSEs go
Unavailable, the device model changes, files are uploaded into evota). The same catalog and
routes as 1.6 (tests/test_commands.py); answers come back in the catalog's words."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from evota.firmware import signing
from evota.sim import Fleet, fleet_from_flags
from evota.sim.charger import SimulatedCharger
from evota.sim.control.state import ControlState, state
from evota.store.models import ChargerEvent, ChargerFile, ChargingSession

from .conftest import TOKEN, Keys
from .sim.conftest import fast
from .support import until
from .test_commands import FAST, CommandBench, _download
from .test_firmware_update import running

V201 = "ocpp2.0.1"


class Bench201(CommandBench):
    async def sim201(self, identity: str = "V2-0001", **config: Any) -> SimulatedCharger:
        base = fleet_from_flags(1, prefix=identity[:-4], seed="cmd201", protocol=V201)
        spec = replace(base.chargers[0], firmware_roots=(self.keys.ca_cert.decode(),))
        settings: dict[str, Any] = {
            "speed": 600.0,
            "download_retry_interval": 0.2,
            "upload_bytes": 20_000,
            **config,
        }
        fleet = Fleet.from_spec(
            replace(base, chargers=(spec,)),
            f"ws://127.0.0.1:{self.rt.ocpp_port}/ocpp",
            config=fast(**settings),
        )
        await fleet.provision(f"http://127.0.0.1:{self.rt.http_port}", TOKEN)
        self.fleets.append(fleet)
        await fleet.start()
        charger = fleet[spec.identity]
        await fleet.wait_until(lambda f: charger.accepted, 10)
        await until(lambda: self.charger_row(spec.identity), lambda c: c["vendor"])
        await until(lambda: all(charger.connector_status.values()), timeout=5)
        return charger

    async def evses(self, charger_id: str) -> dict[int, str]:
        row = await self.charger_row(charger_id)
        return {c["connector_id"]: c["status"] for c in row.get("connectors", [])}

    async def session(self, charger_id: str, external_id: str) -> Any:
        async with self.rt.engine.connect() as conn:
            return (
                await conn.execute(
                    select(ChargingSession).where(
                        ChargingSession.charger_id == charger_id,
                        ChargingSession.external_id == external_id,
                    )
                )
            ).first()


def strict(fleets: list[Fleet]) -> None:
    """evota answered every CALL of every simulated charger, validly and without CALLERROR."""
    for fleet in fleets:
        for charger in fleet:
            s = charger.stats
            assert not s.callerrors and s.invalid_results == 0, (charger.identity, s.callerrors)


@pytest.fixture
async def bench(tmp_path: Path, sqlite_url: str, keys: Keys) -> AsyncIterator[Bench201]:
    async with running(Bench201, tmp_path, sqlite_url, keys, **FAST) as b:
        yield b
        strict(b.fleets)


def control(charger: SimulatedCharger) -> ControlState:
    return state(charger)


def tx_of(sim: SimulatedCharger, evse: int) -> str:
    txn = sim.transactions[evse]
    assert isinstance(txn.transaction_id, str)
    return txn.transaction_id


async def test_remote_start_stop_and_unlock(bench: Bench201):
    sim = await bench.sim201()
    answer = await bench.ok(sim.identity, "remote-start", id_tag="APP-42", connector_id=2)
    assert answer["status"] == "Accepted"
    await until(lambda: 2 in sim.transactions and sim.transactions[2].transaction_id)
    tx = tx_of(sim, 2)
    assert sim.last_call is not None
    started = sim.transactions[2]
    assert (started.id_tag, started.id_token_type, started.remote) == ("APP-42", "Central", True)
    assert started.remote_start_id is not None
    # evota knows the session by the charger's transaction id, with the idToken and EVSE.
    row = await until(lambda: bench.session(sim.identity, tx), lambda s: s is not None and s.id_tag)
    assert (row.connector_id, row.id_tag, row.outcome) == (2, "APP-42", "active")
    await until(lambda: bench.evses(sim.identity), lambda e: e.get(2) == "Occupied")
    busy = await bench.ok(sim.identity, "remote-start", id_tag="APP-43", connector_id=2)
    assert busy["status"] == "Rejected"
    # 2.0.1 never unlocks under a running transaction.
    locked = await bench.ok(sim.identity, "unlock-connector", connector_id=2)
    assert locked["status"] == "OngoingAuthorizedTransaction"
    # remote-stop by evota's own session id (translated to the charger's transaction id).
    stop = await bench.ok(sim.identity, "remote-stop", transaction_id=row.id)
    assert stop["status"] == "Accepted"
    await until(lambda: 2 not in sim.transactions and sim.connector_status[2] == "Available")
    done = await until(lambda: bench.session(sim.identity, tx), lambda s: s.outcome != "active")
    assert (done.outcome, done.stop_reason) == ("completed", "Remote")
    assert done.meter_stop_wh >= done.meter_start_wh
    unknown = await bench.ok(sim.identity, "remote-stop", transaction_id="no-such-transaction")
    assert unknown["status"] == "Rejected"
    unlocked = await bench.ok(sim.identity, "unlock-connector", connector_id=2)
    assert unlocked["status"] == "Unlocked" and control(sim).unlocked == [2]
    no_such = await bench.ok(sim.identity, "unlock-connector", connector_id=7)
    assert no_such["status"] == "UnknownConnector"
    assert [e.outcome for e in await bench.audit("remote-start")] == ["Accepted", "Rejected"]


async def test_reset_soft_waits_for_idle_and_hard_is_immediate(bench: Bench201):
    sim = await bench.sim201()
    await bench.ok(sim.identity, "remote-start", id_tag="T1", connector_id=1)
    await until(lambda: 1 in sim.transactions and sim.transactions[1].transaction_id)
    soft = await bench.ok(sim.identity, "reset", type="Soft")
    assert soft["status"] == "Scheduled"  # OnIdle while charging
    assert sim.stats.boots_accepted == 1
    await bench.ok(sim.identity, "remote-stop", transaction_id=tx_of(sim, 1))
    await until(lambda: sim.stats.boots_accepted == 2 and sim.accepted)
    # evota tracked the scheduled reset to the boot that completed it.
    await until(lambda: bench.events(sim.identity, "reset"), lambda e: e == ["completed"])
    await bench.ok(sim.identity, "remote-start", id_tag="T2", connector_id=2)
    await until(lambda: 2 in sim.transactions and sim.transactions[2].transaction_id)
    tx = tx_of(sim, 2)
    hard = await bench.ok(sim.identity, "reset", type="Hard")
    assert hard["status"] == "Accepted"
    await until(lambda: sim.stats.boots_accepted == 3 and sim.accepted)
    ended = await until(
        lambda: bench.session(sim.identity, tx), lambda s: s is not None and s.outcome != "active"
    )
    assert (ended.stop_reason, ended.outcome) == ("ImmediateReset", "interrupted")
    for boots, kind in ((4, "Immediate"), (5, "OnIdle")):  # idle: both reset at once
        assert (await bench.ok(sim.identity, "reset", type=kind))["status"] == "Accepted"
        await until(lambda b=boots: sim.stats.boots_accepted == b and sim.accepted)

    async def reasons() -> list[str]:  # boots are written behind the answer
        async with bench.rt.engine.connect() as conn:
            boots = await conn.execute(
                select(ChargerEvent.data)
                .where(ChargerEvent.charger_id == sim.identity, ChargerEvent.kind == "boot")
                .order_by(ChargerEvent.id)
            )
        return [row.data["reason"] for row in boots]

    await until(reasons, lambda r: r == ["PowerUp"] + ["RemoteReset"] * 4)
    assert [e.outcome for e in await bench.audit("reset")] == [
        "Scheduled",
        "Accepted",
        "Accepted",
        "Accepted",
    ]


async def test_change_availability_per_evse_and_charger(bench: Bench201):
    sim = await bench.sim201()
    one = await bench.ok(sim.identity, "change-availability", connector_id=1, type="Inoperative")
    assert one["status"] == "Accepted"
    await until(lambda: bench.evses(sim.identity), lambda e: e.get(1) == "Unavailable")
    assert sim.connector_status[2] == "Available"
    await bench.ok(sim.identity, "remote-start", id_tag="T", connector_id=2)
    await until(lambda: 2 in sim.transactions and sim.transactions[2].transaction_id)
    whole = await bench.ok(sim.identity, "change-availability", connector_id=0, type="Inoperative")
    assert whole["status"] == "Scheduled"
    await bench.ok(sim.identity, "remote-stop", transaction_id=tx_of(sim, 2))
    await until(lambda: bench.evses(sim.identity), lambda e: e.get(2) == "Unavailable")
    back = await bench.ok(sim.identity, "change-availability", connector_id=0, type="Operative")
    assert back["status"] == "Accepted"
    await until(lambda: bench.evses(sim.identity), lambda e: set(e.values()) == {"Available"})
    bad = await bench.ok(sim.identity, "change-availability", connector_id=9, type="Operative")
    assert bad["status"] == "Rejected"


async def test_configuration_keys_and_variables(bench: Bench201):
    sim = await bench.sim201()
    everything = await bench.ok(sim.identity, "get-configuration")
    keys = {k["key"]: k for k in everything["details"]["configuration"]}
    assert keys["HeartbeatInterval"]["value"] == "60" and not keys["HeartbeatInterval"]["readonly"]
    assert keys["GetConfigurationMaxKeys"] == {
        "key": "GetConfigurationMaxKeys",
        "value": "100",
        "readonly": True,
    }
    # A key the charger does not implement (no reservations here) comes back unknown.
    assert everything["details"].get("unknown_keys") == ["ReserveConnectorZeroSupported"]

    async def change(key: str, value: str) -> str:
        answer = await bench.ok(sim.identity, "change-configuration", key=key, value=value)
        return str(answer["status"])

    assert await change("HeartbeatInterval", "120") == "Accepted"
    assert sim.heartbeat_interval == 120
    assert await change("LocalPreAuthorize", "maybe") == "Rejected"
    assert await change("WebSocketPingInterval", "60") == "RebootRequired"
    assert await change("TxCtrlr.TxStopPoint", "EVConnected,Authorized") == "Accepted"
    for key in ("AuthorizationKey", "SecurityProfile"):  # only through their own flows
        r = await bench.command(sim.identity, "change-configuration", key=key, value="2")
        assert r.status_code == 422 and r.json()["field"] == "key", r.text
    for component, variable in (
        ("SecurityCtrlr", "BasicAuthPassword"),
        ("securityctrlr", "SecurityProfile"),
        ("OCPPCommCtrlr", "NetworkConfigurationPriority"),
    ):
        item = {"component": component, "variable": variable, "value": "2"}
        r = await bench.command(sim.identity, "set-variables", variables=[item])
        assert r.status_code == 422 and r.json()["field"] == "variables", r.text
    assert sim.auth_key != "2"

    got = await bench.ok(
        sim.identity,
        "get-variables",
        variables=[
            {"component": "OCPPCommCtrlr", "variable": "HeartbeatInterval"},
            {"component": "EVSE", "variable": "AvailabilityState", "evse_id": 2},
            {"component": "TxCtrlr", "variable": "TxStopPoint"},
            {"component": "FluxCtrlr", "variable": "Capacity"},
        ],
    )
    assert got["status"] == "UnknownComponent"  # the first refusal names the answer
    values = [(r["attribute_status"], r.get("attribute_value")) for r in got["details"]["results"]]
    assert values == [
        ("Accepted", "120"),
        ("Accepted", "Available"),
        ("Accepted", "EVConnected,Authorized"),
        ("UnknownComponent", None),
    ]
    sets = await bench.ok(
        sim.identity,
        "set-variables",
        variables=[
            {"component": "SampledDataCtrlr", "variable": "TxUpdatedInterval", "value": "30"},
            {
                "component": "OCPPCommCtrlr",
                "variable": "MessageAttempts",
                "variable_instance": "TransactionEvent",
                "value": "5",
            },
        ],
    )
    assert sets["status"] == "Accepted"
    assert control(sim).setting("MeterValueSampleInterval") == "30"
    assert control(sim).setting("TransactionMessageAttempts") == "5"
    refused = await bench.ok(
        sim.identity,
        "set-variables",
        variables=[{"component": "ClockCtrlr", "variable": "DateTime", "value": "x"}],
    )
    assert refused["status"] == "Rejected"


async def test_get_base_report_arrives_as_report_events(bench: Bench201):
    sim = await bench.sim201()
    answer = await bench.ok(
        sim.identity, "get-base-report", report_base="FullInventory", request_id=31
    )
    assert answer["status"] == "Accepted"
    parts = sim.stats.calls_sent
    await until(lambda: parts["NotifyReport"] >= 3)
    events = await until(
        lambda: bench.events(sim.identity, "report"), lambda e: e and e[-1] == "last"
    )
    assert events == ["more"] * (len(events) - 1) + ["last"]
    assert len(events) == sim.stats.calls_sent["NotifyReport"]


async def test_local_list_cache_and_charging_profiles(bench: Bench201):
    sim = await bench.sim201()
    assert (await bench.ok(sim.identity, "get-local-list-version"))["details"] == {
        "list_version": 0
    }
    full = await bench.ok(
        sim.identity,
        "send-local-list",
        version=3,
        update_type="Full",
        entries=[
            {"id_tag": "A1", "status": "Accepted"},
            {"id_tag": "B2", "status": "Blocked", "expiry": "2030-01-01T00:00:00Z"},
        ],
    )
    assert full["status"] == "Accepted"
    assert set(control(sim).local_list.entries) == {"A1", "B2"}
    diff = await bench.ok(
        sim.identity,
        "send-local-list",
        version=4,
        update_type="Differential",
        entries=[{"id_tag": "A1"}, {"id_tag": "C3", "status": "Accepted"}],
    )
    assert diff["status"] == "Accepted"
    assert set(control(sim).local_list.entries) == {"B2", "C3"}
    assert (await bench.ok(sim.identity, "get-local-list-version"))["details"] == {
        "list_version": 4
    }
    assert (await bench.ok(sim.identity, "clear-cache"))["status"] == "Accepted"

    site_limit = {
        "id": 10,
        "purpose": "ChargePointMaxProfile",
        "kind": "Absolute",
        "rate_unit": "W",
        "periods": [{"start_period": 0, "limit": 7400.0}],
    }
    answer = await bench.ok(
        sim.identity, "set-charging-profile", connector_id=0, profile=site_limit
    )
    assert answer["status"] == "Accepted"
    assert sim.charging_power_kw(1) == pytest.approx(7.4)
    await bench.ok(sim.identity, "remote-start", id_tag="T1", connector_id=1)
    await until(lambda: 1 in sim.transactions and sim.transactions[1].transaction_id)
    tx = {
        **site_limit,
        "id": 11,
        "purpose": "TxProfile",
        "rate_unit": "A",
        "transaction_id": tx_of(sim, 1),
        "periods": [{"start_period": 0, "limit": 6.0, "number_phases": 1}],
    }
    set_tx = await bench.ok(sim.identity, "set-charging-profile", connector_id=1, profile=tx)
    assert set_tx["status"] == "Accepted"
    assert sim.charging_power_kw(1) == pytest.approx(6.0 * 230 / 1000)
    cleared = await bench.ok(sim.identity, "clear-charging-profile", purpose="TxProfile")
    assert cleared["status"] == "Accepted"
    assert sim.charging_power_kw(1) == pytest.approx(7.4)
    assert (await bench.ok(sim.identity, "clear-charging-profile", profile_id=10))[
        "status"
    ] == "Accepted"
    assert (await bench.ok(sim.identity, "clear-charging-profile", profile_id=10))[
        "status"
    ] == "Unknown"


async def test_trigger_message(bench: Bench201):
    sim = await bench.sim201()

    async def trigger(message: str, **params: Any) -> str:
        answer = await bench.ok(sim.identity, "trigger-message", message=message, **params)
        return str(answer["status"])

    before = sim.stats.calls_sent["StatusNotification"]
    assert await trigger("StatusNotification") == "Accepted"
    await until(lambda: sim.stats.calls_sent["StatusNotification"] >= before + 2)
    assert await trigger("MeterValues", connector_id=1) == "Accepted"
    await until(lambda: sim.stats.calls_sent["MeterValues"] == 1)
    assert await trigger("TransactionEvent") == "Rejected"  # nothing running
    assert await trigger("BootNotification") == "Rejected"  # already accepted (F06.FR.17)
    assert await trigger("FirmwareStatusNotification") == "Accepted"
    await until(lambda: bench.events(sim.identity, "firmware_status"), lambda e: e == ["Idle"])
    assert await trigger("SignChargePointCertificate") == "Accepted"  # 1.6 name, mapped
    # the simulator's CSR is signed by evota's charger CA (tests/test_charger_certificates.py)
    await until(lambda: bench.events(sim.identity, "sign_certificate"), lambda e: e == ["Accepted"])
    assert await trigger("PublishFirmwareStatusNotification") == "NotImplemented"
    r = await bench.command(
        sim.identity, "trigger-message", message="DiagnosticsStatusNotification"
    )
    assert r.status_code == 409  # 1.6 only


async def test_get_log_uploads_into_evota(bench: Bench201):
    sim = await bench.sim201()
    answer = await bench.ok(sim.identity, "get-log", log_type="DiagnosticsLog", request_id=78)
    assert answer["status"] == "Accepted"
    await until(
        lambda: bench.events(sim.identity, "log_status"), lambda e: e == ["Uploading", "Uploaded"]
    )
    async with bench.rt.engine.connect() as conn:
        row = (await conn.execute(select(ChargerFile))).one()
    assert (row.kind, row.request_id, row.filename) == ("log", 78, answer["details"]["file_name"])
    [upload] = control(sim).uploads
    assert hashlib.sha256(await _download(bench, row.id)).hexdigest() == upload.sha256
    r = await bench.command(sim.identity, "get-diagnostics")
    assert r.status_code == 409 and r.json()["reason"] == "unsupported"


async def test_certificates_and_data_transfer(bench: Bench201):
    sim = await bench.sim201()
    _, root = signing.generate_ca("Evota CSMS Root", "Evota")
    installed = await bench.ok(
        sim.identity,
        "install-certificate",
        certificate_type="CentralSystemRootCertificate",  # the 1.6 name maps to CSMSRoot
        certificate=root.decode(),
    )
    assert installed["status"] == "Accepted"
    assert [use for use, _ in control(sim).certificates][-1] == "CSMSRootCertificate"
    listed = await bench.ok(
        sim.identity, "get-installed-certificate-ids", certificate_type="CSMSRootCertificate"
    )
    [cert] = listed["details"]["certificates"]
    assert cert.pop("certificate_type") == "CSMSRootCertificate"
    maker = await bench.ok(
        sim.identity,
        "get-installed-certificate-ids",
        certificate_type="ManufacturerRootCertificate",
    )
    assert len(maker["details"]["certificates"]) == 1
    assert (await bench.ok(sim.identity, "delete-certificate", **cert))["status"] == "Accepted"
    assert (await bench.ok(sim.identity, "delete-certificate", **cert))["status"] == "NotFound"
    echo = await bench.ok(
        sim.identity, "data-transfer", vendor_id="Evota", message_id="echo", data="ping"
    )
    assert (echo["status"], echo["details"]) == ("Accepted", {"data": "ping"})
    other = await bench.ok(sim.identity, "data-transfer", vendor_id="Acme")
    assert other["status"] == "UnknownVendorId"


async def test_a_1_6_charger_refuses_2_0_1_only_commands_before_sending(bench: Bench201):
    sim16 = await bench.sim("OLD-0001")
    for name, params in (
        ("get-variables", {"variables": [{"component": "OCPPCommCtrlr", "variable": "X"}]}),
        ("get-base-report", {}),
        ("reset", {"type": "OnIdle"}),
    ):
        r = await bench.command(sim16.identity, name, **params)
        assert r.status_code == 409 and r.json()["reason"] == "unsupported", (name, r.text)
    assert sim16.stats.calls_received["Reset"] == 0
