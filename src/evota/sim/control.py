"""Remote commands on a simulated charger: every OCPP 1.6 CSMS-initiated control message
(and the Security Whitepaper's), behaving the way a well-made station does.

- Configuration: a realistic 1.6 key set (:func:`core_configuration`) with read-only keys;
  ChangeConfiguration answers ``Rejected`` (read-only key or bad value), ``NotSupported``
  (unknown key) or ``RebootRequired`` (``WebSocketPingInterval``); ``HeartbeatInterval``
  takes effect at once, ``AuthorizationKey`` (write-only) on the next connection.
- Availability per connector (0: the whole charger), persistent across reboots; ``Scheduled``
  while a session runs, the connector turning Unavailable when it ends.
- Remote start/stop run a real transaction; UnlockConnector stops a session on the connector
  first (reason ``UnlockCommand``).
- The local authorization list (versioned), the authorization cache, charging profiles (which
  cap the power sessions draw: :meth:`ControlState.power_kw`), certificates.
- TriggerMessage / ExtendedTriggerMessage send the requested message.
- GetDiagnostics / GetLog generate a text file of ``SimConfig.upload_bytes`` and upload it
  over HTTP to the given location (diagnostics: multipart ``POST``; logs: ``PUT
  {location}/{filename}``), reporting DiagnosticsStatusNotification / LogStatusNotification.

Security-extension messages get CALLERROR NotImplemented from a ``plain`` 1.6 charger (one
without the extension), as :mod:`evota.sim.firmware` does for SignedUpdateFirmware. The 2.0.1
handlers (:mod:`evota.sim.v201`) reuse this state and these rules through their own names
(the configuration store is also the 2.0.1 device model's). Decisions
that have rules (configuration values, the local list, charging profile limits) are pure
functions, property-tested in ``tests/sim/test_control.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from evota.ocpp import rpc
from evota.ocpp.errors import ErrorKind, RpcError
from evota.sim.charger import USER_AGENT, CallFailed, Reply, SimulatedCharger, handles
from evota.sim.firmware import agent

log = structlog.get_logger("evota.sim")

# -- configuration (pure) -----------------------------------------------------------------------


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


def _digits(value: str) -> bool:
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
        if not _digits(value) or len(value) > 9:
            return "Rejected"
        if key == "HeartbeatInterval" and int(value) < 1:
            return "Rejected"
        if key == "SecurityProfile" and int(value) != int(entry.value or 0):
            return "Rejected"  # lowering is forbidden; raising needs TLS the simulator lacks
    if entry.kind == "key" and not 16 <= len(value.encode()) <= 40:
        return "Rejected"
    if entry.options:
        members = value.split(",") if entry.kind == "csl" else [value]
        if any(m not in entry.options for m in members):
            return "Rejected"
    return "RebootRequired" if entry.reboot else "Accepted"


# -- local authorization list (pure) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LocalList:
    version: int = 0
    entries: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # idTag -> idTagInfo


def apply_local_list(
    current: LocalList,
    version: int,
    update_type: str,
    entries: list[dict[str, Any]],
    *,
    max_send: int,
    max_length: int,
    enabled: bool = True,
) -> tuple[str, LocalList]:
    """SendLocalList's status and the list afterwards (unchanged unless Accepted)."""
    if not enabled:
        return "NotSupported", current
    if len(entries) > max_send:
        return "Failed", current
    if update_type == "Differential" and version <= current.version:
        return "VersionMismatch", current
    merged: dict[str, Mapping[str, Any]] = {} if update_type == "Full" else dict(current.entries)
    for entry in entries:
        info = entry.get("idTagInfo")
        if info is None:
            merged.pop(entry["idTag"], None)
        else:
            merged[entry["idTag"]] = info
    if len(merged) > max_length:
        return "Failed", current
    return "Accepted", LocalList(version, merged)


# -- charging profiles (pure) -------------------------------------------------------------------

