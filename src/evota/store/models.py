"""Database tables. One module so migrations and queries share a single source of truth."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BigInteger ids that are still SQLite rowid aliases (autoincrement) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are stored and returned as aware UTC; SQLite would otherwise drop the zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


TS = UTCDateTime()


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Site(Base):
    __tablename__ = "sites"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    region: Mapped[str | None] = mapped_column(String(100))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(TS)
    # when playbooks may act on its chargers (rollout.policy windows as dicts; None: any time)
    allowed_hours: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)


class Charger(Base):
    __tablename__ = "chargers"
    id: Mapped[str] = mapped_column(String(48), primary_key=True)  # OCPP identity
    auth_salt: Mapped[str] = mapped_column(String(64))
    auth_hash: Mapped[str] = mapped_column(String(64))
    security_profile: Mapped[int] = mapped_column(Integer, default=1)
    registration: Mapped[str] = mapped_column(String(16), index=True)
    site_id: Mapped[str | None] = mapped_column(ForeignKey("sites.id"), index=True)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    vendor: Mapped[str | None] = mapped_column(String(50), index=True)
    model: Mapped[str | None] = mapped_column(String(50), index=True)
    serial_number: Mapped[str | None] = mapped_column(String(50))
    box_serial_number: Mapped[str | None] = mapped_column(String(50))
    hardware_revision: Mapped[str | None] = mapped_column(String(50))
    firmware_version: Mapped[str | None] = mapped_column(String(50), index=True)
    iccid: Mapped[str | None] = mapped_column(String(20))
    imsi: Mapped[str | None] = mapped_column(String(20))
    meter_type: Mapped[str | None] = mapped_column(String(25))
    meter_serial_number: Mapped[str | None] = mapped_column(String(25))
    protocol: Mapped[str | None] = mapped_column(String(16))
    # How this charger takes firmware ("signed" or "plain"), learned from its answers.
    firmware_delivery: Mapped[str | None] = mapped_column(String(8))
    connected: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    last_seen: Mapped[datetime | None] = mapped_column(TS)
    last_boot_at: Mapped[datetime | None] = mapped_column(TS)
    created_at: Mapped[datetime] = mapped_column(TS)


class Connector(Base):
    """Latest known status of each connector (connector 0 is the charger as a whole)."""

    __tablename__ = "connectors"
    charger_id: Mapped[str] = mapped_column(
        ForeignKey("chargers.id", ondelete="CASCADE"), primary_key=True
    )
    connector_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(String(32))
    error_code: Mapped[str] = mapped_column(String(32))
    info: Mapped[str | None] = mapped_column(String(50))
    vendor_error_code: Mapped[str | None] = mapped_column(String(50))
    updated_at: Mapped[datetime] = mapped_column(TS)


class ConnectorStatus(Base):
    """Connector status changes, as received (repeats of the same status are not rows)."""

    __tablename__ = "connector_status_history"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    charger_id: Mapped[str] = mapped_column(String(48))
    connector_id: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    error_code: Mapped[str] = mapped_column(String(32))
    info: Mapped[str | None] = mapped_column(String(50))
    vendor_error_code: Mapped[str | None] = mapped_column(String(50))
    charger_timestamp: Mapped[datetime | None] = mapped_column(TS)
    received_at: Mapped[datetime] = mapped_column(TS)
    # Per-charger history is read newest-first by id (ids grow with time). An index on
    # charger_id alone (SQLite and PostgreSQL keep the row id with each entry) costs a third
    # less per insert than (charger_id, received_at); inserts are the gateway's hot write.
    __table_args__ = (Index("ix_status_history_charger", "charger_id"),)


class ChargingSession(Base):
    """One OCPP transaction; ``id`` is the transactionId given to a 1.6 charger. A 2.0.1
    charger names its transactions itself: that id is ``external_id`` (unique per charger),
    and ``connector_id`` is the EVSE id (docs/ocpp.md, "EVSEs and connectors")."""

    __tablename__ = "sessions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    charger_id: Mapped[str] = mapped_column(String(48), index=True)
    connector_id: Mapped[int] = mapped_column(Integer)
    id_tag: Mapped[str] = mapped_column(String(36))  # 1.6 idTag (20) or 2.0.1 idToken (36)
    meter_start_wh: Mapped[int] = mapped_column(BigInteger)
    meter_last_wh: Mapped[float | None]
    meter_stop_wh: Mapped[int | None] = mapped_column(BigInteger)
    started_at: Mapped[datetime] = mapped_column(TS)
    stopped_at: Mapped[datetime | None] = mapped_column(TS)
    stop_reason: Mapped[str | None] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16), default="active", index=True)
    external_id: Mapped[str | None] = mapped_column(String(36))  # 2.0.1 transactionId
    __table_args__ = (
        UniqueConstraint("charger_id", "external_id", name="uq_sessions_charger_external"),
    )


class ChargerEvent(Base):
    """What a charger reported, as received: firmware, diagnostics and log status, security
    events, boots, data transfers, connects and disconnects."""

    __tablename__ = "charger_events"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    charger_id: Mapped[str] = mapped_column(String(48))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[int | None] = mapped_column(BigInteger)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    charger_timestamp: Mapped[datetime | None] = mapped_column(TS)
    received_at: Mapped[datetime] = mapped_column(TS)
    __table_args__ = (
        Index("ix_charger_events_charger_time", "charger_id", "received_at"),
        Index("ix_charger_events_kind_time", "kind", "received_at"),
    )


class ChargerDay(Base):
    """One charger's UTC day, rolled up from status history, events, sessions and jobs
    (evota.evidence.daily); ``day`` counts days since 1970-01-01, so windows around an
    update day are integer arithmetic on every database. ``end_state`` carries what the
    next day starts from; ``complete`` is false for today's partial row."""

    __tablename__ = "charger_days"
    charger_id: Mapped[str] = mapped_column(String(48), primary_key=True)
    day: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    complete: Mapped[bool] = mapped_column(Boolean)
    firmware_version: Mapped[str | None] = mapped_column(String(50))
    version_changed: Mapped[bool] = mapped_column(Boolean)
    vendor: Mapped[str | None] = mapped_column(String(50))
    model: Mapped[str | None] = mapped_column(String(50))
    site_id: Mapped[str | None] = mapped_column(String(64))
    observed_s: Mapped[float] = mapped_column()
    connected_s: Mapped[float] = mapped_column()
    available_s: Mapped[float] = mapped_column()
    offline_episodes: Mapped[int] = mapped_column(Integer)
    reconnects: Mapped[int] = mapped_column(Integer)
    faults: Mapped[int] = mapped_column(Integer)
    faults_by_code: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    sessions: Mapped[int] = mapped_column(Integer)
    failed_sessions: Mapped[int] = mapped_column(Integer)
    repairs: Mapped[int] = mapped_column(Integer)
    repair_s: Mapped[float] = mapped_column()
    repair_s2: Mapped[float] = mapped_column()  # sum of squared repair times, for the MTTR CI
    end_state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    __table_args__ = (
        Index("ix_charger_days_day", "day"),
        # Covers the KPI sums of one version over days: an index-only scan (docs/kpis.md).
        Index(
            "ix_charger_days_version_day",
            "firmware_version",
            "day",
            "vendor",
            "model",
            "complete",
            "observed_s",
            "connected_s",
            "available_s",
            "offline_episodes",
            "reconnects",
            "faults",
            "sessions",
            "failed_sessions",
            "repairs",
            "repair_s",
            "repair_s2",
            "charger_id",
        ),
    )


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(32))  # "admin" (bootstrap) or "user"
    # A user's token acts as that user, narrowed to ``roles`` and ``sites`` (empty = all).
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    sites: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(TS)
    expires_at: Mapped[datetime | None] = mapped_column(TS)
    revoked_at: Mapped[datetime | None] = mapped_column(TS)
    last_used_at: Mapped[datetime | None] = mapped_column(TS)


