"""OCPP 2.0.1 charger-initiated messages: every one gets a valid answer and its data is stored
(the charger is the ``ocpp`` package's strict ``ocpp.v201.ChargePoint``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ocpp.v201 import call
from sqlalchemy import select

from evota.runtime import Runtime
from tests.conftest import api_client
from tests.gateway.v201_station import (
    MODEL,
    SUBPROTOCOL,
    VENDOR,
    boot_call,
    charger_events,
    energy,
    now,
    session_rows,
    station,
)
from tests.support import until

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
