"""Reset and availability: ``Reset`` reboots (Soft: sessions end first; Hard: they are
reported after the boot); ``ChangeAvailability`` per connector (0: the whole charger) persists
across reboots, answering ``Scheduled`` while a session runs and turning the connector
Unavailable when it ends."""

from __future__ import annotations

from evota.ocpp import rpc
from evota.sim.charger import Reply, SimulatedCharger
from evota.sim.control.state import connectors, quietly


async def on_reset(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    kind = call.payload["type"]
    return Reply({"status": "Accepted"}, then=lambda: charger.reboot(hard=kind == "Hard"))


async def on_change_availability(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    return change_availability(charger, call.payload["connectorId"], call.payload["type"])


def change_availability(charger: SimulatedCharger, connector: int, kind: str) -> Reply:
    """Make ``connector`` (0: the whole charger) ``Operative`` or ``Inoperative``; the
    connectors report their new status after the answer (also 2.0.1's)."""
    if connector != 0 and connector not in connectors(charger):
        return Reply({"status": "Rejected"})
    targets = [0, *connectors(charger)] if connector == 0 else [connector]
    if kind == "Inoperative":
        charger.inoperative.add(connector)
    elif connector == 0:
        charger.inoperative.clear()
    else:
        charger.inoperative.discard(connector)
    busy = any(t in charger.transactions for t in targets)
    status = "Scheduled" if busy and kind == "Inoperative" else "Accepted"

    async def report() -> None:
        for t in targets:
            if t in charger.transactions:
                continue  # reported when the session ends
            wanted = charger.idle_status(t)
            if charger.connector_status.get(t) != wanted[0]:
                await quietly(charger.send_status(t, *wanted))

    return Reply({"status": status}, then=report)
