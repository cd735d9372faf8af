"""Security profile upgrades for one charger (issue 16 §4, docs/security-profiles.md), the
shell around :mod:`evota.control.profile_upgrade`.

Steps, each audited (``security-profile.upgrade``; the commands by the command path): the
CSMS root is installed if the charger does not list it (GetInstalledCertificateIds, then
InstallCertificate); ChangeConfiguration ``SecurityProfile``; then evota waits for a connection
on the new profile (the fleet service's channel hook) until the deadline. Success: the stored
profile is raised, so the old way in is refused from then on. Rejected or no reconnection:
the stored profile stays (the charger can still come back the old way), an alert is raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

import structlog
from cryptography import x509
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.audit.anomalies import Alert
from evota.audit.log import Actor, AuditLog
from evota.clock import Clock
from evota.control import catalog, commands
from evota.control import profile_upgrade as plan
from evota.control.dispatch import CommandPath, send_command
from evota.control.operations import Info, Outcome
from evota.fleet.charger import ChargerState
from evota.pki import inventory as inv
from evota.store.models import Charger, ChargerCertificate

log = structlog.get_logger(__name__)

ACTION: Final = "security-profile.upgrade"
#: The bulk operations' internal step: one charger's upgrade (staged, first failure stops).
STEP: Final = "upgrade-security-profile"
ALERT_RULE: Final = "security_profile_upgrade_failed"


class UpgradeRefused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProfileUpgrades:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        audit: AuditLog,
        path: CommandPath,
        live_state: Callable[[str], ChargerState | None],
        raise_alert: Callable[[Alert], Awaitable[int]],
        upgrading: dict[str, int],
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._audit = audit
        self._path = path
        self._live_state = live_state
        self._raise_alert = raise_alert
        self._waiting: dict[str, tuple[int, asyncio.Future[int]]] = {}
        self._upgrading = upgrading  # the fleet service's: admit the new profile meanwhile

    def connected(self, charger_id: str, profile: int) -> None:
        """The fleet service's hook: a connection of ``charger_id`` satisfying ``profile``."""
        waiting = self._waiting.get(charger_id)
        if waiting and plan.reconnected(waiting[0], profile) and not waiting[1].done():
            waiting[1].set_result(profile)

    async def step(self, info: Info, actor: Actor, charger_id: str) -> Outcome:
        """One charger of a staged upgrade (an operation of :data:`STEP`)."""
        p = info.params
        try:
            done = await self.upgrade(
                actor,
                charger_id,
                int(p["profile"]),
                p.get("root"),
                float(p.get("deadline_seconds", 120)),
                info.reason,
            )
        except UpgradeRefused as exc:
            return Outcome(False, "Refused", {"reason": exc.message})
        except commands.CommandError as exc:
            return Outcome(False, f"error:{exc.reason}", {"reason": exc.message})
        return Outcome(done["state"] == "upgraded", done["state"], {"why": done.get("why")})

    async def upgrade(
        self,
        actor: Actor,
        charger_id: str,
        target: int,
        root_pem: str | None,
        deadline: float,
        reason: str | None,
    ) -> dict[str, Any]:
        """Run the upgrade; returns ``{"state": "upgraded" | "failed", ...}``. Raises
        :class:`UpgradeRefused` before any side effect, or a ``CommandError``."""
        if charger_id in self._waiting:
            raise UpgradeRefused(f"charger {charger_id} is being upgraded already")
        state = self._live_state(charger_id)
        now = self._clock.now()
        async with self._engine.connect() as conn:
            current = (
                await conn.execute(select(Charger.security_profile).where(Charger.id == charger_id))
            ).scalar_one()
            certified = (
                await conn.execute(
                    select(ChargerCertificate.id)
                    .where(
                        ChargerCertificate.charger_id == charger_id,
                        ChargerCertificate.status == "Accepted",
                        ChargerCertificate.not_after > now,
                    )
                    .limit(1)
                )
            ).first() is not None
        why = plan.refusal(state.protocol if state else None, current, target, certified)
        if why is not None:
            raise UpgradeRefused(why)
        loop = asyncio.get_running_loop()
        self._waiting[charger_id] = (target, loop.create_future())
        self._upgrading[charger_id] = target
        try:
            return await self._run(actor, charger_id, current, target, root_pem, deadline, reason)
        finally:
            self._waiting.pop(charger_id, None)
            self._upgrading.pop(charger_id, None)

    async def _run(
        self,
        actor: Actor,
        charger_id: str,
        current: int,
        target: int,
        root_pem: str | None,
        deadline: float,
        reason: str | None,
    ) -> dict[str, Any]:
        if root_pem is not None:
            root = x509.load_pem_x509_certificate(root_pem.encode())
            listed = await self._path.send(
                charger_id, commands.GetInstalledCertificateIds("CentralSystemRootCertificate")
            )
            if not plan.holds(listed.details.get("certificates", ()), inv.hash_data(root, root)):
                spec = catalog.get("install-certificate")
                assert spec is not None
                params = catalog.InstallCertificateParams(
                    certificate_type="CentralSystemRootCertificate", certificate=root_pem
                )
                installed = await send_command(self._path, actor, charger_id, spec, params, reason)
                if installed.status != "Accepted":
                    return await self._failed(
                        actor, charger_id, current, target, f"root install {installed.status}"
                    )
        spec = catalog.get("change-configuration")
        assert spec is not None
        params_change = catalog.ChangeConfigurationParams(key="SecurityProfile", value=str(target))
        answer = await send_command(self._path, actor, charger_id, spec, params_change, reason)
        if answer.status != "Accepted":
            return await self._failed(
                actor, charger_id, current, target, f"the charger answered {answer.status}"
            )
        try:
            await asyncio.wait_for(asyncio.shield(self._waiting[charger_id][1]), deadline)
        except TimeoutError:
            return await self._failed(
                actor,
                charger_id,
                current,
                target,
                f"no connection on profile {target} within {deadline:g} s",
            )
        async with self._engine.begin() as conn:
            await conn.execute(
                update(Charger).where(Charger.id == charger_id).values(security_profile=target)
            )
        await self._audit.record(
            actor,
            ACTION,
            "upgraded",
            target=charger_id,
            chargers=[charger_id],
            reason=reason,
            detail={"from": current, "to": target},
        )
        return {"charger_id": charger_id, "state": "upgraded", "security_profile": target}

    async def _failed(
        self, actor: Actor, charger_id: str, current: int, target: int, why: str
    ) -> dict[str, Any]:
        log.warning("security profile upgrade failed", charger_id=charger_id, reason=why)
        await self._audit.record(
            actor,
            ACTION,
            "failed",
            target=charger_id,
            chargers=[charger_id],
            detail={"from": current, "to": target, "why": why, "kept": current},
        )
        await self._raise_alert(
            Alert(
                rule=ALERT_RULE,
                subject=charger_id,
                at=self._clock.now(),
                message=f"{charger_id}: upgrade to profile {target} failed ({why}); "
                f"it stays on profile {current}",
                chargers=(charger_id,),
            )
        )
        return {
            "charger_id": charger_id,
            "state": "failed",
            "security_profile": current,
            "why": why,
        }
