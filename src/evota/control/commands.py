"""Remote commands to one charger, as typed requests and answers independent of OCPP version."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Reset:
    """``Soft``/``Hard`` are the 1.6 names, ``Immediate``/``OnIdle`` the 2.0.1 ones. A 2.0.1
    charger gets Soft as OnIdle (no session is cut short) and Hard as Immediate; a 1.6
    charger cannot wait for idle, so it takes only Soft and Hard (docs/ocpp.md)."""

    type: Literal["Soft", "Hard", "Immediate", "OnIdle"]
    name = "reset"


@dataclass(frozen=True, slots=True)
class UpdateFirmware:
    """Plain (unsigned) delivery: the charger learns only where and when to download."""

    location: str
    retrieve_at: datetime
    retries: int | None = None
    retry_interval: int | None = None
    request_id: int | None = None  # 2.0.1 needs one (the job id); 1.6 has none
    name = "update_firmware"


@dataclass(frozen=True, slots=True)
class SignedUpdateFirmware:
    """Signed delivery (1.6 security extension, 2.0.1 UpdateFirmware): the charger verifies
    ``signature`` over the whole file with ``signing_certificate`` before installing."""

    request_id: int
    location: str
    retrieve_at: datetime
    signing_certificate: str
    signature: str
    install_at: datetime | None = None
    retries: int | None = None
    retry_interval: int | None = None
    name = "signed_update_firmware"


@dataclass(frozen=True, slots=True)
class RemoteStartTransaction:
    """Start a session for ``id_tag`` (on ``connector_id``, or the charger picks one)."""

    id_tag: str
    connector_id: int | None = None  # the EVSE id on 2.0.1
    charging_profile: ChargingProfile | None = None  # a TxProfile for this session only
    remote_start_id: int | None = None  # 2.0.1: echoed in the TransactionEvent it starts
    token_type: str = "Central"  # 2.0.1 idToken type
    name = "remote_start_transaction"


@dataclass(frozen=True, slots=True)
class RemoteStopTransaction:
    """``transaction_id``: evota's session id (an int, the 1.6 transactionId), or the
    transaction id a 2.0.1 charger chose (a string)."""

    transaction_id: int | str
    name = "remote_stop_transaction"


@dataclass(frozen=True, slots=True)
class UnlockConnector:
    """Release the cable; a charger stops a session running on the connector first.
    On 2.0.1 ``connector_id`` is the EVSE and ``evse_connector_id`` the connector on it."""

    connector_id: int
    evse_connector_id: int | None = None
    name = "unlock_connector"


@dataclass(frozen=True, slots=True)
class ChangeAvailability:
    """Maintenance mode: ``Inoperative`` takes a connector (0: the whole charger) out of
    service; a charger with a session on it answers ``Scheduled`` and waits for its end."""

    connector_id: int
    type: Literal["Operative", "Inoperative"]
    name = "change_availability"


@dataclass(frozen=True, slots=True)
class GetConfiguration:
    keys: tuple[str, ...] = ()  # empty: every key
    name = "get_configuration"


@dataclass(frozen=True, slots=True)
class ChangeConfiguration:
    key: str
    value: str
    name = "change_configuration"


@dataclass(frozen=True, slots=True)
class ClearCache:
    name = "clear_cache"


@dataclass(frozen=True, slots=True)
class AuthorizationEntry:
    """One local authorization list entry; ``status`` None removes ``id_tag`` (differential)."""

    id_tag: str
    status: str | None = None
    expiry: datetime | None = None
    parent_id_tag: str | None = None


@dataclass(frozen=True, slots=True)
class SendLocalList:
    version: int
    update_type: Literal["Full", "Differential"]
    entries: tuple[AuthorizationEntry, ...] = ()
    name = "send_local_list"


@dataclass(frozen=True, slots=True)
class GetLocalListVersion:
    name = "get_local_list_version"


@dataclass(frozen=True, slots=True)
class SchedulePeriod:
    start_period: int  # seconds from the schedule's start
    limit: float  # in the schedule's rate unit (A or W)
    number_phases: int | None = None


@dataclass(frozen=True, slots=True)
class ChargingProfile:
    """A power or current limit over time, as OCPP's charging profiles describe it."""

    id: int
    stack_level: int
    purpose: Literal["ChargePointMaxProfile", "TxDefaultProfile", "TxProfile"]
    kind: Literal["Absolute", "Recurring", "Relative"]
    rate_unit: Literal["A", "W"]
    periods: tuple[SchedulePeriod, ...]
    transaction_id: int | str | None = None  # as in RemoteStopTransaction
    recurrency: Literal["Daily", "Weekly"] | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    duration: int | None = None
    start_schedule: datetime | None = None
    min_charging_rate: float | None = None


