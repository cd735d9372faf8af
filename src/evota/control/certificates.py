"""Charger certificates: SignCertificate → CertificateSigned, the inventory, expiry and renewal.

The shell around :mod:`evota.pki` (issue 16 §5/§6, docs/security-profiles.md):

* :meth:`CertificateService.sign_requested` is the fleet service's hook for a charger's
  SignCertificate. It answers at once (the charger waits): Accepted when the CSR passes
  :func:`evota.pki.csr.check_csr` and the charger has not had a certificate signed within
  ``sign_interval`` (a charger with a valid key must not flood the CA), else Rejected and
  audited with the named reason (at most once per charger per interval, so a flood cannot
  flood the audit log either). The signing, the stored record and CertificateSigned follow
  in a background task; the charger's answer is stored with the certificate. In a cluster
  the interval and the audited refusal hold for every node (``shared``, kept in Redis by
  :class:`evota.cluster.limits.SharedSignings`): the answer waits for Redis, and falls back
  to this node's memory while Redis is unreachable.
* :meth:`inventory` asks a charger which certificates it holds (GetInstalledCertificateIds,
  every type its version knows) and keeps them, with expiry where evota knows the
  certificate; :meth:`charger_ready` does it at boot, at most once per ``inventory_every``,
  and never again at boot for a 1.6 charger without the security extension.
* :meth:`check_expiry` raises one alert per certificate (server, charger CA, each charger's
  own) that expires within ``alert_days`` and, with ``auto_renew``, asks chargers whose
  evota-signed certificate expires to send a new CSR: rate-limited fleet-wide, never during
  a session, audited as ``system`` with the reason "certificate expires at …".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, Protocol

import structlog
from cryptography import x509
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from evota.audit.anomalies import Alert
from evota.audit.log import SYSTEM, Actor, AuditLog
from evota.clock import Clock
from evota.control import catalog, commands
from evota.control.dispatch import CommandPath, send_command
from evota.fleet.charger import ChargerState
from evota.periodic import raise_if_cancelled
from evota.pki import inventory as inv
from evota.pki.ca import CAError, ChargerCA
from evota.pki.csr import CsrRefusal, check_csr
from evota.store.models import (
    Alert as AlertRow,
)
from evota.store.models import (
    AuditEntry,
    ChargerCertificate,
    ChargerCertificateCheck,
    ChargerInstalledCertificate,
    ChargingSession,
)

log = structlog.get_logger(__name__)

#: What GetInstalledCertificateIds is asked for, per protocol (1.6 SWP knows two types).
INVENTORY_TYPES: Final[dict[str, tuple[commands.CertificateUse, ...]]] = {
    "ocpp1.6": ("CentralSystemRootCertificate", "ManufacturerRootCertificate"),
    "ocpp2.0.1": (
        "CSMSRootCertificate",
        "ManufacturerRootCertificate",
        "V2GRootCertificate",
        "MORootCertificate",
    ),
}
#: CALLERRORs that mean the charger has no security extension (1.6) or no such feature.
UNSUPPORTED_CODES: Final = frozenset({"NotImplemented", "NotSupported"})
MAX_PENDING_SIGNINGS: Final = 64  # signings in flight, fleet-wide; more are Rejected (busy)
MAX_INVENTORY_ROWS: Final = 200  # per charger: what a charger reports is its choice
MAX_QUEUED_INVENTORIES: Final = 10_000
#: Inventories at once: a charger that never answers holds one worker for a call timeout per
#: type, so a reconnect storm's queue still drains, while the gateway sees a few calls at a time.
INVENTORY_WORKERS: Final = 4
EXPIRY_RULE: Final = "certificate_expiring"
INSTALL_ACTION: Final = "command.install-certificate"  # its parameters name the root
MAX_INSTALLS_READ: Final = 1000  # the newest accepted installs an inventory matches against
#: The installs are read whole this often; in between an inventory reads only newer ones.
INSTALLS_FULL_EVERY: Final = timedelta(minutes=10)
MAX_INSTALLED_KEYS: Final = 10_000  # beyond this many roots the next inventory reads whole
RENEW_RETRY: Final = timedelta(days=1)  # an automatic renewal is asked again at most daily


@dataclass(frozen=True, slots=True)
class SignOutcome:
    """What became of one SignCertificate (the fleet hook answers ``status``)."""

    status: str  # Accepted | Rejected
    reason: str | None = None


class SignIntervals(Protocol):
    """The interval kept for the cluster (evota.cluster.limits.SharedSignings): each answer
    True (admitted, recorded where the name says), False (within the interval) or None
    (unknown: Redis unreachable, this node's memory decides)."""

    async def may_sign(self, charger_id: str) -> bool | None: ...
    async def signing(self, charger_id: str) -> bool | None: ...
    async def refusal_audited(self, charger_id: str) -> bool | None: ...
    async def lift(self, charger_id: str) -> None: ...


class CertificateService:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        audit: AuditLog,
        ca: ChargerCA,
        path: CommandPath,
        live_state: Callable[[str], ChargerState | None],
        raise_alert: Callable[[Alert], Awaitable[int]],
        *,
        cpo_name: str | None = None,
        sign_interval: timedelta = timedelta(minutes=10),
        alert_days: int = 30,
        auto_renew: bool = True,
        renew_per_hour: int = 60,
        inventory_every: timedelta = timedelta(hours=24),
        boot_delay: float = 30.0,
        server_certificate: Path | None = None,
        check_every: float = 3600.0,
        shared: SignIntervals | None = None,
        runner_engine: AsyncEngine | None = None,
    ) -> None:
        self._engine = engine
        # What only the runner leader writes (the inventory); fenced in a cluster
        # (evota.cluster.fence). A CSR is signed and stored on the charger's own node.
        self._runner_engine = runner_engine or engine
        self._shared = shared
        self._clock = clock
        self._audit = audit
        self.ca = ca
        self._path = path
        self._live_state = live_state
        self._raise_alert = raise_alert
        self.cpo_name = cpo_name
        self.sign_interval = sign_interval
        self.alert_days = alert_days
        self.auto_renew = auto_renew
        self.renew_per_hour = renew_per_hour
        self.inventory_every = inventory_every
        self.boot_delay = boot_delay
        self.server_certificate = server_certificate
        self.check_every = check_every
        self._signed_at: dict[str, datetime] = {}  # charger -> last accepted CSR
        self._refusal_audited: dict[str, datetime] = {}  # charger -> last audited refusal
        self._renew_asked: dict[str, datetime] = {}  # charger -> last automatic renewal
        self._renewals: deque[datetime] = deque()  # automatic renewals in the last hour
        self._tasks: set[asyncio.Task[Any]] = set()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._running: set[str] = set()  # inventories in progress
        self._timers: set[asyncio.TimerHandle] = set()  # boot delays not yet over
        self._workers: list[asyncio.Task[Any]] = []
        self._checking = asyncio.Lock()  # one expiry check at a time (alerts once each)
        # The roots operators installed (from their audit entries), kept between inventories:
        # reading the newest 1,000 entries for every charger's inventory was most of a
        # leader's CPU after a 20,000-charger storm.
        self._installs: dict[inv.Key, inv.Seen] = {}
        self._installs_id = 0  # the newest entry read
        self._installs_read_at: datetime | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._inventory_worker(), name=f"certificate-inventory-{n}")
            for n in range(INVENTORY_WORKERS)
        ]
        self._workers.append(asyncio.create_task(self._expiry_loop(), name="certificate-expiry"))

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for task in [*self._workers, *self._tasks]:
            task.cancel()
        for task in [*self._workers, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._workers = []

    async def settled(self) -> None:
        """Wait until every signing started so far is done (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- SignCertificate ---------------------------------------------------------------------
    def sign_requested(
        self, charger_id: str, csr: str, certificate_type: str | None
    ) -> str | Awaitable[str]:
        """The fleet hook: the status to answer SignCertificate with (synchronous on one
        node; in a cluster it waits for the shared interval)."""
        if self._shared is not None:
            return self._sign_shared(self._shared, charger_id, csr, certificate_type)
        now = self._clock.now()
        outcome = self._before_csr(charger_id, certificate_type, self._recent(charger_id, now))
        if outcome is None:
            outcome = self._judge_csr(charger_id, csr, certificate_type, now)
        return self._answer(charger_id, certificate_type, outcome)

    async def _sign_shared(
        self, shared: SignIntervals, charger_id: str, csr: str, certificate_type: str | None
    ) -> str:
        """The same decisions in the same order, the interval asked of Redis before the CSR
        is checked (a flood costs a round trip, not a CSR check) and taken atomically after
        (of two nodes signing at once one wins)."""
        now = self._clock.now()
        outcome = self._before_csr(charger_id, certificate_type, False)  # no Redis for a V2G
        if outcome is None:
            may = await shared.may_sign(charger_id)
            recent = self._recent(charger_id, now) if may is None else not may
            outcome = self._before_csr(charger_id, certificate_type, recent)
        if outcome is None:
            checked = check_csr(csr, charger_id, self.cpo_name)
            if isinstance(checked, CsrRefusal):
                outcome = SignOutcome("Rejected", checked.reason)
            else:
                taken = await shared.signing(charger_id)
                if taken is False or (taken is None and self._recent(charger_id, now)):
                    outcome = SignOutcome("Rejected", "rate_limited")
                else:
                    outcome = self._start(charger_id, checked, certificate_type, now)
        return self._answer(charger_id, certificate_type, outcome)

    def _answer(self, charger_id: str, certificate_type: str | None, outcome: SignOutcome) -> str:
        if outcome.status != "Accepted":
            self._refused(charger_id, outcome.reason or "rejected", certificate_type)
        return outcome.status

    def _recent(self, charger_id: str, now: datetime) -> bool:
        """Whether this node accepted a CSR of the charger within the interval."""
        last = self._signed_at.get(charger_id)
        return last is not None and now - last < self.sign_interval

    def _before_csr(
        self, charger_id: str, certificate_type: str | None, recent: bool
    ) -> SignOutcome | None:
        """The refusals decided before the CSR is read (cheap), in their order."""
        if certificate_type not in (None, "ChargingStationCertificate"):
            # ISO 15118 certificates come from a V2G PKI, not the CPO's charger CA
            return SignOutcome("Rejected", "v2g_not_supported")
        if recent:
            return SignOutcome("Rejected", "rate_limited")
        if len(self._tasks) >= MAX_PENDING_SIGNINGS:
            return SignOutcome("Rejected", "busy")
        return None

    def _judge_csr(
        self, charger_id: str, csr: str, certificate_type: str | None, now: datetime
    ) -> SignOutcome:
        checked = check_csr(csr, charger_id, self.cpo_name)
        if isinstance(checked, CsrRefusal):
            return SignOutcome("Rejected", checked.reason)
        return self._start(charger_id, checked, certificate_type, now)

    def _start(
        self, charger_id: str, checked: Any, certificate_type: str | None, now: datetime
    ) -> SignOutcome:
        """Accepted: remember the signing and sign in the background."""
        self._forget_before(self._signed_at, now - self.sign_interval)
        self._signed_at[charger_id] = now
        protocol = self._protocol(charger_id)
        sent_type = certificate_type if protocol != "ocpp1.6" else None
        self._spawn(self._issue(charger_id, checked, sent_type))
        return SignOutcome("Accepted")

    @staticmethod
    def _forget_before(memo: dict[str, datetime], limit: datetime) -> None:
        """Drop entries older than ``limit`` (bounded memory: a fleet's worth at most)."""
        if len(memo) > 1024:
            for key in [k for k, at in memo.items() if at < limit]:
                del memo[key]

    def _protocol(self, charger_id: str) -> str | None:
        state = self._live_state(charger_id)
        return state.protocol if state is not None else None

    def _refused(self, charger_id: str, reason: str, certificate_type: str | None) -> None:
        now = self._clock.now()
        last = self._refusal_audited.get(charger_id)
        log.info("certificate signing refused", charger_id=charger_id, reason=reason)
        if last is not None and now - last < self.sign_interval:
            return  # audited once per interval: a flood must not flood the audit log
        self._forget_before(self._refusal_audited, now - self.sign_interval)
        self._refusal_audited[charger_id] = now
        self._spawn(self._audit_refusal(charger_id, reason, certificate_type))

    async def _audit_refusal(
        self, charger_id: str, reason: str, certificate_type: str | None
    ) -> None:
        if self._shared is not None and await self._shared.refusal_audited(charger_id) is False:
            return  # another node audited one within the interval
        await self._audit.record(
            SYSTEM,
            "certificate.sign_refused",
            reason,
            target=charger_id,
            chargers=[charger_id],
            reason=f"SignCertificate rejected: {reason}",
            detail={"reason": reason, "certificate_type": certificate_type},
        )

    async def _issue(self, charger_id: str, request: Any, certificate_type: str | None) -> None:
        now = self._clock.now()
        kind = certificate_type or "ChargingStationCertificate"
        try:
            issued = await self.ca.sign(request, now)
        except CAError as exc:
            log.error("the charger CA could not sign", charger_id=charger_id, error=str(exc))
            await self._audit.record(
                SYSTEM,
                "certificate.signed",
                "error:ca",
                target=charger_id,
                chargers=[charger_id],
                detail={"error": str(exc)[:500]},
            )
            return
        async with self._engine.begin() as conn:
            row_id = (
                await conn.execute(
                    insert(ChargerCertificate).values(
                        charger_id=charger_id,
                        certificate_type=kind,
                        serial=issued.serial,
                        sha256=issued.sha256,
                        subject=issued.subject[:300],
                        key=request.key,
                        not_before=issued.not_before,
                        not_after=issued.not_after,
                        certificate=issued.certificate_pem,
                        status="sent",
                        created_at=now,
                    )
                )
            ).inserted_primary_key[0]  # type: ignore[index]
        command = commands.CertificateSigned(issued.chain_pem, certificate_type)
        try:
            status = (await self._path.send(charger_id, command)).status
        except commands.CommandError as exc:
            status = f"error:{exc.reason}"
        async with self._engine.begin() as conn:
            await conn.execute(
                update(ChargerCertificate)
                .where(ChargerCertificate.id == row_id)
                .values(status=status[:64], answered_at=self._clock.now())
            )
        await self._audit.record(
            SYSTEM,
            "certificate.signed",
            status,
            target=charger_id,
            chargers=[charger_id],
            detail={
                "certificate_type": kind,
                "serial": issued.serial,
                "sha256": issued.sha256,
                "subject": issued.subject,
                "key": request.key,
                "not_after": issued.not_after.isoformat(),
            },
        )

    # -- renewal -----------------------------------------------------------------------------
    async def renew(
        self, actor: Actor, charger_id: str, reason: str | None
    ) -> commands.CommandResult:
        """Ask the charger for a new CSR (ExtendedTriggerMessage SignChargePointCertificate on
        1.6, TriggerMessage SignChargingStationCertificate on 2.0.1), audited like any
        command; the charger's next CSR is not held back by the signing interval."""
        spec = catalog.get("trigger-message")
        assert spec is not None
        self._signed_at.pop(charger_id, None)
        if self._shared is not None:  # whichever node the charger's CSR reaches
            await self._shared.lift(charger_id)
        params = catalog.TriggerParams(message="SignChargePointCertificate", connector_id=None)
        return await send_command(self._path, actor, charger_id, spec, params, reason)

    # -- inventory ---------------------------------------------------------------------------
    def charger_ready(self, charger_id: str) -> None:
        """Ready listener (booted and accepted): queue an inventory after ``boot_delay``
        (the charger settles after its boot first); the worker asks only if one is due."""
        if charger_id in self._queued or len(self._queued) >= MAX_QUEUED_INVENTORIES:
            return
        self._queued.add(charger_id)
        if self.boot_delay <= 0:
            self._queue.put_nowait(charger_id)
            return
        timer: asyncio.TimerHandle | None = None

        def fire() -> None:
            self._timers.discard(timer)  # type: ignore[arg-type]
            self._queue.put_nowait(charger_id)

        timer = asyncio.get_running_loop().call_later(self.boot_delay, fire)
        self._timers.add(timer)

    async def _inventory_worker(self) -> None:
        while True:
            charger_id = await self._queue.get()
            self._queued.discard(charger_id)
            if charger_id in self._running:
                continue  # another worker asks it now (it rebooted meanwhile)
            self._running.add(charger_id)
            try:
                if await self._inventory_due(charger_id):
                    await self.inventory(charger_id)
            except commands.CommandError:
                pass  # the charger went away; asked again at its next boot
            except Exception:
                raise_if_cancelled()
                log.exception("certificate inventory failed", charger_id=charger_id)
            finally:
                self._running.discard(charger_id)

    async def _inventory_due(self, charger_id: str) -> bool:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        ChargerCertificateCheck.checked_at, ChargerCertificateCheck.outcome
                    ).where(ChargerCertificateCheck.charger_id == charger_id)
                )
            ).first()
        if row is None:
            return True
        if row.outcome == "unsupported":
            return False  # a 1.6 charger without the security extension: not at every boot
        return self._clock.now() - row.checked_at >= self.inventory_every

    async def _installed(self, conn: AsyncConnection) -> dict[inv.Key, inv.Seen]:
        """The roots operators installed, from their accepted audit entries: the newest
        ``MAX_INSTALLS_READ`` read whole every ``INSTALLS_FULL_EVERY``, and in between only
        entries newer than the last read (one committed out of id order, by another node,
        is named from the next whole read on). The oldest entry of a root names it."""
        now = self._clock.now()
        query = select(AuditEntry.id, AuditEntry.detail).where(
            AuditEntry.action == INSTALL_ACTION, AuditEntry.outcome == "Accepted"
        )
        read_at = self._installs_read_at
        if read_at is None or now - read_at >= INSTALLS_FULL_EVERY:
            newest = query.order_by(AuditEntry.id.desc()).limit(MAX_INSTALLS_READ)
            rows = list(reversed((await conn.execute(newest)).all()))
            self._installs, self._installs_read_at = {}, now
        else:
            newer = query.where(AuditEntry.id > self._installs_id).order_by(AuditEntry.id)
            rows = list((await conn.execute(newer.limit(MAX_INSTALLS_READ))).all())
        for row in rows:
            self._installs_id = max(self._installs_id, row.id)
            params = row.detail.get("params") if isinstance(row.detail, dict) else None
            found = inv.seen_from_record(params) if isinstance(params, dict) else None
            if found is not None:
                self._installs.setdefault(found[0], found[1])
        if len(self._installs) > MAX_INSTALLED_KEYS:
            self._installs_read_at = None
        return self._installs

    def _known(
        self, signed: list[str], installs: dict[inv.Key, inv.Seen]
    ) -> dict[inv.Key, inv.Seen]:
        """What evota can name: roots operators installed (from their audit entries), its
        charger CA, the server chain and the certificates it signed for this charger."""
        index = dict(installs)
        known = [inv.Known("charger-ca", c) for c in self.ca.certificates()]
        known += [inv.Known("server", c) for c in self._server_chain()]
        known += [inv.Known("signed", x509.load_pem_x509_certificate(p.encode())) for p in signed]
        index.update(inv.known_index(known))
        return index

    def _server_chain(self) -> list[x509.Certificate]:
        if self.server_certificate is None:
            return []
        try:
            return x509.load_pem_x509_certificates(self.server_certificate.read_bytes())
        except (OSError, ValueError) as exc:
            log.warning("cannot read the server certificate", error=str(exc))
            return []

    async def inventory(self, charger_id: str) -> dict[str, Any]:
        """Ask the charger what it holds, store it, and return the stored view."""
        now = self._clock.now()
        protocol = self._protocol(charger_id)
        if protocol is None:
            raise commands.ChargerOffline(charger_id, "charger is not connected")
        reported: list[dict[str, Any]] = []
        outcome = "ok"
        for kind in INVENTORY_TYPES.get(protocol, INVENTORY_TYPES["ocpp2.0.1"]):
            try:
                result = await self._path.send(
                    charger_id, commands.GetInstalledCertificateIds(kind)
                )
            except commands.CommandRejected as exc:
                outcome = "unsupported" if exc.code in UNSUPPORTED_CODES else "error:callerror"
                break
            except commands.CommandNotSupported:
                outcome = "unsupported"
                break
            except commands.CommandError as exc:
                outcome = f"error:{exc.reason}"
                break
            for item in result.details.get("certificates", ()):
                if isinstance(item, dict):
                    reported.append({"certificate_type": kind, **item})
        async with self._runner_engine.begin() as conn:
            signed = list(
                (
                    await conn.execute(
                        select(ChargerCertificate.certificate).where(
                            ChargerCertificate.charger_id == charger_id
                        )
                    )
                ).scalars()
            )
            if outcome == "ok":
                index = self._known(signed, await self._installed(conn))
                await conn.execute(
                    delete(ChargerInstalledCertificate).where(
                        ChargerInstalledCertificate.charger_id == charger_id
                    )
                )
                made = (_installed_row(charger_id, item, index, now) for item in reported)
                rows = [r for r in made if r is not None][:MAX_INVENTORY_ROWS]
                if rows:
                    await conn.execute(insert(ChargerInstalledCertificate), rows)
            await conn.execute(
                delete(ChargerCertificateCheck).where(
                    ChargerCertificateCheck.charger_id == charger_id
                )
            )
            await conn.execute(
                insert(ChargerCertificateCheck).values(
                    charger_id=charger_id, checked_at=now, outcome=outcome
                )
            )
        log.info("certificate inventory", charger_id=charger_id, outcome=outcome)
        return {"outcome": outcome, "checked_at": now, "certificates": len(reported)}

    # -- expiry and automatic renewal --------------------------------------------------------
    async def _expiry_loop(self) -> None:
        while True:
            try:
                await self.check_expiry()
            except Exception:
                raise_if_cancelled()
                log.exception("certificate expiry check failed")
            await asyncio.sleep(self.check_every)

    async def _signed_views(self) -> list[inv.SignedView]:
        """Each charger's newest certificate evota signed that the charger accepted."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        ChargerCertificate.charger_id,
                        ChargerCertificate.serial,
                        ChargerCertificate.not_after,
                    )
                    .where(ChargerCertificate.status == "Accepted")
                    .order_by(ChargerCertificate.created_at, ChargerCertificate.id)
                )
            ).all()
        newest = {r.charger_id: inv.SignedView(r.charger_id, r.serial, r.not_after) for r in rows}
        return list(newest.values())

    async def check_expiry(self) -> dict[str, Any]:
        """Alert on what expires within ``alert_days``; with ``auto_renew``, ask chargers
        for new CSRs. Returns what it did (tests, the CLI)."""
        async with self._checking:
            return await self._check_expiry()

    async def _check_expiry(self) -> dict[str, Any]:
        now = self._clock.now()
        signed = await self._signed_views()
        items = [
            inv.Expiry(f"server certificate {c.serial_number:x}", None, c.not_valid_after_utc)
            for c in self._server_chain()[:1]
        ]
        items += [
            inv.Expiry(f"charger CA {c.serial_number:x}", None, c.not_valid_after_utc)
            for c in self.ca.certificates()
        ]
        items += [
            inv.Expiry(f"{s.charger_id} {s.serial}", s.charger_id, s.not_after) for s in signed
        ]
        items += await self._installed_roots()
        alerted = []
        for item in inv.expiring(items, now, self.alert_days):
            if await self._alert_once(item, now):
                alerted.append(item.subject)
        renewed: list[str] = []
        if self.auto_renew:
            renewed = await self._auto_renew(signed, now)
        return {"alerted": alerted, "renewed": renewed}

    async def _installed_roots(self) -> list[inv.Expiry]:
        """Roots operators installed that chargers report holding: one alert per root (the
        charger's certificates page and the expiring list show who holds it)."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        ChargerInstalledCertificate.serial,
                        ChargerInstalledCertificate.not_after,
                    ).where(
                        ChargerInstalledCertificate.known_as == "installed",
                        ChargerInstalledCertificate.not_after.is_not(None),
                    )
                )
            ).all()
        roots: dict[str, datetime] = {}
        for row in rows:
            roots[row.serial] = row.not_after
        return [inv.Expiry(f"installed root {serial}", None, at) for serial, at in roots.items()]

    async def _alert_once(self, item: inv.Expiry, now: datetime) -> bool:
        async with self._engine.connect() as conn:
            seen = (
                await conn.execute(
                    select(AlertRow.id)
                    .where(AlertRow.rule == EXPIRY_RULE, AlertRow.subject == item.subject[:100])
                    .limit(1)
                )
            ).first()
        if seen is not None:
            return False
        left = item.not_after - now
        when = "expired" if left.total_seconds() <= 0 else f"expires in {left.days} days"
        await self._raise_alert(
            Alert(
                rule=EXPIRY_RULE,
                subject=item.subject[:100],
                at=now,
                message=f"{item.subject} {when} (at {item.not_after.isoformat()})",
                chargers=(item.charger_id,) if item.charger_id else (),
                detail={"not_after": item.not_after.isoformat()},
            )
        )
        return True

    async def _busy(self, charger_ids: list[str]) -> set[str]:
        busy = set()
        for charger_id in charger_ids:
            state = self._live_state(charger_id)
            if state is not None and any(
                status in inv.BUSY_STATUSES for status, _ in state.connectors.values()
            ):
                busy.add(charger_id)
        if charger_ids:
            async with self._engine.connect() as conn:
                busy.update(
                    (
                        await conn.execute(
                            select(ChargingSession.charger_id).where(
                                ChargingSession.outcome == "active",
                                ChargingSession.charger_id.in_(charger_ids),
                            )
                        )
                    ).scalars()
                )
        return busy

    async def _auto_renew(self, signed: list[inv.SignedView], now: datetime) -> list[str]:
        while self._renewals and now - self._renewals[0] >= timedelta(hours=1):
            self._renewals.popleft()
        budget = self.renew_per_hour - len(self._renewals)
        window = [
            s
            for s in inv.expiring(
                (inv.Expiry(s.serial, s.charger_id, s.not_after) for s in signed),
                now,
                self.alert_days,
            )
        ]
        candidates = [e.charger_id for e in window if e.charger_id is not None]
        connected = {c for c in candidates if self._live_state(c) is not None}
        plan = inv.renewals(
            signed,
            now,
            self.alert_days,
            connected=connected,
            busy=await self._busy(sorted(connected)),
            asked=self._renew_asked,
            retry_after=RENEW_RETRY,
            budget=budget,
        )
        done = []
        for item in plan:
            self._renew_asked[item.charger_id] = now
            self._renewals.append(now)
            why = f"certificate expires at {item.not_after.isoformat()}"
            try:
                await self.renew(SYSTEM, item.charger_id, why)
            except commands.CommandError as exc:
                log.info("automatic renewal not sent", charger_id=item.charger_id, error=exc.reason)
                continue
            done.append(item.charger_id)
        return done


def _installed_row(
    charger_id: str,
    item: dict[str, Any],
    index: dict[inv.Key, inv.Seen],
    now: datetime,
) -> dict[str, Any] | None:
    try:
        data = inv.HashData(
            str(item["hash_algorithm"])[:8],
            str(item["issuer_name_hash"])[:128],
            str(item["issuer_key_hash"])[:128],
            str(item["serial_number"])[:64],
        )
    except KeyError:
        return None
    known = index.get(data.key())
    return {
        "charger_id": charger_id,
        "certificate_type": str(item.get("certificate_type", ""))[:40],
        "hash_algorithm": data.hash_algorithm,
        "issuer_name_hash": data.issuer_name_hash,
        "issuer_key_hash": data.issuer_key_hash,
        "serial": data.serial,
        "subject": known.subject[:300] if known else None,
        "not_after": known.not_after if known else None,
        "known_as": known.label if known else None,
        "seen_at": now,
    }
