"""The simulated charger speaking OCPP 2.0.1, against the throwaway CSMS in 2.0.1 mode.

Every CALL the charger sends and every answer it gives is validated against the 2.0.1 schemas
by the fake CSMS (``csms.invalid``); the charger validates what it receives itself.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from evota.firmware.signing import generate_ca
from evota.ocpp import rpc
from evota.sim.charger import SimConfig, SimulatedCharger
from evota.sim.control.certificates import certificate_hash
from evota.sim.control.state import state
from evota.sim.fleet import FaultProfile
from evota.sim.runner import wait_until
from evota.sim.v201 import V201Wire

from . import test_control
from .conftest import FakeCsms, fast, spec
from .test_control import Receiver

receiver = test_control.receiver  # the upload server fixture

V201 = "ocpp2.0.1"


@asynccontextmanager
async def running(
    csms: FakeCsms, config: SimConfig | None = None, identity: str = "CP-1", **kw: Any
) -> AsyncIterator[SimulatedCharger]:
    charger = SimulatedCharger(spec(identity, protocol=V201, **kw), csms.url, config or fast())
    charger.start()
    try:
        await wait_until(lambda: charger.accepted, 3)
        await wait_until(lambda: len(statuses(csms)) >= charger.spec.connectors, 3)
        yield charger
    finally:
        await charger.stop()
    assert csms.invalid == [], csms.invalid
    assert charger.stats.invalid_results == 0 and csms.overlaps == 0


async def answer(csms: FakeCsms, action: str, payload: dict[str, Any]) -> Any:
    result = await csms.call("CP-1", action, payload)
    if isinstance(result, rpc.CallError):
        return result.code
    return result.payload


def statuses(csms: FakeCsms, evse: int | None = None) -> list[Any]:
    return [
        p["connectorStatus"] if evse is not None else (p["evseId"], p["connectorStatus"])
        for p in csms.payloads("StatusNotification")
        if evse is None or p["evseId"] == evse
    ]


def events(csms: FakeCsms) -> list[dict[str, Any]]:
    return csms.payloads("TransactionEvent")


def var(component: str, variable: str, instance: str | None = None, **extra: Any) -> dict[str, Any]:
    v: dict[str, Any] = {"name": variable}
    if instance:
        v["instance"] = instance
    c: dict[str, Any] = {"name": component}
    if "evse" in extra:
        c["evse"] = extra.pop("evse")
    return {"component": c, "variable": v, **extra}


# -- connection, boot, status -------------------------------------------------------------------


async def test_boots_with_2_0_1_messages_and_reports_each_evse(csms201: FakeCsms) -> None:
    csms201.interval = 60
    async with running(csms201, vendor="Acme", model="AC22", firmware_version="2.3.1") as c:
        assert isinstance(c.wire, V201Wire) and c.wire.subprotocol == V201
        await wait_until(lambda: len(csms201.payloads("Heartbeat")) >= 2, 3)
    assert csms201.payloads("BootNotification") == [
        {
            "reason": "PowerUp",
            "chargingStation": {
                "model": "AC22",
                "vendorName": "Acme",
                "serialNumber": "SN-CP-1",
                "firmwareVersion": "2.3.1",
            },
        }
    ]
    # One StatusNotification per EVSE (connector 1 on each), none for the station itself.
    assert statuses(csms201) == [(1, "Available"), (2, "Available")]
    assert {p["connectorId"] for p in csms201.payloads("StatusNotification")} == {1}


async def test_a_2_0_1_charger_does_not_talk_to_a_1_6_only_csms(csms: FakeCsms) -> None:
    charger = SimulatedCharger(spec(protocol=V201), csms.url, fast())
    charger.start()
    try:
        await wait_until(lambda: charger.stats.connect_failures >= 2, 3)
        # websockets refuses the upgrade (400); a CSMS that completes it without a
        # subprotocol is refused by the charger instead.
        assert charger.stats.boots_sent == 0 and not charger.connected
    finally:
        await charger.stop()
    assert csms.received == []


async def test_a_reconnect_is_not_a_reboot_but_a_reset_is(csms201: FakeCsms) -> None:
    async with running(csms201) as c:
        await csms201.drop("CP-1")
        await wait_until(lambda: c.stats.connects == 2 and c.accepted, 3)
        await asyncio.sleep(0.1)
        assert c.stats.boots_sent == 1  # B01: a charger boots after a reboot only
        assert await answer(csms201, "Reset", {"type": "Immediate"}) == {"status": "Accepted"}
        await wait_until(lambda: c.stats.boots_accepted == 2 and c.accepted, 3)
        # A reset charger reports every EVSE again, even unchanged ones.
        await wait_until(lambda: len(statuses(csms201)) == 4, 3)
    assert [b["reason"] for b in csms201.payloads("BootNotification")] == [
        "PowerUp",
        "RemoteReset",
    ]


async def test_startups_and_resets_are_security_events(csms201: FakeCsms) -> None:
    async with running(csms201) as c:
        assert await answer(csms201, "Reset", {"type": "Immediate"}) == {"status": "Accepted"}
        await wait_until(lambda: len(csms201.payloads("SecurityEventNotification")) == 2, 3)
        await csms201.drop("CP-1")  # a reconnect is no reboot: no event
        await wait_until(lambda: c.stats.connects == 3 and c.accepted, 3)
        await asyncio.sleep(0.1)
    kinds = [p["type"] for p in csms201.payloads("SecurityEventNotification")]
    assert kinds == ["StartupOfTheDevice", "ResetOrReboot"]


@pytest.mark.parametrize("status", ["Pending", "Rejected"])
async def test_boot_is_retried_until_accepted(csms201: FakeCsms, status: str) -> None:
    csms201.boot_statuses = [status, status]
    csms201.interval = 30
    async with running(csms201) as c:
        assert c.stats.boots_sent == 3
    assert set(csms201.actions()[:3]) == {"BootNotification"}


# -- transactions -------------------------------------------------------------------------------


async def test_a_session_is_one_transaction_of_events(csms201: FakeCsms) -> None:
    config = fast(meter_interval=20.0, session_duration=(70.0, 70.0))
    async with running(csms201, config) as c:
        assert await c.begin_session(2, "RFID-1")
        await wait_until(lambda: statuses(csms201, 2)[-1:] == ["Available"], 3)
    [auth] = csms201.payloads("Authorize")
    assert auth == {"idToken": {"idToken": "RFID-1", "type": "ISO14443"}}
    evs = events(csms201)
    kinds = [(e["eventType"], e["triggerReason"]) for e in evs]
    assert kinds[:2] == [("Started", "Authorized"), ("Updated", "ChargingStateChanged")]
    assert kinds[-1] == ("Ended", "EVCommunicationLost")
    assert set(kinds[2:-1]) == {("Updated", "MeterValuePeriodic")} and len(kinds) == 6
    assert [e["seqNo"] for e in evs] == list(range(len(evs)))
    assert len({e["transactionInfo"]["transactionId"] for e in evs}) == 1
    assert all(e["evse"] == {"id": 2, "connectorId": 1} for e in evs)
    started, ended = evs[0], evs[-1]
    assert started["idToken"] == {"idToken": "RFID-1", "type": "ISO14443"}
    assert started["transactionInfo"]["chargingState"] == "EVConnected"
    assert evs[1]["transactionInfo"]["chargingState"] == "Charging"
    assert ended["transactionInfo"]["stoppedReason"] == "EVDisconnected"
    assert ended["transactionInfo"]["chargingState"] == "Idle"
    begin = started["meterValue"][0]["sampledValue"][0]
    end = ended["meterValue"][0]["sampledValue"][0]
    assert (begin["context"], end["context"]) == ("Transaction.Begin", "Transaction.End")
    assert begin["unitOfMeasure"] == {"unit": "Wh"}
    assert end["value"] - begin["value"] == c.stats.energy_wh > 0
    # 2.0.1 reports connector status changes only: Occupied once, then Available.
    assert statuses(csms201, 2) == ["Available", "Occupied", "Available"]
    assert "StartTransaction" not in csms201.actions() and "MeterValues" not in csms201.actions()


async def test_a_token_refused_at_start_ends_the_transaction(csms201: FakeCsms) -> None:
    csms201.overrides["TransactionEvent"] = lambda _, p: (
        {"idTokenInfo": {"status": "Invalid"}} if "idToken" in p else {}
    )
    async with running(csms201) as c:
        assert not await c.begin_session(1, "BAD")
    [started, ended] = events(csms201)
    assert started["eventType"] == "Started" and ended["eventType"] == "Ended"
    assert ended["transactionInfo"]["stoppedReason"] == "DeAuthorized"
    assert ended["triggerReason"] == "Deauthorized"


async def test_request_start_and_stop(csms201: FakeCsms) -> None:
    async with running(csms201) as c:
        start = {"idToken": {"idToken": "APP-7", "type": "Central"}, "remoteStartId": 42}
        assert await answer(csms201, "RequestStartTransaction", start) == {"status": "Accepted"}
        await wait_until(lambda: 1 in c.transactions and c.transactions[1].transaction_id, 3)
        await wait_until(lambda: len(events(csms201)) >= 2, 3)
        started = events(csms201)[0]
        assert started["triggerReason"] == "RemoteStart"
        assert started["transactionInfo"]["remoteStartId"] == 42
        assert started["idToken"] == {"idToken": "APP-7", "type": "Central"}
        assert csms201.payloads("Authorize")[0]["idToken"]["idToken"] == "APP-7"
        tx = c.transactions[1].transaction_id
        stop = {"transactionId": tx}
        assert await answer(csms201, "RequestStopTransaction", stop) == {"status": "Accepted"}
        await wait_until(lambda: events(csms201)[-1]["eventType"] == "Ended", 3)
        ended = events(csms201)[-1]
        assert ended["transactionInfo"]["stoppedReason"] == "Remote"
        assert ended["triggerReason"] == "RemoteStop"
        assert await answer(csms201, "RequestStopTransaction", stop) == {"status": "Rejected"}
        # AuthCtrlr.AuthorizeRemoteStart false: no Authorize before a remote start.
        off = var("AuthCtrlr", "AuthorizeRemoteStart", attributeValue="false")
        result = await answer(csms201, "SetVariables", {"setVariableData": [off]})
        assert result["setVariableResult"][0]["attributeStatus"] == "Accepted"
        start = {
            "idToken": {"idToken": "APP-8", "type": "Central"},
            "remoteStartId": 43,
            "evseId": 2,
        }
        assert await answer(csms201, "RequestStartTransaction", start) == {"status": "Accepted"}
        await wait_until(lambda: 2 in c.transactions and c.transactions[2].transaction_id, 3)
        assert [a["idToken"]["idToken"] for a in csms201.payloads("Authorize")] == ["APP-7"]
        busy = {"idToken": {"idToken": "X", "type": "Central"}, "remoteStartId": 44, "evseId": 2}
        assert await answer(csms201, "RequestStartTransaction", busy) == {"status": "Rejected"}


async def test_unlock_never_cuts_a_transaction(csms201: FakeCsms) -> None:
    async with running(csms201) as c:
        c.begin_session(1, "T", duration=10**9)
        await wait_until(lambda: c.transactions.get(1) and c.transactions[1].transaction_id, 3)
        unlock = {"evseId": 1, "connectorId": 1}
        assert await answer(csms201, "UnlockConnector", unlock) == {
            "status": "OngoingAuthorizedTransaction"
        }
        assert await answer(csms201, "UnlockConnector", {"evseId": 2, "connectorId": 1}) == {
            "status": "Unlocked"
        }
        for bad in ({"evseId": 3, "connectorId": 1}, {"evseId": 2, "connectorId": 2}):
            assert await answer(csms201, "UnlockConnector", bad) == {"status": "UnknownConnector"}
        assert state(c).unlocked == [2] and 1 in c.transactions


async def test_change_availability_per_evse_and_station(csms201: FakeCsms) -> None:
    async with running(csms201) as c:
        c.begin_session(1, "T", duration=10**9)
        await wait_until(lambda: statuses(csms201, 1)[-1:] == ["Occupied"], 3)
        down = {"operationalStatus": "Inoperative"}
        assert await answer(csms201, "ChangeAvailability", down) == {"status": "Scheduled"}
        await wait_until(lambda: statuses(csms201, 2)[-1:] == ["Unavailable"], 3)
        tx = c.transactions[1].transaction_id
        await answer(csms201, "RequestStopTransaction", {"transactionId": tx})
        await wait_until(lambda: statuses(csms201, 1)[-1:] == ["Unavailable"], 3)
        up = {"operationalStatus": "Operative"}
        assert await answer(csms201, "ChangeAvailability", up) == {"status": "Accepted"}
        await wait_until(lambda: statuses(csms201, 1)[-1:] == ["Available"], 3)
        one = {"operationalStatus": "Inoperative", "evse": {"id": 2}}
        assert await answer(csms201, "ChangeAvailability", one) == {"status": "Accepted"}
        await wait_until(lambda: statuses(csms201, 2)[-1:] == ["Unavailable"], 3)
        assert statuses(csms201, 1)[-1] == "Available"
        bad = {"operationalStatus": "Inoperative", "evse": {"id": 7}}
        assert await answer(csms201, "ChangeAvailability", bad) == {"status": "Rejected"}


async def test_reset_on_idle_waits_for_the_session(csms201: FakeCsms) -> None:
    async with running(csms201) as c:
        c.begin_session(1, "T", duration=10**9)
        await wait_until(lambda: c.transactions.get(1) and c.transactions[1].transaction_id, 3)
        assert await answer(csms201, "Reset", {"type": "OnIdle"}) == {"status": "Scheduled"}
        assert await answer(csms201, "Reset", {"type": "OnIdle", "evseId": 1}) == {
            "status": "Rejected",
            "statusInfo": {"reasonCode": "NoEVSEReset"},
        }
        await asyncio.sleep(0.2)
        assert c.stats.boots_sent == 1  # still charging: no reboot yet
        tx = c.transactions[1].transaction_id
        await answer(csms201, "RequestStopTransaction", {"transactionId": tx})
        await wait_until(lambda: c.stats.boots_accepted == 2 and c.accepted, 3)
        assert events(csms201)[-1]["transactionInfo"]["stoppedReason"] == "Remote"
        # Idle now: OnIdle resets at once.
        assert await answer(csms201, "Reset", {"type": "OnIdle"}) == {"status": "Accepted"}
        await wait_until(lambda: c.stats.boots_accepted == 3 and c.accepted, 3)


async def test_reset_immediate_ends_the_session_with_immediate_reset(csms201: FakeCsms) -> None:
    async with running(csms201) as c:
        c.begin_session(2, "T", duration=10**9)
        await wait_until(lambda: c.transactions.get(2) and c.transactions[2].transaction_id, 3)
        assert await answer(csms201, "Reset", {"type": "Immediate"}) == {"status": "Accepted"}
        await wait_until(lambda: c.stats.boots_accepted == 2 and c.accepted, 3)
    ended = events(csms201)[-1]
    assert ended["eventType"] == "Ended" and ended["triggerReason"] == "ResetCommand"
    assert ended["transactionInfo"]["stoppedReason"] == "ImmediateReset"
    assert csms201.payloads("BootNotification")[-1]["reason"] == "RemoteReset"


async def test_a_faulted_station_reports_status_and_a_problem_event(csms201: FakeCsms) -> None:
    profile = FaultProfile(bad_versions=("6.6.6",))
    async with running(csms201, firmware_version="6.6.6", faults=profile):
        await wait_until(lambda: csms201.payloads("NotifyEvent"), 3)
    assert statuses(csms201) == [(1, "Faulted"), (2, "Faulted")]
    [notify] = csms201.payloads("NotifyEvent")
    [event] = notify["eventData"]
    assert (event["component"], event["variable"]) == (
        {"name": "ChargingStation"},
        {"name": "Problem"},
    )
    assert event["actualValue"] == "true" and event["trigger"] == "Delta"


# -- device model -------------------------------------------------------------------------------


async def test_get_and_set_variables(csms201: FakeCsms) -> None:
    async with running(csms201) as c:
        items = [
            var("OCPPCommCtrlr", "HeartbeatInterval"),
            var("ocppcommctrlr", "heartbeatinterval"),  # names match case-insensitively
            var("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent"),
            var("SecurityCtrlr", "BasicAuthPassword"),
            var("SecurityCtrlr", "NoSuchVariable"),
            var("NoSuchCtrlr", "Enabled"),
            var("OCPPCommCtrlr", "HeartbeatInterval", attributeType="MaxSet"),
            var("EVSE", "AvailabilityState", evse={"id": 2}),
            var("EVSE", "AvailabilityState", evse={"id": 9}),
            var("SmartChargingCtrlr", "RateUnit"),
        ]
        got = await answer(csms201, "GetVariables", {"getVariableData": items})
        results = [
            (r["attributeStatus"], r.get("attributeValue")) for r in got["getVariableResult"]
        ]
        assert results == [
            ("Accepted", "60"),
            ("Accepted", "60"),
            ("Accepted", "3"),
            ("Rejected", None),  # write-only
            ("UnknownVariable", None),
            ("UnknownComponent", None),
            ("NotSupportedAttributeType", None),
            ("Accepted", "Available"),
            ("UnknownComponent", None),
            ("Accepted", "A,W"),
        ]
        assert got["getVariableResult"][1]["component"] == {"name": "ocppcommctrlr"}  # echoed
        new_key = "a-brand-new-key-of-24ch"
        sets = [
            var("OCPPCommCtrlr", "HeartbeatInterval", attributeValue="120"),
            var("OCPPCommCtrlr", "WebSocketPingInterval", attributeValue="20"),
            var("SecurityCtrlr", "SecurityProfile", attributeValue="2"),
            var("OCPPCommCtrlr", "HeartbeatInterval", attributeValue="often"),
            var("TxCtrlr", "TxStartPoint", attributeValue="EVConnected,Authorized"),
            var("TxCtrlr", "TxStopPoint", attributeValue="Sometimes"),
            var("SecurityCtrlr", "BasicAuthPassword", attributeValue=new_key),
            var("ClockCtrlr", "DateTime", attributeValue="2020-01-01T00:00:00Z"),
            var("NoSuchCtrlr", "X", attributeValue="1"),
        ]
        csms201.keys = {c.identity: new_key}  # the charger reconnects with it (A01)
        link = csms201.links[c.identity]
        got = await answer(csms201, "SetVariables", {"setVariableData": sets})
        await wait_until(lambda: csms201.links.get(c.identity) not in (None, link), 3)
        assert [r["attributeStatus"] for r in got["setVariableResult"]] == [
            "Accepted",
            "RebootRequired",
            "Rejected",  # read-only in 2.0.1 (SetNetworkProfile changes it)
            "Rejected",
            "Accepted",
            "Rejected",
            "Accepted",
            "Rejected",  # computed by the station
            "UnknownComponent",
        ]
        assert c.heartbeat_interval == 120 and c.auth_key == new_key
        again = await answer(
            csms201, "GetVariables", {"getVariableData": [var("TxCtrlr", "TxStartPoint")]}
        )
        assert again["getVariableResult"][0]["attributeValue"] == "EVConnected,Authorized"
        too_many = {"getVariableData": [var("OCPPCommCtrlr", "HeartbeatInterval")] * 101}
        assert await answer(csms201, "GetVariables", too_many) == "OccurrenceConstraintViolation"


async def test_get_base_report_sends_the_device_model_in_parts(csms201: FakeCsms) -> None:
    async with running(csms201, connectors=3):
        base = {"requestId": 7, "reportBase": "FullInventory"}
        assert await answer(csms201, "GetBaseReport", base) == {"status": "Accepted"}
        await wait_until(
            lambda: (
                csms201.payloads("NotifyReport")
                and "tbc" not in csms201.payloads("NotifyReport")[-1]
            ),
            3,
        )
        parts = csms201.payloads("NotifyReport")
        assert [p["seqNo"] for p in parts] == list(range(len(parts))) and len(parts) > 2
        assert all(p["requestId"] == 7 and p["tbc"] for p in parts[:-1])
        assert all(len(p["reportData"]) <= 20 for p in parts)
        data = [item for p in parts for item in p["reportData"]]
        by_name = {
            (d["component"]["name"], d["variable"]["name"], d["variable"].get("instance")): d
            for d in data
            if "evse" not in d["component"]
        }
        heartbeat = by_name[("OCPPCommCtrlr", "HeartbeatInterval", None)]
        assert heartbeat["variableAttribute"] == [
            {"type": "Actual", "mutability": "ReadWrite", "persistent": True, "value": "60"}
        ]
        assert heartbeat["variableCharacteristics"]["dataType"] == "integer"
        password = by_name[("SecurityCtrlr", "BasicAuthPassword", None)]["variableAttribute"][0]
        assert password["mutability"] == "WriteOnly" and "value" not in password
        evses = {d["component"]["evse"]["id"] for d in data if "evse" in d["component"]}
        assert evses == {1, 2, 3}
        config = {"requestId": 8, "reportBase": "ConfigurationInventory"}
        assert await answer(csms201, "GetBaseReport", config) == {"status": "Accepted"}
        summary = {"requestId": 9, "reportBase": "SummaryInventory"}
        assert await answer(csms201, "GetBaseReport", summary) == {"status": "Accepted"}
        await wait_until(
            lambda: any(p["requestId"] == 9 for p in csms201.payloads("NotifyReport")), 3
        )
        await asyncio.sleep(0.1)
    of = {
        rid: [
            i
            for p in csms201.payloads("NotifyReport")
            if p["requestId"] == rid
            for i in p["reportData"]
        ]
        for rid in (7, 8, 9)
    }
    assert all(i["variableAttribute"][0]["mutability"] != "ReadOnly" for i in of[8])
    assert 0 < len(of[8]) < len(of[7])
    assert {i["variable"]["name"] for i in of[9]} == {"AvailabilityState"}


# -- trigger message ----------------------------------------------------------------------------


async def test_trigger_message(csms201: FakeCsms) -> None:
    async with running(csms201) as c:
        before = len(statuses(csms201))

        async def trigger(message: str, **extra: Any) -> Any:
            return await answer(csms201, "TriggerMessage", {"requestedMessage": message, **extra})

        assert await trigger("StatusNotification", evse={"id": 2}) == {"status": "Accepted"}
        await wait_until(lambda: len(statuses(csms201)) == before + 1, 3)
        assert statuses(csms201)[-1] == (2, "Available")  # re-sent although unchanged
        assert await trigger("Heartbeat") == {"status": "Accepted"}
        assert await trigger("MeterValues") == {"status": "Accepted"}
        await wait_until(lambda: len(csms201.payloads("MeterValues")) == 2, 3)
        assert [m["evseId"] for m in csms201.payloads("MeterValues")] == [1, 2]
        context = csms201.payloads("MeterValues")[0]["meterValue"][0]["sampledValue"][0]
        assert context["context"] == "Trigger"
        assert await trigger("TransactionEvent") == {"status": "Rejected"}  # none running
        c.begin_session(1, "T", duration=10**9)
        await wait_until(lambda: len(events(csms201)) >= 2, 3)
        assert await trigger("TransactionEvent", evse={"id": 1}) == {"status": "Accepted"}
        await wait_until(lambda: any(e["triggerReason"] == "Trigger" for e in events(csms201)), 3)
        assert await trigger("FirmwareStatusNotification") == {"status": "Accepted"}
        assert await trigger("LogStatusNotification") == {"status": "Accepted"}
        await wait_until(
            lambda: (
                csms201.payloads("FirmwareStatusNotification") == [{"status": "Idle"}]
                and csms201.payloads("LogStatusNotification") == [{"status": "Idle"}]
            ),
            3,
        )
        assert await trigger("BootNotification") == {"status": "Rejected"}  # already accepted
        assert await trigger("SignChargingStationCertificate") == {"status": "Accepted"}
        await wait_until(lambda: csms201.payloads("SignCertificate"), 3)
        [sign] = csms201.payloads("SignCertificate")
        assert sign["certificateType"] == "ChargingStationCertificate"
        assert sign["csr"].startswith("-----BEGIN CERTIFICATE REQUEST-----")
        assert await trigger("PublishFirmwareStatusNotification") == {"status": "NotImplemented"}
        assert await trigger("StatusNotification", evse={"id": 5}) == {"status": "Rejected"}
        assert c.stats.boots_sent == 1


# -- smart charging, local list, certificates, data transfer -----------------------------------


def profile(pid: int, purpose: str, limit: float, **extra: Any) -> dict[str, Any]:
    schedule = {
        "id": pid,
        "chargingRateUnit": "W",
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
    }
    return {
        "id": pid,
        "stackLevel": 0,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Relative",
        "chargingSchedule": [schedule],
        **extra,
    }


async def test_charging_profiles_cap_the_power(csms201: FakeCsms) -> None:
    async with running(csms201) as c:

        async def put(evse: int, p: dict[str, Any]) -> Any:
            return await answer(
                csms201, "SetChargingProfile", {"evseId": evse, "chargingProfile": p}
            )

        assert await put(0, profile(1, "TxDefaultProfile", 3700.0)) == {"status": "Accepted"}
        assert c.charging_power_kw(1) == pytest.approx(3.7)
        assert await put(1, profile(2, "ChargingStationMaxProfile", 1.0)) == {"status": "Rejected"}
        assert await put(0, profile(3, "ChargingStationExternalConstraints", 1.0)) == {
            "status": "Rejected"
        }
        assert await put(1, profile(4, "TxProfile", 1000.0)) == {"status": "Rejected"}  # no tx
        c.begin_session(1, "T", duration=10**9)
        await wait_until(lambda: c.transactions.get(1) and c.transactions[1].transaction_id, 3)
        tx = c.transactions[1].transaction_id
        assert await put(1, profile(4, "TxProfile", 2000.0, transactionId=tx)) == {
            "status": "Accepted"
        }
        assert c.charging_power_kw(1) == pytest.approx(2.0)
        assert await put(0, profile(5, "ChargingStationMaxProfile", 1500.0)) == {
            "status": "Accepted"
        }
        assert c.charging_power_kw(1) == pytest.approx(1.5)
        clear = {"chargingProfileId": 5}
        assert await answer(csms201, "ClearChargingProfile", clear) == {"status": "Accepted"}
        assert await answer(csms201, "ClearChargingProfile", clear) == {"status": "Unknown"}
        criteria = {"chargingProfileCriteria": {"chargingProfilePurpose": "TxProfile"}}
        assert await answer(csms201, "ClearChargingProfile", criteria) == {"status": "Accepted"}
        assert set(state(c).profiles) == {1}


async def test_local_list_cache_certificates_and_data_transfer(csms201: FakeCsms) -> None:
    _, root = generate_ca("CSMS Root", "Evota")
    async with running(csms201) as c:
        full = {
            "versionNumber": 3,
            "updateType": "Full",
            "localAuthorizationList": [
                {
                    "idToken": {"idToken": "A", "type": "ISO14443"},
                    "idTokenInfo": {"status": "Accepted"},
                },
                {
                    "idToken": {"idToken": "B", "type": "ISO14443"},
                    "idTokenInfo": {"status": "Blocked"},
                },
            ],
        }
        assert await answer(csms201, "SendLocalList", full) == {"status": "Accepted"}
        assert await answer(csms201, "GetLocalListVersion", {}) == {"versionNumber": 3}
        stale = {"versionNumber": 2, "updateType": "Differential"}
        assert await answer(csms201, "SendLocalList", stale) == {"status": "VersionMismatch"}
        assert set(state(c).local_list.entries) == {"A", "B"}
        assert await answer(csms201, "ClearCache", {}) == {"status": "Accepted"}

        install = {"certificateType": "CSMSRootCertificate", "certificate": root.decode()}
        assert await answer(csms201, "InstallCertificate", install) == {"status": "Accepted"}
        ids = await answer(
            csms201, "GetInstalledCertificateIds", {"certificateType": ["CSMSRootCertificate"]}
        )
        [chain] = ids["certificateHashDataChain"]
        assert chain["certificateType"] == "CSMSRootCertificate"
        assert chain["certificateHashData"] == certificate_hash(root.decode())
        delete = {"certificateHashData": chain["certificateHashData"]}
        assert await answer(csms201, "DeleteCertificate", delete) == {"status": "Accepted"}
        assert await answer(csms201, "DeleteCertificate", delete) == {"status": "NotFound"}
        assert await answer(
            csms201, "GetInstalledCertificateIds", {"certificateType": ["V2GRootCertificate"]}
        ) == {"status": "NotFound"}

        echo = {"vendorId": c.spec.vendor, "messageId": "echo", "data": {"any": ["json", 1]}}
        assert await answer(csms201, "DataTransfer", echo) == {
            "status": "Accepted",
            "data": {"any": ["json", 1]},
        }
        assert (await answer(csms201, "DataTransfer", {"vendorId": "X"}))["status"] == (
            "UnknownVendorId"
        )


async def test_get_log_uploads_and_reports_per_request(
    csms201: FakeCsms,
    receiver: Receiver,
) -> None:
    async with running(csms201) as c:
        payload = {
            "logType": "DiagnosticsLog",
            "requestId": 5,
            "log": {"remoteLocation": receiver.url("/logs/")},
        }
        got = await answer(csms201, "GetLog", payload)
        assert got["status"] == "Accepted"
        await wait_until(lambda: len(csms201.payloads("LogStatusNotification")) == 2, 3)
        assert csms201.payloads("LogStatusNotification") == [
            {"status": "Uploading", "requestId": 5},
            {"status": "Uploaded", "requestId": 5},
        ]
        [(method, path, body)] = receiver.received
        assert (method, path) == ("PUT", f"/logs/{got['filename']}")
        assert hashlib.sha256(body).hexdigest() == state(c).uploads[0].sha256


async def test_bad_calls_get_2_0_1_callerrors(csms201: FakeCsms) -> None:
    async with running(csms201) as c:
        cases = [
            ("FlyToTheMoon", {}, "NotImplemented"),
            ("ReserveNow", {"id": 1, "expiryDateTime": "2030-01-01T00:00:00Z",
                            "idToken": {"idToken": "A", "type": "Central"}}, "NotSupported"),
            ("Reset", {}, "OccurrenceConstraintViolation"),
            ("Reset", {"type": "Soft"}, "PropertyConstraintViolation"),  # a 1.6 value
            ("Reset", {"type": "Immediate", "when": 1}, "FormatViolation"),
            ("GetConfiguration", {}, "NotImplemented"),  # 1.6 only
        ]  # fmt: skip
        for action, payload, code in cases:
            assert await answer(csms201, action, payload) == code, action
        assert list(c.stats.errors_sent) == [code for _, _, code in cases]
