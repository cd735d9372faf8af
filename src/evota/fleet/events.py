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
    connector_id: int
    status: str
    error_code: str
    info: str | None = None
    vendor_error_code: str | None = None
    timestamp: datetime | None = None


@dataclass(frozen=True, slots=True)
class MeterSampled:
    connector_id: int
    transaction_id: int | None
    energy_wh: float | None
    timestamp: datetime | None


@dataclass(frozen=True, slots=True)
class AuthorizeRequested:
    id_tag: str


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
    data: str | None = None


@dataclass(frozen=True, slots=True)
class CertificateSigningRequested:
    csr: str


ChargerEvent = (
    Booted
    | HeartbeatReceived
    | StatusReported
    | MeterSampled
    | AuthorizeRequested
    | SessionStarted
    | SessionStopped
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
    status: str  # Accepted | Blocked | Expired | Invalid | ConcurrentTx
    transaction_id: int | None = None


@dataclass(frozen=True, slots=True)
class StatusReply:
    status: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Ack:
    """An empty confirmation."""


Reply = BootReply | TimeReply | IdTagReply | StatusReply | Ack

REPLY_TYPES = frozenset({BootReply, TimeReply, IdTagReply, StatusReply, Ack})
