"""Vendor extensions: DataTransfer (the charger's vendor id knows one message, ``echo``)."""

from __future__ import annotations

from typing import Any

from evota.ocpp import rpc
from evota.sim.charger import Reply, SimulatedCharger
from evota.sim.control.state import state


async def on_data_transfer(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    """The charger's vendor id knows one message, ``echo``, which returns ``data``."""
    p = call.payload
    state(charger).data_transfers.append(dict(p))
    if p["vendorId"] != charger.spec.vendor:
        return Reply({"status": "UnknownVendorId"})
    message = p.get("messageId")
    if message not in (None, "echo"):
        return Reply({"status": "UnknownMessageId"})
    answer: dict[str, Any] = {"status": "Accepted"}
    if message == "echo" and "data" in p:
        answer["data"] = p["data"]
    return Reply(answer)
