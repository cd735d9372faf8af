"""OCPP 1.6J (with the Security Whitepaper extensions) <-> domain events and commands.

Payloads reaching ``decode_event`` have passed schema validation, so required keys exist and
have the right types; this module only renames and converts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from evota.control import commands
from evota.fleet import events as ev
from evota.fleet.bounds import FREE_FORM, STORED, bound
from evota.fleet.tokens import MAX_ID_TAG_16, status_16
from evota.ocpp.errors import V16_SPELLING

SUBPROTOCOL = "ocpp1.6"
ERROR_SPELLING = V16_SPELLING


def _ts(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


#: Larger meter registers (1 TWh) are not readings; they would not fit a BIGINT either.
MAX_ENERGY_WH = 1e12


def plausible_energy(value: float) -> bool:
    """False for NaN, infinities ("1e999" as a string) and absurd values a charger sent."""
    return math.isfinite(value) and abs(value) <= MAX_ENERGY_WH


def _energy_wh(meter_value: list[dict[str, Any]]) -> float | None:
    """The last Energy.Active.Import.Register sample, converted to Wh (the default measurand)."""
    found: float | None = None
    for mv in meter_value:
        for sv in mv.get("sampledValue", ()):
            if (
                sv.get("measurand", "Energy.Active.Import.Register")
                != "Energy.Active.Import.Register"
            ):
                continue
            try:
                value = float(sv["value"])
            except (KeyError, ValueError):
                continue
            value = value * 1000 if sv.get("unit") == "kWh" else value
            if plausible_energy(value):
                found = value
    return found


_DECODERS: dict[str, Callable[[dict[str, Any]], ev.ChargerEvent]] = {
    "BootNotification": lambda p: ev.Booted(
        vendor=p["chargePointVendor"],
        model=p["chargePointModel"],
        serial_number=p.get("chargePointSerialNumber"),
        box_serial_number=p.get("chargeBoxSerialNumber"),
        firmware_version=p.get("firmwareVersion"),
        iccid=p.get("iccid"),
        imsi=p.get("imsi"),
        meter_type=p.get("meterType"),
        meter_serial_number=p.get("meterSerialNumber"),
    ),
    "Heartbeat": lambda p: ev.HeartbeatReceived(),
    "StatusNotification": lambda p: ev.StatusReported(
        connector_id=p["connectorId"],
        status=p["status"],
        error_code=p["errorCode"],
        info=p.get("info"),
        vendor_error_code=p.get("vendorErrorCode"),
        timestamp=_ts(p.get("timestamp")),
    ),
    "MeterValues": lambda p: ev.MeterSampled(
        connector_id=p["connectorId"],
        transaction_id=p.get("transactionId"),
        energy_wh=_energy_wh(p["meterValue"]),
        timestamp=_ts(p["meterValue"][-1]["timestamp"]) if p["meterValue"] else None,
    ),
    "Authorize": lambda p: ev.AuthorizeRequested(id_tag=p["idTag"]),
    "StartTransaction": lambda p: ev.SessionStarted(
        connector_id=p["connectorId"],
        id_tag=p["idTag"],
        meter_start_wh=p["meterStart"],
        timestamp=_ts(p["timestamp"]),
        reservation_id=p.get("reservationId"),
    ),
    "StopTransaction": lambda p: ev.SessionStopped(
        transaction_id=p["transactionId"],
        meter_stop_wh=p["meterStop"],
        timestamp=_ts(p["timestamp"]),
        reason=p.get("reason"),
        id_tag=p.get("idTag"),
    ),
    "FirmwareStatusNotification": lambda p: ev.FirmwareStatusReported(status=p["status"]),
    "SignedFirmwareStatusNotification": lambda p: ev.FirmwareStatusReported(
        status=p["status"], request_id=p.get("requestId")
    ),
    "DiagnosticsStatusNotification": lambda p: ev.DiagnosticsStatusReported(status=p["status"]),
    "LogStatusNotification": lambda p: ev.LogStatusReported(
        status=p["status"], request_id=p.get("requestId")
    ),
    "SecurityEventNotification": lambda p: ev.SecurityEventReported(
        type=p["type"], timestamp=_ts(p.get("timestamp")), tech_info=p.get("techInfo")
    ),
    "DataTransfer": lambda p: ev.DataTransferReceived(
        vendor_id=p["vendorId"], message_id=p.get("messageId"), data=bound(p.get("data"), FREE_FORM)
    ),
    "SignCertificate": lambda p: ev.CertificateSigningRequested(csr=p["csr"]),
}

#: Actions a charger may send to the CSMS in 1.6 + Security Whitepaper.
CHARGER_ACTIONS = frozenset(_DECODERS)

#: Actions allowed before the charger is Accepted (1.6 errata: others get SecurityError).
PRE_ACCEPT_ACTIONS = frozenset({"BootNotification"})


def decode_event(action: str, payload: dict[str, Any]) -> ev.ChargerEvent:
    return _DECODERS[action](payload)


def _id_tag_info(reply: ev.IdTagReply) -> dict[str, Any]:
    # 1.6 has no "not at this location": such a token is Invalid here (evota.fleet.tokens).
    info: dict[str, Any] = {"status": status_16(reply.status)}
    if reply.expires_at is not None:
        info["expiryDate"] = _iso(reply.expires_at)
    if reply.parent_id is not None and len(reply.parent_id) <= MAX_ID_TAG_16:
        info["parentIdTag"] = reply.parent_id
    return info


def encode_reply(action: str, reply: ev.Reply) -> dict[str, Any]:
    """The CALLRESULT payload for ``action``; the caller validates it against the schema."""
    if type(reply) is ev.Ack:  # most answers: StatusNotification, MeterValues, notifications
        return {}
    if isinstance(reply, ev.BootReply):
        return {
            "status": reply.registration.value,
            "currentTime": _iso(reply.current_time),
            "interval": reply.interval,
        }
    if isinstance(reply, ev.TimeReply):
        return {"currentTime": _iso(reply.current_time)}
    if isinstance(reply, ev.IdTagReply):
        if action == "StartTransaction":
            return {"transactionId": reply.transaction_id, "idTagInfo": _id_tag_info(reply)}
        return {"idTagInfo": _id_tag_info(reply)}
    if isinstance(reply, ev.StatusReply):
        return {"status": reply.status, **reply.extra}
    return {}


def _retries(payload: dict[str, Any], retries: int | None, interval: int | None) -> None:
    if retries is not None:
        payload["retries"] = retries
    if interval is not None:
        payload["retryInterval"] = interval


def _put(payload: dict[str, Any], key: str, value: Any) -> None:
    """Optional fields are left out, never sent as null (the schemas do not allow null)."""
    if value is None:
        return
    payload[key] = _iso(value) if isinstance(value, datetime) else value


def _unsupported(message: str) -> commands.CommandNotSupported:
    return commands.CommandNotSupported("", message)


def _transaction_id(value: int | str) -> int:
    """A 1.6 transactionId is evota's session id; a 2.0.1-style string id cannot be one."""
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except ValueError:
        raise _unsupported(f"OCPP 1.6 transaction ids are integers, not {value!r}") from None


