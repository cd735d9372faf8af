"""OCPP 2.0.1 on the simulated charger: the wire adapter and the CSMS-initiated actions.

The charger core (sessions, reboots, the firmware agent, uploads, the configuration store)
is the 1.6 simulator's; this module only speaks it in 2.0.1, the way the ``websockets``
sans-I/O split keeps one protocol core under two I/O layers:

- **EVSEs**: each 1.6 connector N is EVSE N with one connector (connectorId 1); 1.6
  connector 0 (the whole charger) has no StatusNotification in 2.0.1, so its faults are
  reported as NotifyEvent ``ChargingStation.Problem``. Statuses map Preparing/Charging/
  Finishing → Occupied and are reported on change only (all of them after a boot).
- **Transactions**: TransactionEvent Started (with the idToken, ``remoteStartId`` for remote
  starts, the meter at Transaction.Begin) → Updated (ChargingStateChanged to Charging, then
  MeterValuePeriodic) → Ended (``stoppedReason``, the meter at Transaction.End), ``seqNo``
  counting per transaction; the transaction id is the charger's own (a UUID).
- **Boot**: only after a (re)boot, with its reason (PowerUp, RemoteReset, FirmwareUpdate,
  Triggered); a reconnect without a reboot carries on as accepted, as B01 allows.
- **Firmware**: UpdateFirmware L01 (signed, verified against the charger's roots as the 1.6
  signed path does) and L02 (unsigned), reporting FirmwareStatusNotification with
  ``requestId`` and the full status set (DownloadScheduled, InstallScheduled,
  InstallRebooting, InstallVerificationFailed, ...).
- **Configuration**: GetVariables/SetVariables/GetBaseReport over :mod:`evota.sim.devicemodel`.

Everything sent and received is validated against the 2.0.1 schemas, like the 1.6 side.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from evota.ocpp import rpc
from evota.ocpp.errors import V201_SPELLING, ErrorKind, RpcError
from evota.ocpp.schemas import SchemaSet, v201
from evota.sim import devicemodel, firmware
from evota.sim.charger import (
    WIRES,
    CallFailed,
    Handler,
    Reply,
    SimulatedCharger,
    Transaction,
    Wire,
    handles,
)
from evota.sim.control import (
    authorization,
    availability,
    certificates,
    datatransfer,
    diagnostics,
    network,
    smartcharging,
    transactions,
)
from evota.sim.control.configuration import apply_setting, reconnect_with_new_key
from evota.sim.control.keys import ConfigKey
from evota.sim.control.locallist import apply_local_list
from evota.sim.control.schedules import StoredProfile
from evota.sim.control.state import state

SUBPROTOCOL = "ocpp2.0.1"

#: The core's (1.6) connector statuses as 2.0.1 connectorStatus.
CONNECTOR_STATUS = {
    "Available": "Available",
    "Preparing": "Occupied",
    "Charging": "Occupied",
    "SuspendedEV": "Occupied",
    "SuspendedEVSE": "Occupied",
    "Finishing": "Occupied",
    "Reserved": "Reserved",
    "Unavailable": "Unavailable",
    "Faulted": "Faulted",
}

#: The core's (1.6) stop reasons as 2.0.1 stoppedReason, and the trigger that reports them.
STOPPED_REASON = {
    "HardReset": "ImmediateReset",
    "SoftReset": "ImmediateReset",
    "UnlockCommand": "Local",
    "EVDisconnected": "EVDisconnected",
    "Remote": "Remote",
    "PowerLoss": "PowerLoss",
    "DeAuthorized": "DeAuthorized",
    "Reboot": "Reboot",
    "Local": "Local",
    "EmergencyStop": "EmergencyStop",
    "Other": "Other",
}
STOP_TRIGGER = {
    "EVDisconnected": "EVCommunicationLost",
    "Remote": "RemoteStop",
    "ImmediateReset": "ResetCommand",
    "Reboot": "ResetCommand",
    "DeAuthorized": "Deauthorized",
    "Local": "StopAuthorized",
}

ENERGY = "Energy.Active.Import.Register"
PROFILE_PURPOSES = {  # 2.0.1 -> the core's (1.6) purpose names
    "ChargingStationMaxProfile": "ChargePointMaxProfile",
    "TxDefaultProfile": "TxDefaultProfile",
    "TxProfile": "TxProfile",
}
_IDLE_POLL = 0.05  # real s between checks whether a scheduled reset may run

#: Inbound 2.0.1 action -> handler (the handlers below register themselves).
V201_HANDLERS: dict[str, Handler] = {}


def _handles(action: str) -> Callable[[Handler], Handler]:
    return handles(action, V201_HANDLERS)


@functools.cache
def model(connectors: int) -> devicemodel.Model:
    """The device model's shape depends only on the EVSE count: shared, immutable."""
    return devicemodel.Model(connectors)