class FirmwareVendor(Base):
    """Per-vendor firmware policy; a vendor without a row refuses unsigned images."""

    __tablename__ = "firmware_vendors"
    vendor: Mapped[str] = mapped_column(String(50), primary_key=True)
    allow_unsigned: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(TS)


class TrustedRoot(Base):
    """A manufacturer root certificate that firmware signing certificates must chain to."""

    __tablename__ = "firmware_trusted_roots"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    vendor: Mapped[str] = mapped_column(String(50), index=True)
    certificate: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA-256 of the DER
    subject: Mapped[str] = mapped_column(String(500))
    not_after: Mapped[datetime] = mapped_column(TS)
    created_at: Mapped[datetime] = mapped_column(TS)
    __table_args__ = (UniqueConstraint("vendor", "fingerprint", name="uq_trusted_root"),)


class Firmware(Base):
    """One firmware image: the bytes live in the content-addressed store under ``sha256``."""

    __tablename__ = "firmware"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    vendor: Mapped[str] = mapped_column(String(50), index=True)
    version: Mapped[str] = mapped_column(String(50))
    models: Mapped[list[str]] = mapped_column(JSON, default=list)
    hardware_revisions: Mapped[list[str]] = mapped_column(JSON, default=list)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    filename: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), index=True)
    state_reason: Mapped[str | None] = mapped_column(String(500))
    signature: Mapped[str | None] = mapped_column(Text)
    signing_certificate: Mapped[str | None] = mapped_column(Text)
    release_notes: Mapped[str] = mapped_column(Text, default="")
    min_current_version: Mapped[str | None] = mapped_column(String(50))
    supersedes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(TS)
    updated_at: Mapped[datetime] = mapped_column(TS)
    # Where an imported image came from (evota.firmware.importer); NULL for uploads.
    source_url: Mapped[str | None] = mapped_column(String(2048))
    source_host: Mapped[str | None] = mapped_column(String(255))
    source_address: Mapped[str | None] = mapped_column(String(64))
    source_certificate_sha256: Mapped[str | None] = mapped_column(String(64))
    fetched_at: Mapped[datetime | None] = mapped_column(TS)
    fetched_by: Mapped[str | None] = mapped_column(String(100))
    __table_args__ = (UniqueConstraint("vendor", "version", name="uq_firmware_vendor_version"),)


