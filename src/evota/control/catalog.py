"""Every remote command by its public name: parameters (validated), the domain command they
build, whether a reason is required, and which permission sends it.

The REST route ``POST /api/v1/chargers/{id}/commands/{name}``, ``evota charger NAME`` and bulk
operations all go through this table, so a command behaves the same from every entry point.
Names are kebab-case (``change-availability``), as in URLs and the CLI. Parameter limits
follow the OCPP 1.6 JSON schemas (plus the security extension's), so a request that passes
here is never refused by evota's own schema check on the way out. The same commands go to
OCPP 2.0.1 chargers through the 2.0.1 adapter; a few values exist in one protocol only
(2.0.1 reset types and trigger names, 1.6 GetDiagnostics, ...): the adapter of the other
refuses them as ``CommandNotSupported``, a conflict the API maps. ``get-variables``,
``set-variables`` and ``get-base-report`` are 2.0.1 only.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Final, Literal, Protocol

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from evota.control import commands
from evota.control.commands import CertificateUse

INT32_MAX = 2**31 - 1
Id = Annotated[int, Field(ge=0, le=INT32_MAX)]
IdTag = Annotated[str, Field(min_length=1, max_length=20)]
IdToken = Annotated[str, Field(min_length=1, max_length=36)]  # 2.0.1; a 1.6 idTag is <= 20
TxId = Annotated[str, Field(min_length=1, max_length=36)]  # a transaction id a 2.0.1 charger chose
Retries = Annotated[int, Field(ge=0, le=100)]
Seconds = Annotated[int, Field(ge=0, le=7 * 24 * 3600)]
Purpose = Literal["ChargePointMaxProfile", "TxDefaultProfile", "TxProfile"]
TokenType = Literal[
    "Central", "eMAID", "ISO14443", "ISO15693", "KeyCode", "Local", "MacAddress", "NoAuthorization"
]
HexHash = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[0-9a-fA-F]+$")]

#: What TriggerMessage (core) and ExtendedTriggerMessage (security extension) can ask for,
#: then the 2.0.1-only names.
TRIGGERS = (
    "BootNotification",
    "DiagnosticsStatusNotification",
    "FirmwareStatusNotification",
    "Heartbeat",
    "MeterValues",
    "StatusNotification",
    "LogStatusNotification",
    "SignChargePointCertificate",
    "SignChargingStationCertificate",
    "SignV2GCertificate",
    "TransactionEvent",
    "PublishFirmwareStatusNotification",
)


class Params(BaseModel):
    """Base of every command's parameters: unknown fields are refused (a validation error
    naming them)."""

    model_config = ConfigDict(extra="forbid")

    def to_command(self, ctx: Context) -> commands.Command:
        raise NotImplementedError

    def audited(self) -> dict[str, Any]:
        """The parameters as the audit log keeps them (secrets and bulky blobs left out)."""
        return self.model_dump(mode="json", exclude_none=True)


class UploadUrl(Protocol):
    def __call__(self, charger_id: str, kind: str, request_id: int | None = None) -> str: ...


@dataclass(frozen=True, slots=True)
class Context:
    """What building a command may need from the running system (e.g. an upload URL)."""

    charger_id: str
    upload_url: UploadUrl | None = None  # (charger_id, kind, request_id) -> URL

    def upload_location(self, kind: str, request_id: int | None = None) -> str:
        if self.upload_url is None:
            raise commands.CommandError(self.charger_id, f"no upload location for {kind}")
        return self.upload_url(self.charger_id, kind, request_id)


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    params: type[Params]
    build: Callable[[Params, Context], commands.Command]
    summary: str
    # Critical commands (they interrupt charging or change behaviour) need a reason.
    critical: bool = True
    # Read-only commands (get-configuration, ...) are still sent by an operator.
    permission: str = "command.send"


def _tenths(value: float | None, field: str) -> float | None:
    """OCPP limits are multiples of 0.1 (checked in decimal, as the schema check does)."""
    if value is not None and (Decimal(repr(value)) / Decimal("0.1")) % 1 != 0:
        raise ValueError(f"{field} must be a multiple of 0.1")
    return value


# -- parameter models ---------------------------------------------------------------------------


class ResetParams(Params):
    type: Literal["Soft", "Hard", "Immediate", "OnIdle"] = Field(
        "Soft",
        description="2.0.1 chargers get Soft as OnIdle and Hard as Immediate; "
        "1.6 chargers take Soft and Hard only",
    )

    def to_command(self, ctx: Context) -> commands.Command:
        return commands.Reset(type=self.type)


class PeriodIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start_period: Seconds = Field(description="seconds from the start of the schedule")
    limit: float = Field(ge=0, le=1e7, description="A or W per the rate unit, multiple of 0.1")
    number_phases: int | None = Field(None, ge=1, le=3)

    @field_validator("limit")
    @classmethod
    def _limit(cls, v: float) -> float:
        return _tenths(v, "limit") or 0.0


class ChargingProfileIn(BaseModel):
    """A charging profile; a site limit is a ``ChargePointMaxProfile`` on connector 0."""

    model_config = ConfigDict(extra="forbid")
    id: Id
    stack_level: int = Field(0, ge=0, le=100)
    purpose: Purpose
    kind: Literal["Absolute", "Recurring", "Relative"] = "Absolute"
    rate_unit: Literal["A", "W"]
    periods: list[PeriodIn] = Field(min_length=1, max_length=1000)
    recurrency: Literal["Daily", "Weekly"] | None = Field(None, validate_default=True)
    transaction_id: Id | TxId | None = Field(
        None, description="evota's session id, or a 2.0.1 charger's transaction id (a string)"
    )
    valid_from: AwareDatetime | None = None
    valid_to: AwareDatetime | None = None
    duration: Seconds | None = None
    start_schedule: AwareDatetime | None = None
    min_charging_rate: float | None = Field(None, ge=0, le=1e7)

    @field_validator("min_charging_rate")
    @classmethod
    def _min_rate(cls, v: float | None) -> float | None:
        return _tenths(v, "min_charging_rate")

    @field_validator("periods")
    @classmethod
    def _periods(cls, v: list[PeriodIn]) -> list[PeriodIn]:
        if v[0].start_period != 0:
            raise ValueError("the first period must start at 0")
        if any(b.start_period <= a.start_period for a, b in itertools.pairwise(v)):
            raise ValueError("start_period must increase from one period to the next")
        return v

    # Cross-field checks sit on the later field, so the validation error names the field to fix.
    @field_validator("recurrency")
    @classmethod
    def _recurrency(cls, v: str | None, info: ValidationInfo) -> str | None:
        if (info.data.get("kind") == "Recurring") != (v is not None):
            raise ValueError("required for a Recurring profile, and only then")
        return v

    @field_validator("transaction_id")
    @classmethod
    def _transaction(cls, v: int | str | None, info: ValidationInfo) -> int | str | None:
        if v is not None and info.data.get("purpose") != "TxProfile":
            raise ValueError("only a TxProfile names a transaction")
        return v

    @field_validator("valid_to")
    @classmethod
    def _valid_to(cls, v: Any, info: ValidationInfo) -> Any:
        return _after(v, info.data.get("valid_from"), "valid_from")

    def to_domain(self) -> commands.ChargingProfile:
        return commands.ChargingProfile(
            id=self.id,
            stack_level=self.stack_level,
            purpose=self.purpose,
            kind=self.kind,
            rate_unit=self.rate_unit,
            periods=tuple(
                commands.SchedulePeriod(p.start_period, p.limit, p.number_phases)
                for p in self.periods
            ),
            transaction_id=self.transaction_id,
            recurrency=self.recurrency,
            valid_from=self.valid_from,
            valid_to=self.valid_to,
            duration=self.duration,
            start_schedule=self.start_schedule,
            min_charging_rate=self.min_charging_rate,
        )


def _after(later: Any, earlier: Any, name: str) -> Any:
    if later is not None and earlier is not None and later <= earlier:
        raise ValueError(f"must be after {name}")
    return later


class RemoteStartParams(Params):
    id_tag: IdToken = Field(description="at most 20 characters for 1.6 chargers")
    connector_id: int | None = Field(
        None, ge=1, le=100, description="the EVSE on 2.0.1; omitted: charger picks"
    )
    charging_profile: ChargingProfileIn | None = None
    id_token_type: TokenType = Field("Central", description="2.0.1 idToken type")

    @field_validator("charging_profile")
    @classmethod
    def _tx_profile(cls, v: ChargingProfileIn | None) -> ChargingProfileIn | None:
        if v is not None and v.purpose != "TxProfile":
            raise ValueError("a remote start takes a TxProfile only")
        return v

    def to_command(self, ctx: Context) -> commands.Command:
        profile = self.charging_profile.to_domain() if self.charging_profile else None
        return commands.RemoteStartTransaction(
            self.id_tag,
            self.connector_id,
            profile,
            remote_start_id=_request_id(),
            token_type=self.id_token_type,
        )


class RemoteStopParams(Params):
    transaction_id: Annotated[int, Field(ge=-(2**31), le=INT32_MAX)] | TxId = Field(
        description="evota's session id (a number), or a 2.0.1 charger's transaction id"
    )

    def to_command(self, ctx: Context) -> commands.Command:
        return commands.RemoteStopTransaction(self.transaction_id)


class UnlockParams(Params):
    connector_id: int = Field(ge=1, le=100, description="the EVSE on 2.0.1")
    evse_connector_id: int | None = Field(
        None, ge=1, le=100, description="2.0.1: the connector on the EVSE (default 1)"
    )

    def to_command(self, ctx: Context) -> commands.Command:
        return commands.UnlockConnector(self.connector_id, self.evse_connector_id)


class AvailabilityParams(Params):
    connector_id: int = Field(0, ge=0, le=100, description="0: the whole charger")
    type: Literal["Operative", "Inoperative"]

    def to_command(self, ctx: Context) -> commands.Command:
        return commands.ChangeAvailability(self.connector_id, self.type)


class GetConfigurationParams(Params):
    keys: list[Annotated[str, Field(min_length=1, max_length=50)]] = Field(
        default_factory=list, max_length=200, description="empty: every key"
    )

    def to_command(self, ctx: Context) -> commands.Command:
        return commands.GetConfiguration(tuple(self.keys))


#: Write-only configuration keys: their values never reach the audit log.
SECRET_KEYS = frozenset({"authorizationkey"})


#: Keys and variables that change how a charger connects to evota. Set as a plain
#: configuration change, the charger would switch while evota still expects the old key or
#: profile: a lock-out. Only the flows that keep both sides in step send them (the route named).
_PASSWORD_ROUTE = "POST /api/v1/chargers/{id}/password"
_UPGRADE_ROUTE = "POST /api/v1/chargers/{id}/security-profile/upgrade"
CONNECTION_KEYS: Final = {
    "authorizationkey": _PASSWORD_ROUTE,
    "securityprofile": _UPGRADE_ROUTE,
}
CONNECTION_VARIABLES: Final = {
    ("securityctrlr", "basicauthpassword"): _PASSWORD_ROUTE,
    ("securityctrlr", "securityprofile"): _UPGRADE_ROUTE,
    ("ocppcommctrlr", "networkconfigurationpriority"): _UPGRADE_ROUTE,
}


def _connection_setting(name: str, route: str) -> str:
    return (
        f"{name} changes how the charger connects to evota; use {route}, which switches "
        "evota only once the charger is back with it"
    )


class ChangeConfigurationParams(Params):
    key: str = Field(min_length=1, max_length=50)
    value: str = Field(max_length=500)

    @field_validator("key")
    @classmethod
    def _not_a_connection_key(cls, key: str) -> str:
        route = CONNECTION_KEYS.get(key.lower())
        if route is not None:
            raise ValueError(_connection_setting(key, route))
        return key

    @classmethod
    def connection_change(cls, key: str, value: str) -> ChangeConfigurationParams:
        """The parameters the password and profile-upgrade flows send: they keep evota in
        step with the charger, so the check above is theirs to skip."""
        if key.lower() not in CONNECTION_KEYS:
            raise ValueError(f"{key} is not a connection key")
        return cls.model_construct(key=key, value=value)

    def to_command(self, ctx: Context) -> commands.Command:
        return commands.ChangeConfiguration(self.key, self.value)

    def audited(self) -> dict[str, Any]:
        if self.key.lower() in SECRET_KEYS:
            return {"key": self.key, "value": "(secret)"}
        return super().audited()


class NoParams(Params):
    pass


class ClearCacheParams(NoParams):
    def to_command(self, ctx: Context) -> commands.Command:
        return commands.ClearCache()


class GetLocalListVersionParams(NoParams):
    def to_command(self, ctx: Context) -> commands.Command:
        return commands.GetLocalListVersion()


class LocalEntryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id_tag: IdTag
    status: Literal["Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx"] | None = Field(
        None, description="omitted in a Differential update: remove the id tag"
    )
    expiry: AwareDatetime | None = None
    parent_id_tag: IdTag | None = None


class SendLocalListParams(Params):
    version: int = Field(ge=1, le=INT32_MAX)
    update_type: Literal["Full", "Differential"] = "Full"
    entries: list[LocalEntryIn] = Field(default_factory=list, max_length=10_000)

    @field_validator("entries")
    @classmethod
    def _entries(cls, v: list[LocalEntryIn], info: ValidationInfo) -> list[LocalEntryIn]:
        seen: set[str] = set()
        for entry in v:
            if entry.id_tag in seen:
                raise ValueError(f"id tag {entry.id_tag!r} appears twice")
            seen.add(entry.id_tag)
            if entry.status is None and (entry.expiry or entry.parent_id_tag):
                raise ValueError(f"{entry.id_tag}: expiry or parent_id_tag need a status")
            if info.data.get("update_type") == "Full" and entry.status is None:
                raise ValueError(f"{entry.id_tag}: every entry of a Full update needs a status")
        return v

    def to_command(self, ctx: Context) -> commands.Command:
        entries = tuple(
            commands.AuthorizationEntry(e.id_tag, e.status, e.expiry, e.parent_id_tag)
            for e in self.entries
        )
        return commands.SendLocalList(self.version, self.update_type, entries)

    def audited(self) -> dict[str, Any]:
        data = super().audited()
        if len(self.entries) > 50:  # a big list: the count says enough, the log stays small
            data["entries"] = f"({len(self.entries)} entries)"
        return data


class SetChargingProfileParams(Params):
    profile: ChargingProfileIn
    connector_id: int = Field(
        0, ge=0, le=100, validate_default=True, description="0: the whole charger"
    )

    @field_validator("connector_id")
    @classmethod
    def _placement(cls, v: int, info: ValidationInfo) -> int:
        profile = info.data.get("profile")
        purpose = profile.purpose if profile is not None else None
        if purpose == "ChargePointMaxProfile" and v != 0:
            raise ValueError("a ChargePointMaxProfile goes on connector 0")
        if purpose == "TxProfile" and v == 0:
            raise ValueError("a TxProfile goes on the connector of the session, not 0")
        return v

    def to_command(self, ctx: Context) -> commands.Command:
        return commands.SetChargingProfile(self.connector_id, self.profile.to_domain())


class ClearChargingProfileParams(Params):
    profile_id: Id | None = None
    connector_id: int | None = Field(None, ge=0, le=100)
    purpose: Purpose | None = None
    stack_level: int | None = Field(None, ge=0, le=100)

    def to_command(self, ctx: Context) -> commands.Command:
        return commands.ClearChargingProfile(
            self.profile_id, self.connector_id, self.purpose, self.stack_level
        )


class TriggerParams(Params):
    message: Literal[
        "BootNotification",
        "DiagnosticsStatusNotification",
        "FirmwareStatusNotification",
        "Heartbeat",
        "MeterValues",
        "StatusNotification",
        "LogStatusNotification",
        "SignChargePointCertificate",
        "SignChargingStationCertificate",
        "SignV2GCertificate",
        "TransactionEvent",
        "PublishFirmwareStatusNotification",
    ] = Field(
        description="on 1.6, LogStatusNotification and SignChargePointCertificate go as "
        "ExtendedTriggerMessage; DiagnosticsStatusNotification is 1.6 only; "
        "SignV2GCertificate, TransactionEvent, PublishFirmwareStatusNotification are 2.0.1 only"
    )
    connector_id: int | None = Field(None, ge=0, le=100)

    def to_command(self, ctx: Context) -> commands.Command:
        return commands.TriggerMessage(self.message, self.connector_id)


class _Window(Params):
    retries: Retries | None = None
    retry_interval: Seconds | None = None


class GetDiagnosticsParams(_Window):
    start: AwareDatetime | None = Field(None, description="oldest entries wanted")
    stop: AwareDatetime | None = Field(None, description="newest entries wanted")

    @field_validator("stop")
    @classmethod
    def _order(cls, v: Any, info: ValidationInfo) -> Any:
        return _after(v, info.data.get("start"), "start")

    def to_command(self, ctx: Context) -> commands.Command:
        return commands.GetDiagnostics(
            ctx.upload_location("diagnostics"),
            self.start,
            self.stop,
            self.retries,
            self.retry_interval,
        )


def _request_id() -> int:
    return secrets.randbelow(INT32_MAX) + 1


class GetLogParams(_Window):
    log_type: Literal["DiagnosticsLog", "SecurityLog"] = "DiagnosticsLog"
    request_id: Id = Field(default_factory=_request_id, description="default: a random id")
    oldest: AwareDatetime | None = None
    latest: AwareDatetime | None = None

    @field_validator("latest")
    @classmethod
    def _order(cls, v: Any, info: ValidationInfo) -> Any:
        return _after(v, info.data.get("oldest"), "oldest")

    def to_command(self, ctx: Context) -> commands.Command:
        return commands.GetLog(
            self.log_type,
            self.request_id,
            ctx.upload_location("log", self.request_id),
            self.oldest,
            self.latest,
            self.retries,
            self.retry_interval,
        )


class InstallCertificateParams(Params):
    certificate_type: CertificateUse
    certificate: str = Field(min_length=1, max_length=5500, description="PEM")

    @field_validator("certificate")
    @classmethod
    def _pem(cls, v: str) -> str:
        from cryptography import x509

        try:
            x509.load_pem_x509_certificate(v.encode())
        except (ValueError, x509.InvalidVersion):  # InvalidVersion is no ValueError: a 500
            raise ValueError("not a PEM X.509 certificate") from None
        return v

    def to_command(self, ctx: Context) -> commands.Command:
        return commands.InstallCertificate(self.certificate_type, self.certificate)

    def audited(self) -> dict[str, Any]:
        import hashlib

        from cryptography import x509

        from evota.pki.inventory import install_record

        cert = x509.load_pem_x509_certificate(self.certificate.encode())
        return {
            "certificate_type": self.certificate_type,
            "subject": cert.subject.rfc4514_string(),
            "sha256": hashlib.sha256(self.certificate.encode()).hexdigest(),
            # hash data and expiry: the certificate inventory names the root by them
            **install_record(cert),
        }


class DeleteCertificateParams(Params):
    hash_algorithm: Literal["SHA256", "SHA384", "SHA512"] = "SHA256"
    issuer_name_hash: HexHash
    issuer_key_hash: HexHash
    serial_number: str = Field(min_length=1, max_length=40)

    def to_command(self, ctx: Context) -> commands.Command:
        return commands.DeleteCertificate(
            commands.CertificateHash(
                self.hash_algorithm, self.issuer_name_hash, self.issuer_key_hash, self.serial_number
            )
        )


class GetCertificateIdsParams(Params):
    certificate_type: CertificateUse

    def to_command(self, ctx: Context) -> commands.Command:
        return commands.GetInstalledCertificateIds(self.certificate_type)


class DataTransferParams(Params):
    vendor_id: str = Field(min_length=1, max_length=255)
    message_id: str | None = Field(None, max_length=50)
    data: str | None = Field(None, max_length=64 * 1024)

    def to_command(self, ctx: Context) -> commands.Command:
        return commands.DataTransfer(self.vendor_id, self.message_id, self.data)


Name50 = Annotated[str, Field(min_length=1, max_length=50)]
#: 2.0.1 variables whose values never reach the audit log (component, variable), casefolded.
SECRET_VARIABLES = frozenset({("securityctrlr", "basicauthpassword")})


class VariableIn(BaseModel):
    """A 2.0.1 device-model variable, e.g. ``{"component": "OCPPCommCtrlr",
    "variable": "HeartbeatInterval"}``."""

    model_config = ConfigDict(extra="forbid")
    component: Name50
    variable: Name50
    component_instance: Name50 | None = None
    variable_instance: Name50 | None = None
    evse_id: int | None = Field(None, ge=0, le=100)
    connector_id: int | None = Field(None, ge=1, le=100)
    attribute_type: Literal["Actual", "Target", "MinSet", "MaxSet"] | None = None

    @field_validator("connector_id")
    @classmethod
    def _needs_evse(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and info.data.get("evse_id") is None:
            raise ValueError("a connector_id needs an evse_id")
        return v

    def to_domain(self) -> commands.VariableRef:
        return commands.VariableRef(
            self.component,
            self.variable,
            self.component_instance,
            self.variable_instance,
            self.evse_id,
            self.connector_id,
            self.attribute_type,
        )

    @property
    def secret(self) -> bool:
        return (self.component.casefold(), self.variable.casefold()) in SECRET_VARIABLES


class GetVariablesParams(Params):
    variables: list[VariableIn] = Field(min_length=1, max_length=100)

    def to_command(self, ctx: Context) -> commands.Command:
        return commands.GetVariables(tuple(v.to_domain() for v in self.variables))


class SetVariableIn(VariableIn):
    value: str = Field(max_length=1000)


class SetVariablesParams(Params):
    variables: list[SetVariableIn] = Field(min_length=1, max_length=100)

    @field_validator("variables")
    @classmethod
    def _no_connection_variable(cls, variables: list[SetVariableIn]) -> list[SetVariableIn]:
        for v in variables:
            route = CONNECTION_VARIABLES.get((v.component.lower(), v.variable.lower()))
            if route is not None:
                raise ValueError(_connection_setting(f"{v.component}.{v.variable}", route))
        return variables

    def to_command(self, ctx: Context) -> commands.Command:
        return commands.SetVariables(
            tuple(v.to_domain() for v in self.variables), tuple(v.value for v in self.variables)
        )

    def audited(self) -> dict[str, Any]:
        data = super().audited()
        for item, variable in zip(data["variables"], self.variables, strict=True):
            if variable.secret:
                item["value"] = "(secret)"
        return data


class GetBaseReportParams(Params):
    report_base: Literal["ConfigurationInventory", "FullInventory", "SummaryInventory"] = (
        "ConfigurationInventory"
    )
    request_id: Id = Field(default_factory=_request_id, description="default: a random id")

    def to_command(self, ctx: Context) -> commands.Command:
        return commands.GetBaseReport(self.request_id, self.report_base)


# -- the table ----------------------------------------------------------------------------------


def _build(p: Params, ctx: Context) -> commands.Command:
    return p.to_command(ctx)


def _spec(name: str, params: type[Params], summary: str, *, critical: bool) -> CommandSpec:
    return CommandSpec(name, params, _build, summary, critical=critical)


COMMANDS: dict[str, CommandSpec] = {
    spec.name: spec
    for spec in (
        _spec("reset", ResetParams, "Soft or hard reset (the charger reboots)", critical=True),
        _spec(
            "remote-start",
            RemoteStartParams,
            "Start a charging session for an id tag",
            critical=True,
        ),
        _spec("remote-stop", RemoteStopParams, "Stop a running session", critical=True),
        _spec(
            "unlock-connector",
            UnlockParams,
            "Release a connector's cable (stops its session)",
            critical=True,
        ),
        _spec(
            "change-availability",
            AvailabilityParams,
            "Maintenance mode: a connector or the whole charger Inoperative / Operative",
            critical=True,
        ),
        _spec(
            "get-configuration",
            GetConfigurationParams,
            "Read configuration keys",
            critical=False,
        ),
        _spec(
            "change-configuration",
            ChangeConfigurationParams,
            "Set one configuration key",
            critical=True,
        ),
        _spec("clear-cache", ClearCacheParams, "Clear the authorization cache", critical=True),
        _spec(
            "send-local-list",
            SendLocalListParams,
            "Replace or update the local authorization list",
            critical=True,
        ),
        _spec(
            "get-local-list-version",
            GetLocalListVersionParams,
            "Read the local authorization list's version",
            critical=False,
        ),
        _spec(
            "set-charging-profile",
            SetChargingProfileParams,
            "Set a charging profile (a site limit: ChargePointMaxProfile on connector 0)",
            critical=True,
        ),
        _spec(
            "clear-charging-profile",
            ClearChargingProfileParams,
            "Clear charging profiles (those matching every given field)",
            critical=True,
        ),
        _spec(
            "trigger-message",
            TriggerParams,
            "Make the charger send a message now (status, meter values, boot, ...)",
            critical=False,
        ),
        _spec(
            "get-diagnostics",
            GetDiagnosticsParams,
            "Have the charger upload its diagnostics file to evota",
            critical=False,
        ),
        _spec(
            "get-log",
            GetLogParams,
            "Have the charger upload its diagnostics or security log to evota",
            critical=False,
        ),
        _spec(
            "install-certificate",
            InstallCertificateParams,
            "Install a root certificate (CSMS or manufacturer)",
            critical=True,
        ),
        _spec(
            "delete-certificate",
            DeleteCertificateParams,
            "Delete an installed certificate by its hash data",
            critical=True,
        ),
        _spec(
            "get-installed-certificate-ids",
            GetCertificateIdsParams,
            "List installed certificates of one type",
            critical=False,
        ),
        _spec(
            "data-transfer",
            DataTransferParams,
            "Send a vendor-specific DataTransfer",
            critical=False,
        ),
        _spec(
            "get-variables",
            GetVariablesParams,
            "Read OCPP 2.0.1 device-model variables (2.0.1 chargers only)",
            critical=False,
        ),
        _spec(
            "set-variables",
            SetVariablesParams,
            "Set OCPP 2.0.1 device-model variables (2.0.1 chargers only)",
            critical=True,
        ),
        _spec(
            "get-base-report",
            GetBaseReportParams,
            "Have a 2.0.1 charger report its device model (NotifyReport events)",
            critical=False,
        ),
    )
}


def get(name: str) -> CommandSpec | None:
    return COMMANDS.get(name)