def _profile(p: commands.ChargingProfile) -> dict[str, Any]:
    periods = []
    for period in p.periods:
        item: dict[str, Any] = {"startPeriod": period.start_period, "limit": period.limit}
        _put(item, "numberPhases", period.number_phases)
        periods.append(item)
    schedule: dict[str, Any] = {"chargingRateUnit": p.rate_unit, "chargingSchedulePeriod": periods}
    _put(schedule, "duration", p.duration)
    _put(schedule, "startSchedule", p.start_schedule)
    _put(schedule, "minChargingRate", p.min_charging_rate)
    out: dict[str, Any] = {
        "chargingProfileId": p.id,
        "stackLevel": p.stack_level,
        "chargingProfilePurpose": p.purpose,
        "chargingProfileKind": p.kind,
        "chargingSchedule": schedule,
    }
    if p.transaction_id is not None:
        out["transactionId"] = _transaction_id(p.transaction_id)
    _put(out, "recurrencyKind", p.recurrency)
    _put(out, "validFrom", p.valid_from)
    _put(out, "validTo", p.valid_to)
    return out


def _local_entry(e: commands.AuthorizationEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"idTag": e.id_tag}
    if e.status is not None:
        info: dict[str, Any] = {"status": e.status}
        _put(info, "expiryDate", e.expiry)
        _put(info, "parentIdTag", e.parent_id_tag)
        out["idTagInfo"] = info
    return out