class Job(Base):
    """One charger's firmware update. ``id`` is also the OCPP requestId of signed updates."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    charger_id: Mapped[str] = mapped_column(String(48), index=True)
    firmware_id: Mapped[str] = mapped_column(ForeignKey("firmware.id"), index=True)
    campaign_id: Mapped[str | None] = mapped_column(String(36), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="update")  # update | rollback
    state: Mapped[str] = mapped_column(String(24), index=True)
    failure: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[str | None] = mapped_column(String(500))
    target_version: Mapped[str] = mapped_column(String(50))
    previous_version: Mapped[str | None] = mapped_column(String(50))
    method: Mapped[str | None] = mapped_column(String(8))  # signed | plain, once chosen
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    retrieve_at: Mapped[datetime | None] = mapped_column(TS)
    deadline: Mapped[datetime | None] = mapped_column(TS)
    allow_downgrade: Mapped[bool] = mapped_column(Boolean, default=False)
    bytes_served: Mapped[int] = mapped_column(BigInteger, default=0)
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(TS)
    updated_at: Mapped[datetime] = mapped_column(TS)
    finished_at: Mapped[datetime | None] = mapped_column(TS)


class JobEvent(Base):
    """A job's history: every state change, what was sent, and what the charger said."""

    __tablename__ = "job_events"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(TS)
    event: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(24))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Campaign(Base):
    """The rollout of one firmware to a target set, in waves; definitions are kept as JSON
    exactly as the pure engine reads them (evota.rollout.policy)."""

    __tablename__ = "campaigns"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    firmware_id: Mapped[str] = mapped_column(ForeignKey("firmware.id"), index=True)
    state: Mapped[str] = mapped_column(String(24), index=True)
    state_reason: Mapped[str | None] = mapped_column(String(500))
    target: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    wave_specs: Mapped[list[Any]] = mapped_column(JSON, default=list)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    waves: Mapped[list[list[str]]] = mapped_column(JSON, default=list)  # charger ids per wave
    excluded: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    current_wave: Mapped[int] = mapped_column(Integer, default=0)
    wave_started_at: Mapped[datetime | None] = mapped_column(TS)
    wave_done_at: Mapped[datetime | None] = mapped_column(TS)
    gate_go: Mapped[bool] = mapped_column(Boolean, default=False)
    rollback: Mapped[bool] = mapped_column(Boolean, default=False)
    # After a resume, auto-stop counts only outcomes from here (the old ones stopped it once).
    stop_counting_from: Mapped[datetime | None] = mapped_column(TS)
    # Gate groups (models or sites) a gate held, and why (evota.rollout.gate).
    held_groups: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    start_at: Mapped[datetime | None] = mapped_column(TS)  # when a scheduled campaign starts
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(TS)
    updated_at: Mapped[datetime] = mapped_column(TS)
    started_at: Mapped[datetime | None] = mapped_column(TS)
    finished_at: Mapped[datetime | None] = mapped_column(TS)