class V201Wire(Wire):
    """OCPP 2.0.1 spelling of the core's actions; holds what 2.0.1 reports only on change."""

    protocol = SUBPROTOCOL
    boot_every_connection = False
    detailed_firmware = True

    def __init__(self) -> None:
        self.reported: dict[int, str] = {}  # EVSE -> connectorStatus last reported
        self.problem = False  # NotifyEvent ChargingStation.Problem = true is outstanding
        self.event_ids = itertools.count(1)
        self.reset_task: asyncio.Task[None] | None = None  # an OnIdle reset waiting

    @property
    def spelling(self) -> dict[ErrorKind, str]:
        return V201_SPELLING

    def schemas(self) -> SchemaSet:
        return v201()

    def handlers(self) -> dict[str, Handler]:
        return V201_HANDLERS

    def extra_configuration(self, charger: SimulatedCharger) -> dict[str, ConfigKey]:
        return devicemodel.v201_configuration(charger.spec.connectors, charger.identity)

    async def booted(self, charger: SimulatedCharger, reason: str) -> None:
        """A04.FR.02: startups and resets are critical security events, always reported."""
        kind = "StartupOfTheDevice" if reason == "PowerUp" else "ResetOrReboot"
        message = self.security_event(charger, kind, f"boot reason {reason}")
        assert message is not None
        await firmware.agent(charger).notify(*message)

    def allow_sessions_pending_update(self, charger: SimulatedCharger) -> bool:
        return state(charger).flag("ChargingStation.AllowNewSessionsPendingFirmwareUpdate")

    def authorize_remote(self, charger: SimulatedCharger) -> bool:
        return state(charger).flag("AuthorizeRemoteTxRequests")  # AuthCtrlr.AuthorizeRemoteStart

    # -- charger-initiated messages -----------------------------------------------------------
    def boot(self, charger: SimulatedCharger, reason: str) -> dict[str, Any]:
        spec = charger.spec
        station: dict[str, Any] = {"model": spec.model, "vendorName": spec.vendor}
        if spec.serial_number:
            station["serialNumber"] = spec.serial_number
        station["firmwareVersion"] = charger.firmware_version
        return {"reason": reason, "chargingStation": station}

    async def status(
        self, charger: SimulatedCharger, connector: int, status: str, error_code: str, force: bool
    ) -> None:
        if connector == 0:  # the station: no StatusNotification, a fault is a NotifyEvent
            await self.station_problem(charger, status == "Faulted", error_code)
            return
        reported = CONNECTOR_STATUS[status]
        if not force and self.reported.get(connector) == reported:
            return
        # Noted before sending: CALLs queue in order, so a change made meanwhile compares with
        # what will have been reported; a failed send is forgotten so the next one goes out.
        self.reported[connector] = reported
        try:
            await charger.call(
                "StatusNotification",
                {
                    "timestamp": charger._now(),
                    "connectorStatus": reported,
                    "evseId": connector,
                    "connectorId": 1,
                },
            )
        except BaseException:
            if self.reported.get(connector) == reported:
                del self.reported[connector]
            raise

    async def station_problem(self, charger: SimulatedCharger, problem: bool, code: str) -> None:
        """NotifyEvent ``ChargingStation.Problem`` when it changes (a HardWiredNotification)."""
        if problem == self.problem:
            return
        event: dict[str, Any] = {
            "eventId": next(self.event_ids),
            "timestamp": charger._now(),
            "trigger": "Delta",
            "actualValue": "true" if problem else "false",
            "component": {"name": "ChargingStation"},
            "variable": {"name": "Problem"},
            "eventNotificationType": "HardWiredNotification",
        }
        if problem:
            event["techCode"] = code[:50]
            event["techInfo"] = f"firmware {charger.firmware_version} reports a fault"[:500]
        else:
            event["cleared"] = True
        payload = {"generatedAt": charger._now(), "seqNo": 0, "eventData": [event]}
        self.problem = problem  # noted before sending, as statuses are
        try:
            await charger.call("NotifyEvent", payload)
        except BaseException:
            self.problem = not problem
            raise

    async def authorize(self, charger: SimulatedCharger, txn: Transaction) -> bool:
        answer = await charger.call("Authorize", {"idToken": _token(txn)})
        return bool(answer["idTokenInfo"]["status"] == "Accepted")

    async def start(self, charger: SimulatedCharger, txn: Transaction) -> bool:
        txn.transaction_id = str(uuid.UUID(int=charger.rng.getrandbits(128), version=4))
        trigger = "RemoteStart" if txn.remote else "Authorized"
        started = self.event(charger, txn, "Started", trigger, "EVConnected", "Transaction.Begin")
        started["idToken"] = _token(txn)
        if txn.remote_start_id is not None:
            started["transactionInfo"]["remoteStartId"] = txn.remote_start_id
        answer = await charger.call("TransactionEvent", started)
        info = answer.get("idTokenInfo")
        if info is not None and info["status"] != "Accepted":
            return False
        charging = self.event(charger, txn, "Updated", "ChargingStateChanged", "Charging")
        await charger.call("TransactionEvent", charging)
        return True

    async def meter(self, charger: SimulatedCharger, txn: Transaction) -> None:
        payload = self.event(
            charger, txn, "Updated", "MeterValuePeriodic", "Charging", "Sample.Periodic"
        )
        await charger.call("TransactionEvent", payload)

    async def stop(
        self, charger: SimulatedCharger, txn: Transaction, reason: str, meter_stop: int
    ) -> None:
        stopped = STOPPED_REASON.get(reason, "Other")
        state_after = "Idle" if stopped == "EVDisconnected" else "EVConnected"
        trigger = STOP_TRIGGER.get(stopped, "AbnormalCondition")
        ended = self.event(charger, txn, "Ended", trigger, state_after, "Transaction.End")
        ended["transactionInfo"]["stoppedReason"] = stopped
        ended["meterValue"][0]["sampledValue"][0]["value"] = meter_stop
        await charger.call("TransactionEvent", ended)

    def event(
        self,
        charger: SimulatedCharger,
        txn: Transaction,
        event_type: str,
        trigger: str,
        charging_state: str,
        context: str | None = None,
    ) -> dict[str, Any]:
        """A TransactionEvent payload (and the next seqNo); ``context`` adds the meter."""
        assert isinstance(txn.transaction_id, str)
        payload: dict[str, Any] = {
            "eventType": event_type,
            "timestamp": charger._now(),
            "triggerReason": trigger,
            "seqNo": txn.seq_no,
            "transactionInfo": {
                "transactionId": txn.transaction_id,
                "chargingState": charging_state,
            },
            "evse": {"id": txn.connector_id, "connectorId": 1},
        }
        txn.seq_no += 1
        if context is not None:
            payload["meterValue"] = [meter_value(charger, txn.connector_id, context)]
        return payload

    def firmware_status(self, status: str, request_id: int | None) -> tuple[str, dict[str, Any]]:
        payload: dict[str, Any] = {"status": status}
        if request_id is not None:
            payload["requestId"] = request_id
        return "FirmwareStatusNotification", payload

    def security_event(
        self, charger: SimulatedCharger, kind: str, tech_info: str
    ) -> tuple[str, dict[str, Any]] | None:
        payload = {"type": kind, "timestamp": charger._now(), "techInfo": tech_info[:255]}
        return "SecurityEventNotification", payload


