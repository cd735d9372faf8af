"""OCPP 2.0.1 on the CSMS side, against independent 2.0.1 clients.

The charger here is the ``ocpp`` package's ``ocpp.v201.ChargePoint`` (it checks every message
both ways against the official 2.0.1 JSON schemas) over ``websockets`` with subprotocol
``ocpp2.0.1`` and HTTP Basic auth; a second run uses the Node ``ocpp-rpc`` client in strict
mode. Checked: every charger-initiated message gets a schema-valid answer and lands in evota's
store; every command sent through the REST API arrives as a valid 2.0.1 CALL and its answer
maps back; bad frames get the exact 2.0.1 CALLERROR; a firmware update walks L01/L02 to the
job outcome the status sequence means.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from ocpp.routing import after, on
from ocpp.v201 import ChargePoint, call, call_result
from sqlalchemy import select

from evota.control import catalog
from evota.ocpp import v201_variables
from evota.runtime import Runtime
from evota.store.models import AuditEntry, ChargerEvent, ChargerSetting, ChargingSession

from .conftest import Keys, api_client, basic, connect, provision
from .node_clients import NODE_DIR, ensure_node_modules, same_worker
from .support import until
from .test_firmware_update import Bench, allow_unsigned, events, running, statuses, upload

KEY = "v201-station-key-0123"
VENDOR = "Evota"  # the firmware tests' trusted vendor
MODEL = "V201-X"
SUBPROTOCOL = "ocpp2.0.1"


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


# -- an independent, strict 2.0.1 charging station --------------------------------------------

#: Every CSMS-initiated action evota may send, with the answer the station gives by default.
DEFAULT_ANSWERS: dict[str, dict[str, Any]] = {
    "Reset": {"status": "Accepted"},
    "RequestStartTransaction": {"status": "Accepted", "transaction_id": "TX-REMOTE"},
    "RequestStopTransaction": {"status": "Accepted"},
    "UnlockConnector": {"status": "Unlocked"},
    "ChangeAvailability": {"status": "Accepted"},
    "SetVariables": {},  # answered from the device model, see Station.answer
    "GetVariables": {},
    "GetBaseReport": {"status": "Accepted"},
    "GetLog": {"status": "Accepted", "filename": "security.log"},
    "TriggerMessage": {"status": "Accepted"},
    "SetChargingProfile": {"status": "Accepted"},
    "ClearChargingProfile": {"status": "Accepted"},
    "SendLocalList": {"status": "Accepted"},
    "GetLocalListVersion": {"version_number": 3},
    "ClearCache": {"status": "Accepted"},
    "InstallCertificate": {"status": "Accepted"},
    "DeleteCertificate": {"status": "Accepted"},
    "GetInstalledCertificateIds": {
        "status": "Accepted",
        "certificate_hash_data_chain": [
            {
                "certificateType": "ManufacturerRootCertificate",
                "certificateHashData": {
                    "hashAlgorithm": "SHA256",
                    "issuerNameHash": "aa" * 32,
                    "issuerKeyHash": "bb" * 32,
                    "serialNumber": "0a1b",
                },
            }
        ],
    },
    "DataTransfer": {"status": "Accepted", "data": {"echo": True}},
    "UpdateFirmware": {"status": "Accepted"},
}

#: The station's device model: (component, variable, variable instance) -> (value, mutability).
DEVICE_MODEL: dict[tuple[str, str, str | None], tuple[str, str]] = {
    ("OCPPCommCtrlr", "HeartbeatInterval", None): ("60", "ReadWrite"),
    ("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent"): ("3", "ReadWrite"),
    ("SecurityCtrlr", "SecurityProfile", None): ("1", "ReadOnly"),
    ("SecurityCtrlr", "BasicAuthPassword", None): ("", "WriteOnly"),
    ("AuthCtrlr", "AuthorizeRemoteStart", None): ("true", "ReadWrite"),
    ("SampledDataCtrlr", "TxUpdatedInterval", None): ("30", "ReadWrite"),
}


class Station(ChargePoint):
    """Records every CALL evota sends (raw, as on the wire) and answers it."""

    received: list[tuple[str, dict[str, Any]]]
    answers: dict[str, dict[str, Any] | Callable[[dict[str, Any]], Any]]
    model: dict[tuple[str, str, str | None], tuple[str, str]]

    def setup(self) -> Station:
        self.received = []
        self.answers = dict(DEFAULT_ANSWERS)
        self.model = dict(DEVICE_MODEL)
        return self

    async def route_message(self, raw_msg: str) -> None:
        msg = json.loads(raw_msg)
        if msg[0] == 2:
            self.received.append((msg[2], msg[3]))
        await super().route_message(raw_msg)

    def calls(self, action: str) -> list[dict[str, Any]]:
        return [p for a, p in self.received if a == action]

    def answer(self, action: str) -> Any:
        payload = self.calls(action)[-1]
        if action == "GetVariables":
            return call_result.GetVariables(
                get_variable_result=[self._get(item) for item in payload["getVariableData"]]
            )
        if action == "SetVariables":
            return call_result.SetVariables(
                set_variable_result=[self._set(item) for item in payload["setVariableData"]]
            )
        answer = self.answers[action]
        fields = answer(payload) if callable(answer) else answer
        return getattr(call_result, action)(**fields)

    def _key(self, item: dict[str, Any]) -> tuple[str, str, str | None]:
        return item["component"]["name"], item["variable"]["name"], item["variable"].get("instance")

    def _get(self, item: dict[str, Any]) -> dict[str, Any]:
        out = {"component": item["component"], "variable": item["variable"]}
        found = self.model.get(self._key(item))
        if found is None:
            return {**out, "attributeStatus": "UnknownVariable"}
        value, mutability = found
        if mutability == "WriteOnly":
            return {**out, "attributeStatus": "Rejected"}
        return {**out, "attributeStatus": "Accepted", "attributeValue": value}

    def _set(self, item: dict[str, Any]) -> dict[str, Any]:
        out = {"component": item["component"], "variable": item["variable"]}
        key = self._key(item)
        found = self.model.get(key)
        if found is None:
            return {**out, "attributeStatus": "UnknownVariable"}
        if found[1] == "ReadOnly":
            return {**out, "attributeStatus": "Rejected"}
        self.model[key] = (item["attributeValue"], found[1])
        reboot = key[0] == "SecurityCtrlr"
        return {**out, "attributeStatus": "RebootRequired" if reboot else "Accepted"}

    @after("GetBaseReport")
    async def report(self, request_id: int, **_: Any) -> None:
        await self.call(
            call.NotifyReport(
                request_id=request_id,
                generated_at=now(),
                seq_no=0,
                report_data=[
                    {
                        "component": {"name": "OCPPCommCtrlr"},
                        "variable": {"name": "HeartbeatInterval"},
                        "variableAttribute": [{"value": "60", "mutability": "ReadWrite"}],
                        "variableCharacteristics": {
                            "dataType": "integer",
                            "supportsMonitoring": False,
                            "unit": "s",
                        },
                    }
                ],
            )
        )


def _handler(action: str) -> Any:
    def handle(self: Station, **_: Any) -> Any:
        return self.answer(action)

    handle.__name__ = f"on_{action}"
    return on(action)(handle)


for _action in DEFAULT_ANSWERS:
    setattr(Station, f"on_{_action}", _handler(_action))


@contextlib.asynccontextmanager
async def station(
    rt: Runtime,
    identity: str,
    *,
    boot: bool = True,
    version: str = "1.0.0",
    provisioned: bool = False,
) -> AsyncIterator[Station]:
    if not provisioned:
        await provision(rt, identity, KEY)
    ws = await connect(rt, identity, KEY, subprotocols=[SUBPROTOCOL])
    assert ws.subprotocol == SUBPROTOCOL
    cp = Station(identity, ws, response_timeout=10).setup()
    task = asyncio.create_task(cp.start())
    try:
        if boot:
            answer = await cp.call(boot_call(version))
            assert answer.status == "Accepted"
        yield cp
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await ws.close()


def boot_call(version: str = "1.0.0", reason: str = "PowerUp") -> call.BootNotification:
    return call.BootNotification(
        charging_station={
            "vendorName": VENDOR,
            "model": MODEL,
            "serialNumber": "SN-201",
            "firmwareVersion": version,
            "modem": {"iccid": "8931000000000000001", "imsi": "262010000000001"},
        },
        reason=reason,
    )


def energy(wh: float, context: str = "Sample.Periodic", **unit: Any) -> list[dict[str, Any]]:
    sample: dict[str, Any] = {"value": wh, "context": context}
    if unit:
        sample["unitOfMeasure"] = unit
    phase = {"value": 230.0, "measurand": "Voltage", "phase": "L1-N"}
    return [{"timestamp": now(), "sampledValue": [sample, phase]}]


async def session_rows(rt: Runtime, charger_id: str) -> list[Any]:
    async with rt.engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    select(ChargingSession)
                    .where(ChargingSession.charger_id == charger_id)
                    .order_by(ChargingSession.id)
                )
            ).all()
        )


async def charger_events(rt: Runtime, charger_id: str, kind: str) -> list[Any]:
    await rt.fleet.writer.flush()
    async with rt.engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    select(ChargerEvent)
                    .where(ChargerEvent.charger_id == charger_id, ChargerEvent.kind == kind)
                    .order_by(ChargerEvent.id)
                )
            ).all()
        )


# -- charger-initiated messages ----------------------------------------------------------------


async def test_every_charger_initiated_message_gets_a_valid_answer(evota: Runtime) -> None:
    async with station(evota, "V201-ALL", boot=False) as cp:
        boot = await cp.call(boot_call())
        assert boot.status == "Accepted" and boot.interval == evota.settings.heartbeat_interval
        assert (await cp.call(call.Heartbeat())).current_time
        for evse, connector, status in (
            (1, 1, "Available"),
            (2, 1, "Available"),
            (2, 2, "Faulted"),
        ):
            await cp.call(
                call.StatusNotification(
                    timestamp=now(), connector_status=status, evse_id=evse, connector_id=connector
                )
            )
        token = {"idToken": "0123456789ABCDEF0123456789ABCDEF", "type": "ISO14443"}  # 32 chars
        assert (await cp.call(call.Authorize(id_token=token))).id_token_info["status"] == "Accepted"

        started = await cp.call(
            call.TransactionEvent(
                event_type="Started",
                timestamp=now(),
                trigger_reason="Authorized",
                seq_no=0,
                transaction_info={"transactionId": "TX-1", "chargingState": "EVConnected"},
                evse={"id": 1, "connectorId": 1},
                id_token=token,
                meter_value=energy(1000, "Transaction.Begin"),
            )
        )
        assert started.id_token_info == {"status": "Accepted"}
        await cp.call(
            call.StatusNotification(
                timestamp=now(), connector_status="Occupied", evse_id=1, connector_id=1
            )
        )
        updated = await cp.call(
            call.TransactionEvent(
                event_type="Updated",
                timestamp=now(),
                trigger_reason="MeterValuePeriodic",
                seq_no=1,
                transaction_info={"transactionId": "TX-1", "chargingState": "Charging"},
                meter_value=energy(2.5, unit="kWh"),
            )
        )
        assert updated.id_token_info is None  # no idToken in the request: none in the answer
        await cp.call(call.MeterValues(evse_id=1, meter_value=energy(2600)))
        ended = await cp.call(
            call.TransactionEvent(
                event_type="Ended",
                timestamp=now(),
                trigger_reason="EVDeparted",
                seq_no=2,
                transaction_info={"transactionId": "TX-1", "stoppedReason": "EVDisconnected"},
                meter_value=energy(4, "Transaction.End", unit="Wh", multiplier=3),
            )
        )
        assert ended.id_token_info is None
        # A transaction whose Started evota never saw (queued offline, lost to a restart):
        # its first event still makes a session; an ImmediateReset end is an interruption.
        for seq, kind, extra in (
            (5, "Updated", {"meter_value": energy(500)}),
            (6, "Ended", {"offline": True}),
        ):
            info = {"transactionId": "TX-LATE"}
            if kind == "Ended":
                info["stoppedReason"] = "ImmediateReset"
            await cp.call(
                call.TransactionEvent(
                    event_type=kind,
                    timestamp=now(),
                    trigger_reason="ResetCommand" if kind == "Ended" else "MeterValuePeriodic",
                    seq_no=seq,
                    transaction_info=info,
                    evse={"id": 2, "connectorId": 1},
                    **extra,
                )
            )
        await cp.call(
            call.NotifyEvent(
                generated_at=now(),
                seq_no=0,
                event_data=[
                    {
                        "eventId": 1,
                        "timestamp": now(),
                        "trigger": "Alerting",
                        "actualValue": "true",
                        "techCode": "E42",
                        "component": {"name": "Connector", "evse": {"id": 2, "connectorId": 2}},
                        "variable": {"name": "Problem"},
                        "eventNotificationType": "HardWiredNotification",
                    }
                ],
            )
        )
        await cp.call(
            call.NotifyReport(
                request_id=17,
                generated_at=now(),
                seq_no=0,
                tbc=False,
                report_data=[
                    {
                        "component": {"name": "EVSE", "evse": {"id": 1}},
                        "variable": {"name": "Power"},
                        "variableAttribute": [
                            {"value": "22000", "mutability": "ReadOnly"},
                            {"type": "MaxSet", "value": "22000"},
                        ],
                        "variableCharacteristics": {
                            "dataType": "decimal",
                            "unit": "W",
                            "supportsMonitoring": True,
                        },
                    }
                ],
            )
        )
        await cp.call(call.SecurityEventNotification(type="FirmwareUpdated", timestamp=now()))
        await cp.call(call.FirmwareStatusNotification(status="Downloading", request_id=21))
        await cp.call(call.LogStatusNotification(status="Uploading", request_id=22))
        transfer = await cp.call(call.DataTransfer(vendor_id="com.example", data={"a": [1, 2]}))
        assert transfer.status == "UnknownVendorId"
        signed = await cp.call(
            call.SignCertificate(csr="-----BEGIN CSR-----", certificate_type="V2GCertificate")
        )
        assert signed.status == "Rejected"

        await evota.fleet.writer.flush()
        async with api_client(evota) as api:
            c = (await api.get("/api/v1/chargers/V201-ALL")).json()
        assert (c["vendor"], c["model"], c["serial_number"], c["firmware_version"]) == (
            VENDOR,
            MODEL,
            "SN-201",
            "1.0.0",
        )
        assert c["connected"] is True and c["protocol"] == SUBPROTOCOL
        # Connector ids are EVSE ids; EVSE 2 shows its faulted second connector.
        connectors = {k["connector_id"]: (k["status"], k["info"]) for k in c["connectors"]}
        assert connectors == {1: ("Occupied", None), 2: ("Faulted", "connector 2")}

        sessions = {s.external_id: s for s in await session_rows(evota, "V201-ALL")}
        first, late = sessions["TX-1"], sessions["TX-LATE"]
        assert (first.connector_id, first.id_tag, first.meter_start_wh) == (
            1,
            token["idToken"],
            1000,
        )
        assert (first.meter_stop_wh, first.stop_reason, first.outcome) == (
            4000,
            "EVDisconnected",
            "completed",
        )
        assert (late.connector_id, late.meter_start_wh, late.stop_reason, late.outcome) == (
            2,
            500,
            "ImmediateReset",
            "interrupted",
        )
        boot_event = (await charger_events(evota, "V201-ALL", "boot"))[-1]
        assert boot_event.data["reason"] == "PowerUp"
        notified = (await charger_events(evota, "V201-ALL", "notify_event"))[0]
        assert notified.status == "Connector.Problem"
        assert notified.data["tech_code"] == "E42" and notified.data["connector_id"] == 2
        report = (await charger_events(evota, "V201-ALL", "report"))[0]
        assert (report.status, report.request_id) == ("last", 17)
        assert report.data["items"] == [
            {
                "component": "EVSE",
                "variable": "Power",
                "evse_id": 1,
                "value": "22000",
                "mutability": "ReadOnly",
                "maxset_value": "22000",
                "data_type": "decimal",
                "unit": "W",
            }
        ]
        firmware = (await charger_events(evota, "V201-ALL", "firmware_status"))[0]
        assert (firmware.status, firmware.request_id) == ("Downloading", 21)
        log = (await charger_events(evota, "V201-ALL", "log_status"))[0]
        assert (log.status, log.request_id) == ("Uploading", 22)
        transfer_event = (await charger_events(evota, "V201-ALL", "data_transfer"))[0]
        assert transfer_event.data["data"] == {"a": [1, 2]}
        security = (await charger_events(evota, "V201-ALL", "security_event"))[0]
        assert security.status == "FirmwareUpdated"


async def test_updates_of_a_known_transaction_are_written_behind(evota_sqlite: Runtime) -> None:
    """After the first event of a transaction, later ones need no database round trip: the
    session id is remembered, and after a reconnect it is found again in the database."""
    rt = evota_sqlite
    async with station(rt, "V201-TX") as cp:
        await cp.call(
            call.TransactionEvent(
                event_type="Started",
                timestamp=now(),
                trigger_reason="CablePluggedIn",
                seq_no=0,
                transaction_info={"transactionId": "TX-A"},
                evse={"id": 1, "connectorId": 1},
                meter_value=energy(10),
            )
        )
        assert "TX-A" in rt.fleet._transactions["V201-TX"]
        await cp.call(
            call.TransactionEvent(
                event_type="Updated",
                timestamp=now(),
                trigger_reason="Authorized",
                seq_no=1,
                transaction_info={"transactionId": "TX-A"},
                id_token={"idToken": "LATE-TAG", "type": "ISO14443"},
            )
        )
    await until(lambda: "V201-TX" not in rt.fleet._transactions)  # forgotten on disconnect
    async with station(rt, "V201-TX", boot=False, provisioned=True) as cp:
        await cp.call(
            call.TransactionEvent(
                event_type="Ended",
                timestamp=now(),
                trigger_reason="StopAuthorized",
                seq_no=2,
                transaction_info={"transactionId": "TX-A", "stoppedReason": "Local"},
                id_token={"idToken": "OTHER-TAG", "type": "ISO14443"},
                meter_value=energy(70),
            )
        )
    await rt.fleet.writer.flush()
    (row,) = await session_rows(rt, "V201-TX")
    assert (row.external_id, row.id_tag, row.meter_start_wh, row.meter_stop_wh) == (
        "TX-A",
        "LATE-TAG",  # authorized after plug-in; the stopping token does not replace it
        10,
        70,
    )
    assert (row.stop_reason, row.outcome) == ("Local", "completed")


# -- commands ------------------------------------------------------------------------------------


def _profile(purpose: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": 5,
        "stack_level": 1,
        "purpose": purpose,
        "rate_unit": "A",
        "periods": [{"start_period": 0, "limit": 16.0}, {"start_period": 600, "limit": 8.5}],
        **extra,
    }


async def test_every_command_is_a_valid_201_call_and_its_answer_maps_back(
    evota_sqlite: Runtime, keys: Keys
) -> None:
    rt = evota_sqlite
    api = api_client(rt)

    async def send(name: str, **params: Any) -> httpx.Response:
        body = {**params, "reason": "v201 test"}
        return await api.post(f"/api/v1/chargers/V201-CMD/commands/{name}", json=body)

    async def ok(name: str, **params: Any) -> dict[str, Any]:
        r = await send(name, **params)
        assert r.status_code == 200, (name, r.text)
        return dict(r.json())

    async def refused(name: str, **params: Any) -> str:
        r = await send(name, **params)
        assert r.status_code == 409, (name, r.text)
        assert r.json()["reason"] == "unsupported"
        return str(r.json()["detail"])

    try:
        async with station(rt, "V201-CMD") as cp:
            # The configuration read at boot is a GetVariables of every mapped, readable key.
            fetch = await until(lambda: cp.calls("GetVariables"))
            asked = {
                (i["component"]["name"], i["variable"]["name"]) for i in fetch[0]["getVariableData"]
            }
            assert ("OCPPCommCtrlr", "HeartbeatInterval") in asked
            assert ("SecurityCtrlr", "BasicAuthPassword") not in asked  # write-only
            settings = await until(lambda: _settings(rt, "V201-CMD"))
            assert settings["HeartbeatInterval"] == ("60", False)
            assert settings["SecurityProfile"] == ("1", True)

            # A session to address by evota's id.
            await cp.call(
                call.TransactionEvent(
                    event_type="Started",
                    timestamp=now(),
                    trigger_reason="Authorized",
                    seq_no=0,
                    transaction_info={"transactionId": "TX-CMD"},
                    evse={"id": 1, "connectorId": 1},
                    id_token={"idToken": "T1", "type": "ISO14443"},
                )
            )
            (session,) = await session_rows(rt, "V201-CMD")

            assert (await ok("reset", type="Hard"))["status"] == "Accepted"
            assert cp.calls("Reset")[-1] == {"type": "Immediate"}
            assert (await ok("reset", type="Immediate"))["status"] == "Accepted"
            assert cp.calls("Reset")[-1] == {"type": "Immediate"}

            started = await ok(
                "remote-start",
                id_tag="A-TOKEN-LONGER-THAN-20-CHARS",
                connector_id=1,
                charging_profile=_profile("TxProfile"),
            )
            assert started["status"] == "Accepted"
            assert started["details"] == {"transaction_id": "TX-REMOTE"}
            sent = cp.calls("RequestStartTransaction")[-1]
            assert sent["idToken"] == {"idToken": "A-TOKEN-LONGER-THAN-20-CHARS", "type": "Central"}
            assert sent["evseId"] == 1 and isinstance(sent["remoteStartId"], int)
            assert sent["chargingProfile"]["chargingProfilePurpose"] == "TxProfile"
            assert sent["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"] == [
                {"startPeriod": 0, "limit": 16.0},
                {"startPeriod": 600, "limit": 8.5},
            ]

            await ok("remote-stop", transaction_id=session.id)  # evota's session id ...
            assert cp.calls("RequestStopTransaction")[-1] == {"transactionId": "TX-CMD"}
            await ok("remote-stop", transaction_id="TX-OTHER")  # ... or the charger's own
            assert cp.calls("RequestStopTransaction")[-1] == {"transactionId": "TX-OTHER"}
            assert "session 999999" in await refused("remote-stop", transaction_id=999999)

            assert (await ok("unlock-connector", connector_id=2, evse_connector_id=2))[
                "status"
            ] == "Unlocked"
            assert cp.calls("UnlockConnector")[-1] == {"evseId": 2, "connectorId": 2}
            await ok("unlock-connector", connector_id=1)
            assert cp.calls("UnlockConnector")[-1] == {"evseId": 1, "connectorId": 1}

            cp.answers["ChangeAvailability"] = {"status": "Scheduled"}
            assert (await ok("change-availability", connector_id=0, type="Inoperative"))[
                "status"
            ] == "Scheduled"
            assert cp.calls("ChangeAvailability")[-1] == {"operationalStatus": "Inoperative"}
            await ok("change-availability", connector_id=1, type="Operative")
            assert cp.calls("ChangeAvailability")[-1] == {
                "operationalStatus": "Operative",
                "evse": {"id": 1},
            }

            got = await ok("get-configuration", keys=["heartbeatinterval", "SecurityProfile"])
            assert got["details"]["configuration"] == [
                {"key": "HeartbeatInterval", "value": "60", "readonly": False},
                {"key": "SecurityProfile", "value": "1", "readonly": True},
            ]
            got = await ok(
                "get-configuration",
                keys=[
                    "OCPPCommCtrlr.MessageAttempts[TransactionEvent]",
                    "ConnectionTimeOut",
                ],
            )
            assert got["details"] == {
                "configuration": [
                    {
                        "key": "OCPPCommCtrlr.MessageAttempts[TransactionEvent]",
                        "value": "3",
                        "readonly": False,
                    }
                ],
                "unknown_keys": ["ConnectionTimeOut"],
            }
            assert "BlinkRepeat" in await refused("get-configuration", keys=["BlinkRepeat"])

            changed = await ok("change-configuration", key="HeartbeatInterval", value="120")
            assert changed["status"] == "Accepted"
            assert cp.calls("SetVariables")[-1] == {
                "setVariableData": [
                    {
                        "component": {"name": "OCPPCommCtrlr"},
                        "variable": {"name": "HeartbeatInterval"},
                        "attributeValue": "120",
                    }
                ]
            }
            assert cp.model["OCPPCommCtrlr", "HeartbeatInterval", None][0] == "120"
            assert (await ok("change-configuration", key="AuthorizationKey", value="k" * 20))[
                "status"
            ] == "RebootRequired"
            assert (await ok("change-configuration", key="StopTxnSampledData", value="SoC"))[
                "status"
            ] == "NotSupported"
            assert "read-only" in await refused(
                "change-configuration", key="SecurityProfile", value="2"
            )
            assert "no OCPP 2.0.1 equivalent" in await refused(
                "change-configuration", key="LightIntensity", value="50"
            )

            variables = await ok(
                "get-variables",
                variables=[
                    {"component": "OCPPCommCtrlr", "variable": "HeartbeatInterval"},
                    {
                        "component": "EVSE",
                        "evse_id": 1,
                        "variable": "Power",
                        "attribute_type": "MaxSet",
                    },
                ],
            )
            assert variables["status"] == "UnknownVariable"
            assert [r["label"] for r in variables["details"]["results"]] == [
                "OCPPCommCtrlr.HeartbeatInterval",
                "EVSE@1.Power",
            ]
            assert variables["details"]["results"][0]["attribute_value"] == "120"
            assert cp.calls("GetVariables")[-1]["getVariableData"][1] == {
                "component": {"name": "EVSE", "evse": {"id": 1}},
                "variable": {"name": "Power"},
                "attributeType": "MaxSet",
            }
            set_result = await ok(
                "set-variables",
                variables=[
                    {
                        "component": "AuthCtrlr",
                        "variable": "AuthorizeRemoteStart",
                        "value": "false",
                    },
                    {
                        "component": "SecurityCtrlr",
                        "variable": "BasicAuthPassword",
                        "value": "s" * 24,
                    },
                ],
            )
            assert set_result["status"] == "RebootRequired"
            audit = await _audit(rt, "command.set-variables")
            assert audit[-1].detail["params"]["variables"][1]["value"] == "(secret)"

            report = await ok("get-base-report", report_base="FullInventory", request_id=77)
            assert report["status"] == "Accepted"
            assert cp.calls("GetBaseReport")[-1] == {"requestId": 77, "reportBase": "FullInventory"}
            (part,) = await until(lambda: charger_events(rt, "V201-CMD", "report"))
            assert part.request_id == 77 and part.data["items"][0]["value"] == "60"

            await ok("clear-cache")
            assert cp.calls("ClearCache")[-1] == {}
            await ok(
                "send-local-list",
                version=3,
                update_type="Full",
                entries=[{"id_tag": "TAG-A", "status": "Accepted", "parent_id_tag": "GROUP"}],
            )
            assert cp.calls("SendLocalList")[-1] == {
                "versionNumber": 3,
                "updateType": "Full",
                "localAuthorizationList": [
                    {
                        "idToken": {"idToken": "TAG-A", "type": "ISO14443"},
                        "idTokenInfo": {
                            "status": "Accepted",
                            "groupIdToken": {"idToken": "GROUP", "type": "ISO14443"},
                        },
                    }
                ],
            }
            assert (await ok("get-local-list-version"))["details"] == {"list_version": 3}

            await ok(
                "set-charging-profile", connector_id=0, profile=_profile("ChargePointMaxProfile")
            )
            sent = cp.calls("SetChargingProfile")[-1]
            assert sent["evseId"] == 0
            assert sent["chargingProfile"]["chargingProfilePurpose"] == "ChargingStationMaxProfile"
            await ok(
                "set-charging-profile",
                connector_id=1,
                profile=_profile("TxProfile", transaction_id=session.id),
            )
            assert (
                cp.calls("SetChargingProfile")[-1]["chargingProfile"]["transactionId"] == "TX-CMD"
            )
            await ok("clear-charging-profile", connector_id=1, purpose="TxDefaultProfile")
            assert cp.calls("ClearChargingProfile")[-1] == {
                "chargingProfileCriteria": {
                    "evseId": 1,
                    "chargingProfilePurpose": "TxDefaultProfile",
                }
            }

            await ok("trigger-message", message="StatusNotification", connector_id=1)
            assert cp.calls("TriggerMessage")[-1] == {
                "requestedMessage": "StatusNotification",
                "evse": {"id": 1},
            }
            await ok("trigger-message", message="SignChargePointCertificate")
            assert cp.calls("TriggerMessage")[-1] == {
                "requestedMessage": "SignChargingStationCertificate"
            }
            await ok("trigger-message", message="TransactionEvent")
            assert "cannot trigger" in await refused(
                "trigger-message", message="DiagnosticsStatusNotification"
            )
            assert "get-log" in await refused("get-diagnostics")

            log = await ok("get-log", log_type="SecurityLog", request_id=4242)
            assert log["details"] == {"file_name": "security.log"}
            sent = cp.calls("GetLog")[-1]
            assert (sent["logType"], sent["requestId"]) == ("SecurityLog", 4242)
            assert sent["log"]["remoteLocation"].startswith("http")

            await ok(
                "install-certificate",
                certificate_type="CentralSystemRootCertificate",
                certificate=keys.ca_cert.decode(),
            )
            assert cp.calls("InstallCertificate")[-1]["certificateType"] == "CSMSRootCertificate"
            await ok(
                "delete-certificate",
                issuer_name_hash="aa" * 32,
                issuer_key_hash="bb" * 32,
                serial_number="0a1b",
            )
            assert (
                cp.calls("DeleteCertificate")[-1]["certificateHashData"]["serialNumber"] == "0a1b"
            )
            ids = await ok(
                "get-installed-certificate-ids", certificate_type="ManufacturerRootCertificate"
            )
            assert ids["details"]["certificates"] == [
                {
                    "hash_algorithm": "SHA256",
                    "issuer_name_hash": "aa" * 32,
                    "issuer_key_hash": "bb" * 32,
                    "serial_number": "0a1b",
                    "certificate_type": "ManufacturerRootCertificate",
                }
            ]
            assert cp.calls("GetInstalledCertificateIds")[-1] == {
                "certificateType": ["ManufacturerRootCertificate"]
            }
            transfer = await ok(
                "data-transfer", vendor_id="com.example", message_id="ping", data="x"
            )
            assert transfer["details"] == {"data": {"echo": True}}

            # Reset Soft is OnIdle: answered Scheduled, completed by the next boot.
            cp.answers["Reset"] = {"status": "Scheduled"}
            assert (await ok("reset", type="Soft"))["status"] == "Scheduled"
            assert cp.calls("Reset")[-1] == {"type": "OnIdle"}
            assert await charger_events(rt, "V201-CMD", "reset") == []
            await cp.call(boot_call(reason="RemoteReset"))
            (done,) = await until(lambda: charger_events(rt, "V201-CMD", "reset"))
            assert done.status == "completed"
            assert (done.data["type"], done.data["boot_reason"]) == ("Soft", "RemoteReset")
            (audited,) = await until(lambda: _audit(rt, "charger.reset_completed"))
            assert (
                audited.target == "V201-CMD" and audited.detail["requested_by"] == "bootstrap-admin"
            )

            # Every command was audited once, with the charger's answer.
            resets = await _audit(rt, "command.reset")
            assert [e.outcome for e in resets] == ["Accepted", "Accepted", "Scheduled"]
            # Nothing evota sent was refused by the station's schema check.
            assert all(a in DEFAULT_ANSWERS for a, _ in cp.received)

        # A 1.6 charger cannot express the 2.0.1-only commands, nor wait for idle.
        await provision(rt, "V16-CMD", KEY)
        ws = await connect(rt, "V16-CMD", KEY)
        await ws.send(
            json.dumps(
                [2, "b", "BootNotification", {"chargePointVendor": "A", "chargePointModel": "B"}]
            )
        )
        await ws.recv()
        r = await api.post(
            "/api/v1/chargers/V16-CMD/commands/get-variables",
            json={"variables": [{"component": "OCPPCommCtrlr", "variable": "HeartbeatInterval"}]},
        )
        assert r.status_code == 409 and "needs OCPP 2.0.1" in r.json()["detail"], r.text
        r = await api.post(
            "/api/v1/chargers/V16-CMD/commands/reset", json={"type": "OnIdle", "reason": "t"}
        )
        assert r.status_code == 409 and "Soft or Hard" in r.json()["detail"], r.text
        await ws.close()
    finally:
        await api.aclose()


async def _settings(rt: Runtime, charger_id: str) -> dict[str, tuple[str | None, bool]]:
    async with rt.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(ChargerSetting).where(ChargerSetting.charger_id == charger_id)
            )
        ).all()
    return {r.key: (r.value, r.readonly) for r in rows}


async def _audit(rt: Runtime, action: str) -> list[Any]:
    async with rt.engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)
                )
            ).all()
        )


def test_every_catalog_command_has_a_201_form_or_says_why_not() -> None:
    """Each catalog command either encodes for 2.0.1 or is refused with a message (never a
    crash), so adding a command without a 2.0.1 mapping is caught here."""
    from evota.control import commands
    from evota.ocpp import v16, v201

    native = {"get-variables", "set-variables", "get-base-report"}
    for name, spec in catalog.COMMANDS.items():
        assert spec.params is not None
        if name in native:
            with pytest.raises(commands.CommandNotSupported):
                v16.encode_command(_sample_command(name))
        try:
            action, payload = v201.encode_command(_sample_command(name))
        except commands.CommandNotSupported as exc:
            assert name == "get-diagnostics" and "get-log" in exc.message
            continue
        from evota.ocpp import schemas

        schemas.v201().validate_request(action, payload, "t")  # raises if evota would send junk


def _sample_command(name: str) -> Any:
    from evota.control.catalog import Context

    samples: dict[str, dict[str, Any]] = {
        "remote-start": {"id_tag": "T"},
        "remote-stop": {"transaction_id": "TX"},
        "unlock-connector": {"connector_id": 1},
        "change-availability": {"type": "Inoperative"},
        "change-configuration": {"key": "HeartbeatInterval", "value": "5"},
        "send-local-list": {"version": 1},
        "set-charging-profile": {"profile": _profile("TxDefaultProfile")},
        "trigger-message": {"message": "Heartbeat"},
        "install-certificate": None,
        "delete-certificate": {
            "issuer_name_hash": "aa",
            "issuer_key_hash": "bb",
            "serial_number": "1",
        },
        "get-installed-certificate-ids": {"certificate_type": "CSMSRootCertificate"},
        "data-transfer": {"vendor_id": "v"},
        "get-variables": {"variables": [{"component": "C", "variable": "V"}]},
        "set-variables": {"variables": [{"component": "C", "variable": "V", "value": "1"}]},
    }
    spec = catalog.COMMANDS[name]
    ctx = Context("CP", upload_url=lambda cid, kind, rid=None: "https://evota.example/upload")
    if name == "install-certificate":
        from evota.control import commands

        return commands.InstallCertificate("CSMSRootCertificate", "-----BEGIN CERTIFICATE-----")
    return spec.params.model_validate(samples.get(name, {})).to_command(ctx)


def test_docs_show_the_configuration_key_table() -> None:
    """docs/ocpp.md lists exactly the keys evota maps (the code is the source of truth)."""
    text = (Path(__file__).parent.parent / "docs" / "ocpp.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| `(\w+)\.(\w+)(?:\[(\w+)\])?` \| (\w+) \|$", text, re.M)
    documented = {key: (comp, var, inst or None, mut) for key, comp, var, inst, mut in rows}
    expected = {
        key: (m.component, m.variable, m.variable_instance, m.mutability)
        for key, m in v201_variables.KEYS.items()
    }
    assert documented == expected


# -- frames ------------------------------------------------------------------------------------

GOOD_STATUS = {
    "timestamp": "2026-11-29T10:00:00Z",
    "connectorStatus": "Available",
    "evseId": 1,
    "connectorId": 1,
}

CASES = [
    # (name, raw frame, expected 2.0.1 code, expected id)
    ("invalid-json", '[2, "a1", "Heartbeat", {', "RpcFrameworkError", "-1"),
    ("not-an-array", '{"action": "Heartbeat"}', "RpcFrameworkError", "-1"),
    ("empty-array", "[]", "RpcFrameworkError", "-1"),
    ("id-not-string", '[2, 17, "Heartbeat", {}]', "RpcFrameworkError", "-1"),
    ("id-too-long", json.dumps([2, "x" * 37, "Heartbeat", {}]), "RpcFrameworkError", "-1"),
    ("wrong-message-type", '[7, "a2", "Heartbeat", {}]', "MessageTypeNotSupported", "a2"),
    ("message-type-as-string", '["2", "a3", "Heartbeat", {}]', "MessageTypeNotSupported", "a3"),
    ("call-result-error-21", '[5, "a3b", {}]', "MessageTypeNotSupported", "a3b"),
    ("call-too-short", '[2, "a4", "Heartbeat"]', "RpcFrameworkError", "a4"),
    ("action-not-string", '[2, "a4b", 7, {}]', "RpcFrameworkError", "a4b"),
    ("payload-not-object", '[2, "a5", "Heartbeat", []]', "FormatViolation", "a5"),
    ("unknown-action", '[2, "a6", "MakeCoffee", {}]', "NotImplemented", "a6"),
    ("16-only-action", '[2, "a6b", "StartTransaction", {}]', "NotImplemented", "a6b"),
    ("csms-only-action", '[2, "a7", "Reset", {"type": "Immediate"}]', "NotSupported", "a7"),
    (
        "missing-field",
        json.dumps(
            [
                2,
                "a8",
                "StatusNotification",
                {k: v for k, v in GOOD_STATUS.items() if k != "connectorStatus"},
            ]
        ),
        "OccurrenceConstraintViolation",
        "a8",
    ),
    (
        "wrong-type",
        json.dumps([2, "a9", "StatusNotification", {**GOOD_STATUS, "evseId": "one"}]),
        "TypeConstraintViolation",
        "a9",
    ),
    (
        "bad-enum",
        json.dumps(
            [2, "a10", "StatusNotification", {**GOOD_STATUS, "connectorStatus": "Charging"}]
        ),
        "PropertyConstraintViolation",
        "a10",
    ),
    (
        "too-long-string",
        json.dumps(
            [
                2,
                "a11",
                "SecurityEventNotification",
                {"type": "t" * 51, "timestamp": "2026-11-29T10:00:00Z"},
            ]
        ),
        "PropertyConstraintViolation",
        "a11",
    ),
    (
        "extra-property",
        json.dumps([2, "a12", "StatusNotification", {**GOOD_STATUS, "errorCode": "NoError"}]),
        "FormatViolation",
        "a12",
    ),
    (
        "bad-date-time",
        json.dumps([2, "a13", "StatusNotification", {**GOOD_STATUS, "timestamp": "tuesday"}]),
        "PropertyConstraintViolation",
        "a13",
    ),
    (
        "empty-sampled-values",
        json.dumps([2, "a14", "MeterValues", {"evseId": 1, "meterValue": []}]),
        "OccurrenceConstraintViolation",
        "a14",
    ),
]


async def _booted_201(rt: Runtime, identity: str) -> Any:
    await provision(rt, identity, KEY)
    ws = await connect(rt, identity, KEY, subprotocols=[SUBPROTOCOL])
    boot = {"chargingStation": {"vendorName": "A", "model": "B"}, "reason": "PowerUp"}
    await ws.send(json.dumps([2, "boot-1", "BootNotification", boot]))
    answer = json.loads(await ws.recv())
    assert answer[0] == 3 and answer[2]["status"] == "Accepted", answer
    return ws


@pytest.mark.parametrize(("name", "frame", "code", "message_id"), CASES, ids=[c[0] for c in CASES])
async def test_bad_frame_gets_the_201_callerror(evota_sqlite, name, frame, code, message_id):
    ws = await _booted_201(evota_sqlite, "V201-" + name)
    await ws.send(frame)
    answer = json.loads(await ws.recv())
    assert answer[0] == 4, answer
    assert answer[1] == message_id
    assert answer[2] == code, answer
    assert isinstance(answer[3], str) and answer[3]
    assert isinstance(answer[4], dict)
    await ws.send(json.dumps([2, "after", "Heartbeat", {}]))
    answer = json.loads(await ws.recv())
    assert answer[:2] == [3, "after"] and "currentTime" in answer[2]
    await ws.close()


async def test_a_201_call_before_boot_is_a_security_error(evota_sqlite):
    await provision(evota_sqlite, "V201-EARLY", KEY)
    ws = await connect(evota_sqlite, "V201-EARLY", KEY, subprotocols=[SUBPROTOCOL])
    await ws.send(json.dumps([2, "e1", "StatusNotification", GOOD_STATUS]))
    assert json.loads(await ws.recv())[:3] == [4, "e1", "SecurityError"]
    await ws.close()


async def test_subprotocol_is_chosen_per_connection(evota_sqlite):
    rt = evota_sqlite
    await provision(rt, "V201-PROTO", KEY)
    for offered, agreed in (
        (["ocpp2.0.1"], "ocpp2.0.1"),
        (["ocpp1.6", "ocpp2.0.1"], "ocpp2.0.1"),  # the newer protocol when both are offered
        (["ocpp1.6"], "ocpp1.6"),
    ):
        ws = await connect(rt, "V201-PROTO", KEY, subprotocols=offered)
        assert ws.subprotocol == agreed
        await ws.close()
    ws = await connect(rt, "V201-PROTO", KEY, subprotocols=["ocpp2.1"])
    assert ws.subprotocol is None
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1002


@pytest.mark.parametrize(
    "identity",
    ["x" * 49, "CP%3A1", "CP:1"],
    ids=["49-characters", "percent-encoded-colon", "colon"],
)
async def test_identity_rules(evota_sqlite, identity):
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(
            f"ws://127.0.0.1:{evota_sqlite.ocpp_port}/ocpp/{identity}",
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            additional_headers={"Authorization": basic(identity, KEY)},
            open_timeout=5,
        )
    assert refused.value.response.status_code == 404


async def test_48_character_identity_is_fine(evota_sqlite):
    identity = "I" * 48
    async with station(evota_sqlite, identity) as cp:
        assert (await cp.call(call.Heartbeat())).current_time


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
        job = await until(lambda: b.job(job_id), lambda j: j["state"] == "downloading")
        assert "cancelled the update it had in progress" in (job["detail"] or "")


# -- the Node ocpp-rpc client in strict 2.0.1 mode -------------------------------------------

NODE_SCRIPT = NODE_DIR / "strict_client_201.js"

#: The 2.0.1 CALLERROR codes docs/ocpp.md promises, as ocpp-rpc reports them.
NODE_EXPECTED_CODES = {
    "missing-field": "OccurrenceConstraintViolation",
    "wrong-type": "TypeConstraintViolation",
    "bad-enum": "PropertyConstraintViolation",
    "extra-property": "FormatViolation",
    "too-long-string": "PropertyConstraintViolation",
    "bad-date-time": "PropertyConstraintViolation",
    "unknown-action": "NotImplemented",
    "csms-only-action": "NotSupported",
    "call-before-boot": "SecurityError",
}
NODE_RAW_FRAMES = {
    "invalid-json": ("-1", "RpcFrameworkError"),
    "id-not-string": ("-1", "RpcFrameworkError"),
    "unknown-message-type": ("r2", "MessageTypeNotSupported"),
    "payload-not-object": ("r3", "FormatViolation"),
}


async def _commands_for_the_node_station(rt: Runtime, keys: Keys, identity: str) -> list[Any]:
    """Every command, through the API (and a signed UpdateFirmware through the gateway)."""
    from evota.control import commands

    plan: list[tuple[str, dict[str, Any]]] = [
        ("reset", {"type": "Hard"}),
        ("remote-start", {"id_tag": "RPC-TOKEN", "connector_id": 1}),
        ("remote-stop", {"transaction_id": "RPC-TX-1"}),
        ("unlock-connector", {"connector_id": 1}),
        ("change-availability", {"connector_id": 1, "type": "Inoperative"}),
        ("get-configuration", {"keys": ["HeartbeatInterval"]}),
        ("change-configuration", {"key": "HeartbeatInterval", "value": "90"}),
        (
            "get-variables",
            {"variables": [{"component": "OCPPCommCtrlr", "variable": "HeartbeatInterval"}]},
        ),
        (
            "set-variables",
            {
                "variables": [
                    {"component": "OCPPCommCtrlr", "variable": "HeartbeatInterval", "value": "30"}
                ]
            },
        ),
        ("get-base-report", {"report_base": "SummaryInventory"}),
        ("clear-cache", {}),
        (
            "send-local-list",
            {"version": 1, "update_type": "Differential", "entries": [{"id_tag": "X"}]},
        ),
        ("get-local-list-version", {}),
        (
            "set-charging-profile",
            {
                "connector_id": 1,
                "profile": _profile("TxDefaultProfile", kind="Recurring", recurrency="Daily"),
            },
        ),
        ("clear-charging-profile", {"profile_id": 5}),
        ("trigger-message", {"message": "MeterValues", "connector_id": 1}),
        ("get-log", {"log_type": "DiagnosticsLog"}),
        (
            "install-certificate",
            {
                "certificate_type": "ManufacturerRootCertificate",
                "certificate": keys.ca_cert.decode(),
            },
        ),
        (
            "delete-certificate",
            {"issuer_name_hash": "aa", "issuer_key_hash": "bb", "serial_number": "01"},
        ),
        ("get-installed-certificate-ids", {"certificate_type": "CSMSRootCertificate"}),
    ]
    answers: list[Any] = []
    async with api_client(rt) as api:
        for name, params in plan:
            r = await api.post(
                f"/api/v1/chargers/{identity}/commands/{name}", json={**params, "reason": "node"}
            )
            answers.append((name, r.status_code, r.json()))
        from evota.firmware import signing

        image = NODE_SCRIPT.parent / "package.json"  # any file: the station does not download
        signature = signing.sign_file(image, keys.key)
        cert = keys.cert.decode()
        result = await rt.gateway.send(
            identity,
            commands.SignedUpdateFirmware(
                request_id=9,
                location="https://evota.example/fw.bin",
                retrieve_at=datetime.now(UTC),
                signing_certificate=cert,
                signature=signature,
            ),
        )
        answers.append(("update-firmware", 200, {"status": result.status}))
        r = await api.post(
            f"/api/v1/chargers/{identity}/commands/data-transfer",
            json={"vendor_id": "evota.test", "message_id": "done"},
        )
        answers.append(("data-transfer", r.status_code, r.json()))
    return answers


@same_worker
async def test_ocpp_rpc_strict_201_client(evota_sqlite: Runtime, keys: Keys) -> None:
    rt = evota_sqlite
    node = await ensure_node_modules()
    await provision(rt, "RPC201-STRICT", KEY)
    await provision(rt, "RPC201-FRESH", KEY)
    proc = await asyncio.create_subprocess_exec(
        node,
        str(NODE_SCRIPT),
        "--endpoint",
        f"ws://127.0.0.1:{rt.ocpp_port}/ocpp",
        "--identity",
        "RPC201-STRICT",
        "--fresh-identity",
        "RPC201-FRESH",
        "--key",
        KEY,
        cwd=NODE_SCRIPT.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=1 << 22,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr_task = asyncio.create_task(proc.stderr.read())
    lines: list[str] = []
    answers: list[Any] = []
    try:
        async with asyncio.timeout(60):
            while line := (await proc.stdout.readline()).decode():
                lines.append(line.rstrip("\n"))
                if line.strip() == "READY_FOR_COMMANDS":
                    answers = await _commands_for_the_node_station(rt, keys, "RPC201-STRICT")
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = (await stderr_task).decode(errors="replace")
    summary = json.loads(lines[-1])
    context = f"\nsummary: {json.dumps(summary, indent=1)[:20000]}\nframes:\n{log[-20000:]}"
    assert proc.returncode == 0 and summary["error"] is None, context

    # Strict mode was on and found nothing wrong with anything evota sent or answered.
    assert summary["strict_self_check"] == {
        "refused_locally": True,
        "rpcErrorCode": "OccurenceConstraintViolation",  # ocpp-rpc's own (1.6) spelling
        "events": 1,
    }, context
    assert summary["strict_validation_failures"] == [], context
    assert summary["bad_messages"] == [], context
    assert summary["protocol"] == {
        "strict": SUBPROTOCOL,
        "lenient": SUBPROTOCOL,
        "fresh": SUBPROTOCOL,
    }
    assert summary["boot"]["status"] == "Accepted"
    session = summary["session"]
    assert session["authorize"]["idTokenInfo"]["status"] == "Accepted"
    assert session["started"] == {"idTokenInfo": {"status": "Accepted"}}
    assert session["updated"] == {} and session["meter_values"] == {}
    assert session["ended"] == {"idTokenInfo": {"status": "Accepted"}}
    assert session["data_transfer"]["status"] == "UnknownVendorId"
    assert session["sign_certificate"]["status"] == "Rejected"

    # Every command reached the station as a valid CALL and its answer came back.
    assert [(name, code) for name, code, _ in answers] == [(name, 200) for name, _, _ in answers], (
        answers
    )
    received = [c["action"] for c in summary["commands"]]
    for action in (
        "Reset",
        "RequestStartTransaction",
        "RequestStopTransaction",
        "UnlockConnector",
        "ChangeAvailability",
        "GetVariables",
        "SetVariables",
        "GetBaseReport",
        "ClearCache",
        "SendLocalList",
        "GetLocalListVersion",
        "SetChargingProfile",
        "ClearChargingProfile",
        "TriggerMessage",
        "GetLog",
        "InstallCertificate",
        "DeleteCertificate",
        "GetInstalledCertificateIds",
        "UpdateFirmware",
        "DataTransfer",
    ):
        assert action in received, (action, received)

    got = {
        name: (case["ok"], case.get("rpcErrorCode"), (case.get("frame") or [None] * 3)[2])
        for name, case in summary["bad_payloads"].items()
    }
    assert got == {name: (False, code, code) for name, code in NODE_EXPECTED_CODES.items()}, context
    raw = {name: (frame[1], frame[2]) for name, frame in summary["raw_frames"].items() if frame}
    assert raw == NODE_RAW_FRAMES, context
    assert summary["after_bad_payloads"]["ok"], context
    assert summary["before_boot"]["after"] == {"ok": True, "result": {}}, context


# -- the fast schema check agrees with fastjsonschema ------------------------------------------


def _all_schemas() -> list[tuple[str, str]]:
    import importlib.resources

    out = []
    for package in ("ocpp.v16.schemas", "ocpp.v201.schemas"):
        for entry in importlib.resources.files(package).iterdir():
            if entry.name.endswith(".json"):
                out.append((package, entry.name))
    return sorted(out)


def _schema(package: str, name: str) -> dict[str, Any]:
    import importlib.resources

    schema = json.loads((importlib.resources.files(package) / name).read_text())
    schema.pop("$id", None)
    return dict(schema)


_TIMESTAMPS = [
    "2026-11-29T10:00:00Z",
    "2026-11-29T10:00:00.123+01:00",
    "2024-02-29T23:59:60z",
    "2026-02-30T00:00:00Z",  # no such day
    "2026-11-29T10:00:00",  # no zone
    "tuesday",
]


def _instances(schema: dict[str, Any], defs: dict[str, Any], depth: int = 0) -> Any:
    """Mostly valid instances of ``schema``, with every kind of near miss mixed in."""
    from hypothesis import strategies as st

    if "$ref" in schema:
        return _instances(defs[schema["$ref"].rsplit("/", 1)[1]], defs, depth + 1)
    kind = schema.get("type")
    junk = st.sampled_from([None, True, 1.5, "x", [], {}])
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        if depth > 8:
            return st.just({})
        fields = {
            key: st.tuples(st.integers(0, 9), _instances(sub, defs, depth + 1))
            for key, sub in props.items()
        }

        def build(drawn: dict[str, Any], extra: bool) -> dict[str, Any]:
            out = {}
            for key, (roll, value) in drawn.items():
                if (key in required and roll != 0) or (key not in required and roll > 6):
                    out[key] = value
            if extra:
                out["colour"] = "red"
            return out

        return st.one_of(
            st.builds(
                build, st.fixed_dictionaries(fields), st.booleans().map(lambda b: b and False)
            ),
            st.builds(build, st.fixed_dictionaries(fields), st.booleans()),
            junk,
        )
    if kind == "array":
        low = schema.get("minItems", 0)
        items = _instances(schema.get("items", {}), defs, depth + 1)
        return st.one_of(st.lists(items, min_size=max(0, low - 1), max_size=low + 2), junk)
    if kind == "string":
        if "enum" in schema:
            return st.sampled_from([*schema["enum"], "Bogus", 7])
        if schema.get("format") == "date-time":
            return st.sampled_from(_TIMESTAMPS)
        limit = schema.get("maxLength", 30)
        return st.one_of(st.text(max_size=min(limit + 2, 60)), st.just("a" * (limit + 1)), junk)
    if kind == "integer":
        return st.one_of(st.integers(-3, 2**31), st.sampled_from([1.0, 2.5, True, "3", -0.0]), junk)
    if kind == "number":
        return st.one_of(st.integers(-3, 10**6), st.floats(allow_nan=False, width=32), junk)
    if kind == "boolean":
        return st.one_of(st.booleans(), st.sampled_from([0, 1, "true"]))
    return st.one_of(st.integers(), st.text(max_size=5), st.just({"a": [1]}))


@pytest.mark.slow
def test_fast_check_never_accepts_what_fastjsonschema_refuses() -> None:
    """Soundness of evota.ocpp.fastcheck, over every 1.6 and 2.0.1 schema: whenever it says
    valid, the full validator agrees (when unsure it defers, so errors stay the full
    validator's)."""
    import fastjsonschema
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from evota.ocpp.fastcheck import compile_acceptor

    compiled = {}
    for package, name in _all_schemas():
        schema = _schema(package, name)
        accept = compile_acceptor(schema)
        assert accept is not None, name  # every OCPP schema is in the modelled subset
        full = fastjsonschema.compile(schema, use_default=False)
        compiled[package, name] = (accept, full, _instances(schema, schema.get("definitions", {})))

    accepted: list[int] = [0, 0]

    @settings(max_examples=2000, deadline=None)
    @given(st.data())
    def check(data: Any) -> None:
        key = data.draw(st.sampled_from(sorted(compiled)))
        accept, full, instances = compiled[key]
        payload = data.draw(instances)
        if accept(payload):
            accepted[0] += 1
            full(payload)  # raises if the fast check was wrong
        else:
            accepted[1] += 1

    check()
    assert accepted[0] > 300 and accepted[1] > 300, accepted  # both verdicts were exercised


def test_fast_check_accepts_the_common_messages() -> None:
    """The fast path is taken for what chargers really send (else it would save nothing)."""
    import sys

    from evota.ocpp import fastcheck, rpc

    sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
    import loadgen

    frame = loadgen.ChargerConn.build_transaction(
        b"000001-0000000001", 5, b"000001-", b"2026-11-29T10:00:00.123Z"
    )
    payload = rpc.decode(frame).payload
    accept = fastcheck.compile_acceptor(
        _schema("ocpp.v201.schemas", "TransactionEventRequest.json")
    )
    assert accept is not None and accept(payload)
    status = fastcheck.compile_acceptor(_schema("ocpp.v16.schemas", "StatusNotification.json"))
    assert status is not None
    assert status({"connectorId": 1, "errorCode": "NoError", "status": "Available"})
    assert not status({"connectorId": 1, "errorCode": "NoError", "status": "Bogus"})


async def test_hardware_revision_comes_from_the_device_model(evota_sqlite: Runtime) -> None:
    """2.0.1: ChargingStation.ECVariant (or a vendor's ChargingStation.HardwareRevision) in a
    NotifyReport is the charger's hardware revision; EVSE-level or oversized values are not."""
    from evota.store.models import Charger

    async def revision() -> str | None:
        async with evota_sqlite.engine.connect() as conn:
            return (
                await conn.execute(select(Charger.hardware_revision).where(Charger.id == "HW201-1"))
            ).scalar()

    def item(variable: str, value: str, **component: Any) -> dict[str, Any]:
        return {
            "component": {"name": "ChargingStation", **component},
            "variable": {"name": variable},
            "variableAttribute": [{"value": value, "mutability": "ReadOnly"}],
        }

    async with station(evota_sqlite, "HW201-1") as cp:
        assert await revision() is None  # BootNotification has no such field
        await cp.call(
            call.NotifyReport(
                request_id=1,
                generated_at=now(),
                seq_no=0,
                report_data=[
                    item("ECVariant", "evse-level", evse={"id": 1}),
                    item("ECVariant", "r" * 51),  # not a revision: ignored, not cut
                    item("HardwareRevision", "vendor-rev"),
                ],
            )
        )
        await until(lambda: _equals(revision, "vendor-rev"))
        await cp.call(
            call.NotifyReport(
                request_id=2, generated_at=now(), seq_no=0, report_data=[item("ECVariant", "r7")]
            )
        )
        await until(lambda: _equals(revision, "r7"))


async def _equals(fetch: Callable[[], Any], expected: Any) -> bool:
    return bool(await fetch() == expected)