#: TriggerMessage cannot ask for these; the security extension's ExtendedTriggerMessage can.
EXTENDED_TRIGGERS = frozenset({"LogStatusNotification", "SignChargePointCertificate"})
#: Trigger names 1.6 knows (2.0.1's name for the certificate one is translated).
TRIGGERS = {
    "BootNotification": "BootNotification",
    "DiagnosticsStatusNotification": "DiagnosticsStatusNotification",
    "FirmwareStatusNotification": "FirmwareStatusNotification",
    "Heartbeat": "Heartbeat",
    "MeterValues": "MeterValues",
    "StatusNotification": "StatusNotification",
    "LogStatusNotification": "LogStatusNotification",
    "SignChargePointCertificate": "SignChargePointCertificate",
    "SignChargingStationCertificate": "SignChargePointCertificate",
}
CERTIFICATE_TYPES = {
    "CentralSystemRootCertificate": "CentralSystemRootCertificate",
    "CSMSRootCertificate": "CentralSystemRootCertificate",
    "ManufacturerRootCertificate": "ManufacturerRootCertificate",
}


def _certificate_type(kind: str) -> str:
    mapped = CERTIFICATE_TYPES.get(kind)
    if mapped is None:
        raise _unsupported(f"OCPP 1.6 chargers have no {kind} certificates")
    return mapped


def encode_command(command: commands.Command) -> tuple[str, dict[str, Any]]:
    c = command
    payload: dict[str, Any] = {}
    match c:
        case commands.Reset():
            if c.type not in ("Soft", "Hard"):
                raise _unsupported(f"OCPP 1.6 resets are Soft or Hard, not {c.type}")
            return "Reset", {"type": c.type}
        case commands.UpdateFirmware():
            payload = {"location": c.location, "retrieveDate": _iso(c.retrieve_at)}
            _retries(payload, c.retries, c.retry_interval)
            return "UpdateFirmware", payload
        case commands.SignedUpdateFirmware():
            firmware: dict[str, Any] = {
                "location": c.location,
                "retrieveDateTime": _iso(c.retrieve_at),
                "signingCertificate": c.signing_certificate,
                "signature": c.signature,
            }
            _put(firmware, "installDateTime", c.install_at)
            payload = {"requestId": c.request_id, "firmware": firmware}
            _retries(payload, c.retries, c.retry_interval)
            return "SignedUpdateFirmware", payload
        case commands.RemoteStartTransaction():
            if len(c.id_tag) > 20:
                raise _unsupported("OCPP 1.6 id tags are at most 20 characters")
            payload = {"idTag": c.id_tag}
            _put(payload, "connectorId", c.connector_id)
            if c.charging_profile is not None:
                payload["chargingProfile"] = _profile(c.charging_profile)
            return "RemoteStartTransaction", payload
        case commands.RemoteStopTransaction():
            return "RemoteStopTransaction", {"transactionId": _transaction_id(c.transaction_id)}
        case commands.UnlockConnector():
            if c.evse_connector_id not in (None, 1):
                raise _unsupported("OCPP 1.6 has one cable per connector: no evse_connector_id")
            return "UnlockConnector", {"connectorId": c.connector_id}
        case commands.ChangeAvailability():
            return "ChangeAvailability", {"connectorId": c.connector_id, "type": c.type}
        case commands.GetConfiguration():
            return "GetConfiguration", {"key": list(c.keys)} if c.keys else {}
        case commands.ChangeConfiguration():
            return "ChangeConfiguration", {"key": c.key, "value": c.value}
        case commands.ClearCache():
            return "ClearCache", {}
        case commands.SendLocalList():
            payload = {"listVersion": c.version, "updateType": c.update_type}
            if c.entries or c.update_type == "Full":
                payload["localAuthorizationList"] = [_local_entry(e) for e in c.entries]
            return "SendLocalList", payload
        case commands.GetLocalListVersion():
            return "GetLocalListVersion", {}
        case commands.SetChargingProfile():
            return "SetChargingProfile", {
                "connectorId": c.connector_id,
                "csChargingProfiles": _profile(c.profile),
            }
        case commands.ClearChargingProfile():
            _put(payload, "id", c.profile_id)
            _put(payload, "connectorId", c.connector_id)
            _put(payload, "chargingProfilePurpose", c.purpose)
            _put(payload, "stackLevel", c.stack_level)
            return "ClearChargingProfile", payload
        case commands.TriggerMessage():
            requested = TRIGGERS.get(c.message)
            if requested is None:
                raise _unsupported(f"OCPP 1.6 cannot trigger {c.message}")
            payload = {"requestedMessage": requested}
            _put(payload, "connectorId", c.connector_id)
            extended = requested in EXTENDED_TRIGGERS
            return ("ExtendedTriggerMessage" if extended else "TriggerMessage"), payload
        case commands.GetDiagnostics():
            payload = {"location": c.location}
            _put(payload, "startTime", c.start)
            _put(payload, "stopTime", c.stop)
            _retries(payload, c.retries, c.retry_interval)
            return "GetDiagnostics", payload
        case commands.GetLog():
            log: dict[str, Any] = {"remoteLocation": c.location}
            _put(log, "oldestTimestamp", c.oldest)
            _put(log, "latestTimestamp", c.latest)
            payload = {"logType": c.log_type, "requestId": c.request_id, "log": log}
            _retries(payload, c.retries, c.retry_interval)
            return "GetLog", payload
        case commands.InstallCertificate():
            return "InstallCertificate", {
                "certificateType": _certificate_type(c.certificate_type),
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
                "certificateType": _certificate_type(c.certificate_type)
            }
        case commands.CertificateSigned():
            return "CertificateSigned", {"certificateChain": c.certificate_chain}
        case commands.DataTransfer():
            payload = {"vendorId": c.vendor_id}
            _put(payload, "messageId", c.message_id)
            _put(payload, "data", c.data)
            return "DataTransfer", payload
        case commands.GetVariables() | commands.SetVariables() | commands.GetBaseReport():
            raise _unsupported(
                f"{c.name.replace('_', '-')} needs OCPP 2.0.1; on 1.6 use get-configuration "
                "or change-configuration"
            )
    raise _unsupported(f"{type(command).__name__} has no OCPP 1.6 mapping")