WIRES[SUBPROTOCOL] = V201Wire


def wire(charger: SimulatedCharger) -> V201Wire:
    assert isinstance(charger.wire, V201Wire)
    return charger.wire


def _token(txn: Transaction) -> dict[str, Any]:
    return {"idToken": txn.id_tag[:36], "type": txn.id_token_type}


def meter_value(charger: SimulatedCharger, evse: int, context: str) -> dict[str, Any]:
    return {
        "timestamp": charger._now(),
        "sampledValue": [
            {
                "value": int(charger.meter_wh[evse]),
                "context": context,
                "measurand": ENERGY,
                "location": "Outlet",
                "unitOfMeasure": {"unit": "Wh"},
            }
        ],
    }


def _evses(charger: SimulatedCharger) -> range:
    return range(1, charger.spec.connectors + 1)


Sends = Callable[[], Coroutine[Any, Any, Any]]


def _spawn(charger: SimulatedCharger, sends: Sends) -> Callable[[], Awaitable[None]]:
    """A ``then`` that sends from a task of its own (never inside the handler's turn)."""

    async def then() -> None:
        charger.spawn_background(_quietly(sends()))

    return then


async def _quietly(call: Awaitable[Any]) -> None:
    with contextlib.suppress(CallFailed):
        await call


# -- firmware -----------------------------------------------------------------------------------


