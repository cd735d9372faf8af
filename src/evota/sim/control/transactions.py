"""Remote control of sessions: RemoteStartTransaction and RemoteStopTransaction run and end a
real transaction; UnlockConnector stops a session on the connector first (reason
``UnlockCommand``)."""

from __future__ import annotations

import contextlib

from evota.ocpp import rpc
from evota.ocpp.errors import ErrorKind, RpcError
from evota.sim.charger import CallFailed, Reply, SimulatedCharger
from evota.sim.control.schedules import StoredProfile
from evota.sim.control.state import connectors, state


async def on_remote_start_transaction(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    p = call.payload
    profile = p.get("chargingProfile")
    if profile is not None and profile["chargingProfilePurpose"] != "TxProfile":
        return Reply({"status": "Rejected"})
    free = [
        c
        for c in connectors(charger)
        if charger.connector_status.get(c) == "Available" and c not in charger.transactions
    ]
    wanted = p.get("connectorId")
    if wanted is not None:
        free = [c for c in free if c == wanted]
    if not free or not charger.accepted:
        return Reply({"status": "Rejected"})
    connector, id_tag = free[0], p["idTag"]

    async def start() -> None:
        if profile is not None:
            st = state(charger)
            st.profiles[profile["chargingProfileId"]] = StoredProfile(
                connector, profile, charger.clock.now()
            )
        with contextlib.suppress(ValueError, CallFailed):  # raced by another start
            charger.begin_session(connector, id_tag, charger.config.remote_session_duration)

    return Reply({"status": "Accepted"}, then=start)


def request_stop(charger: SimulatedCharger, connector: int, reason: str) -> None:
    txn = charger.transactions.get(connector)
    if txn is not None:
        txn.stop_requested = reason
        txn.wake.set()


async def on_remote_stop_transaction(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    wanted = call.payload["transactionId"]
    for connector, txn in charger.transactions.items():
        if txn.transaction_id == wanted and txn.stop_requested is None:

            async def stop(connector: int = connector) -> None:
                request_stop(charger, connector, "Remote")

            return Reply({"status": "Accepted"}, then=stop)
    return Reply({"status": "Rejected"})


async def on_unlock_connector(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    connector = call.payload["connectorId"]
    if connector not in connectors(charger):
        raise RpcError(
            ErrorKind.PROPERTY_CONSTRAINT, f"connectorId: connector {connector} does not exist"
        )
    state(charger).unlocked.append(connector)

    async def stop() -> None:  # a session on the connector ends first (after this answer)
        request_stop(charger, connector, "UnlockCommand")

    return Reply({"status": "Unlocked"}, then=stop)
