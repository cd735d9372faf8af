"""An independent OCPP 1.6J client — the ``ocpp`` package's ChargePoint, which validates every
message against the official schemas — exercises every charger-initiated message against evota,
and evota's stored view of the charger is checked through the REST API."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result

from evota.control import commands
from tests.conftest import api_client, connect, provision

KEY = "independent-key-0123456"


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class StrictCharger(ChargePoint):
    resets: list[str]

    @on("Reset")
    async def on_reset(self, type: str):
        self.resets.append(type)
        return call_result.Reset(status="Accepted")


async def test_every_charger_initiated_message(evota):
    await provision(evota, "IND-1", KEY)
    ws = await connect(evota, "IND-1", KEY)
    cp = StrictCharger("IND-1", ws, response_timeout=5)
    cp.resets = []
    runner = asyncio.create_task(cp.start())
    try:
        boot = await cp.call(
            call.BootNotification(
                charge_point_vendor="Independent",
                charge_point_model="Strict-1",
                charge_point_serial_number="SN-42",
                firmware_version="1.2.3",
            )
        )
        assert boot.status == "Accepted" and boot.interval > 0
        assert (await cp.call(call.Heartbeat())).current_time
        for connector in (0, 1, 2):
            await cp.call(
                call.StatusNotification(connector, "NoError", "Available", timestamp=now())
            )
        assert (await cp.call(call.Authorize("TAG-1"))).id_tag_info["status"] == "Accepted"
        start = await cp.call(call.StartTransaction(1, "TAG-1", 1000, now()))
        txn = start.transaction_id
        assert isinstance(txn, int) and start.id_tag_info["status"] == "Accepted"
        await cp.call(call.StatusNotification(1, "NoError", "Charging", timestamp=now()))
        sample = [{"timestamp": now(), "sampledValue": [{"value": "2.5", "unit": "kWh"}]}]
        await cp.call(call.MeterValues(1, sample, transaction_id=txn))
        stop = await cp.call(
            call.StopTransaction(4000, now(), txn, id_tag="TAG-1", reason="EVDisconnected")
        )
        assert stop.id_tag_info["status"] == "Accepted"
        assert (
            await cp.call(call.DataTransfer("com.example", "hello", "x"))
        ).status == "UnknownVendorId"
        await cp.call(call.FirmwareStatusNotification("Downloading"))
        await cp.call(call.DiagnosticsStatusNotification("Uploaded"))
        await cp.call(call.SignedFirmwareStatusNotification("SignatureVerified", request_id=7))
        await cp.call(call.LogStatusNotification("Uploading", request_id=8))
        await cp.call(call.SecurityEventNotification("FirmwareUpdated", now(), tech_info="ok"))
        assert (await cp.call(call.SignCertificate("-----BEGIN CSR-----"))).status == "Rejected"

        # A CALL from evota reaches the strict client and its answer comes back typed.
        result = await evota.gateway.send("IND-1", commands.Reset("Soft"))
        assert result.status == "Accepted" and cp.resets == ["Soft"]

        await evota.fleet.writer.flush()
        async with api_client(evota) as api:
            c = (await api.get("/api/v1/chargers/IND-1")).json()
        assert (c["vendor"], c["model"], c["serial_number"], c["firmware_version"]) == (
            "Independent",
            "Strict-1",
            "SN-42",
            "1.2.3",
        )
        assert c["connected"] is True and c["protocol"] == "ocpp1.6"
        assert {k["connector_id"]: k["status"] for k in c["connectors"]} == {
            0: "Available",
            1: "Charging",
            2: "Available",
        }
        kinds = {(e["kind"], e["status"]) for e in c["recent_events"]}
        assert {
            ("boot", "Accepted"),
            ("firmware_status", "Downloading"),
            ("firmware_status", "SignatureVerified"),
            ("diagnostics_status", "Uploaded"),
            ("log_status", "Uploading"),
            ("security_event", "FirmwareUpdated"),
            ("data_transfer", "com.example"),
        } <= kinds

        from sqlalchemy import select

        from evota.store.models import ChargingSession

        async with evota.engine.connect() as conn:
            s = (await conn.execute(select(ChargingSession).where(ChargingSession.id == txn))).one()
        assert (s.meter_start_wh, s.meter_stop_wh, s.stop_reason, s.outcome) == (
            1000,
            4000,
            "EVDisconnected",
            "completed",
        )
    finally:
        runner.cancel()
        await ws.close()
