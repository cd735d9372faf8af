"""Remote trigger: TriggerMessage and the security extension's ExtendedTriggerMessage send
the requested message from a task of their own, after the answer."""

from __future__ import annotations

from typing import Any

from evota.ocpp import rpc
from evota.sim.charger import Reply, SimulatedCharger
from evota.sim.control.certificates import csr
from evota.sim.control.state import connectors, quietly, security_only, state

_CONNECTOR_MESSAGES = frozenset({"MeterValues", "StatusNotification"})


async def _send_triggered(
    charger: SimulatedCharger, message: str, connector: int | None, extended: bool
) -> None:
    st = state(charger)
    targets = [connector] if connector is not None else [0, *connectors(charger)]
    match message:
        case "BootNotification":
            boot = charger.wire.boot(charger, "Triggered")
            await quietly(charger.call("BootNotification", boot))
        case "Heartbeat":
            await quietly(charger.call("Heartbeat", {}))
        case "StatusNotification":
            for c in targets:
                status = charger.connector_status.get(c) or charger.idle_status(c)[0]
                error = "OtherError" if status == "Faulted" else "NoError"
                await quietly(charger.send_status(c, status, error))
        case "MeterValues":
            for c in targets:
                if c == 0:
                    continue
                await quietly(charger.call("MeterValues", _meter_values(charger, c)))
        case "DiagnosticsStatusNotification":
            payload = {"status": st.diagnostics_status}
            await quietly(charger.call("DiagnosticsStatusNotification", payload))
        case "FirmwareStatusNotification":
            fw = charger.firmware_agent
            fw_status = charger.firmware_state if fw is not None and fw.busy else None
            action = "SignedFirmwareStatusNotification" if extended else message
            await quietly(charger.call(action, {"status": fw_status or "Idle"}))
        case "LogStatusNotification":
            log_payload: dict[str, Any] = {"status": st.log_status}
            if st.log_request_id is not None and st.log_status == "Uploading":
                log_payload["requestId"] = st.log_request_id
            await quietly(charger.call("LogStatusNotification", log_payload))
        case "SignChargePointCertificate":
            await quietly(charger.call("SignCertificate", {"csr": csr(charger)}))


def _meter_values(charger: SimulatedCharger, connector: int) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "connectorId": connector,
        "meterValue": [
            {
                "timestamp": charger._now(),
                "sampledValue": [
                    {
                        "value": str(int(charger.meter_wh[connector])),
                        "context": "Trigger",
                        "measurand": "Energy.Active.Import.Register",
                        "location": "Outlet",
                        "unit": "Wh",
                    }
                ],
            }
        ],
    }
    txn = charger.transactions.get(connector)
    if txn is not None and txn.transaction_id is not None:
        payload["transactionId"] = txn.transaction_id
    return payload


def _trigger(charger: SimulatedCharger, call: rpc.Call, extended: bool) -> Reply:
    message, connector = call.payload["requestedMessage"], call.payload.get("connectorId")
    if connector is not None and message in _CONNECTOR_MESSAGES:
        if connector != 0 and connector not in connectors(charger):
            return Reply({"status": "Rejected"})
    else:
        connector = None  # the connector only matters for connector-related messages
    return Reply(
        {"status": "Accepted"},
        then=lambda: _spawned(charger, _send_triggered(charger, message, connector, extended)),
    )


async def _spawned(charger: SimulatedCharger, coro: Any) -> None:
    """Send from a task of its own: the charger may not CALL inside the handler's turn."""
    charger.spawn_background(coro)


async def on_trigger_message(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    return _trigger(charger, call, extended=False)


async def on_extended_trigger_message(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    security_only(charger, "ExtendedTriggerMessage")
    return _trigger(charger, call, extended=True)