@_handles("UpdateFirmware")
async def _on_update_firmware(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    """L01 (signed) and L02 (unsigned); ``firmware_update`` says which the charger takes."""
    a = firmware.agent(charger)
    faults = firmware._draw(charger)
    p = call.payload
    fw = p["firmware"]
    signed = "signature" in fw or "signingCertificate" in fw
    capability = charger.spec.firmware_update
    if (
        faults.reject
        or (signed and capability == "plain")
        or (not signed and capability == "signed")
    ):
        return Reply({"status": "Rejected"})
    if signed:
        if "signature" not in fw:
            return Reply({"status": "Rejected", "statusInfo": {"reasonCode": "NoSignature"}})
        if "signingCertificate" not in fw:
            return firmware.refuse_certificate(
                charger, "InvalidCertificate", "no signing certificate given"
            )
        refusal = firmware.certificate_refusal(charger, fw["signingCertificate"])
        if refusal is not None:
            return firmware.refuse_certificate(charger, *refusal)
    status = firmware.replace_answer(a, faults)
    if status == "Rejected":  # installing already, or cannot cancel the running update
        return Reply({"status": status, "statusInfo": {"reasonCode": "UpdateInProgress"}})
    return firmware.begin(a, firmware.signed_update(p, charger, faults), status)


# -- reset and availability -------------------------------------------------------------------


def _idle(charger: SimulatedCharger) -> bool:
    fw = charger.firmware_agent
    return not charger.in_session and not (fw is not None and fw.busy)


@_handles("Reset")
async def _on_reset(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    """Immediate: end sessions (ImmediateReset) and reboot; OnIdle: ``Scheduled`` while a
    session or a firmware update runs, rebooting once they are over (B11/B12)."""
    p = call.payload
    if "evseId" in p:  # resetting one EVSE is optional in 2.0.1; this station does not
        return Reply({"status": "Rejected", "statusInfo": {"reasonCode": "NoEVSEReset"}})
    w = wire(charger)

    async def reboot() -> None:
        network.choose(charger)  # the first slot of NetworkConfigurationPriority (A05)
        await charger.reboot(reason="RemoteReset")

    if p["type"] == "Immediate" or _idle(charger):
        return Reply({"status": "Accepted"}, then=reboot)
    if w.reset_task is None or w.reset_task.done():

        async def when_idle() -> None:
            while not _idle(charger):  # noqa: ASYNC110 -- sessions end by their own tasks
                await asyncio.sleep(_IDLE_POLL)
            await reboot()

        w.reset_task = charger.spawn_background(when_idle())
    return Reply({"status": "Scheduled"})


@_handles("ChangeAvailability")
async def _on_change_availability(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    evse = call.payload.get("evse") or {}
    connector = evse.get("id", 0)  # EVSE 0 (or none): the whole station
    if connector != 0 and (connector not in _evses(charger) or evse.get("connectorId", 1) != 1):
        return Reply({"status": "Rejected"})
    return availability.change_availability(charger, connector, call.payload["operationalStatus"])


# -- transactions -------------------------------------------------------------------------------


@_handles("RequestStartTransaction")
async def _on_request_start(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    p = call.payload
    profile = p.get("chargingProfile")
    if profile is not None and profile["chargingProfilePurpose"] != "TxProfile":
        return Reply({"status": "Rejected"})
    free = [
        c
        for c in _evses(charger)
        if charger.connector_status.get(c) == "Available" and c not in charger.transactions
    ]
    if "evseId" in p:
        free = [c for c in free if c == p["evseId"]]
    if not free or not charger.accepted:
        return Reply({"status": "Rejected"})
    evse, token = free[0], p["idToken"]

    async def start() -> None:
        if profile is not None:
            stored = StoredProfile(evse, profile_16(profile), charger.clock.now())
            state(charger).profiles[stored.id] = stored
        with contextlib.suppress(ValueError, CallFailed):  # raced by another start
            charger.begin_session(
                evse,
                token["idToken"],
                charger.config.remote_session_duration,
                remote=True,
                remote_start_id=p["remoteStartId"],
                id_token_type=token["type"],
            )

    return Reply({"status": "Accepted"}, then=start)


@_handles("RequestStopTransaction")
async def _on_request_stop(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    wanted = call.payload["transactionId"]
    for connector, txn in charger.transactions.items():
        if txn.transaction_id == wanted and txn.stop_requested is None:

            async def stop(connector: int = connector) -> None:
                transactions.request_stop(charger, connector, "Remote")

            return Reply({"status": "Accepted"}, then=stop)
    return Reply({"status": "Rejected"})


@_handles("UnlockConnector")
async def _on_unlock(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    """2.0.1 never unlocks under a running transaction (F05.FR.02): stop it first."""
    evse, connector = call.payload["evseId"], call.payload["connectorId"]
    if evse not in _evses(charger) or connector != 1:
        return Reply({"status": "UnknownConnector"})
    if evse in charger.transactions:
        return Reply({"status": "OngoingAuthorizedTransaction"})
    state(charger).unlocked.append(evse)
    return Reply({"status": "Unlocked"})


# -- device model -------------------------------------------------------------------------------


def _computed(charger: SimulatedCharger) -> devicemodel.Computed:
    def compute(var: devicemodel.Var) -> str:
        st = state(charger)
        if var.variable == "AvailabilityState":
            if var.evse is None:
                faulted = charger.faulted
                down = 0 in charger.inoperative
                return "Faulted" if faulted else "Unavailable" if down else "Available"
            return CONNECTOR_STATUS.get(charger.connector_status.get(var.evse) or "", "Available")
        if var.variable == "Available":
            return "true"
        if var.variable == "DateTime":
            return charger._now()
        if var.component == "LocalAuthListCtrlr":
            return str(len(st.local_list.entries))
        if var.variable == "Entries":
            return str(len(st.profiles))
        if var.variable == "RateUnit":
            units = {"Current": "A", "Power": "W"}
            members = st.setting("ChargingScheduleAllowedChargingRateUnit").split(",")
            return ",".join(units[m] for m in members if m in units)
        return ""

    return compute


def _refresh(charger: SimulatedCharger) -> dict[str, ConfigKey]:
    st = state(charger)
    entry = st.configuration["HeartbeatInterval"]
    st.configuration["HeartbeatInterval"] = ConfigKey(
        str(int(charger.heartbeat_interval)), entry.readonly, entry.kind
    )
    return st.configuration


_ITEMS_PER_MESSAGE = {  # DeviceDataCtrlr.ItemsPerMessage[instance] -> its store key
    "GetVariables": "GetConfigurationMaxKeys",
    "SetVariables": devicemodel.native_key("DeviceDataCtrlr", "ItemsPerMessage", "SetVariables"),
    "GetReport": devicemodel.native_key("DeviceDataCtrlr", "ItemsPerMessage", "GetReport"),
}


def _too_many(charger: SimulatedCharger, items: list[Any], instance: str) -> None:
    """More items than ItemsPerMessage allows is an OccurrenceConstraintViolation (B05/B06)."""
    limit = state(charger).number(_ITEMS_PER_MESSAGE[instance], 100)
    if len(items) > limit:
        raise RpcError(
            ErrorKind.OCCURRENCE_CONSTRAINT, f"more than ItemsPerMessage[{instance}] ({limit})"
        )


@_handles("GetVariables")
async def _on_get_variables(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    items = call.payload["getVariableData"]
    _too_many(charger, items, "GetVariables")
    results = devicemodel.get_results(
        model(charger.spec.connectors), _refresh(charger), items, _computed(charger)
    )
    return Reply({"getVariableResult": results})


@_handles("SetVariables")
async def _on_set_variables(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    items = call.payload["setVariableData"]
    _too_many(charger, items, "SetVariables")
    m = model(charger.spec.connectors)
    results = []
    new_password = False
    for item in items:
        result, key = devicemodel.set_decision(m, _refresh(charger), item)
        if key is not None:
            refused = None
            if key == network.PRIORITY_KEY:
                refused = network.priority_answer(charger, item["attributeValue"])
            status = refused or apply_setting(charger, key, item["attributeValue"])
            result["attributeStatus"] = "Rejected" if status == "NotSupported" else status
            if status == "Rejected":
                result["attributeStatusInfo"] = {"reasonCode": "InvalidValue"}
            new_password = new_password or (key == "AuthorizationKey" and status == "Accepted")
        results.append(result)
    if new_password:  # reconnect with the new BasicAuthPassword after the answer (A01)
        return Reply({"setVariableResult": results}, then=lambda: reconnect_with_new_key(charger))
    return Reply({"setVariableResult": results})


@_handles("GetBaseReport")
async def _on_get_base_report(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    request_id, base = call.payload["requestId"], call.payload["reportBase"]
    items = devicemodel.report_items(
        model(charger.spec.connectors), _refresh(charger), base, _computed(charger)
    )
    if not items:
        return Reply({"status": "EmptyResultSet"})
    per_message = max(1, state(charger).number(_ITEMS_PER_MESSAGE["GetReport"], 20))

    async def send() -> None:
        generated = charger._now()
        parts = [items[i : i + per_message] for i in range(0, len(items), per_message)]
        for seq, part in enumerate(parts):
            payload: dict[str, Any] = {
                "requestId": request_id,
                "generatedAt": generated,
                "seqNo": seq,
                "reportData": part,
            }
            if seq < len(parts) - 1:
                payload["tbc"] = True
            await firmware.agent(charger).notify("NotifyReport", payload)

    return Reply({"status": "Accepted"}, then=_spawn(charger, send))


# -- trigger message ----------------------------------------------------------------------------


@_handles("TriggerMessage")
async def _on_trigger_message(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    message = call.payload["requestedMessage"]
    evse_ref = call.payload.get("evse")
    evse = None if evse_ref is None else evse_ref["id"]
    if evse is not None and evse != 0 and evse not in _evses(charger):
        return Reply({"status": "Rejected"})
    targets = list(_evses(charger)) if not evse else [evse]
    st = state(charger)
    w = wire(charger)
    sends: Sends
    match message:
        case "BootNotification":
            if charger.boot_status == "Accepted":  # F06.FR.17: nothing to boot for
                return Reply({"status": "Rejected"})
            sends = functools.partial(
                charger.call, "BootNotification", w.boot(charger, "Triggered")
            )
        case "Heartbeat":
            sends = functools.partial(charger.call, "Heartbeat", {})
        case "StatusNotification":
            sends = functools.partial(_statuses, charger, targets)
        case "MeterValues":
            sends = functools.partial(_meter_values, charger, targets)
        case "TransactionEvent":
            running = [charger.transactions[t] for t in targets if t in charger.transactions]
            running = [t for t in running if isinstance(t.transaction_id, str)]
            if not running:
                return Reply({"status": "Rejected"})
            sends = functools.partial(_transaction_events, charger, running)
        case "FirmwareStatusNotification":
            fw = charger.firmware_agent
            current = charger.firmware_state if fw is not None and fw.busy else None
            action, payload = (  # Idle carries no requestId
                w.firmware_status("Idle", None)
                if current is None
                else w.firmware_status(current, charger.firmware_request_id)
            )
            sends = functools.partial(charger.call, action, payload)
        case "LogStatusNotification":
            log_payload: dict[str, Any] = {"status": st.log_status}
            if st.log_request_id is not None and st.log_status == "Uploading":
                log_payload["requestId"] = st.log_request_id
            sends = functools.partial(charger.call, "LogStatusNotification", log_payload)
        case "SignChargingStationCertificate":
            request = {
                "csr": certificates.csr(charger),
                "certificateType": "ChargingStationCertificate",
            }
            sends = functools.partial(charger.call, "SignCertificate", request)
        case _:
            return Reply({"status": "NotImplemented"})
    return Reply({"status": "Accepted"}, then=_spawn(charger, sends))


async def _statuses(charger: SimulatedCharger, evses: list[int]) -> None:
    for evse in evses:
        status = charger.connector_status.get(evse) or charger.idle_status(evse)[0]
        await _quietly(charger.send_status(evse, status, force=True))


async def _meter_values(charger: SimulatedCharger, evses: list[int]) -> None:
    for evse in evses:
        payload = {"evseId": evse, "meterValue": [meter_value(charger, evse, "Trigger")]}
        await _quietly(charger.call("MeterValues", payload))


async def _transaction_events(charger: SimulatedCharger, running: list[Transaction]) -> None:
    w = wire(charger)
    for txn in running:
        payload = w.event(charger, txn, "Updated", "Trigger", "Charging", "Trigger")
        await _quietly(charger.call("TransactionEvent", payload))


# -- smart charging -----------------------------------------------------------------------------


def profile_16(profile: dict[str, Any]) -> dict[str, Any]:
    """A 2.0.1 charging profile in the core's (1.6) shape: the first schedule, 1.6 names."""
    schedule = {k: v for k, v in profile["chargingSchedule"][0].items() if k != "id"}
    out: dict[str, Any] = {
        "chargingProfileId": profile["id"],
        "stackLevel": profile["stackLevel"],
        "chargingProfilePurpose": PROFILE_PURPOSES.get(
            profile["chargingProfilePurpose"], profile["chargingProfilePurpose"]
        ),
        "chargingProfileKind": profile["chargingProfileKind"],
        "chargingSchedule": schedule,
    }
    for key in ("recurrencyKind", "validFrom", "validTo", "transactionId"):
        if key in profile:
            out[key] = profile[key]
    return out


@_handles("SetChargingProfile")
async def _on_set_charging_profile(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    profile = call.payload["chargingProfile"]
    if profile["chargingProfilePurpose"] == "ChargingStationExternalConstraints":
        return Reply({"status": "Rejected"})  # K01.FR.22: only the station sets those
    if profile["chargingProfilePurpose"] == "TxProfile" and "transactionId" not in profile:
        return Reply({"status": "Rejected"})  # K01.FR.03
    status = smartcharging.install_profile(charger, call.payload["evseId"], profile_16(profile))
    return Reply({"status": status})


@_handles("ClearChargingProfile")
async def _on_clear_charging_profile(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    p = call.payload
    as_16: dict[str, Any] = {}
    if "chargingProfileId" in p:
        as_16["id"] = p["chargingProfileId"]
    criteria = p.get("chargingProfileCriteria", {})
    if "evseId" in criteria:
        as_16["connectorId"] = criteria["evseId"]
    if "chargingProfilePurpose" in criteria:
        purpose = criteria["chargingProfilePurpose"]
        as_16["chargingProfilePurpose"] = PROFILE_PURPOSES.get(purpose, purpose)
    if "stackLevel" in criteria:
        as_16["stackLevel"] = criteria["stackLevel"]
    return Reply({"status": smartcharging.clear_profiles(charger, as_16)})


# -- authorization --------------------------------------------------------------------------------


@_handles("SendLocalList")
async def _on_send_local_list(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    st = state(charger)
    p = call.payload
    entries = [
        {
            "idTag": e["idToken"]["idToken"],
            **({"idTagInfo": e["idTokenInfo"]} if "idTokenInfo" in e else {}),
        }
        for e in p.get("localAuthorizationList", [])
    ]
    status, st.local_list = apply_local_list(
        st.local_list,
        p["versionNumber"],
        p["updateType"],
        entries,
        max_send=st.number("SendLocalListMaxLength", 500),
        max_length=st.number("LocalAuthListMaxLength", 1000),
        enabled=st.flag("LocalAuthListEnabled"),
    )
    return Reply({"status": "Failed" if status == "NotSupported" else status})


@_handles("GetLocalListVersion")
async def _on_get_local_list_version(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    st = state(charger)
    return Reply({"versionNumber": st.local_list.version if st.flag("LocalAuthListEnabled") else 0})


# -- certificates -------------------------------------------------------------------------------


@_handles("GetInstalledCertificateIds")
async def _on_get_installed_certificate_ids(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    wanted = call.payload.get("certificateType")
    chains = [
        {"certificateType": use, "certificateHashData": certificates.certificate_hash(pem)}
        for use, pem in state(charger).certificates
        if wanted is None or use in wanted
    ]
    if not chains:
        return Reply({"status": "NotFound"})
    return Reply({"status": "Accepted", "certificateHashDataChain": chains})


# The messages whose payloads and answers 2.0.1 kept from 1.6 (+ security extension).
V201_HANDLERS |= {
    "ClearCache": authorization.on_clear_cache,
    "DataTransfer": datatransfer.on_data_transfer,
    "GetLog": diagnostics.on_get_log,
    "InstallCertificate": certificates.on_install_certificate,
    "DeleteCertificate": certificates.on_delete_certificate,
    "CertificateSigned": certificates.on_certificate_signed,
    "SetNetworkProfile": network.on_set_network_profile,
}
