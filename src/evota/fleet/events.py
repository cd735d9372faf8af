"""What chargers tell evota, as domain events independent of the OCPP version.

Adapters turn OCPP payloads into these; the fleet service turns them into stored facts and a
reply. Timestamps are the charger's claim (may be missing or skewed); evota also records when
it received each event.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class Registration(enum.StrEnum):
    ACCEPTED = "Accepted"
    PENDING = "Pending"
    REJECTED = "Rejected"


@dataclass(frozen=True, slots=True)
class Booted:
    vendor: str
    model: str
    serial_number: str | None = None
    box_serial_number: str | None = None
    firmware_version: str | None = None
    iccid: str | None = None
    imsi: str | None = None
    meter_type: str | None = None
    meter_serial_number: str | None = None
    reason: str | None = None


@dataclass(slots=True)
class HeartbeatReceived:
    pass


@dataclass(slots=True)  # not frozen: built for every StatusNotification, frozen costs more
class StatusReported:
    """``connector_id`` is the 1.6 connector, or the 2.0.1 EVSE id; ``connector`` is the
    connector on that EVSE (2.0.1 only), so EVSEs with several connectors can be merged."""

    connector_id: int
    status: str
    error_code: str
    info: str | None = None
    vendor_error_code: str | None = None
    timestamp: datetime | None = None
    connector: int | None = None


@dataclass(frozen=True, slots=True)
class MeterSampled:
    connector_id: int
    transaction_id: int | None
    energy_wh: float | None
    timestamp: datetime | None


@dataclass(frozen=True, slots=True)
class AuthorizeRequested:
    id_tag: str
    token_type: str | None = None  # 2.0.1 idToken type (ISO14443, Central, ...)


@dataclass(frozen=True, slots=True)
class SessionStarted:
    connector_id: int
    id_tag: str
    meter_start_wh: int
    timestamp: datetime | None
    reservation_id: int | None = None


@dataclass(frozen=True, slots=True)
class SessionStopped:
    transaction_id: int
    meter_stop_wh: int
    timestamp: datetime | None
    reason: str | None = None
    id_tag: str | None = None


@dataclass(slots=True)  # not frozen: built for every TransactionEvent
class TransactionReported:
    """A 2.0.1 TransactionEvent. The charger names the transaction (``transaction_id``);
    ``connector_id`` is the EVSE id when the charger said it; ``energy_wh`` is the last
    Energy.Active.Import.Register sample of the message, in Wh."""

    event_type: str  # Started | Updated | Ended
    transaction_id: str
    connector_id: int | None
    timestamp: datetime | None
    trigger_reason: str
    seq_no: int
    energy_wh: float | None = None
    id_token: str | None = None
    token_type: str | None = None
    stopped_reason: str | None = None
    charging_state: str | None = None
    remote_start_id: int | None = None
    offline: bool = False


@dataclass(frozen=True, slots=True)
class MonitoredEvent:
    """One eventData item of a 2.0.1 NotifyEvent: a component's variable changed or alerted."""

    event_id: int
    component: str
    variable: str
    actual_value: str
    trigger: str
    timestamp: datetime | None
    evse_id: int | None = None
    connector_id: int | None = None
    cleared: bool | None = None
    tech_code: str | None = None
    tech_info: str | None = None
    transaction_id: str | None = None


@dataclass(frozen=True, slots=True)
class EventsNotified:
    """A 2.0.1 NotifyEvent message (``tbc``: more parts of the same report follow)."""

    seq_no: int
    generated_at: datetime | None
    events: tuple[MonitoredEvent, ...]
    tbc: bool = False


@dataclass(frozen=True, slots=True)
class ReportReceived:
    """One part of a 2.0.1 NotifyReport (the answer to GetBaseReport, in ``seq_no`` parts).
    ``items`` are ``{"component", "variable", ...}`` dicts as stored, one per variable."""

    request_id: int
    seq_no: int
    generated_at: datetime | None
    items: tuple[dict[str, Any], ...]
    tbc: bool = False


@dataclass(frozen=True, slots=True)
class FirmwareStatusReported:
    status: str
    request_id: int | None = None


@dataclass(frozen=True, slots=True)
class DiagnosticsStatusReported:
    status: str


@dataclass(frozen=True, slots=True)
class LogStatusReported:
    status: str
    request_id: int | None = None


@dataclass(frozen=True, slots=True)
class SecurityEventReported:
    type: str
    timestamp: datetime | None
    tech_info: str | None = None


@dataclass(frozen=True, slots=True)
class DataTransferReceived:
    vendor_id: str
    message_id: str | None = None
    data: Any = None  # a string in 1.6, any JSON value in 2.0.1


@dataclass(frozen=True, slots=True)
class CertificateSigningRequested:
    csr: str
    certificate_type: str | None = None  # 2.0.1: ChargingStationCertificate | V2GCertificate


ChargerEvent = (
    Booted
    | HeartbeatReceived
    | StatusReported
    | MeterSampled
    | AuthorizeRequested
    | SessionStarted
    | SessionStopped
    | TransactionReported
    | EventsNotified
    | ReportReceived
    | FirmwareStatusReported
    | DiagnosticsStatusReported
    | LogStatusReported
    | SecurityEventReported
    | DataTransferReceived
    | CertificateSigningRequested
)


@dataclass(frozen=True, slots=True)
class BootReply:
    registration: Registration
    interval: int
    current_time: datetime


@dataclass(slots=True)
class TimeReply:
    current_time: datetime


@dataclass(frozen=True, slots=True)
class IdTagReply:
    status: str  # Accepted | Blocked | Expired | Invalid | ConcurrentTx | NotAtThisLocation
    transaction_id: int | None = None
    expires_at: datetime | None = None  # the token's expiry (1.6 expiryDate)
    parent_id: str | None = None  # its group (1.6 parentIdTag, 2.0.1 groupIdToken)


@dataclass(frozen=True, slots=True)
class StatusReply:
    status: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Ack:
    """An empty confirmation."""


Reply = BootReply | TimeReply | IdTagReply | StatusReply | Ack

REPLY_TYPES = frozenset({BootReply, TimeReply, IdTagReply, StatusReply, Ack})
