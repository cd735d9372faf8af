"""The OCPP 2.0.1 device model of a simulated charger, as pure functions over data.

A 2.0.1 charger is configured through component/variable pairs; the simulator keeps one
configuration store for both versions (:class:`~evota.sim.control.state.ControlState`), so each
variable here either names a store key (a 1.6 key such as ``HeartbeatInterval``, or a 2.0.1-only
one spelled ``Component.Variable[instance]``) or is computed from the charger's state
(``AvailabilityState``, ``ClockCtrlr.DateTime``). The pairs follow the 2.0.1 standard names
and the OCA's 1.6 → 2.0.1 migration table, written from the specification rather than from
evota's own mapping, because the simulator exists to check that mapping.

Names match case-insensitively. GetVariables/SetVariables answers and NotifyReport entries are
built here; :mod:`evota.sim.v201` does the I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from evota.sim.control.keys import ConfigKey

RW, RO, WO = "ReadWrite", "ReadOnly", "WriteOnly"

_TX_POINTS = (
    "ParkingBayOccupancy",
    "EVConnected",
    "Authorized",
    "DataSigned",
    "PowerPathClosed",
    "EnergyTransfer",
)
_MEASURANDS = (
    "Energy.Active.Import.Register",
    "Energy.Active.Import.Interval",
    "Power.Active.Import",
    "Current.Import",
    "Voltage",
    "SoC",
)


@dataclass(frozen=True, slots=True)
class Var:
    """One variable: where its value lives and how it may be accessed."""

    component: str
    variable: str
    key: str | None = None  # configuration store key; None: computed by the charger (read-only)
    mutability: str | None = None  # overrides the store key's (2.0.1 makes some read-only)
    variable_instance: str | None = None
    component_instance: str | None = None
    evse: int | None = None
    connector: int | None = None
    data_type: str | None = None  # for computed variables (store keys derive theirs)
    unit: str | None = None

    @property
    def identity(self) -> Identity:
        return identity(
            self.component,
            self.component_instance,
            self.evse,
            self.connector,
            self.variable,
            self.variable_instance,
        )

    @property
    def component_identity(self) -> tuple[str, str | None, int | None, int | None]:
        return self.identity[:4]  # type: ignore[return-value]


Identity = tuple[str, str | None, int | None, int | None, str, str | None]


def identity(
    component: str,
    component_instance: str | None,
    evse: int | None,
    connector: int | None,
    variable: str,
    variable_instance: str | None,
) -> Identity:
    return (
        component.casefold(),
        component_instance.casefold() if component_instance else None,
        evse,
        connector,
        variable.casefold(),
        variable_instance.casefold() if variable_instance else None,
    )


#: Station-wide variables kept as 1.6 keys in the shared store: (component, variable,
#: variable instance, 1.6 key, 2.0.1 mutability when it differs from the 1.6 key's).
MIGRATED: tuple[tuple[str, str, str | None, str, str | None], ...] = (
    ("AuthCtrlr", "OfflineTxForUnknownIdEnabled", None, "AllowOfflineTxForUnknownId", None),
    ("AuthCacheCtrlr", "Enabled", None, "AuthorizationCacheEnabled", None),
    ("AuthCtrlr", "AuthorizeRemoteStart", None, "AuthorizeRemoteTxRequests", None),
    ("AlignedDataCtrlr", "Interval", None, "ClockAlignedDataInterval", None),
    ("TxCtrlr", "EVConnectionTimeOut", None, "ConnectionTimeOut", None),
    ("DeviceDataCtrlr", "ItemsPerMessage", "GetVariables", "GetConfigurationMaxKeys", None),
    ("OCPPCommCtrlr", "HeartbeatInterval", None, "HeartbeatInterval", None),
    ("AuthCtrlr", "LocalAuthorizeOffline", None, "LocalAuthorizeOffline", None),
    ("AuthCtrlr", "LocalPreAuthorize", None, "LocalPreAuthorize", None),
    ("AlignedDataCtrlr", "Measurands", None, "MeterValuesAlignedData", None),
    ("SampledDataCtrlr", "TxUpdatedMeasurands", None, "MeterValuesSampledData", None),
    ("SampledDataCtrlr", "TxUpdatedInterval", None, "MeterValueSampleInterval", None),
    ("OCPPCommCtrlr", "ResetRetries", None, "ResetRetries", None),
    ("TxCtrlr", "StopTxOnEVSideDisconnect", None, "StopTransactionOnEVSideDisconnect", None),
    ("TxCtrlr", "StopTxOnInvalidId", None, "StopTransactionOnInvalidId", None),
    ("AlignedDataCtrlr", "TxEndedMeasurands", None, "StopTxnAlignedData", None),
    ("SampledDataCtrlr", "TxEndedMeasurands", None, "StopTxnSampledData", None),
    ("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent", "TransactionMessageAttempts", None),
    (
        "OCPPCommCtrlr",
        "MessageAttemptInterval",
        "TransactionEvent",
        "TransactionMessageRetryInterval",
        None,
    ),
    ("OCPPCommCtrlr", "UnlockOnEVSideDisconnect", None, "UnlockConnectorOnEVSideDisconnect", None),
    ("OCPPCommCtrlr", "WebSocketPingInterval", None, "WebSocketPingInterval", None),
    ("LocalAuthListCtrlr", "Enabled", None, "LocalAuthListEnabled", None),
    ("LocalAuthListCtrlr", "ItemsPerMessage", None, "SendLocalListMaxLength", None),
    ("SmartChargingCtrlr", "ProfileStackLevel", None, "ChargeProfileMaxStackLevel", None),
    ("SmartChargingCtrlr", "PeriodsPerSchedule", None, "ChargingScheduleMaxPeriods", None),
    (
        "SecurityCtrlr",
        "AdditionalRootCertificateCheck",
        None,
        "AdditionalRootCertificateCheck",
        None,
    ),
    ("SecurityCtrlr", "BasicAuthPassword", None, "AuthorizationKey", WO),
    ("SecurityCtrlr", "CertificateEntries", None, "CertificateStoreMaxLength", None),
    ("SecurityCtrlr", "OrganizationName", None, "CpoName", None),
    # 2.0.1 changes the security profile only through SetNetworkProfile
    ("SecurityCtrlr", "SecurityProfile", None, "SecurityProfile", RO),
)


_RW, _RO = False, True

#: Station-wide variables 2.0.1 adds (kept in the store as ``Component.Variable[instance]``).
NATIVE: tuple[tuple[str, str, str | None, ConfigKey], ...] = (
    ("TxCtrlr", "TxStartPoint", None, ConfigKey("Authorized", _RW, "csl", options=_TX_POINTS)),
    ("TxCtrlr", "TxStopPoint", None, ConfigKey("EVConnected", _RW, "csl", options=_TX_POINTS)),
    ("TxCtrlr", "MaxEnergyOnInvalidId", None, ConfigKey("0", _RW, "int")),
    (
        "SampledDataCtrlr",
        "TxStartedMeasurands",
        None,
        ConfigKey(_MEASURANDS[0], _RW, "csl", options=_MEASURANDS),
    ),
    ("SampledDataCtrlr", "Enabled", None, ConfigKey("true", _RW, "bool")),
    ("AuthCtrlr", "Enabled", None, ConfigKey("true", _RW, "bool")),
    ("OCPPCommCtrlr", "OfflineThreshold", None, ConfigKey("60", _RW, "int")),
    ("OCPPCommCtrlr", "MessageTimeout", "Default", ConfigKey("30", _RW, "int")),
    (
        "OCPPCommCtrlr",
        "FileTransferProtocols",
        None,
        ConfigKey("HTTP,HTTPS", _RO, "csl", options=("FTP", "FTPS", "HTTP", "HTTPS", "SFTP")),
    ),
    ("OCPPCommCtrlr", "NetworkConfigurationPriority", None, ConfigKey("0", _RW, "str")),
    ("OCPPCommCtrlr", "NetworkProfileConnectionAttempts", None, ConfigKey("3", _RW, "int")),
    ("DeviceDataCtrlr", "ItemsPerMessage", "GetReport", ConfigKey("20", _RO, "int")),
    ("DeviceDataCtrlr", "ItemsPerMessage", "SetVariables", ConfigKey("100", _RO, "int")),
    ("DeviceDataCtrlr", "BytesPerMessage", "GetReport", ConfigKey("65000", _RO, "int")),
    ("DeviceDataCtrlr", "BytesPerMessage", "GetVariables", ConfigKey("65000", _RO, "int")),
    ("DeviceDataCtrlr", "BytesPerMessage", "SetVariables", ConfigKey("65000", _RO, "int")),
    ("ClockCtrlr", "TimeSource", None, ConfigKey("Heartbeat", _RW, "str")),
    ("SmartChargingCtrlr", "Enabled", None, ConfigKey("true", _RW, "bool")),
    (
        "ChargingStation",
        "AllowNewSessionsPendingFirmwareUpdate",
        None,
        ConfigKey("false", _RW, "bool"),
    ),
    ("ChargingStation", "SupplyPhases", None, ConfigKey("3", _RO, "int")),
)


def native_key(component: str, variable: str, instance: str | None = None) -> str:
    """The store key of a 2.0.1-only variable: ``Component.Variable[instance]``."""
    return f"{component}.{variable}" + (f"[{instance}]" if instance else "")


def v201_configuration(connectors: int, station_identity: str) -> dict[str, ConfigKey]:
    """The store keys 2.0.1 adds to the 1.6 set (values as a freshly installed station)."""
    out = {native_key(c, v, i): entry for c, v, i, entry in NATIVE}
    out[native_key("SecurityCtrlr", "Identity")] = ConfigKey(station_identity, _RO, "str")
    for evse in range(1, connectors + 1):
        out[f"EVSE.Power@{evse}"] = ConfigKey("22000", _RO, "int")
        out[f"Connector.ConnectorType@{evse}"] = ConfigKey("cType2", _RO, "str")
    return out


def variables(connectors: int) -> list[Var]:
    """Every variable of a station with ``connectors`` EVSEs (one connector each)."""
    out = [
        Var(c, v, key=key, mutability=mut, variable_instance=i) for c, v, i, key, mut in MIGRATED
    ]
    out += [Var(c, v, key=native_key(c, v, i), variable_instance=i) for c, v, i, _ in NATIVE]
    out += [
        Var("SecurityCtrlr", "Identity", key=native_key("SecurityCtrlr", "Identity")),
        Var("ChargingStation", "AvailabilityState", data_type="OptionList"),
        Var("ChargingStation", "Available", data_type="boolean"),
        Var("ClockCtrlr", "DateTime", data_type="dateTime"),
        Var("LocalAuthListCtrlr", "Entries", data_type="integer"),
        Var("AuthCacheCtrlr", "Available", data_type="boolean"),
        Var(
            "SmartChargingCtrlr",
            "Entries",
            variable_instance="ChargingProfiles",
            data_type="integer",
        ),
        # 1.6 spells the units Current/Power, 2.0.1 A/W: computed from the 1.6 key
        Var("SmartChargingCtrlr", "RateUnit", data_type="MemberList"),
    ]
    for evse in range(1, connectors + 1):
        out += [
            Var("EVSE", "AvailabilityState", evse=evse, data_type="OptionList"),
            Var("EVSE", "Available", evse=evse, data_type="boolean"),
            Var("EVSE", "Power", key=f"EVSE.Power@{evse}", evse=evse, unit="W"),
            Var("Connector", "AvailabilityState", evse=evse, connector=1, data_type="OptionList"),
            Var("Connector", "Available", evse=evse, connector=1, data_type="boolean"),
            Var(
                "Connector",
                "ConnectorType",
                key=f"Connector.ConnectorType@{evse}",
                evse=evse,
                connector=1,
            ),
        ]
    return out


class Model:
    """The variables of one charger, indexed for lookups."""

    def __init__(self, connectors: int) -> None:
        self.all = variables(connectors)
        self.by_identity = {v.identity: v for v in self.all}
        self.components = {v.component_identity for v in self.all}

    def find(self, item: Mapping[str, Any]) -> Var | str:
        """The variable a GetVariableData/SetVariableData item names, or why not
        (``UnknownComponent`` / ``UnknownVariable``)."""
        component, variable = item["component"], item["variable"]
        evse = component.get("evse") or {}
        wanted = identity(
            component["name"],
            component.get("instance"),
            evse.get("id"),
            evse.get("connectorId"),
            variable["name"],
            variable.get("instance"),
        )
        found = self.by_identity.get(wanted)
        if found is not None:
            return found
        if wanted[:4] not in self.components:
            return "UnknownComponent"
        return "UnknownVariable"


def mutability(var: Var, store: Mapping[str, ConfigKey]) -> str:
    if var.mutability is not None:
        return var.mutability
    entry = store.get(var.key) if var.key else None
    if entry is None:
        return RO
    return WO if entry.secret else RO if entry.readonly else RW


_DATA_TYPES = {"bool": "boolean", "int": "integer", "csl": "MemberList", "str": "string"}


def data_type(var: Var, store: Mapping[str, ConfigKey]) -> str:
    if var.data_type is not None:
        return var.data_type
    entry = store.get(var.key) if var.key else None
    if entry is None:
        return "string"
    if entry.kind == "str" and entry.options:
        return "OptionList"
    return _DATA_TYPES.get(entry.kind, "string")  # a key (password) is a string


Computed = Callable[[Var], str]


def value(var: Var, store: Mapping[str, ConfigKey], computed: Computed) -> str:
    if var.key is None:
        return computed(var)
    entry = store.get(var.key)
    return entry.value if entry is not None else ""


def _echo(item: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"component": item["component"], "variable": item["variable"]}
    if "attributeType" in item:
        out["attributeType"] = item["attributeType"]
    return out


def get_results(
    model: Model,
    store: Mapping[str, ConfigKey],
    items: Iterable[Mapping[str, Any]],
    computed: Computed,
) -> list[dict[str, Any]]:
    """GetVariablesResponse.getVariableResult for ``items`` (B06)."""
    results = []
    for item in items:
        out = _echo(item)
        var = model.find(item)
        if isinstance(var, str):
            out["attributeStatus"] = var
        elif item.get("attributeType", "Actual") != "Actual":
            out["attributeStatus"] = "NotSupportedAttributeType"
        elif mutability(var, store) == WO:
            out["attributeStatus"] = "Rejected"
        else:
            out["attributeStatus"] = "Accepted"
            out["attributeValue"] = value(var, store, computed)[:2500]
        results.append(out)
    return results


def set_decision(
    model: Model, store: Mapping[str, ConfigKey], item: Mapping[str, Any]
) -> tuple[dict[str, Any], str | None]:
    """The SetVariableResult for ``item`` when it is refused, or a result to complete and the
    store key to change (the change itself, and its status, are the caller's: B05)."""
    out = _echo(item)
    var = model.find(item)
    if isinstance(var, str):
        out["attributeStatus"] = var
        return out, None
    if item.get("attributeType", "Actual") != "Actual":
        out["attributeStatus"] = "NotSupportedAttributeType"
        return out, None
    if var.key is None or mutability(var, store) == RO:
        out["attributeStatus"] = "Rejected"
        out["attributeStatusInfo"] = {"reasonCode": "ReadOnly"}
        return out, None
    return out, var.key


REPORT_BASES = ("ConfigurationInventory", "FullInventory", "SummaryInventory")


def report_items(
    model: Model, store: Mapping[str, ConfigKey], base: str, computed: Computed
) -> list[dict[str, Any]]:
    """NotifyReport.reportData of a GetBaseReport: everything (FullInventory), what can be
    set (ConfigurationInventory), or availability (SummaryInventory)."""
    items = []
    for var in model.all:
        mut = mutability(var, store)
        if base == "ConfigurationInventory" and mut == RO:
            continue
        if base == "SummaryInventory" and var.variable != "AvailabilityState":
            continue
        component: dict[str, Any] = {"name": var.component}
        if var.component_instance:
            component["instance"] = var.component_instance
        if var.evse is not None:
            component["evse"] = {"id": var.evse}
            if var.connector is not None:
                component["evse"]["connectorId"] = var.connector
        variable: dict[str, Any] = {"name": var.variable}
        if var.variable_instance:
            variable["instance"] = var.variable_instance
        attribute: dict[str, Any] = {"type": "Actual", "mutability": mut, "persistent": True}
        if mut != WO:
            attribute["value"] = value(var, store, computed)[:2500]
        characteristics: dict[str, Any] = {
            "dataType": data_type(var, store),
            "supportsMonitoring": False,
        }
        entry = store.get(var.key) if var.key else None
        if entry is not None and entry.options:
            characteristics["valuesList"] = ",".join(entry.options)[:1000]
        if var.variable == "AvailabilityState":
            characteristics["valuesList"] = "Available,Occupied,Reserved,Unavailable,Faulted"
        if var.unit:
            characteristics["unit"] = var.unit
        items.append(
            {
                "component": component,
                "variable": variable,
                "variableAttribute": [attribute],
                "variableCharacteristics": characteristics,
            }
        )
    return items
