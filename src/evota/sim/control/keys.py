"""Configuration keys of a simulated charger and the rules for changing them (pure).

One store serves both versions: a realistic 1.6 key set (:func:`core_configuration`) with
read-only keys, plus the 2.0.1 device model's own variables (:mod:`evota.sim.devicemodel`).
ChangeConfiguration (and 2.0.1 SetVariables) answers ``Rejected`` (read-only key or bad value),
``NotSupported`` (unknown key) or ``RebootRequired`` (``WebSocketPingInterval``).
Property-tested in ``tests/sim/test_control.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ConfigKey:
    value: str
    readonly: bool = False
    kind: str = "str"  # bool | int | csl | str | key
    reboot: bool = False  # a change takes effect after a reboot (RebootRequired)
    secret: bool = False  # write-only: never returned by GetConfiguration
    options: tuple[str, ...] = ()  # allowed values (of each member, for csl); empty: any

    @property
    def shown(self) -> dict[str, Any]:
        return {"readonly": self.readonly, **({} if self.secret else {"value": self.value})}


_MEASURANDS = "Energy.Active.Import.Register"


def core_configuration(
    connectors: int, heartbeat: int, sample_interval: int, *, security: bool
) -> dict[str, ConfigKey]:
    """The keys a 1.6 charger with Core, Firmware Management, Local Auth List Management,
    Smart Charging and Remote Trigger reports (plus the security extension's)."""
    rw, ro = False, True
    keys: dict[str, ConfigKey] = {
        "AllowOfflineTxForUnknownId": ConfigKey("false", rw, "bool"),
        "AuthorizationCacheEnabled": ConfigKey("true", rw, "bool"),
        "AuthorizeRemoteTxRequests": ConfigKey("true", rw, "bool"),
        "ClockAlignedDataInterval": ConfigKey("0", rw, "int"),
        "ConnectionTimeOut": ConfigKey("60", rw, "int"),
        "ConnectorPhaseRotation": ConfigKey(
            ",".join(f"{c}.RST" for c in range(connectors + 1)), rw, "csl"
        ),
        "GetConfigurationMaxKeys": ConfigKey("100", ro, "int"),
        "HeartbeatInterval": ConfigKey(str(heartbeat), rw, "int"),
        "LocalAuthorizeOffline": ConfigKey("true", rw, "bool"),
        "LocalPreAuthorize": ConfigKey("false", rw, "bool"),
        "MeterValuesAlignedData": ConfigKey(_MEASURANDS, rw, "csl"),
        "MeterValuesSampledData": ConfigKey(_MEASURANDS, rw, "csl"),
        "MeterValueSampleInterval": ConfigKey(str(sample_interval), rw, "int"),
        "NumberOfConnectors": ConfigKey(str(connectors), ro, "int"),
        "ResetRetries": ConfigKey("3", rw, "int"),
        "StopTransactionOnEVSideDisconnect": ConfigKey("true", rw, "bool"),
        "StopTransactionOnInvalidId": ConfigKey("true", rw, "bool"),
        "StopTxnAlignedData": ConfigKey("", rw, "csl"),
        "StopTxnSampledData": ConfigKey("", rw, "csl"),
        "SupportedFeatureProfiles": ConfigKey(
            "Core,FirmwareManagement,LocalAuthListManagement,SmartCharging,RemoteTrigger",
            ro,
            "csl",
        ),
        "TransactionMessageAttempts": ConfigKey("3", rw, "int"),
        "TransactionMessageRetryInterval": ConfigKey("60", rw, "int"),
        "UnlockConnectorOnEVSideDisconnect": ConfigKey("true", rw, "bool"),
        "WebSocketPingInterval": ConfigKey("30", rw, "int", reboot=True),
        "LocalAuthListEnabled": ConfigKey("true", rw, "bool"),
        "LocalAuthListMaxLength": ConfigKey("1000", ro, "int"),
        "SendLocalListMaxLength": ConfigKey("500", ro, "int"),
        "ChargeProfileMaxStackLevel": ConfigKey("10", ro, "int"),
        "ChargingScheduleAllowedChargingRateUnit": ConfigKey("Current,Power", ro, "csl"),
        "ChargingScheduleMaxPeriods": ConfigKey("24", ro, "int"),
        "MaxChargingProfilesInstalled": ConfigKey("10", ro, "int"),
    }
    if security:
        keys |= {
            "SecurityProfile": ConfigKey("1", rw, "int"),
            "AuthorizationKey": ConfigKey("", rw, "key", secret=True),
            "CertificateStoreMaxLength": ConfigKey("10", ro, "int"),
            "CpoName": ConfigKey("", rw, "str"),
            "AdditionalRootCertificateCheck": ConfigKey("false", ro, "bool"),
        }
    return keys


def digits(value: str) -> bool:
    return value.isascii() and value.isdigit()  # "¹".isdigit() holds, but int() refuses it


def change_answer(keys: Mapping[str, ConfigKey], key: str, value: str) -> str:
    """ChangeConfiguration's status for ``key = value`` (the store is not touched)."""
    entry = keys.get(key)
    if entry is None:
        return "NotSupported"
    if entry.readonly:
        return "Rejected"
    if entry.kind == "bool" and value.lower() not in ("true", "false"):
        return "Rejected"
    if entry.kind == "int":
        if not digits(value) or len(value) > 9:
            return "Rejected"
        if key == "HeartbeatInterval" and int(value) < 1:
            return "Rejected"
        if key == "SecurityProfile" and not int(entry.value or 0) <= int(value) <= 3:
            return "Rejected"  # lowering is forbidden; raising is the charger's call (sim.tls)
    if entry.kind == "key" and not 16 <= len(value.encode()) <= 40:
        return "Rejected"
    if entry.options:
        members = value.split(",") if entry.kind == "csl" else [value]
        if any(m not in entry.options for m in members):
            return "Rejected"
    return "RebootRequired" if entry.reboot else "Accepted"
