"""OCPP 1.6 configuration keys as OCPP 2.0.1 device-model variables.

``get-configuration``, ``change-configuration`` and configuration profiles speak 1.6 keys;
on a 2.0.1 charger each key becomes a component/variable pair through :data:`KEYS` (the
mapping the OCA's 1.6 → 2.0.1 migration guidance gives, limited to keys with a one-to-one
equivalent). A key may also name a variable directly as ``Component.Variable`` or
``Component.Variable[instance]`` (for example ``OCPPCommCtrlr.MessageAttempts[TransactionEvent]``),
so a profile can set any 2.0.1 variable. Anything else has no 2.0.1 form: the command is
refused with a message that says so, instead of being sent and answered UnknownVariable.

``docs/ocpp.md`` shows this table; ``tests/gateway/test_v201_calls.py`` checks they agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from evota.control.commands import VariableRef


@dataclass(frozen=True, slots=True)
class Mapped:
    component: str
    variable: str
    variable_instance: str | None = None
    mutability: str = "ReadWrite"  # ReadOnly | WriteOnly | ReadWrite, per the 2.0.1 spec

    @property
    def ref(self) -> VariableRef:
        return VariableRef(self.component, self.variable, variable_instance=self.variable_instance)


_RW, _RO, _WO = "ReadWrite", "ReadOnly", "WriteOnly"

#: 1.6 key -> 2.0.1 variable (the key's 1.6 spelling is canonical; lookups ignore case).
KEYS: dict[str, Mapped] = {
    # Core profile
    "AllowOfflineTxForUnknownId": Mapped("AuthCtrlr", "OfflineTxForUnknownIdEnabled"),
    "AuthorizationCacheEnabled": Mapped("AuthCacheCtrlr", "Enabled"),
    "AuthorizeRemoteTxRequests": Mapped("AuthCtrlr", "AuthorizeRemoteStart"),
    "ClockAlignedDataInterval": Mapped("AlignedDataCtrlr", "Interval"),
    "ConnectionTimeOut": Mapped("TxCtrlr", "EVConnectionTimeOut"),
    "GetConfigurationMaxKeys": Mapped("DeviceDataCtrlr", "ItemsPerMessage", "GetVariables", _RO),
    "HeartbeatInterval": Mapped("OCPPCommCtrlr", "HeartbeatInterval"),
    "LocalAuthorizeOffline": Mapped("AuthCtrlr", "LocalAuthorizeOffline"),
    "LocalPreAuthorize": Mapped("AuthCtrlr", "LocalPreAuthorize"),
    "MaxEnergyOnInvalidId": Mapped("TxCtrlr", "MaxEnergyOnInvalidId"),
    "MeterValuesAlignedData": Mapped("AlignedDataCtrlr", "Measurands"),
    "MeterValuesSampledData": Mapped("SampledDataCtrlr", "TxUpdatedMeasurands"),
    "MeterValueSampleInterval": Mapped("SampledDataCtrlr", "TxUpdatedInterval"),
    "ResetRetries": Mapped("OCPPCommCtrlr", "ResetRetries"),
    "StopTransactionOnEVSideDisconnect": Mapped("TxCtrlr", "StopTxOnEVSideDisconnect"),
    "StopTransactionOnInvalidId": Mapped("TxCtrlr", "StopTxOnInvalidId"),
    "StopTxnAlignedData": Mapped("AlignedDataCtrlr", "TxEndedMeasurands"),
    "StopTxnSampledData": Mapped("SampledDataCtrlr", "TxEndedMeasurands"),
    "TransactionMessageAttempts": Mapped("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent"),
    "TransactionMessageRetryInterval": Mapped(
        "OCPPCommCtrlr", "MessageAttemptInterval", "TransactionEvent"
    ),
    "UnlockConnectorOnEVSideDisconnect": Mapped("OCPPCommCtrlr", "UnlockOnEVSideDisconnect"),
    "WebSocketPingInterval": Mapped("OCPPCommCtrlr", "WebSocketPingInterval"),
    # Local authorization list management
    "LocalAuthListEnabled": Mapped("LocalAuthListCtrlr", "Enabled"),
    "SendLocalListMaxLength": Mapped("LocalAuthListCtrlr", "ItemsPerMessage", None, _RO),
    # Reservation
    "ReserveConnectorZeroSupported": Mapped("ReservationCtrlr", "NonEvseSpecific", None, _RO),
    # Smart charging
    "ChargeProfileMaxStackLevel": Mapped("SmartChargingCtrlr", "ProfileStackLevel", None, _RO),
    "ChargingScheduleAllowedChargingRateUnit": Mapped("SmartChargingCtrlr", "RateUnit", None, _RO),
    "ChargingScheduleMaxPeriods": Mapped("SmartChargingCtrlr", "PeriodsPerSchedule", None, _RO),
    # Security extension
    "AdditionalRootCertificateCheck": Mapped(
        "SecurityCtrlr", "AdditionalRootCertificateCheck", None, _RO
    ),
    "AuthorizationKey": Mapped("SecurityCtrlr", "BasicAuthPassword", None, _WO),
    "CertificateStoreMaxLength": Mapped("SecurityCtrlr", "CertificateEntries", None, _RO),
    "CpoName": Mapped("SecurityCtrlr", "OrganizationName"),
    "SecurityProfile": Mapped("SecurityCtrlr", "SecurityProfile", None, _RO),
}

_BY_FOLDED = {key.casefold(): key for key in KEYS}
_NATIVE = re.compile(r"^([A-Za-z0-9_]{1,50})\.([A-Za-z0-9_]{1,50})(?:\[([^\[\]]{1,50})\])?$")


class UnmappedKey(ValueError):
    """A 1.6 key with no 2.0.1 variable."""


def resolve(key: str) -> tuple[str, VariableRef, str]:
    """``(canonical key, variable, mutability)`` for a 1.6 key or a ``Component.Variable``
    name; raises :class:`UnmappedKey`."""
    canonical = _BY_FOLDED.get(key.casefold())
    if canonical is not None:
        mapped = KEYS[canonical]
        return canonical, mapped.ref, mapped.mutability
    native = _NATIVE.match(key)
    if native is not None:
        component, variable, instance = native.groups()
        return key, VariableRef(component, variable, variable_instance=instance), _RW
    raise UnmappedKey(
        f"configuration key {key!r} has no OCPP 2.0.1 equivalent: use a mapped key "
        "(docs/ocpp.md), a Component.Variable name, or get-variables / set-variables"
    )


def readable() -> list[str]:
    """Keys a full configuration read asks a 2.0.1 charger for (write-only ones are left
    out, as a 1.6 GetConfiguration leaves out secrets)."""
    return [key for key, m in KEYS.items() if m.mutability != _WO]


def identity(ref: VariableRef) -> tuple[str, str | None, str, str | None]:
    """How a request item and its answer are matched (names compare case-insensitively)."""
    return (
        ref.component.casefold(),
        (ref.component_instance or "").casefold() or None,
        ref.variable.casefold(),
        (ref.variable_instance or "").casefold() or None,
    )