_PERIODS = {"Daily": 86400.0, "Weekly": 7 * 86400.0}
VOLTS = 230.0


@dataclass(frozen=True, slots=True)
class StoredProfile:
    connector_id: int
    profile: Mapping[str, Any]  # the 1.6 csChargingProfiles object
    installed_at: dt.datetime  # what Relative (and Absolute without start) schedules count from

    @property
    def id(self) -> int:
        return int(self.profile["chargingProfileId"])

    @property
    def purpose(self) -> str:
        return str(self.profile["chargingProfilePurpose"])

    @property
    def stack_level(self) -> int:
        return int(self.profile["stackLevel"])


def _time(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def limit_kw(profile: Mapping[str, Any], now: dt.datetime, anchor: dt.datetime) -> float | None:
    """The limit (kW) ``profile`` sets at ``now``, or None where it sets none (not valid yet or
    any more, before its start, past its duration). Amperes count as 230 V per phase, three
    phases unless the period says otherwise."""
    valid_from, valid_to = _time(profile.get("validFrom")), _time(profile.get("validTo"))
    if (valid_from and now < valid_from) or (valid_to and now >= valid_to):
        return None
    schedule = profile["chargingSchedule"]
    kind = profile["chargingProfileKind"]
    start = anchor if kind == "Relative" else (_time(schedule.get("startSchedule")) or anchor)
    offset = (now - start).total_seconds()
    if offset < 0:
        return None
    if kind == "Recurring":
        offset %= _PERIODS[profile.get("recurrencyKind", "Daily")]
    duration = schedule.get("duration")
    if duration is not None and offset >= duration:
        return None
    active = None
    for period in schedule["chargingSchedulePeriod"]:
        if period["startPeriod"] <= offset:
            active = period
    if active is None:
        return None
    limit = float(active["limit"])
    if schedule["chargingRateUnit"] == "W":
        return limit / 1000.0
    return limit * VOLTS * int(active.get("numberPhases", 3)) / 1000.0


def prevailing_kw(profiles: list[StoredProfile], now: dt.datetime) -> float | None:
    """Of profiles of one purpose, the highest stack level that sets a limit now wins."""
    for stored in sorted(profiles, key=lambda s: s.stack_level, reverse=True):
        limit = limit_kw(stored.profile, now, stored.installed_at)
        if limit is not None:
            return limit
    return None


# -- certificates (pure) ------------------------------------------------------------------------

_HASHES = {"SHA256": hashlib.sha256, "SHA384": hashlib.sha384, "SHA512": hashlib.sha512}


def certificate_hash(pem: str, algorithm: str = "SHA256") -> dict[str, str]:
    """OCPP's CertificateHashData: hashes of the issuer's name (DER) and of the issuer's
    public key bits (for a self-signed root: its own), and the serial in hex."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        bits = key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    elif isinstance(key, rsa.RSAPublicKey):
        bits = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    else:
        bits = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def digest(data: bytes) -> str:
        return _HASHES[algorithm](data).hexdigest()

    return {
        "hashAlgorithm": algorithm,
        "issuerNameHash": digest(cert.issuer.public_bytes()),
        "issuerKeyHash": digest(bits),
        "serialNumber": format(cert.serial_number, "x"),
    }


def same_certificate(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    return (
        a["hashAlgorithm"] == b["hashAlgorithm"]
        and a["issuerNameHash"].lower() == b["issuerNameHash"].lower()
        and a["issuerKeyHash"].lower() == b["issuerKeyHash"].lower()
        and a["serialNumber"].lower().lstrip("0") == b["serialNumber"].lower().lstrip("0")
    )


# -- the charger's control state ------------------------------------------------------------------


@dataclass(slots=True)
class Upload:
    """One diagnostics or log upload (kept for tests and the summary)."""

    kind: str
    file_name: str
    location: str
    request_id: int | None = None
    sha256: str = ""  # of the generated content, so tests can check what arrived
    size: int = 0
    status: str = "Uploading"
    attempts: int = 0
    error: str | None = None


@dataclass
class ControlState:
    """What remote commands change on one charger; survives reconnects and reboots."""

    charger: SimulatedCharger
    configuration: dict[str, ConfigKey]
    local_list: LocalList = field(default_factory=LocalList)
    auth_cache: dict[str, str] = field(default_factory=dict)
    profiles: dict[int, StoredProfile] = field(default_factory=dict)
    certificates: list[tuple[str, str]] = field(default_factory=list)  # (use, PEM)
    uploads: list[Upload] = field(default_factory=list)
    unlocked: list[int] = field(default_factory=list)  # connectors unlocked, in order
    data_transfers: list[dict[str, Any]] = field(default_factory=list)
    diagnostics_task: asyncio.Task[None] | None = None
    log_task: asyncio.Task[None] | None = None
    log_request_id: int | None = None

    def setting(self, key: str) -> str:
        entry = self.configuration.get(key)
        return entry.value if entry is not None else ""

    def flag(self, key: str) -> bool:
        return self.setting(key).lower() == "true"

    def number(self, key: str, default: int) -> int:
        value = self.setting(key)
        return int(value) if _digits(value) else default

    @property
    def diagnostics_status(self) -> str:
        busy = self.diagnostics_task is not None and not self.diagnostics_task.done()
        return "Uploading" if busy else "Idle"

    @property
    def log_status(self) -> str:
        return "Uploading" if self.log_task is not None and not self.log_task.done() else "Idle"

    def power_kw(self, connector: int, configured: float) -> float:
        """The power a session on ``connector`` may draw now under the installed profiles: a
        ChargePointMaxProfile is shared by the sessions running, a TxProfile (while a
        transaction runs) overrides a TxDefaultProfile (the connector's over connector 0's)."""
        c = self.charger
        now = c.clock.now()
        by_purpose: dict[tuple[str, int], list[StoredProfile]] = {}
        for stored in self.profiles.values():
            by_purpose.setdefault((stored.purpose, stored.connector_id), []).append(stored)
        limits = [configured]
        site = prevailing_kw(by_purpose.get(("ChargePointMaxProfile", 0), []), now)
        if site is not None:
            limits.append(site / max(1, len(c.transactions)))
        tx = None
        if connector in c.transactions:
            tx = prevailing_kw(by_purpose.get(("TxProfile", connector), []), now)
        if tx is None:
            tx = prevailing_kw(by_purpose.get(("TxDefaultProfile", connector), []), now)
        if tx is None:
            tx = prevailing_kw(by_purpose.get(("TxDefaultProfile", 0), []), now)
        if tx is not None:
            limits.append(tx)
        return max(0.0, min(limits))


def state(charger: SimulatedCharger) -> ControlState:
    """The charger's control state, created on first use."""
    if charger.control is None:
        security = charger.spec.protocol != "ocpp1.6" or charger.spec.firmware_update != "plain"
        st = ControlState(
            charger,
            core_configuration(
                charger.spec.connectors,
                int(charger.heartbeat_interval),
                int(charger.config.meter_interval),
                security=security,
            )
            | charger.wire.extra_configuration(charger),
        )
        st.certificates = [
            ("ManufacturerRootCertificate", pem) for pem in charger.spec.firmware_roots
        ]
        charger.control = st
    return charger.control


def _security_only(charger: SimulatedCharger, action: str) -> None:
    if charger.spec.protocol == "ocpp1.6" and charger.spec.firmware_update == "plain":
        # a 1.6 charger without the Security Whitepaper extension
        raise RpcError(ErrorKind.NOT_IMPLEMENTED, f"unknown action {action!r}")


def _connectors(charger: SimulatedCharger) -> range:
    return range(1, charger.spec.connectors + 1)


async def _quietly(call: Awaitable[Any]) -> None:
    with contextlib.suppress(CallFailed):
        await call


# -- sessions -------------------------------------------------------------------------------------


@handles("RemoteStartTransaction")
async def _on_remote_start(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    p = call.payload
    profile = p.get("chargingProfile")
    if profile is not None and profile["chargingProfilePurpose"] != "TxProfile":
        return Reply({"status": "Rejected"})
    free = [
        c
        for c in _connectors(charger)
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


def _stop(charger: SimulatedCharger, connector: int, reason: str) -> None:
    txn = charger.transactions.get(connector)
    if txn is not None:
        txn.stop_requested = reason
        txn.wake.set()


@handles("RemoteStopTransaction")
async def _on_remote_stop(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    wanted = call.payload["transactionId"]
    for connector, txn in charger.transactions.items():
        if txn.transaction_id == wanted and txn.stop_requested is None:

            async def stop(connector: int = connector) -> None:
                _stop(charger, connector, "Remote")

            return Reply({"status": "Accepted"}, then=stop)
    return Reply({"status": "Rejected"})


@handles("UnlockConnector")
async def _on_unlock(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    connector = call.payload["connectorId"]
    if connector not in _connectors(charger):
        raise RpcError(
            ErrorKind.PROPERTY_CONSTRAINT, f"connectorId: connector {connector} does not exist"
        )
    state(charger).unlocked.append(connector)

    async def stop() -> None:  # a session on the connector ends first (after this answer)
        _stop(charger, connector, "UnlockCommand")

    return Reply({"status": "Unlocked"}, then=stop)


@handles("ChangeAvailability")
async def _on_change_availability(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    connector, kind = call.payload["connectorId"], call.payload["type"]
    if connector != 0 and connector not in _connectors(charger):
        return Reply({"status": "Rejected"})
    targets = [0, *_connectors(charger)] if connector == 0 else [connector]
    if kind == "Inoperative":
        charger.inoperative.add(connector)
    elif connector == 0:
        charger.inoperative.clear()
    else:
        charger.inoperative.discard(connector)
    busy = any(t in charger.transactions for t in targets)
    status = "Scheduled" if busy and kind == "Inoperative" else "Accepted"

    async def report() -> None:
        for t in targets:
            if t in charger.transactions:
                continue  # reported when the session ends
            wanted = charger.idle_status(t)
            if charger.connector_status.get(t) != wanted[0]:
                await _quietly(charger.send_status(t, *wanted))

    return Reply({"status": status}, then=report)


# -- configuration ----------------------------------------------------------------------------


@handles("GetConfiguration")
async def _on_get_configuration(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    st = state(charger)
    st.configuration["HeartbeatInterval"] = ConfigKey(
        str(int(charger.heartbeat_interval)), False, "int"
    )
    wanted: list[str] | None = call.payload.get("key")
    if wanted and len(wanted) > st.number("GetConfigurationMaxKeys", 100):
        raise RpcError(
            ErrorKind.OCCURRENCE_CONSTRAINT, "key: more keys than GetConfigurationMaxKeys"
        )
    if not wanted:
        names = [k for k, v in st.configuration.items() if not v.secret]
        unknown: list[str] = []
    else:
        names = [k for k in dict.fromkeys(wanted) if k in st.configuration]
        unknown = [k for k in dict.fromkeys(wanted) if k not in st.configuration]
    payload: dict[str, Any] = {
        "configurationKey": [{"key": k, **st.configuration[k].shown} for k in names]
    }
    if unknown:
        payload["unknownKey"] = unknown
    return Reply(payload)


def apply_setting(charger: SimulatedCharger, key: str, value: str) -> str:
    """Change configuration ``key`` (1.6 ChangeConfiguration, 2.0.1 SetVariables); returns
    :func:`change_answer`'s status, applying the change and its side effects when it allows."""
    st = state(charger)
    status = change_answer(st.configuration, key, value)
    if status in ("Accepted", "RebootRequired"):
        entry = st.configuration[key]
        if entry.kind == "bool":
            value = value.lower()
        st.configuration[key] = replace(entry, value=value)
        if key == "HeartbeatInterval":
            charger.heartbeat_interval = float(value)
        elif key == "AuthorizationKey":
            charger.auth_key = value  # used from the next connection on
    return status


@handles("ChangeConfiguration")
async def _on_change_configuration(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    return Reply({"status": apply_setting(charger, call.payload["key"], call.payload["value"])})


# -- authorization ------------------------------------------------------------------------------


@handles("ClearCache")
async def _on_clear_cache(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    st = state(charger)
    if not st.flag("AuthorizationCacheEnabled"):
        return Reply({"status": "Rejected"})
    st.auth_cache.clear()
    return Reply({"status": "Accepted"})


@handles("SendLocalList")
async def _on_send_local_list(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    st = state(charger)
    p = call.payload
    status, st.local_list = apply_local_list(
        st.local_list,
        p["listVersion"],
        p["updateType"],
        p.get("localAuthorizationList", []),
        max_send=st.number("SendLocalListMaxLength", 500),
        max_length=st.number("LocalAuthListMaxLength", 1000),
        enabled=st.flag("LocalAuthListEnabled"),
    )
    return Reply({"status": status})


@handles("GetLocalListVersion")
async def _on_get_local_list_version(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    st = state(charger)
    return Reply({"listVersion": st.local_list.version if st.flag("LocalAuthListEnabled") else -1})


# -- smart charging -----------------------------------------------------------------------------


def _profile_refusal(charger: SimulatedCharger, connector: int, profile: dict[str, Any]) -> bool:
    st = state(charger)
    purpose = profile["chargingProfilePurpose"]
    if connector != 0 and connector not in _connectors(charger):
        return True
    if purpose == "ChargePointMaxProfile" and connector != 0:
        return True
    if purpose == "TxProfile":
        txn = charger.transactions.get(connector)
        if txn is None:
            return True  # a TxProfile needs a transaction on its connector
        wanted = profile.get("transactionId")
        if wanted is not None and wanted != txn.transaction_id:
            return True
    schedule = profile["chargingSchedule"]
    allowed = st.setting("ChargingScheduleAllowedChargingRateUnit").split(",")
    unit = {"A": "Current", "W": "Power"}[schedule["chargingRateUnit"]]
    return (
        profile["stackLevel"] > st.number("ChargeProfileMaxStackLevel", 10)
        or len(schedule["chargingSchedulePeriod"]) > st.number("ChargingScheduleMaxPeriods", 24)
        or unit not in allowed
    )


@handles("SetChargingProfile")
async def _on_set_charging_profile(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    connector, profile = call.payload["connectorId"], call.payload["csChargingProfiles"]
    return Reply({"status": install_profile(charger, connector, profile)})


def install_profile(charger: SimulatedCharger, connector: int, profile: dict[str, Any]) -> str:
    """Install a (1.6-shaped) charging profile; ``Accepted`` or ``Rejected``. It replaces a
    profile with its id, or with its connector, purpose and stack level."""
    st = state(charger)
    if _profile_refusal(charger, connector, profile):
        return "Rejected"
    stored = StoredProfile(connector, profile, charger.clock.now())
    kept = {
        pid: s
        for pid, s in st.profiles.items()
        if pid != stored.id
        and (s.connector_id, s.purpose, s.stack_level)
        != (connector, stored.purpose, stored.stack_level)
    }
    if len(kept) >= st.number("MaxChargingProfilesInstalled", 10):
        return "Rejected"
    kept[stored.id] = stored
    st.profiles = kept
    return "Accepted"


@handles("ClearChargingProfile")
async def _on_clear_charging_profile(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    st = state(charger)
    p = call.payload

    def matches(s: StoredProfile) -> bool:
        if "id" in p:
            return s.id == p["id"]
        return (
            p.get("connectorId", s.connector_id) == s.connector_id
            and p.get("chargingProfilePurpose", s.purpose) == s.purpose
            and p.get("stackLevel", s.stack_level) == s.stack_level
        )

    cleared = [pid for pid, s in st.profiles.items() if matches(s)]
    for pid in cleared:
        del st.profiles[pid]
    return Reply({"status": "Accepted" if cleared else "Unknown"})


# -- trigger message ----------------------------------------------------------------------------

_CONNECTOR_MESSAGES = frozenset({"MeterValues", "StatusNotification"})


def _csr(charger: SimulatedCharger) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, charger.identity),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, charger.spec.vendor),
        ]
    )
    request = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM).decode()


async def _send_triggered(
    charger: SimulatedCharger, message: str, connector: int | None, extended: bool
) -> None:
    st = state(charger)
    targets = [connector] if connector is not None else [0, *_connectors(charger)]
    match message:
        case "BootNotification":
            spec = charger.spec
            boot = {
                "chargePointVendor": spec.vendor,
                "chargePointModel": spec.model,
                "chargePointSerialNumber": spec.serial_number,
                "firmwareVersion": charger.firmware_version,
            }
            await _quietly(charger.call("BootNotification", boot))
        case "Heartbeat":
            await _quietly(charger.call("Heartbeat", {}))
        case "StatusNotification":
            for c in targets:
                status = charger.connector_status.get(c) or charger.idle_status(c)[0]
                error = "OtherError" if status == "Faulted" else "NoError"
                await _quietly(charger.send_status(c, status, error))
        case "MeterValues":
            for c in targets:
                if c == 0:
                    continue
                await _quietly(charger.call("MeterValues", _meter_values(charger, c)))
        case "DiagnosticsStatusNotification":
            payload = {"status": st.diagnostics_status}
            await _quietly(charger.call("DiagnosticsStatusNotification", payload))
        case "FirmwareStatusNotification":
            fw = charger.firmware_agent
            fw_status = charger.firmware_state if fw is not None and fw.busy else None
            action = "SignedFirmwareStatusNotification" if extended else message
            await _quietly(charger.call(action, {"status": fw_status or "Idle"}))
        case "LogStatusNotification":
            log_payload: dict[str, Any] = {"status": st.log_status}
            if st.log_request_id is not None and st.log_status == "Uploading":
                log_payload["requestId"] = st.log_request_id
            await _quietly(charger.call("LogStatusNotification", log_payload))
        case "SignChargePointCertificate":
            await _quietly(charger.call("SignCertificate", {"csr": _csr(charger)}))


def _meter_values(charger: SimulatedCharger, connector: int) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "connectorId": connector,
        "meterValue": [
            {
                "timestamp": charger._now(),
                "sampledValue": [
                    {
                        "value": str(int(charger.meter_wh[connector])),
                        "context": "Trigger",
                        "measurand": "Energy.Active.Import.Register",
                        "location": "Outlet",
                        "unit": "Wh",
                    }
                ],
            }
        ],
    }
    txn = charger.transactions.get(connector)
    if txn is not None and txn.transaction_id is not None:
        payload["transactionId"] = txn.transaction_id
    return payload


def _trigger(charger: SimulatedCharger, call: rpc.Call, extended: bool) -> Reply:
    message, connector = call.payload["requestedMessage"], call.payload.get("connectorId")
    if connector is not None and message in _CONNECTOR_MESSAGES:
        if connector != 0 and connector not in _connectors(charger):
            return Reply({"status": "Rejected"})
    else:
        connector = None  # the connector only matters for connector-related messages
    return Reply(
        {"status": "Accepted"},
        then=lambda: _spawned(charger, _send_triggered(charger, message, connector, extended)),
    )


async def _spawned(charger: SimulatedCharger, coro: Any) -> None:
    """Send from a task of its own: the charger may not CALL inside the handler's turn."""
    charger.spawn_background(coro)


@handles("TriggerMessage")
async def _on_trigger_message(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    return _trigger(charger, call, extended=False)


@handles("ExtendedTriggerMessage")
async def _on_extended_trigger_message(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    _security_only(charger, "ExtendedTriggerMessage")
    return _trigger(charger, call, extended=True)


# -- diagnostics and log uploads ----------------------------------------------------------------


def _file_name(charger: SimulatedCharger, kind: str) -> str:
    stamp = charger.clock.now().strftime("%Y%m%dT%H%M%SZ")
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in charger.identity)
    return f"{kind}-{safe}-{stamp}.log"


def generate_file(charger: SimulatedCharger, kind: str, window: str) -> bytes:
    """A plausible text file of about ``SimConfig.upload_bytes`` bytes, ending in a newline."""
    c = charger
    lines = [
        f"# {kind} of {c.identity} ({c.spec.vendor} {c.spec.model}), firmware {c.firmware_version}",
        f"# window: {window}",
        f"# generated: {c._now()}",
        f"# connectors: {dict(c.connector_status)}",
        f"# stats: boots={c.stats.boots_accepted} reboots={c.stats.reboots} "
        f"transactions={c.stats.transactions_completed} energy_wh={c.stats.energy_wh}",
    ]
    size = sum(len(line) + 1 for line in lines)
    meter = int(sum(c.meter_wh.values()))
    while size < c.config.upload_bytes:
        lines.append(f"{c._now()} INFO  sim[{len(lines):06d}] heartbeat ok, meter {meter} Wh")
        size += len(lines[-1]) + 1
    return ("\n".join(lines) + "\n").encode()[: max(c.config.upload_bytes, 1)]


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class _UploadFailed(Exception):
    pass


async def _put_file(
    client: httpx.AsyncClient, location: str, name: str, content: bytes, method: str
) -> None:
    scheme = urllib.parse.urlsplit(location).scheme
    if scheme not in ("http", "https"):
        raise _UploadFailed(f"cannot upload over {scheme or 'no scheme'}")
    if method == "PUT":
        url = f"{location.rstrip('/')}/{urllib.parse.quote(name)}"
        response = await client.put(url, content=content)
    else:
        response = await client.post(location, files={"file": (name, content, "text/plain")})
    if not 200 <= response.status_code < 300:
        raise _UploadFailed(f"HTTP {response.status_code}")


async def _upload(
    charger: SimulatedCharger,
    upload: Upload,
    content: bytes,
    *,
    method: str,
    retries: int,
    interval: float | None,
    report: Callable[[str], Awaitable[None]],
    done: tuple[str, str],
) -> None:
    """Upload with retries, reporting Uploading, then ``done[0]`` (ok) or ``done[1]``."""
    await report("Uploading")
    headers = {"User-Agent": USER_AGENT}
    async with httpx.AsyncClient(timeout=charger.config.upload_timeout, headers=headers) as client:
        for attempt in range(1 + max(0, retries)):
            if attempt:
                await charger._sleep(
                    charger.config.download_retry_interval if interval is None else interval
                )
            upload.attempts += 1
            try:
                await _put_file(client, upload.location, upload.file_name, content, method)
            except (_UploadFailed, httpx.HTTPError) as exc:
                upload.error = str(exc) or type(exc).__name__
                log.info("upload failed", charger_id=charger.identity, error=upload.error)
                continue
            upload.status, upload.error = done[0], None
            await report(done[0])
            return
    upload.status = done[1]
    await report(done[1])


def _window(start: str | None, stop: str | None) -> str:
    return f"{start or 'beginning'} .. {stop or 'now'}"


@handles("GetDiagnostics")
async def _on_get_diagnostics(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    st = state(charger)
    p = call.payload
    name = _file_name(charger, "diagnostics")
    content = generate_file(charger, "diagnostics", _window(p.get("startTime"), p.get("stopTime")))
    upload = Upload("diagnostics", name, p["location"], None, _sha256(content), len(content))

    async def report(status: str) -> None:
        await agent(charger).notify("DiagnosticsStatusNotification", {"status": status})

    async def start() -> None:
        if st.diagnostics_task is not None:
            st.diagnostics_task.cancel()
        st.uploads.append(upload)
        st.diagnostics_task = charger.spawn_background(
            _upload(
                charger,
                upload,
                content,
                method="POST",
                retries=p.get("retries", 0),
                interval=p.get("retryInterval"),
                report=report,
                done=("Uploaded", "UploadFailed"),
            )
        )

    return Reply({"fileName": name}, then=start)


@handles("GetLog")
async def _on_get_log(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    _security_only(charger, "GetLog")
    st = state(charger)
    p = call.payload
    kind = "security" if p["logType"] == "SecurityLog" else "diagnostics"
    name = _file_name(charger, f"{kind}-log")
    request_id = p["requestId"]
    log_params = p["log"]
    window = _window(log_params.get("oldestTimestamp"), log_params.get("latestTimestamp"))
    content = generate_file(charger, p["logType"], window)
    upload = Upload(
        "log", name, log_params["remoteLocation"], request_id, _sha256(content), len(content)
    )
    status = "AcceptedCanceled" if st.log_status == "Uploading" else "Accepted"

    async def report(upload_status: str) -> None:
        payload = {"status": upload_status, "requestId": request_id}
        await agent(charger).notify("LogStatusNotification", payload)

    async def start() -> None:
        if st.log_task is not None:
            st.log_task.cancel()
        st.uploads.append(upload)
        st.log_request_id = request_id
        st.log_task = charger.spawn_background(
            _upload(
                charger,
                upload,
                content,
                method="PUT",
                retries=p.get("retries", 0),
                interval=p.get("retryInterval"),
                report=report,
                done=("Uploaded", "UploadFailure"),
            )
        )

    return Reply({"status": status, "filename": name}, then=start)


# -- certificates ------------------------------------------------------------------------------


@handles("InstallCertificate")
async def _on_install_certificate(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    _security_only(charger, "InstallCertificate")
    st = state(charger)
    use, pem = call.payload["certificateType"], call.payload["certificate"]
    try:
        new = certificate_hash(pem)
    except ValueError:
        return Reply({"status": "Rejected"})
    if any(u == use and same_certificate(certificate_hash(p), new) for u, p in st.certificates):
        return Reply({"status": "Accepted"})
    if len(st.certificates) >= st.number("CertificateStoreMaxLength", 10):
        return Reply({"status": "Rejected"})
    st.certificates.append((use, pem))
    return Reply({"status": "Accepted"})


@handles("DeleteCertificate")
async def _on_delete_certificate(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    _security_only(charger, "DeleteCertificate")
    st = state(charger)
    wanted = call.payload["certificateHashData"]
    algorithm = wanted["hashAlgorithm"]
    for i, (_use, pem) in enumerate(st.certificates):
        if same_certificate(certificate_hash(pem, algorithm), wanted):
            del st.certificates[i]
            return Reply({"status": "Accepted"})
    return Reply({"status": "NotFound"})


@handles("GetInstalledCertificateIds")
async def _on_get_installed_certificate_ids(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    _security_only(charger, "GetInstalledCertificateIds")
    st = state(charger)
    use = call.payload["certificateType"]
    found = [certificate_hash(pem) for u, pem in st.certificates if u == use]
    if not found:
        return Reply({"status": "NotFound"})
    return Reply({"status": "Accepted", "certificateHashData": found})


# -- vendor extensions ------------------------------------------------------------------------


@handles("DataTransfer")
async def _on_data_transfer(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    """The charger's vendor id knows one message, ``echo``, which returns ``data``."""
    p = call.payload
    state(charger).data_transfers.append(dict(p))
    if p["vendorId"] != charger.spec.vendor:
        return Reply({"status": "UnknownVendorId"})
    message = p.get("messageId")
    if message not in (None, "echo"):
        return Reply({"status": "UnknownMessageId"})
    answer: dict[str, Any] = {"status": "Accepted"}
    if message == "echo" and "data" in p:
        answer["data"] = p["data"]
    return Reply(answer)