class CampaignEvent(Base):
    """A campaign's history: every state change with its reason, wave advances, notes."""

    __tablename__ = "campaign_events"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(TS)
    event: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(24))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class GateEvaluation(Base):
    """Every gate evaluation with the numbers it used (by model and site)."""

    __tablename__ = "gate_evaluations"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    wave: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(TS)
    passed: Mapped[bool] = mapped_column(Boolean)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# -- operators, access and accountability -------------------------------------------------


class User(Base):
    """An operator. MFA secrets and recovery codes never leave the database."""

    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    mfa_secret: Mapped[str | None] = mapped_column(String(64))  # pending or confirmed
    mfa_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    mfa_last_step: Mapped[int | None] = mapped_column(BigInteger)  # replay protection
    recovery_codes: Mapped[list[str]] = mapped_column(JSON, default=list)  # SHA-256 digests
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(TS)
    last_login_at: Mapped[datetime | None] = mapped_column(TS)
    created_at: Mapped[datetime] = mapped_column(TS)
    updated_at: Mapped[datetime] = mapped_column(TS)


class Grant(Base):
    """One role for one user, optionally limited to sites, regions or charger tags."""

    __tablename__ = "grants"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(32))
    sites: Mapped[list[str]] = mapped_column(JSON, default=list)
    regions: Mapped[list[str]] = mapped_column(JSON, default=list)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)


class LoginSession(Base):
    """A logged-in operator (console cookie or the bearer token ``/auth/login`` returns)."""

    __tablename__ = "login_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    mfa: Mapped[bool] = mapped_column(Boolean, default=False)  # second factor given
    created_at: Mapped[datetime] = mapped_column(TS)
    last_seen_at: Mapped[datetime] = mapped_column(TS)
    expires_at: Mapped[datetime] = mapped_column(TS)  # absolute limit; idle limit from settings
    revoked_at: Mapped[datetime | None] = mapped_column(TS)


class AuditEntry(Base):
    """The append-only, hash-chained audit log (evota.audit.chain defines the hash)."""

    __tablename__ = "audit_log"
    # ``id`` is the storage order; ``seq`` is the chain position, so rows whose seq values
    # were swapped read back out of order and verify reports them as reordered.
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    at: Mapped[datetime] = mapped_column(TS, index=True)
    actor: Mapped[str] = mapped_column(String(100), index=True)
    role: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(String(1000))
    request_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    # Canonical-form version (evota.audit.chain.canonical): 1 = sealed before charger ids
    # were hashed, 2 = ``chargers`` is part of the hash and must match the link rows.
    v: Mapped[int] = mapped_column(Integer, server_default="1")
    chargers: Mapped[list[str] | None] = mapped_column(JSON)