def _status_of(command: commands.Command, payload: dict[str, Any]) -> str:
    """The answer as one status word, also for the answers that carry none."""
    if "status" in payload:
        return str(payload["status"])
    match command:
        case commands.GetLocalListVersion():
            # -1 is how a 1.6 charger says it has no local authorization list.
            return "NotSupported" if payload.get("listVersion") == -1 else "Accepted"
        case commands.GetDiagnostics():
            # No fileName: the charger has no diagnostics to upload, and will not upload.
            return "Accepted" if payload.get("fileName") else "NoFile"
    return "Accepted"


def _snake(name: str) -> str:
    return "".join("_" + ch.lower() if ch.isupper() else ch for ch in name).lstrip("_")


def _details(payload: dict[str, Any]) -> dict[str, Any]:
    """The answer's other fields under domain (snake_case) names, nested ones too."""
    out: dict[str, Any] = {}
    for key, value in payload.items():
        if key == "status":
            continue
        name = _RENAMED.get(key, _snake(key))
        if isinstance(value, list):
            value = [_details(v) if isinstance(v, dict) else v for v in value]
        elif isinstance(value, dict):
            value = _details(value)
        out[name] = value
    return out


# Where the domain name is not just the snake_case of the 1.6 name.
_RENAMED = {
    "configurationKey": "configuration",
    "unknownKey": "unknown_keys",
    "filename": "file_name",  # GetLog spells it so; GetDiagnostics says fileName
    "certificateHashData": "certificates",
}


def decode_result(command: commands.Command, payload: dict[str, Any]) -> commands.CommandResult:
    payload = bound(payload, STORED)  # the answer is stored and shown: DataTransfer data is free
    return commands.CommandResult(status=_status_of(command, payload), details=_details(payload))