@dataclass(frozen=True, slots=True)
class SetChargingProfile:
    connector_id: int  # 0: the whole charger (site limits use ChargePointMaxProfile here)
    profile: ChargingProfile
    name = "set_charging_profile"


@dataclass(frozen=True, slots=True)
class ClearChargingProfile:
    """Clear the profiles matching every given field (none given: all of them)."""

    profile_id: int | None = None
    connector_id: int | None = None
    purpose: Literal["ChargePointMaxProfile", "TxDefaultProfile", "TxProfile"] | None = None
    stack_level: int | None = None
    name = "clear_charging_profile"


@dataclass(frozen=True, slots=True)
class TriggerMessage:
    """Ask the charger to send ``message`` now; messages of the security extension
    (``LogStatusNotification``, ``SignChargePointCertificate``) go as ExtendedTriggerMessage."""

    message: str
    connector_id: int | None = None
    name = "trigger_message"


@dataclass(frozen=True, slots=True)
class GetDiagnostics:
    location: str  # where the charger uploads the file
    start: datetime | None = None
    stop: datetime | None = None
    retries: int | None = None
    retry_interval: int | None = None
    name = "get_diagnostics"


@dataclass(frozen=True, slots=True)
class GetLog:
    """Security extension: upload the diagnostics or security log, reported per request id."""

    log_type: Literal["DiagnosticsLog", "SecurityLog"]
    request_id: int
    location: str
    oldest: datetime | None = None
    latest: datetime | None = None
    retries: int | None = None
    retry_interval: int | None = None
    name = "get_log"


CertificateUse = Literal[
    "CentralSystemRootCertificate",  # 1.6 name of 2.0.1's CSMSRootCertificate
    "CSMSRootCertificate",
    "ManufacturerRootCertificate",
    "V2GRootCertificate",  # 2.0.1 only
    "MORootCertificate",  # 2.0.1 only
]


@dataclass(frozen=True, slots=True)
class InstallCertificate:
    certificate_type: CertificateUse
    certificate: str  # PEM
    name = "install_certificate"


@dataclass(frozen=True, slots=True)
class CertificateHash:
    """How OCPP names an installed certificate (hashes are hex)."""

    hash_algorithm: Literal["SHA256", "SHA384", "SHA512"]
    issuer_name_hash: str
    issuer_key_hash: str
    serial_number: str


@dataclass(frozen=True, slots=True)
class DeleteCertificate:
    certificate: CertificateHash
    name = "delete_certificate"


@dataclass(frozen=True, slots=True)
class GetInstalledCertificateIds:
    certificate_type: CertificateUse
    name = "get_installed_certificate_ids"


@dataclass(frozen=True, slots=True)
class CertificateSigned:
    """The chain the charger CA signed for the charger's CSR (PEM, the certificate first):
    the answer to its SignCertificate (1.6 security extension, 2.0.1 A02/A03)."""

    certificate_chain: str
    certificate_type: str | None = None  # 2.0.1: ChargingStationCertificate
    name = "certificate_signed"


@dataclass(frozen=True, slots=True)
class DataTransfer:
    vendor_id: str
    message_id: str | None = None
    data: str | None = None
    name = "data_transfer"