class AuditHead(Base):
    """The newest entry (seq, hash) under an HMAC whose key is in the data directory, not in
    the database: deleting the newest entries cannot roll it back unnoticed. One row."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(TS)


class AuditCharger(Base):
    """Which chargers an audit entry concerns, for filtering by charger."""

    __tablename__ = "audit_chargers"
    entry_id: Mapped[int] = mapped_column(
        ForeignKey("audit_log.id", ondelete="CASCADE"), primary_key=True
    )
    charger_id: Mapped[str] = mapped_column(String(48), primary_key=True, index=True)


class AuditCheckpoint(Base):
    """Where a pruned prefix of the audit log ended (evota.audit.archive): entries
    ``prev_seq``+1..``seq`` went to the archive ``archive`` (its body's SHA-256), and the
    remaining chain starts after ``seq``/``hash``. ``mac`` is the HMAC with the audit head
    key over all of it, so a checkpoint cannot be written without the key."""

    __tablename__ = "audit_checkpoints"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    hash: Mapped[str] = mapped_column(String(64))
    prev_seq: Mapped[int] = mapped_column(BigInteger)
    prev_hash: Mapped[str] = mapped_column(String(64))
    archive: Mapped[str] = mapped_column(String(255))
    archive_sha256: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(TS)


class Approval(Base):
    """A four-eyes request: ``action`` with ``payload`` runs once a second operator approves."""

    __tablename__ = "approvals"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    action: Mapped[str] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(String(500))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    charger_count: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), index=True)
    requested_by: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(TS)
    expires_at: Mapped[datetime] = mapped_column(TS)
    decided_by: Mapped[str | None] = mapped_column(String(100))
    decided_at: Mapped[datetime | None] = mapped_column(TS)
    decision_note: Mapped[str | None] = mapped_column(String(1000))
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Operation(Base):
    """One command or configuration change applied to many chargers in stages."""

    __tablename__ = "operations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    command: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    target: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    charger_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    stages: Mapped[list[int]] = mapped_column(JSON, default=list)  # sizes, in order
    max_failure_rate: Mapped[float] = mapped_column(default=0.2)
    rate_per_second: Mapped[float] = mapped_column(default=10.0)
    state: Mapped[str] = mapped_column(String(24), index=True)
    state_reason: Mapped[str | None] = mapped_column(String(500))
    current_stage: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str] = mapped_column(String(1000), default="")
    approval_id: Mapped[str | None] = mapped_column(String(36))
    profile_id: Mapped[str | None] = mapped_column(String(36))
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(TS)
    updated_at: Mapped[datetime] = mapped_column(TS)
    started_at: Mapped[datetime | None] = mapped_column(TS)
    finished_at: Mapped[datetime | None] = mapped_column(TS)


class OperationResult(Base):
    """One charger's part in an operation: what it answered, or why it failed."""

    __tablename__ = "operation_results"
    operation_id: Mapped[str] = mapped_column(
        ForeignKey("operations.id", ondelete="CASCADE"), primary_key=True
    )
    charger_id: Mapped[str] = mapped_column(String(48), primary_key=True)
    stage: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # pending|succeeded|failed|skipped
    status: Mapped[str | None] = mapped_column(String(64))  # the charger's answer
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime | None] = mapped_column(TS)


class ConfigProfile(Base):
    """Desired configuration (key -> value) for the chargers a target query selects."""

    __tablename__ = "config_profiles"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    target: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    settings: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(TS)
    updated_at: Mapped[datetime] = mapped_column(TS)


