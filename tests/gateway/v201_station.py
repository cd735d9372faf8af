"""OCPP 2.0.1 on the CSMS side, against independent 2.0.1 clients.

The charger here is the ``ocpp`` package's ``ocpp.v201.ChargePoint`` (it checks every message
both ways against the official 2.0.1 JSON schemas) over ``websockets`` with subprotocol
``ocpp2.0.1`` and HTTP Basic auth; a second run uses the Node ``ocpp-rpc`` client in strict
mode. Checked: every charger-initiated message gets a schema-valid answer and lands in evota's
store; every command sent through the REST API arrives as a valid 2.0.1 CALL and its answer
maps back; bad frames get the exact 2.0.1 CALLERROR; a firmware update walks L01/L02 to the
job outcome the status sequence means.

The station and helpers shared by the tests/gateway/test_v201_*.py modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from ocpp.routing import after, on
from ocpp.v201 import ChargePoint, call, call_result
from sqlalchemy import select

from evota.runtime import Runtime
from evota.store.models import ChargerEvent, ChargingSession
from tests.conftest import connect, provision

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


def _profile(purpose: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": 5,
        "stack_level": 1,
        "purpose": purpose,
        "rate_unit": "A",
        "periods": [{"start_period": 0, "limit": 16.0}, {"start_period": 600, "limit": 8.5}],
        **extra,
    }