@dataclass(frozen=True, slots=True)
class VariableRef:
    """A 2.0.1 device-model variable: ``component.variable`` with optional instances, EVSE,
    connector and attribute type (default Actual)."""

    component: str
    variable: str
    component_instance: str | None = None
    variable_instance: str | None = None
    evse_id: int | None = None
    connector_id: int | None = None
    attribute_type: Literal["Actual", "Target", "MinSet", "MaxSet"] | None = None

    @property
    def label(self) -> str:
        """``Component[instance]@evse.connector.Variable[instance]``, for humans and logs."""
        comp = self.component + (f"[{self.component_instance}]" if self.component_instance else "")
        if self.evse_id is not None:
            comp += f"@{self.evse_id}" + (
                f".{self.connector_id}" if self.connector_id is not None else ""
            )
        var = self.variable + (f"[{self.variable_instance}]" if self.variable_instance else "")
        return f"{comp}.{var}"


@dataclass(frozen=True, slots=True)
class GetVariables:
    """2.0.1 only: read device-model variables."""

    variables: tuple[VariableRef, ...]
    name = "get_variables"


@dataclass(frozen=True, slots=True)
class SetVariables:
    """2.0.1 only: set device-model variables (``values`` pairs with ``variables``)."""

    variables: tuple[VariableRef, ...]
    values: tuple[str, ...]
    name = "set_variables"


@dataclass(frozen=True, slots=True)
class SetNetworkProfile:
    """2.0.1 only (A05/B09): a connection profile in ``configuration_slot``; it is used once
    NetworkConfigurationPriority lists it first and the charger reboots. Not in the operator
    catalog: only the security profile upgrade sends it (a wrong URL is a lock-out)."""

    configuration_slot: int
    csms_url: str  # wss://host:port/ocpp/ (the charger appends its identity)
    security_profile: int
    message_timeout: int = 30
    ocpp_interface: str = "Wired0"
    name = "set_network_profile"


@dataclass(frozen=True, slots=True)
class GetBaseReport:
    """2.0.1 only: the charger reports its device model in NotifyReport parts."""

    request_id: int
    report_base: Literal["ConfigurationInventory", "FullInventory", "SummaryInventory"]
    name = "get_base_report"


Command = (
    Reset
    | UpdateFirmware
    | SignedUpdateFirmware
    | RemoteStartTransaction
    | RemoteStopTransaction
    | UnlockConnector
    | ChangeAvailability
    | GetConfiguration
    | ChangeConfiguration
    | ClearCache
    | SendLocalList
    | GetLocalListVersion
    | SetChargingProfile
    | ClearChargingProfile
    | TriggerMessage
    | GetDiagnostics
    | GetLog
    | InstallCertificate
    | DeleteCertificate
    | GetInstalledCertificateIds
    | CertificateSigned
    | DataTransfer
    | GetVariables
    | SetVariables
    | GetBaseReport
    | SetNetworkProfile
)

#: Answers that mean the charger did (or will do) what was asked.
SUCCESS = frozenset({"Accepted", "Scheduled", "Unlocked", "RebootRequired", "AcceptedCanceled"})


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The charger's answer: ``status`` as the charger said it, plus any other fields."""

    status: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.status in SUCCESS


class CommandError(Exception):
    """A command that produced no answer from the charger; ``reason`` is machine-readable."""

    reason = "error"

    def __init__(self, charger_id: str, message: str) -> None:
        super().__init__(message)
        self.charger_id = charger_id
        self.message = message


class ChargerOffline(CommandError):
    reason = "offline"


class CommandTimeout(CommandError):
    reason = "timeout"


class CommandRejected(CommandError):
    """The charger answered with a CALLERROR."""

    reason = "callerror"

    def __init__(self, charger_id: str, code: str, description: str) -> None:
        super().__init__(charger_id, f"charger answered CALLERROR {code}: {description}")
        self.code = code
        self.description = description


class CommandNotSupported(CommandError):
    reason = "unsupported"


class UnsupportedByModel(CommandNotSupported):
    """Refused before sending: the charger's vendor profile says its model does not take it
    (``field`` names the parameter at fault)."""

    reason = "unsupported_by_model"

    def __init__(self, charger_id: str, message: str, field: str | None = None) -> None:
        super().__init__(charger_id, message)
        self.field = field