class ChargerSetting(Base):
    """A charger's configuration as it last reported it (GetConfiguration)."""

    __tablename__ = "charger_settings"
    charger_id: Mapped[str] = mapped_column(
        ForeignKey("chargers.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[str | None] = mapped_column(String(500))
    readonly: Mapped[bool] = mapped_column(Boolean, default=False)
    fetched_at: Mapped[datetime] = mapped_column(TS)


class ChargerFile(Base):
    """A diagnostics or log file a charger uploaded to evota."""

    __tablename__ = "charger_files"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    charger_id: Mapped[str] = mapped_column(String(48), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # diagnostics | log
    request_id: Mapped[int | None] = mapped_column(BigInteger)
    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(TS)


class Alert(Base):
    """An anomaly rule that fired: shown in the console, counted in metrics, audited."""

    __tablename__ = "alerts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rule: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(100))  # charger id or operator name
    message: Mapped[str] = mapped_column(String(500))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(TS, index=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(100))
    acknowledged_at: Mapped[datetime | None] = mapped_column(TS)


class IdToken(Base):
    """An id token (RFID card, app or key code) and whether it may charge: the token store
    Authorize and transactions are answered from (evota.fleet.tokens, docs/id-tokens.md)."""

    __tablename__ = "id_tokens"
    id_token: Mapped[str] = mapped_column(String(36), primary_key=True)  # 1.6 idTag: 20
    type: Mapped[str | None] = mapped_column(String(20))  # 2.0.1 IdTokenEnumType; None: any
    status: Mapped[str] = mapped_column(String(16))  # Accepted | Blocked | Expired | Invalid
    expires_at: Mapped[datetime | None] = mapped_column(TS)
    parent_id: Mapped[str | None] = mapped_column(String(36))  # parentIdTag / groupIdToken
    sites: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: every site
    created_at: Mapped[datetime] = mapped_column(TS)
    updated_at: Mapped[datetime] = mapped_column(TS)


class LocalAuthList(Base):
    """The local authorization list a charger last accepted from evota (SendLocalList):
    its version and entries, so the next sync can send only the differences."""

    __tablename__ = "local_auth_lists"
    charger_id: Mapped[str] = mapped_column(
        ForeignKey("chargers.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer)
    entries: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    synced_at: Mapped[datetime] = mapped_column(TS)


class Playbook(Base):
    """A self-healing playbook (evota.playbooks.spec): the parsed spec as JSON, its state.
    ``version`` grows by one on every change, so runs and audit entries name what ran."""

    __tablename__ = "playbooks"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # spec.to_dict
    spec_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the canonical spec
    suspended_reason: Mapped[str | None] = mapped_column(String(500))  # circuit breaker
    suspended_at: Mapped[datetime | None] = mapped_column(TS)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(TS)
    updated_by: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(TS)


class PlaybookRun(Base):
    """One run of a playbook version on one charger (and connector) for one fault: where it
    stands and a bounded log of what it did, or in dry-run would have done."""

    __tablename__ = "playbook_runs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    playbook: Mapped[str] = mapped_column(String(64), index=True)
    playbook_version: Mapped[int] = mapped_column(Integer)
    charger_id: Mapped[str] = mapped_column(String(48), index=True)
    connector_id: Mapped[int | None] = mapped_column(Integer)
    site_id: Mapped[str | None] = mapped_column(String(64))
    fault_key: Mapped[str] = mapped_column(String(200))
    trigger: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(24), index=True)
    step_index: Mapped[int] = mapped_column(Integer, default=0)
    outcome: Mapped[str | None] = mapped_column(String(24))  # resolved | escalated | ...
    reason: Mapped[str | None] = mapped_column(String(500))
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    wait_until: Mapped[datetime | None] = mapped_column(TS)  # deadline of the current wait
    approval_id: Mapped[str | None] = mapped_column(String(36))
    started_at: Mapped[datetime] = mapped_column(TS, index=True)
    updated_at: Mapped[datetime] = mapped_column(TS)
    ended_at: Mapped[datetime | None] = mapped_column(TS)
    log: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # bounded


class VendorProfile(Base):
    """Known behaviour of a vendor's chargers, optionally one model and firmware range
    (evota.fleet.vendors). ``scope_key`` is the case-folded scope: one profile per scope."""

    __tablename__ = "vendor_profiles"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope_key: Mapped[str] = mapped_column(String(300), unique=True)
    vendor: Mapped[str] = mapped_column(String(50), index=True)
    model: Mapped[str | None] = mapped_column(String(50))
    firmware_min: Mapped[str | None] = mapped_column(String(50))
    firmware_max: Mapped[str | None] = mapped_column(String(50))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)  # vendors.to_dict
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(TS)
    updated_by: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(TS)


class FirmwareFeed(Base):
    """A vendor's release feed (evota.firmware.feeds): a JSON index of images, checked for
    versions the repository lacks, which are imported as drafts. ``refused`` remembers
    entries refused for their content (version → sha256), so they are not fetched again."""

    __tablename__ = "firmware_feeds"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    vendor: Mapped[str] = mapped_column(String(50))
    url: Mapped[str] = mapped_column(String(2048))
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(TS)
    checked_at: Mapped[datetime | None] = mapped_column(TS)
    last_result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    refused: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)


class ChargerCertificate(Base):
    """A certificate the charger CA signed for a charger (SignCertificate → CertificateSigned,
    evota.control.certificates) and what the charger answered (``status``: ``sent`` until it
    does, then its status word or ``error:<reason>``)."""

    __tablename__ = "charger_certificates"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    charger_id: Mapped[str] = mapped_column(String(48))
    certificate_type: Mapped[str] = mapped_column(String(40))
    serial: Mapped[str] = mapped_column(String(64))  # hex
    sha256: Mapped[str] = mapped_column(String(64))  # fingerprint of the DER
    subject: Mapped[str] = mapped_column(String(300))
    key: Mapped[str] = mapped_column(String(16))  # "EC P-256", "RSA 2048"
    not_before: Mapped[datetime] = mapped_column(TS)
    not_after: Mapped[datetime] = mapped_column(TS)
    certificate: Mapped[str] = mapped_column(Text)  # PEM
    status: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TS)
    answered_at: Mapped[datetime | None] = mapped_column(TS)
    __table_args__ = (
        Index("ix_charger_certificates_charger", "charger_id", "created_at"),
        Index("ix_charger_certificates_not_after", "not_after"),
    )


class ChargerInstalledCertificate(Base):
    """A certificate a charger reported holding (GetInstalledCertificateIds), replaced as a
    whole at every inventory. ``not_after``/``subject``/``known_as`` are filled when evota
    knows the certificate (one it signed, its charger CA, its server chain), else null."""

    __tablename__ = "charger_installed_certificates"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    charger_id: Mapped[str] = mapped_column(String(48))
    certificate_type: Mapped[str] = mapped_column(String(40))
    hash_algorithm: Mapped[str] = mapped_column(String(8))
    issuer_name_hash: Mapped[str] = mapped_column(String(128))
    issuer_key_hash: Mapped[str] = mapped_column(String(128))
    serial: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(300))
    not_after: Mapped[datetime | None] = mapped_column(TS)
    known_as: Mapped[str | None] = mapped_column(String(32))
    seen_at: Mapped[datetime] = mapped_column(TS)
    __table_args__ = (
        Index("ix_charger_installed_certificates_charger", "charger_id"),
        Index("ix_charger_installed_certificates_not_after", "not_after"),
    )


