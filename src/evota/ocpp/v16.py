"""OCPP 1.6J (with the Security Whitepaper extensions) <-> domain events and commands.

Payloads reaching ``decode_event`` have passed schema validation, so required keys exist and
have the right types; this module only renames and converts.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from evota.control import commands
from evota.fleet import events as ev
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
            found = value * 1000 if sv.get("unit") == "kWh" else value
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
        vendor_id=p["vendorId"], message_id=p.get("messageId"), data=p.get("data")
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
    return {"status": reply.status}


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


def encode_command(command: commands.Command) -> tuple[str, dict[str, Any]]:
    if isinstance(command, commands.Reset):
        return "Reset", {"type": command.type}
    if isinstance(command, commands.UpdateFirmware):
        payload: dict[str, Any] = {
            "location": command.location,
            "retrieveDate": _iso(command.retrieve_at),
        }
        _retries(payload, command.retries, command.retry_interval)
        return "UpdateFirmware", payload
    if isinstance(command, commands.SignedUpdateFirmware):
        firmware: dict[str, Any] = {
            "location": command.location,
            "retrieveDateTime": _iso(command.retrieve_at),
            "signingCertificate": command.signing_certificate,
            "signature": command.signature,
        }
        if command.install_at is not None:
            firmware["installDateTime"] = _iso(command.install_at)
        payload = {"requestId": command.request_id, "firmware": firmware}
        _retries(payload, command.retries, command.retry_interval)
        return "SignedUpdateFirmware", payload
    raise commands.CommandNotSupported("", f"{type(command).__name__} has no OCPP 1.6 mapping")


def decode_result(command: commands.Command, payload: dict[str, Any]) -> commands.CommandResult:
    rest = {k: v for k, v in payload.items() if k != "status"}
    return commands.CommandResult(status=str(payload.get("status", "Accepted")), details=rest)
