"""Turns charger events into stored facts and replies.

Fast events (heartbeat, status, meter values, notifications) are answered at once and written
behind by :class:`FleetWriter`; only StartTransaction waits for the database, because the
charger needs the transactionId the database assigns. A 2.0.1 TransactionEvent waits for it
only the first time evota hears of a transaction (to create or find its session); later
events of the transaction find the session id in memory and are written behind.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import structlog
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.clock import Clock
from evota.fleet import events as ev
from evota.fleet import key_changes, security_profiles
from evota.fleet.charger import ChargerState
from evota.fleet.credentials import hash_key, key_problem, verify_key
from evota.fleet.hardware import reported_revision
from evota.fleet.sessions import INTERRUPTING_REASONS
from evota.fleet.token_store import TokenAuthority
from evota.fleet.tokens import Decision
from evota.fleet.writer import FleetWriter
from evota.store.models import Charger as ChargerRow
from evota.store.models import ChargerKeyChange, ChargingSession

log = structlog.get_logger(__name__)

ACK = ev.Ack()

#: 2.0.1 stop reasons that also mean the charger side cut the session short (1.6's are in
#: evota.fleet.sessions); health gates count sessions ended so as interrupted.
INTERRUPTING_201 = frozenset({"ImmediateReset", "GroundFault", "OvercurrentFault", "PowerQuality"})
_INTERRUPTING = INTERRUPTING_REASONS | INTERRUPTING_201

#: Which connector's status an EVSE with several connectors shows (most telling first).
_EVSE_PRECEDENCE = {"Faulted": 0, "Occupied": 1, "Reserved": 2, "Unavailable": 3, "Available": 4}


def _id_tag_reply(decision: Decision, transaction_id: int | None = None) -> ev.IdTagReply:
    return ev.IdTagReply(decision.status, transaction_id, decision.expires_at, decision.parent_id)


def session_outcome(stop_reason: str | None) -> str:
    """``completed`` or ``interrupted``; a missing reason means ``Local`` (1.6 and 2.0.1)."""
    return "interrupted" if stop_reason in _INTERRUPTING else "completed"


def evse_status(connectors: Mapping[int, str]) -> tuple[int, str]:
    """``(connector, status)`` an EVSE shows: a fault or a session on any of its connectors
    outweighs the idle ones (2.0.1 reports status per connector; evota keeps it per EVSE)."""
    connector = min(connectors, key=lambda c: (_EVSE_PRECEDENCE.get(connectors[c], 5), c))
    return connector, connectors[connector]


@dataclass(frozen=True, slots=True)
class PendingReset:
    """A Reset the charger answered Scheduled (2.0.1 OnIdle): done at its next boot."""

    type: str
    scheduled_at: datetime
    done: Callable[[dict[str, Any]], None] | None = None


class FirmwareObserver(Protocol):
    """What firmware jobs need to hear from the fleet (implemented by the job runner)."""

    active: dict[str, Any]  # charger id -> unfinished job; checked before every call

    def booted(
        self, charger_id: str, firmware_version: str | None, reason: str | None = None
    ) -> None: ...
    def ready(self, charger_id: str) -> None: ...
    def firmware_status(self, charger_id: str, status: str, request_id: int | None) -> None: ...
    def faulted(self, charger_id: str, connector_id: int) -> None: ...
    def disconnected(self, charger_id: str) -> None: ...


class CertificateSigner(Protocol):
    """Answers a charger's SignCertificate at once (Accepted or Rejected; in a cluster after
    asking Redis) and signs in the background (implemented by evota.control.certificates)."""

    def sign_requested(
        self, charger_id: str, csr: str, certificate_type: str | None
    ) -> str | Awaitable[str]: ...


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    """``state`` when admitted; otherwise ``reason`` says why not, for the log only (the
    gateway answers every refusal alike, so a caller cannot tell an unknown id from a wrong key)."""

    state: ChargerState | None
    reason: str = ""
    # The key (or certificate) was right but the connection is below the charger's security
    # profile: answered 403 and recorded as a downgrade attempt.
    downgrade: bool = False


class FleetService:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        *,
        open_registration: bool = False,
        heartbeat_interval: int = 300,
        pending_interval: int = 60,
        last_seen_interval: float = 5.0,
        write_interval: float = 0.25,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self.open_registration = open_registration
        self.heartbeat_interval = heartbeat_interval
        self.pending_interval = pending_interval
        self.writer = FleetWriter(
            engine, clock, interval=write_interval, last_seen_interval=last_seen_interval
        )
        self.jobs: FirmwareObserver | None = None
        self.certificates: CertificateSigner | None = None  # the charger CA's SignCertificate
        # Called with the charger id when a charger boots and is accepted (must not block).
        self.ready_listeners: list[Callable[[str], None]] = []
        # Called with (charger id, vendor, model, firmware version) on every BootNotification,
        # the one message that reports them (the vendor profiles' view; must not block).
        self.boot_listeners: list[Callable[[str, str | None, str | None, str | None], None]] = []
        # Called with (charger id, type, techInfo, charger's timestamp) for every security
        # event a charger reports (the alert monitor's rules; must not block).
        self.security_listeners: list[Callable[[str, str, str | None, datetime | None], None]] = []
        # Called with (charger id, kind, connector id, status, error code) for every connector
        # status change ("status") and every charger event evota stores (kind: connected,
        # disconnected, boot, firmware_status, security_event, ...; status: the event's
        # status or type): the playbook engine's view (must not block, must not raise).
        self.charger_listeners: list[Callable[[str, str, int, str | None, str | None], None]] = []
        # Called with (charger id, change id) when a charger connects with the new key of a
        # pending password change, which is its only key from then on (must not block).
        self.key_listeners: list[Callable[[str, int], None]] = []
        # Called with (charger id, the profile its connection satisfies) for every admitted
        # connection: the profile upgrade watches for it (must not block).
        self.channel_listeners: list[Callable[[str, int], None]] = []
        # Charger id -> the profile it is being upgraded to (evota.control.profile_upgrades):
        # a connection on that profile is admitted as it will be after the upgrade (profile 3:
        # without a password), while the stored profile still admits the old way in.
        self.upgrading: dict[str, int] = {}
        # 2.0.1, per connected charger: its transactions (charger's id -> (session id,
        # EVSE id)) and the status of each connector of each EVSE.
        self._transactions: dict[str, dict[str, tuple[int, int]]] = {}
        self._connectors: dict[str, dict[int, dict[int, str]]] = {}
        self._resets: dict[str, PendingReset] = {}
        # Cluster mode (evota.cluster.resets): asked with (charger id, boot reason, now) at a
        # 2.0.1 boot with no reset pending here, since the Reset may have come from any node.
        self.reset_claim: Callable[[str, str | None, Any], None] | None = None
        # Who may charge: the token store in memory (evota.fleet.token_store); the runtime
        # loads it and sets the lab's accept-all and the webhook.
        self.tokens = TokenAuthority(engine, clock)

    # -- connection lifecycle --------------------------------------------------------------
    async def authenticate(
        self,
        identity: str,
        password: str | None,
        channel: security_profiles.Channel = security_profiles.PLAIN,
    ) -> AuthOutcome:
        """Admit a charger by its key and the connection's security (``password`` None: no
        Basic header, which only a profile-3 charger with a verified certificate may omit).
        The key is checked before the profile, so a refusal for a downgrade never tells an
        attacker without the key which identities exist."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        ChargerRow.auth_salt,
                        ChargerRow.auth_hash,
                        ChargerRow.registration,
                        ChargerRow.last_boot_at,
                        ChargerRow.site_id,
                        ChargerRow.security_profile,
                    ).where(ChargerRow.id == identity)
                )
            ).first()
        if row is None:
            if not self.open_registration or password is None:
                return AuthOutcome(None, "unknown charger")
            return await self._admit_unknown(identity, password)
        if password is not None:
            stored = verify_key(password, row.auth_salt, row.auth_hash)
            if not stored and not await self._new_key(identity, password):
                return AuthOutcome(None, "wrong authorization key")
        elif security_profiles.password_required(
            max(row.security_profile, self.upgrading.get(identity, 0)), channel
        ):
            return AuthOutcome(None, "no HTTP Basic credentials below security profile 3")
        below = security_profiles.downgrade(row.security_profile, channel)
        if below is not None:
            return AuthOutcome(None, below, downgrade=True)
        for listen in self.channel_listeners:
            listen(identity, channel.profile)
        state = ChargerState(
            id=identity,
            registration=ev.Registration(row.registration),
            booted=row.last_boot_at is not None
            or "last_boot_at" in self.writer.pending_charger_fields(identity),
            site_id=row.site_id,
        )
        return AuthOutcome(state)

    async def _new_key(self, identity: str, password: str) -> bool:
        """Whether ``password`` is the new key of a pending password change
        (:mod:`evota.fleet.key_changes`); if so it becomes the charger's only key now, and the
        key listeners hear of it. Read only when the stored key did not match."""
        now = self._clock.now()
        async with self._engine.begin() as conn:
            rows = (
                await conn.execute(
                    select(
                        ChargerKeyChange.id,
                        ChargerKeyChange.salt,
                        ChargerKeyChange.hash,
                        ChargerKeyChange.state,
                        ChargerKeyChange.until,
                    ).where(
                        ChargerKeyChange.charger_id == identity,
                        ChargerKeyChange.state.in_(key_changes.PENDING),
                    )
                )
            ).all()
            match = next(
                (
                    r
                    for r in rows
                    if key_changes.usable(r.state, r.until, now)
                    and verify_key(password, r.salt, r.hash)
                ),
                None,
            )
            if match is None:
                return False
            taken = await conn.execute(
                update(ChargerKeyChange)
                .where(
                    ChargerKeyChange.id == match.id,
                    ChargerKeyChange.state.in_(key_changes.PENDING),
                )
                .values(state="active", finished_at=now, detail="connected with the new key")
            )
            if taken.rowcount == 0:  # the deadline closed it a moment ago
                return False
            await conn.execute(
                update(ChargerRow)
                .where(ChargerRow.id == identity)
                .values(auth_salt=match.salt, auth_hash=match.hash)
            )
        log.info("charger connected with its new key", charger_id=identity)
        for listen in self.key_listeners:
            listen(identity, match.id)
        return True

    async def _admit_unknown(self, identity: str, password: str) -> AuthOutcome:
        """Open registration: remember the presented key (trust on first use), as Pending."""
        if key_problem(password):
            return AuthOutcome(None, "authorization key does not meet the key policy")
        salt, digest = hash_key(password)
        now = self._clock.now()
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(ChargerRow).values(
                        id=identity,
                        auth_salt=salt,
                        auth_hash=digest,
                        registration=ev.Registration.PENDING.value,
                        tags=[],
                        connected=False,
                        created_at=now,
                    )
                )
        except Exception:  # a concurrent first connection won the insert: authenticate again
            return await self.authenticate(identity, password)
        log.info("charger admitted as pending", charger_id=identity)
        return AuthOutcome(ChargerState(identity, ev.Registration.PENDING, booted=False))

    def downgrade_attempt(self, charger_id: str, reason: str, peer: str) -> None:
        """A charger's key was right but its connection below its security profile: stored
        as a security event and passed to the security listeners (the alert rule)."""
        now = self._clock.now()
        kind, event = "security_event", security_profiles.DOWNGRADE
        for listen in self.charger_listeners:
            listen(charger_id, kind, 0, event, None)
        self.writer.event(
            {
                "charger_id": charger_id,
                "kind": kind,
                "status": event,
                "request_id": None,
                "data": {"tech_info": reason, "peer": peer, "detected_by": "csms"},
                "charger_timestamp": None,
                "received_at": now,
            }
        )
        for listen_security in self.security_listeners:
            listen_security(charger_id, event, reason, None)

    def connected(self, state: ChargerState, protocol: str) -> None:
        now = self._clock.now()
        state.protocol = protocol
        self.writer.charger(state.id, connected=True, last_seen=now, protocol=protocol)
        self._event(state, "connected", now, data={"protocol": protocol})

    def disconnected(self, state: ChargerState, reason: str) -> None:
        now = self._clock.now()
        self.writer.charger(state.id, connected=False, last_seen=now)
        self._event(state, "disconnected", now, data={"reason": reason})
        self._transactions.pop(state.id, None)  # found again in the database when needed
        self._connectors.pop(state.id, None)
        if self.jobs is not None and state.id in self.jobs.active:
            self.jobs.disconnected(state.id)

    def seen(self, state: ChargerState) -> None:
        self.writer.seen(state.id, self._clock.now())

    # -- events ----------------------------------------------------------------------------
    def handle(self, state: ChargerState, event: ev.ChargerEvent) -> ev.Reply | Awaitable[ev.Reply]:
        now = self._clock.now()
        self.writer.seen(state.id, now)
        match event:
            case ev.HeartbeatReceived():
                return ev.TimeReply(now)
            case ev.StatusReported():
                self._status(state, event, now)
                return ACK
            case ev.MeterSampled():
                if event.transaction_id is not None and event.energy_wh is not None:
                    self.writer.session(
                        state.id, event.transaction_id, meter_last_wh=event.energy_wh
                    )
                return ev.Ack()
            case ev.Booted():
                return self._boot(state, event, now)
            case ev.AuthorizeRequested():
                return self._authorize(state, event.id_tag, event.token_type)
            case ev.TransactionReported():
                return self._transaction(state, event, now)
            case ev.SessionStarted():
                return self._start_session(state, event, now)
            case ev.SessionStopped():
                self.writer.session(
                    state.id,
                    event.transaction_id,
                    meter_stop_wh=event.meter_stop_wh,
                    meter_last_wh=event.meter_stop_wh,
                    stopped_at=event.timestamp or now,
                    stop_reason=event.reason or "Local",
                    outcome=session_outcome(event.reason),
                )
                return self._authorize(state, event.id_tag, None) if event.id_tag else ev.Ack()
            case ev.EventsNotified():
                for item in event.events:
                    self._event(
                        state,
                        "notify_event",
                        now,
                        f"{item.component}.{item.variable}"[:64],
                        None,
                        {
                            "event_id": item.event_id,
                            "actual_value": item.actual_value,
                            "trigger": item.trigger,
                            "evse_id": item.evse_id,
                            "connector_id": item.connector_id,
                            "cleared": item.cleared,
                            "tech_code": item.tech_code,
                            "tech_info": item.tech_info,
                            "transaction_id": item.transaction_id,
                            "seq_no": event.seq_no,
                        },
                        item.timestamp,
                    )
                return ACK
            case ev.ReportReceived():
                self._event(
                    state,
                    "report",
                    now,
                    "more" if event.tbc else "last",
                    event.request_id,
                    {"seq_no": event.seq_no, "items": list(event.items)},
                    event.generated_at,
                )
                revision = reported_revision(event.items)
                if revision is not None:  # the device model says it (evota.fleet.hardware)
                    self.writer.charger(state.id, hardware_revision=revision)
                return ACK
            case ev.FirmwareStatusReported():
                self._event(state, "firmware_status", now, event.status, event.request_id)
                if self.jobs is not None and state.id in self.jobs.active:
                    self.jobs.firmware_status(state.id, event.status, event.request_id)
                return ev.Ack()
            case ev.DiagnosticsStatusReported():
                self._event(state, "diagnostics_status", now, event.status)
                return ev.Ack()
            case ev.LogStatusReported():
                self._event(state, "log_status", now, event.status, event.request_id)
                return ev.Ack()
            case ev.SecurityEventReported():
                self._event(
                    state,
                    "security_event",
                    now,
                    event.type,
                    None,
                    {"tech_info": event.tech_info},
                    event.timestamp,
                )
                for listen in self.security_listeners:
                    listen(state.id, event.type, event.tech_info, event.timestamp)
                return ev.Ack()
            case ev.DataTransferReceived():
                self._event(
                    state,
                    "data_transfer",
                    now,
                    event.vendor_id,
                    None,
                    {"message_id": event.message_id, "data": event.data},
                )
                # No vendor extensions are registered yet: the spec's answer is UnknownVendorId.
                return ev.StatusReply("UnknownVendorId")
            case ev.CertificateSigningRequested():
                data = {"csr": event.csr, "certificate_type": event.certificate_type}
                status: str | Awaitable[str] = "Rejected"  # no charger CA: nothing signs
                if self.certificates is not None:
                    status = self.certificates.sign_requested(
                        state.id, event.csr, event.certificate_type
                    )
                if not isinstance(status, str):
                    return self._signing_answered(state, now, status, data)
                self._event(state, "sign_certificate", now, status, None, data)
                return ev.StatusReply(status)
        raise TypeError(f"unhandled event {event!r}")

    async def _signing_answered(
        self, state: ChargerState, now: Any, pending: Awaitable[str], data: dict[str, Any]
    ) -> ev.Reply:
        status = await pending
        self._event(state, "sign_certificate", now, status, None, data)
        return ev.StatusReply(status)

    def _boot(self, state: ChargerState, event: ev.Booted, now: Any) -> ev.BootReply:
        registration = state.registration
        fields: dict[str, Any] = {
            "vendor": event.vendor,
            "model": event.model,
            "serial_number": event.serial_number,
            "box_serial_number": event.box_serial_number,
            "iccid": event.iccid,
            "imsi": event.imsi,
            "meter_type": event.meter_type,
            "meter_serial_number": event.meter_serial_number,
            "last_boot_at": now,
        }
        if event.firmware_version is not None:
            fields["firmware_version"] = event.firmware_version
        self.writer.charger(state.id, **fields)
        state.booted = True
        for boot_listener in self.boot_listeners:
            boot_listener(state.id, event.vendor, event.model, event.firmware_version)
        self._event(
            state,
            "boot",
            now,
            registration.value,
            None,
            {
                "vendor": event.vendor,
                "model": event.model,
                "firmware_version": event.firmware_version,
                "reason": event.reason,
            },
        )
        reset = self._resets.pop(state.id, None)
        if reset is not None:
            self.reset_done(state.id, reset, event.reason, now)
        elif self.reset_claim is not None and state.protocol == "ocpp2.0.1":
            self.reset_claim(state.id, event.reason, now)  # cluster: pending on any node
        if self.jobs is not None and state.id in self.jobs.active:
            self.jobs.booted(state.id, event.firmware_version, event.reason)
            if registration is ev.Registration.ACCEPTED:
                self.jobs.ready(state.id)
        if registration is ev.Registration.ACCEPTED:
            for listener in self.ready_listeners:
                listener(state.id)
        interval = (
            self.heartbeat_interval
            if registration is ev.Registration.ACCEPTED
            else self.pending_interval
        )
        return ev.BootReply(registration, interval, now)

    def _status(self, state: ChargerState, event: ev.StatusReported, now: Any) -> None:
        if event.connector is not None:
            event = self._merge_connectors(state, event)
        current = (event.status, event.error_code)
        if state.connectors.get(event.connector_id) == current:
            return
        state.connectors[event.connector_id] = current
        if event.status == "Faulted" and self.jobs is not None and state.id in self.jobs.active:
            self.jobs.faulted(state.id, event.connector_id)
        for listen in self.charger_listeners:
            listen(state.id, "status", event.connector_id, event.status, event.error_code)
        self.writer.status(
            (
                state.id,
                event.connector_id,
                event.status,
                event.error_code,
                event.info,
                event.vendor_error_code,
                event.timestamp,
                now,
            )
        )

    def _merge_connectors(self, state: ChargerState, event: ev.StatusReported) -> ev.StatusReported:
        """2.0.1: the EVSE's status from the latest status of each of its connectors."""
        assert event.connector is not None
        evses = self._connectors.setdefault(state.id, {})
        connectors = evses.setdefault(event.connector_id, {})
        connectors[event.connector] = event.status
        if len(connectors) == 1:
            return event
        connector, status = evse_status(connectors)
        event.status = status
        event.error_code = "OtherError" if status == "Faulted" else "NoError"
        event.info = f"connector {connector}"
        return event

    # -- 2.0.1 transactions ------------------------------------------------------------------
    def reset_scheduled(
        self,
        charger_id: str,
        reset_type: str,
        done: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """A Reset was answered Scheduled: the next BootNotification completes it."""
        self._resets[charger_id] = PendingReset(reset_type, self._clock.now(), done)

    def reset_done(
        self, charger_id: str, reset: PendingReset, boot_reason: str | None, now: Any
    ) -> None:
        """The charger booted after a scheduled reset: the ``reset`` event, then ``done``."""
        done = {
            "type": reset.type,
            "scheduled_at": reset.scheduled_at.isoformat(),
            "boot_reason": boot_reason,
        }
        self._charger_event(charger_id, "reset", now, "completed", None, done)
        if reset.done is not None:
            reset.done(done)

    # -- id tokens (evota.fleet.tokens) -------------------------------------------------------
    def _authorize(
        self, state: ChargerState, id_token: str, token_type: str | None
    ) -> ev.IdTagReply | Awaitable[ev.IdTagReply]:
        """The token store's answer: at once from memory, awaited only from the webhook."""
        decision = self.tokens.decide(state.id, state.site_id, id_token, token_type)
        if isinstance(decision, Decision):
            return _id_tag_reply(decision)
        return self._authorize_later(decision)

    async def _authorize_later(self, pending: Awaitable[Decision]) -> ev.IdTagReply:
        return _id_tag_reply(await pending)

    def _transaction(
        self, state: ChargerState, event: ev.TransactionReported, now: Any
    ) -> ev.Reply | Awaitable[ev.Reply]:
        # An idToken in the event asks for its idTokenInfo.
        if event.id_token is None:
            return self._transaction_reply(state, event, now, ACK)
        reply = self._authorize(state, event.id_token, event.token_type)
        if isinstance(reply, ev.IdTagReply):
            return self._transaction_reply(state, event, now, reply)
        return self._transaction_authorized(state, event, now, reply)

    async def _transaction_authorized(
        self,
        state: ChargerState,
        event: ev.TransactionReported,
        now: Any,
        pending: Awaitable[ev.IdTagReply],
    ) -> ev.Reply:
        result = self._transaction_reply(state, event, now, await pending)
        return await result if isinstance(result, Awaitable) else result

    def _transaction_reply(
        self, state: ChargerState, event: ev.TransactionReported, now: Any, reply: ev.Reply
    ) -> ev.Reply | Awaitable[ev.Reply]:
        known = self._transactions.get(state.id)
        session = known.get(event.transaction_id) if known else None
        if session is None:
            return self._first_transaction_event(state, event, now, reply)
        self._apply_transaction(state, session, event, now)
        return reply

    async def _first_transaction_event(
        self, state: ChargerState, event: ev.TransactionReported, now: Any, reply: ev.Reply
    ) -> ev.Reply:
        """Find the transaction's session, or create it (from whichever event came first:
        a Started lost to a restart or queued offline still yields a session)."""
        session = await self._find_transaction(state.id, event.transaction_id)
        if session is None:
            values = {
                "charger_id": state.id,
                "connector_id": event.connector_id or 0,
                "id_tag": event.id_token or "",
                "meter_start_wh": int(event.energy_wh or 0),
                "meter_last_wh": event.energy_wh,
                "started_at": event.timestamp or now,
                "outcome": "active",
                "external_id": event.transaction_id,
            }
            try:
                async with self._engine.begin() as conn:
                    result = await conn.execute(
                        insert(ChargingSession).values(**values).returning(ChargingSession.id)
                    )
                    session = (int(result.scalar_one()), event.connector_id or 0)
            except IntegrityError:  # a concurrent event of the same transaction created it
                session = await self._find_transaction(state.id, event.transaction_id)
                if session is None:
                    raise
        self._apply_transaction(state, session, event, now)
        return reply

    async def _find_transaction(
        self, charger_id: str, transaction_id: str
    ) -> tuple[int, int] | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(ChargingSession.id, ChargingSession.connector_id).where(
                        ChargingSession.charger_id == charger_id,
                        ChargingSession.external_id == transaction_id,
                    )
                )
            ).first()
        return (int(row.id), int(row.connector_id)) if row is not None else None

    def _apply_transaction(
        self,
        state: ChargerState,
        session: tuple[int, int],
        event: ev.TransactionReported,
        now: Any,
    ) -> None:
        session_id, connector_id = session
        fields: dict[str, Any] = {}
        if event.connector_id is not None and event.connector_id != connector_id:
            fields["connector_id"] = connector_id = event.connector_id
        if event.energy_wh is not None:
            fields["meter_last_wh"] = event.energy_wh
        if event.id_token is not None and event.trigger_reason == "Authorized":
            fields["id_tag"] = event.id_token  # authorized after plug-in
        known = self._transactions.setdefault(state.id, {})
        if event.event_type == "Ended":
            reason = event.stopped_reason or "Local"
            fields.update(
                stopped_at=event.timestamp or now,
                stop_reason=reason,
                outcome=session_outcome(reason),
            )
            if event.energy_wh is not None:
                fields["meter_stop_wh"] = int(event.energy_wh)
            known.pop(event.transaction_id, None)
        else:
            known[event.transaction_id] = (session_id, connector_id)
        if fields:
            self.writer.session(state.id, session_id, **fields)

    async def external_transaction_id(self, charger_id: str, session_id: int) -> str | None:
        """The transaction id a 2.0.1 charger gave the session evota knows as ``session_id``."""
        for external, (known_id, _) in self._transactions.get(charger_id, {}).items():
            if known_id == session_id:
                return external
        async with self._engine.connect() as conn:
            stored = (
                await conn.execute(
                    select(ChargingSession.external_id).where(
                        ChargingSession.id == session_id,
                        ChargingSession.charger_id == charger_id,
                    )
                )
            ).scalar()
        return str(stored) if stored is not None else None

    async def _start_session(
        self, state: ChargerState, event: ev.SessionStarted, now: Any
    ) -> ev.IdTagReply:
        decision = self.tokens.decide(state.id, state.site_id, event.id_tag, None)
        if not isinstance(decision, Decision):
            decision = await decision
        # Refused or not, the session is stored: 1.6 needs a transactionId either way, and
        # the charger then stops it (DeAuthorized).
        async with self._engine.begin() as conn:
            result = await conn.execute(
                insert(ChargingSession)
                .values(
                    charger_id=state.id,
                    connector_id=event.connector_id,
                    id_tag=event.id_tag,
                    meter_start_wh=event.meter_start_wh,
                    meter_last_wh=event.meter_start_wh,
                    started_at=event.timestamp or now,
                    outcome="active",
                )
                .returning(ChargingSession.id)
            )
            transaction_id = int(result.scalar_one())
        return _id_tag_reply(decision, transaction_id)

    def _event(
        self,
        state: ChargerState,
        kind: str,
        now: Any,
        status: str | None = None,
        request_id: int | None = None,
        data: dict[str, Any] | None = None,
        charger_timestamp: Any = None,
    ) -> None:
        self._charger_event(state.id, kind, now, status, request_id, data, charger_timestamp)

    def _charger_event(
        self,
        charger_id: str,
        kind: str,
        now: Any,
        status: str | None = None,
        request_id: int | None = None,
        data: dict[str, Any] | None = None,
        charger_timestamp: Any = None,
    ) -> None:
        """A charger event for the listeners and the database (no connection needed: a reset
        completed on another node is recorded by charger id)."""
        for listen in self.charger_listeners:
            listen(charger_id, kind, 0, status, None)
        self.writer.event(
            {
                "charger_id": charger_id,
                "kind": kind,
                "status": status,
                "request_id": request_id,
                "data": data or {},
                "charger_timestamp": charger_timestamp,
                "received_at": now,
            }
        )