class ChargerCertificateCheck(Base):
    """When a charger's certificate inventory was last asked for and how it went (``ok``,
    ``unsupported``: a 1.6 charger without the security extension, never asked again at boot,
    or ``error:<reason>``)."""

    __tablename__ = "charger_certificate_checks"
    charger_id: Mapped[str] = mapped_column(String(48), primary_key=True)
    checked_at: Mapped[datetime] = mapped_column(TS)
    outcome: Mapped[str] = mapped_column(String(64))


class ChargerKeyChange(Base):
    """A charger password change (issue 16 §8): the new key evota accepts besides the stored
    one while ``state`` is ``sending`` or ``accepted`` and ``until`` has not passed; it becomes
    the charger's key only when the charger connects with it (``active``). ``rejected``,
    ``expired`` and ``failed`` leave the old key in place."""

    __tablename__ = "charger_key_changes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    charger_id: Mapped[str] = mapped_column(String(48))
    salt: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    until: Mapped[datetime] = mapped_column(TS)
    actor: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(TS)
    finished_at: Mapped[datetime | None] = mapped_column(TS)
    detail: Mapped[str | None] = mapped_column(String(200))
    __table_args__ = (Index("ix_charger_key_changes_charger", "charger_id", "state"),)


class RootRotation(Base):
    """A CSMS root rotation (issue 16 §7, evota.pki.rotation): ``installing`` the new root on
    ``charger_ids`` (bulk operation ``install_operation_id``), ``switched`` to a server
    certificate under it, ``removing`` the old root (``remove_operation_id``), ``finished``;
    ``stopped`` when an operator ended it before the switch."""

    __tablename__ = "root_rotations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    new_root: Mapped[str] = mapped_column(Text)
    old_root: Mapped[str] = mapped_column(Text)
    charger_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    min_share: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(1000))
    install_operation_id: Mapped[str | None] = mapped_column(String(36))
    remove_operation_id: Mapped[str | None] = mapped_column(String(36))
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(TS)
    switched_at: Mapped[datetime | None] = mapped_column(TS)
    finished_at: Mapped[datetime | None] = mapped_column(TS)
    __table_args__ = (Index("ix_root_rotations_state", "state"),)


class ClusterLeader(Base):
    """The runner leader's fencing token (issue 15, evota.cluster.leader): one row (id 1);
    every takeover increments ``token`` and names the new holder's node key."""

    __tablename__ = "cluster_leader"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token: Mapped[int] = mapped_column(BigInteger)
    node: Mapped[str] = mapped_column(String(120))
    since: Mapped[datetime] = mapped_column(TS)


class Switch(Base):
    """An operator switch that outlives a process (the playbooks' kill switch): what the
    runner leader reads when it starts, whichever node it is on."""

    __tablename__ = "switches"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    engaged: Mapped[bool] = mapped_column(Boolean)
    set_by: Mapped[str | None] = mapped_column(String(120))
    set_at: Mapped[datetime] = mapped_column(TS)
