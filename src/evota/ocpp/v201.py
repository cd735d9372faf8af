"""OCPP 2.0.1 <-> the same domain events and commands as 1.6.

Payloads reaching ``decode_event`` have passed schema validation. The mapping decisions
(documented in docs/ocpp.md, "OCPP 2.0.1"):

* **EVSE = 1.6 connector.** Domain connector ids are 2.0.1 EVSE ids: the unit that charges,
  what 1.6 calls a connector and what commands address. The connector on an EVSE rides along
  where 2.0.1 needs it (UnlockConnector, StatusNotification); EVSE 0 / no EVSE is the whole
  charger, as connector 0 is in 1.6.
* **Transactions** are named by the charger (``transactionId`` strings); evota keeps its own
  session id and stores the charger's id beside it. Commands naming a session by evota's id
  are translated before encoding (``Gateway.send``).
* **Reset**: Soft → OnIdle, Hard → Immediate; Immediate/OnIdle pass through.
* **Configuration keys** map to component/variable pairs (:mod:`evota.ocpp.v201_variables`).
* **Firmware**: SignedUpdateFirmware and UpdateFirmware both become 2.0.1 UpdateFirmware,
  with and without ``signature``/``signingCertificate`` (use cases L01 and L02).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from evota.control import commands
from evota.fleet import events as ev
from evota.fleet.bounds import FREE_FORM, STORED, bound
from evota.ocpp import v201_variables as variables
from evota.ocpp.errors import V201_SPELLING
from evota.ocpp.v16 import _details, _iso, _put, _retries, _ts, plausible_energy

SUBPROTOCOL = "ocpp2.0.1"
ERROR_SPELLING = V201_SPELLING
ENERGY = "Energy.Active.Import.Register"


def _energy_wh(meter_value: list[dict[str, Any]]) -> float | None:
    """The last whole-meter (no phase) Energy.Active.Import.Register sample, in Wh;
    samples no meter can show (see ``plausible_energy``) are skipped."""
    found: float | None = None
    for mv in meter_value:
        for sv in mv["sampledValue"]:
            if sv.get("measurand", ENERGY) != ENERGY or "phase" in sv:
                continue
            unit = sv.get("unitOfMeasure")
            value = float(sv["value"])
            if unit:
                multiplier = unit.get("multiplier", 0)
                if not -12 <= multiplier <= 12:  # 10.0 ** 400 raises OverflowError
                    continue
                value *= 10.0**multiplier
                if unit.get("unit") == "kWh":
                    value *= 1000
            if plausible_energy(value):
                found = value
    return found


def _component(item: dict[str, Any]) -> tuple[str, int | None, int | None]:
    comp = item["component"]
    evse = comp.get("evse")
    return comp["name"], (evse["id"] if evse else None), (evse.get("connectorId") if evse else None)


def _monitored(item: dict[str, Any]) -> ev.MonitoredEvent:
    component, evse_id, connector_id = _component(item)
    return ev.MonitoredEvent(
        event_id=item["eventId"],
        component=component,
        variable=item["variable"]["name"],
        actual_value=item["actualValue"],
        trigger=item["trigger"],
        timestamp=_ts(item["timestamp"]),
        evse_id=evse_id,
        connector_id=connector_id,
        cleared=item.get("cleared"),
        tech_code=item.get("techCode"),
        tech_info=item.get("techInfo"),
        transaction_id=item.get("transactionId"),
    )


def _reported(item: dict[str, Any]) -> dict[str, Any]:
    """One NotifyReport entry as stored: names, the Actual value, mutability, data type."""
    component, evse_id, connector_id = _component(item)
    out: dict[str, Any] = {"component": component, "variable": item["variable"]["name"]}
    _put(out, "component_instance", item["component"].get("instance"))
    _put(out, "variable_instance", item["variable"].get("instance"))
    _put(out, "evse_id", evse_id)
    _put(out, "connector_id", connector_id)
    for attribute in item["variableAttribute"]:
        kind = attribute.get("type", "Actual")
        prefix = "" if kind == "Actual" else kind.lower() + "_"
        _put(out, prefix + "value", attribute.get("value"))
        if kind == "Actual":
            _put(out, "mutability", attribute.get("mutability"))
    characteristics = item.get("variableCharacteristics")
    if characteristics:
        out["data_type"] = characteristics["dataType"]
        _put(out, "unit", characteristics.get("unit"))
    return out


def _transaction(p: dict[str, Any]) -> ev.TransactionReported:
    info = p["transactionInfo"]
    evse = p.get("evse")
    token = p.get("idToken")
    meter = p.get("meterValue")
    return ev.TransactionReported(
        event_type=p["eventType"],
        transaction_id=info["transactionId"],
        connector_id=evse["id"] if evse else None,
        timestamp=_ts(p["timestamp"]),
        trigger_reason=p["triggerReason"],
        seq_no=p["seqNo"],
        energy_wh=_energy_wh(meter) if meter else None,
        id_token=token["idToken"] if token else None,
        token_type=token["type"] if token else None,
        stopped_reason=info.get("stoppedReason"),
        charging_state=info.get("chargingState"),
        remote_start_id=info.get("remoteStartId"),
        offline=p.get("offline", False),
    )


def _boot(p: dict[str, Any]) -> ev.Booted:
    station = p["chargingStation"]
    modem = station.get("modem") or {}
    return ev.Booted(
        vendor=station["vendorName"],
        model=station["model"],
        serial_number=station.get("serialNumber"),
        firmware_version=station.get("firmwareVersion"),
        iccid=modem.get("iccid"),
        imsi=modem.get("imsi"),
        reason=p["reason"],
    )


def _status(p: dict[str, Any]) -> ev.StatusReported:
    status = p["connectorStatus"]
    return ev.StatusReported(
        connector_id=p["evseId"],
        status=status,
        # 2.0.1 has no error code: a fault's details arrive as NotifyEvent.
        error_code="OtherError" if status == "Faulted" else "NoError",
        timestamp=_ts(p["timestamp"]),
        connector=p["connectorId"],
    )


_DECODERS: dict[str, Callable[[dict[str, Any]], ev.ChargerEvent]] = {
    "BootNotification": _boot,
    "Heartbeat": lambda p: ev.HeartbeatReceived(),
    "StatusNotification": _status,
    "MeterValues": lambda p: ev.MeterSampled(
        connector_id=p["evseId"],
        transaction_id=None,  # samples of a transaction come in TransactionEvent
        energy_wh=_energy_wh(p["meterValue"]),
        timestamp=_ts(p["meterValue"][-1]["timestamp"]),
    ),
    "Authorize": lambda p: ev.AuthorizeRequested(
        id_tag=p["idToken"]["idToken"], token_type=p["idToken"]["type"]
    ),
    "TransactionEvent": _transaction,
    "NotifyEvent": lambda p: ev.EventsNotified(
        seq_no=p["seqNo"],
        generated_at=_ts(p["generatedAt"]),
        events=tuple(_monitored(item) for item in p["eventData"]),
        tbc=p.get("tbc", False),
    ),
    "NotifyReport": lambda p: ev.ReportReceived(
        request_id=p["requestId"],
        seq_no=p["seqNo"],
        generated_at=_ts(p["generatedAt"]),
        items=tuple(_reported(item) for item in p.get("reportData", ())),
        tbc=p.get("tbc", False),
    ),
    "FirmwareStatusNotification": lambda p: ev.FirmwareStatusReported(
        status=p["status"], request_id=p.get("requestId")
    ),
    "LogStatusNotification": lambda p: ev.LogStatusReported(
        status=p["status"], request_id=p.get("requestId")
    ),
    "SecurityEventNotification": lambda p: ev.SecurityEventReported(
        type=p["type"], timestamp=_ts(p["timestamp"]), tech_info=p.get("techInfo")
    ),
    "DataTransfer": lambda p: ev.DataTransferReceived(
        vendor_id=p["vendorId"], message_id=p.get("messageId"), data=bound(p.get("data"), FREE_FORM)
    ),
    "SignCertificate": lambda p: ev.CertificateSigningRequested(
        csr=p["csr"], certificate_type=p.get("certificateType")
    ),
}

#: Actions evota handles from a 2.0.1 charger.
CHARGER_ACTIONS = frozenset(_DECODERS)

#: A charger that is not Accepted may only boot (B02/B03: the CSMS answers SecurityError).
PRE_ACCEPT_ACTIONS = frozenset({"BootNotification"})


def decode_event(action: str, payload: dict[str, Any]) -> ev.ChargerEvent:
    return _DECODERS[action](payload)


def encode_reply(action: str, reply: ev.Reply) -> dict[str, Any]:
    """The CALLRESULT payload for ``action``; the caller validates it against the schema."""
    if type(reply) is ev.Ack:
        return {}
    if isinstance(reply, ev.BootReply):
        return {
            "status": reply.registration.value,
            "currentTime": _iso(reply.current_time),
            "interval": reply.interval,
        }
    if isinstance(reply, ev.TimeReply):
        return {"currentTime": _iso(reply.current_time)}
    if isinstance(reply, ev.IdTagReply):  # Authorize, TransactionEvent with an idToken
        info: dict[str, Any] = {"status": reply.status}
        if reply.expires_at is not None:
            info["cacheExpiryDateTime"] = _iso(reply.expires_at)
        if reply.parent_id is not None:
            info["groupIdToken"] = {"idToken": reply.parent_id, "type": LOCAL_LIST_TOKEN_TYPE}
        return {"idTokenInfo": info}
    if isinstance(reply, ev.StatusReply):
        return {"status": reply.status, **reply.extra}
    return {}


# -- commands ------------------------------------------------------------------------------

RESET_TYPES = {"Soft": "OnIdle", "Hard": "Immediate", "Immediate": "Immediate", "OnIdle": "OnIdle"}
PURPOSES = {
    "ChargePointMaxProfile": "ChargingStationMaxProfile",
    "TxDefaultProfile": "TxDefaultProfile",
    "TxProfile": "TxProfile",
}
CERTIFICATE_TYPES = {
    "CentralSystemRootCertificate": "CSMSRootCertificate",
    "CSMSRootCertificate": "CSMSRootCertificate",
    "ManufacturerRootCertificate": "ManufacturerRootCertificate",
    "V2GRootCertificate": "V2GRootCertificate",
    "MORootCertificate": "MORootCertificate",
}
#: TriggerMessage names: 1.6 names map to their 2.0.1 counterparts, 2.0.1 names pass.
TRIGGERS = {
    "BootNotification": "BootNotification",
    "FirmwareStatusNotification": "FirmwareStatusNotification",
    "Heartbeat": "Heartbeat",
    "MeterValues": "MeterValues",
    "StatusNotification": "StatusNotification",
    "LogStatusNotification": "LogStatusNotification",
    "SignChargePointCertificate": "SignChargingStationCertificate",
    "SignChargingStationCertificate": "SignChargingStationCertificate",
    "SignV2GCertificate": "SignV2GCertificate",
    "TransactionEvent": "TransactionEvent",
    "PublishFirmwareStatusNotification": "PublishFirmwareStatusNotification",
}
#: The idToken type of local authorization list entries (1.6 id tags are RFID card ids).
LOCAL_LIST_TOKEN_TYPE = "ISO14443"


def _unsupported(message: str) -> commands.CommandNotSupported:
    return commands.CommandNotSupported("", message)


def _transaction_id(value: int | str, what: str) -> str:
    if isinstance(value, str):
        return value
    raise _unsupported(
        f"{what}: evota knows no OCPP 2.0.1 transaction id for session {value} on this charger"
    )


def _profile(p: commands.ChargingProfile, *, in_start: bool = False) -> dict[str, Any]:
    periods = []
    for period in p.periods:
        item: dict[str, Any] = {"startPeriod": period.start_period, "limit": period.limit}
        _put(item, "numberPhases", period.number_phases)
        periods.append(item)
    schedule: dict[str, Any] = {
        "id": p.id,  # one schedule per profile: reuse the profile's id
        "chargingRateUnit": p.rate_unit,
        "chargingSchedulePeriod": periods,
    }
    _put(schedule, "duration", p.duration)
    _put(schedule, "startSchedule", p.start_schedule)
    _put(schedule, "minChargingRate", p.min_charging_rate)
    out: dict[str, Any] = {
        "id": p.id,
        "stackLevel": p.stack_level,
        "chargingProfilePurpose": PURPOSES[p.purpose],
        "chargingProfileKind": p.kind,
        "chargingSchedule": [schedule],
    }
    if p.transaction_id is not None and not in_start:
        out["transactionId"] = _transaction_id(p.transaction_id, "charging profile")
    _put(out, "recurrencyKind", p.recurrency)
    _put(out, "validFrom", p.valid_from)
    _put(out, "validTo", p.valid_to)
    return out


def _local_entry(e: commands.AuthorizationEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"idToken": {"idToken": e.id_tag, "type": LOCAL_LIST_TOKEN_TYPE}}
    if e.status is not None:
        info: dict[str, Any] = {"status": e.status}
        _put(info, "cacheExpiryDateTime", e.expiry)
        if e.parent_id_tag is not None:
            info["groupIdToken"] = {"idToken": e.parent_id_tag, "type": LOCAL_LIST_TOKEN_TYPE}
        out["idTokenInfo"] = info
    return out


def _variable(ref: commands.VariableRef) -> dict[str, Any]:
    component: dict[str, Any] = {"name": ref.component}
    _put(component, "instance", ref.component_instance)
    if ref.evse_id is not None:
        evse: dict[str, Any] = {"id": ref.evse_id}
        _put(evse, "connectorId", ref.connector_id)
        component["evse"] = evse
    variable: dict[str, Any] = {"name": ref.variable}
    _put(variable, "instance", ref.variable_instance)
    out: dict[str, Any] = {"component": component, "variable": variable}
    _put(out, "attributeType", ref.attribute_type)
    return out


def _keys_of(keys: tuple[str, ...]) -> list[tuple[str, commands.VariableRef, str]]:
    """Resolve 1.6 configuration keys; the whole command is refused if one has no mapping."""
    wanted = keys or tuple(variables.readable())
    try:
        return [variables.resolve(key) for key in wanted]
    except variables.UnmappedKey as exc:
        raise _unsupported(str(exc)) from None


def _firmware(
    c: commands.UpdateFirmware | commands.SignedUpdateFirmware,
) -> tuple[str, dict[str, Any]]:
    if c.request_id is None:
        raise commands.CommandError("", "an OCPP 2.0.1 UpdateFirmware needs a request id")
    firmware: dict[str, Any] = {"location": c.location, "retrieveDateTime": _iso(c.retrieve_at)}
    if isinstance(c, commands.SignedUpdateFirmware):
        _put(firmware, "installDateTime", c.install_at)
        firmware["signingCertificate"] = c.signing_certificate
        firmware["signature"] = c.signature
    payload: dict[str, Any] = {"requestId": c.request_id, "firmware": firmware}
    _retries(payload, c.retries, c.retry_interval)
    return "UpdateFirmware", payload


def encode_command(command: commands.Command) -> tuple[str, dict[str, Any]]:
    c = command
    payload: dict[str, Any] = {}
    match c:
        case commands.Reset():
            return "Reset", {"type": RESET_TYPES[c.type]}
        case commands.UpdateFirmware() | commands.SignedUpdateFirmware():
            return _firmware(c)
        case commands.RemoteStartTransaction():
            if c.remote_start_id is None:
                raise commands.CommandError("", "RequestStartTransaction needs a remoteStartId")
            payload = {
                "idToken": {"idToken": c.id_tag, "type": c.token_type},
                "remoteStartId": c.remote_start_id,
            }
            _put(payload, "evseId", c.connector_id)
            if c.charging_profile is not None:
                payload["chargingProfile"] = _profile(c.charging_profile, in_start=True)
            return "RequestStartTransaction", payload
        case commands.RemoteStopTransaction():
            return "RequestStopTransaction", {
                "transactionId": _transaction_id(c.transaction_id, "remote stop")
            }
        case commands.UnlockConnector():
            return "UnlockConnector", {
                "evseId": c.connector_id,
                "connectorId": c.evse_connector_id or 1,
            }
        case commands.ChangeAvailability():
            payload = {"operationalStatus": c.type}
            if c.connector_id:
                payload["evse"] = {"id": c.connector_id}
            return "ChangeAvailability", payload
        case commands.GetConfiguration():
            items = [_variable(ref) for _, ref, _ in _keys_of(c.keys)]
            return "GetVariables", {"getVariableData": items}
        case commands.ChangeConfiguration():
            ((key, ref, mutability),) = _keys_of((c.key,))
            if mutability == "ReadOnly":
                raise _unsupported(f"{key} is read-only on OCPP 2.0.1 chargers")
            item = _variable(ref)
            item["attributeValue"] = c.value
            return "SetVariables", {"setVariableData": [item]}
        case commands.GetVariables():
            return "GetVariables", {"getVariableData": [_variable(r) for r in c.variables]}
        case commands.SetVariables():
            items = []
            for ref, value in zip(c.variables, c.values, strict=True):
                item = _variable(ref)
                item["attributeValue"] = value
                items.append(item)
            return "SetVariables", {"setVariableData": items}
        case commands.GetBaseReport():
            return "GetBaseReport", {"requestId": c.request_id, "reportBase": c.report_base}
        case commands.ClearCache():
            return "ClearCache", {}
        case commands.SendLocalList():
            payload = {"versionNumber": c.version, "updateType": c.update_type}
            if c.entries:  # an empty Full update (no list) clears the charger's list
                payload["localAuthorizationList"] = [_local_entry(e) for e in c.entries]
            return "SendLocalList", payload
        case commands.GetLocalListVersion():
            return "GetLocalListVersion", {}
        case commands.SetChargingProfile():
            return "SetChargingProfile", {
                "evseId": c.connector_id,
                "chargingProfile": _profile(c.profile),
            }
        case commands.ClearChargingProfile():
            _put(payload, "chargingProfileId", c.profile_id)
            criteria: dict[str, Any] = {}
            _put(criteria, "evseId", c.connector_id)
            if c.purpose is not None:
                criteria["chargingProfilePurpose"] = PURPOSES[c.purpose]
            _put(criteria, "stackLevel", c.stack_level)
            if criteria:
                payload["chargingProfileCriteria"] = criteria
            return "ClearChargingProfile", payload
        case commands.TriggerMessage():
            requested = TRIGGERS.get(c.message)
            if requested is None:
                raise _unsupported(f"OCPP 2.0.1 cannot trigger {c.message}")
            payload = {"requestedMessage": requested}
            if c.connector_id:
                payload["evse"] = {"id": c.connector_id}
            return "TriggerMessage", payload
        case commands.GetDiagnostics():
            raise _unsupported("OCPP 2.0.1 has no GetDiagnostics: use get-log (DiagnosticsLog)")
        case commands.GetLog():
            log: dict[str, Any] = {"remoteLocation": c.location}
            _put(log, "oldestTimestamp", c.oldest)
            _put(log, "latestTimestamp", c.latest)
            payload = {"logType": c.log_type, "requestId": c.request_id, "log": log}
            _retries(payload, c.retries, c.retry_interval)
            return "GetLog", payload
        case commands.InstallCertificate():
            return "InstallCertificate", {
                "certificateType": CERTIFICATE_TYPES[c.certificate_type],
                "certificate": c.certificate,
            }
        case commands.DeleteCertificate():
            h = c.certificate
            return "DeleteCertificate", {
                "certificateHashData": {
                    "hashAlgorithm": h.hash_algorithm,
                    "issuerNameHash": h.issuer_name_hash,
                    "issuerKeyHash": h.issuer_key_hash,
                    "serialNumber": h.serial_number,
                }
            }
        case commands.GetInstalledCertificateIds():
            return "GetInstalledCertificateIds", {
                "certificateType": [CERTIFICATE_TYPES[c.certificate_type]]
            }
        case commands.CertificateSigned():
            payload = {"certificateChain": c.certificate_chain}
            _put(payload, "certificateType", c.certificate_type)
            return "CertificateSigned", payload
        case commands.SetNetworkProfile():
            return "SetNetworkProfile", {
                "configurationSlot": c.configuration_slot,
                "connectionData": {
                    "ocppVersion": "OCPP20",
                    "ocppTransport": "JSON",
                    "ocppCsmsUrl": c.csms_url,
                    "messageTimeout": c.message_timeout,
                    "securityProfile": c.security_profile,
                    "ocppInterface": c.ocpp_interface,
                },
            }
        case commands.DataTransfer():
            payload = {"vendorId": c.vendor_id}
            _put(payload, "messageId", c.message_id)
            _put(payload, "data", c.data)
            return "DataTransfer", payload
    raise _unsupported(f"{type(command).__name__} has no OCPP 2.0.1 mapping")


# -- answers -------------------------------------------------------------------------------

#: ChangeConfiguration's 1.6 words for SetVariables' attributeStatus.
_CHANGE_STATUS = {
    "Accepted": "Accepted",
    "RebootRequired": "RebootRequired",
    "Rejected": "Rejected",
    "UnknownComponent": "NotSupported",
    "UnknownVariable": "NotSupported",
    "NotSupportedAttributeType": "NotSupported",
}
_GOOD = frozenset({"Accepted", "RebootRequired"})


def _configuration(
    command: commands.GetConfiguration, payload: dict[str, Any]
) -> commands.CommandResult:
    """A GetVariables answer in GetConfiguration's shape: configuration rows under the 1.6
    key names asked for, and the keys the charger does not know."""
    by_identity = {variables.identity(ref): (key, mut) for key, ref, mut in _keys_of(command.keys)}
    rows: list[dict[str, Any]] = []
    unknown: list[str] = []
    for result in payload["getVariableResult"]:
        ref = commands.VariableRef(
            result["component"]["name"],
            result["variable"]["name"],
            component_instance=result["component"].get("instance"),
            variable_instance=result["variable"].get("instance"),
        )
        key, mutability = by_identity.get(variables.identity(ref), (ref.label, "ReadWrite"))
        status = result["attributeStatus"]
        if status == "Accepted":
            rows.append(
                {
                    "key": key,
                    "value": result.get("attributeValue"),
                    "readonly": mutability == "ReadOnly",
                }
            )
        elif status == "Rejected":  # known but not readable (write-only): it can be set
            rows.append({"key": key, "value": None, "readonly": False})
        else:
            unknown.append(key)
    details: dict[str, Any] = {"configuration": rows}
    if unknown:
        details["unknown_keys"] = unknown
    return commands.CommandResult("Accepted", details)


def _variable_results(results: list[dict[str, Any]]) -> commands.CommandResult:
    statuses = [r["attributeStatus"] for r in results]
    bad = [s for s in statuses if s not in _GOOD]
    status = bad[0] if bad else ("RebootRequired" if "RebootRequired" in statuses else "Accepted")
    rows = []
    for result in results:
        row = _details(result)
        row["label"] = commands.VariableRef(
            result["component"]["name"],
            result["variable"]["name"],
            component_instance=result["component"].get("instance"),
            variable_instance=result["variable"].get("instance"),
            evse_id=(result["component"].get("evse") or {}).get("id"),
            connector_id=(result["component"].get("evse") or {}).get("connectorId"),
        ).label
        rows.append(row)
    return commands.CommandResult(status, {"results": rows})


def _certificates(payload: dict[str, Any]) -> commands.CommandResult:
    certificates = []
    for chain in payload.get("certificateHashDataChain", ()):
        item = _details(chain["certificateHashData"])
        item["certificate_type"] = chain["certificateType"]
        if "childCertificateHashData" in chain:
            item["children"] = [_details(h) for h in chain["childCertificateHashData"]]
        certificates.append(item)
    details: dict[str, Any] = {"certificates": certificates} if certificates else {}
    return commands.CommandResult(payload["status"], details)


def decode_result(command: commands.Command, payload: dict[str, Any]) -> commands.CommandResult:
    payload = bound(payload, STORED)  # the answer is stored and shown: DataTransfer data is free
    match command:
        case commands.GetConfiguration():
            return _configuration(command, payload)
        case commands.ChangeConfiguration():
            (result,) = payload["setVariableResult"]
            status = result["attributeStatus"]
            details = _details(result)
            return commands.CommandResult(_CHANGE_STATUS.get(status, status), details)
        case commands.GetVariables():
            return _variable_results(payload["getVariableResult"])
        case commands.SetVariables():
            return _variable_results(payload["setVariableResult"])
        case commands.GetLocalListVersion():
            return commands.CommandResult("Accepted", {"list_version": payload["versionNumber"]})
        case commands.GetInstalledCertificateIds():
            return _certificates(payload)
    status = str(payload.get("status", "Accepted"))
    return commands.CommandResult(status, _details(payload))
