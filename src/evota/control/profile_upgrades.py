"""Security profile upgrades for one charger (issue 16 §4, docs/security-profiles.md), the
shell around :mod:`evota.control.profile_upgrade`.

Steps, each audited (``security-profile.upgrade``; the commands by the command path): the
CSMS root is installed if the charger does not list it (GetInstalledCertificateIds, then
InstallCertificate); 1.6: ChangeConfiguration ``SecurityProfile``; 2.0.1 (A05): SetNetworkProfile
into a free slot, NetworkConfigurationPriority new-then-old, Reset OnIdle; then evota waits for a
connection
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
#: 2.0.1: which network connection profile slots the charger tries, in order (A05).
PRIORITY: Final = commands.VariableRef("OCPPCommCtrlr", "NetworkConfigurationPriority")


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
        *,
        csms_url: str | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._audit = audit
        self._path = path
        self._live_state = live_state
        self._raise_alert = raise_alert
        self._waiting: dict[str, tuple[int, asyncio.Future[int]]] = {}
        self._upgrading = upgrading  # the fleet service's: admit the new profile meanwhile
        self._csms_url = csms_url  # the wss:// URL 2.0.1 chargers are given (None: no TLS)

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
        two = why is None and state is not None and state.protocol != "ocpp1.6"
        if two and self._csms_url is None:  # 2.0.1 is given the URL to connect to
            why = "profile: no wss:// URL to give the charger (EVOTA_OCPP_TLS_PORT)"
        if why is not None:
            raise UpgradeRefused(why)
        assert state is not None and state.protocol is not None
        loop = asyncio.get_running_loop()
        self._waiting[charger_id] = (target, loop.create_future())
        self._upgrading[charger_id] = target
        try:
            return await self._run(
                actor, charger_id, state.protocol, current, target, root_pem, deadline, reason
            )
        finally:
            self._waiting.pop(charger_id, None)
            self._upgrading.pop(charger_id, None)

    async def _run(
        self,
        actor: Actor,
        charger_id: str,
        protocol: str,
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
        if protocol == "ocpp1.6":
            spec = catalog.get("change-configuration")
            assert spec is not None
            change = catalog.ChangeConfigurationParams.connection_change(
                "SecurityProfile", str(target)
            )
            answer = await send_command(self._path, actor, charger_id, spec, change, reason)
            if answer.status != "Accepted":
                return await self._failed(
                    actor, charger_id, current, target, f"the charger answered {answer.status}"
                )
        else:
            why = await self._switch_network(actor, charger_id, target, reason)
            if why is not None:
                return await self._failed(actor, charger_id, current, target, why)
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

    async def _switch_network(
        self, actor: Actor, charger_id: str, target: int, reason: str | None
    ) -> str | None:
        """2.0.1 (A05): the new profile into a free slot, that slot first in
        NetworkConfigurationPriority with the old one kept behind it (the charger falls back
        to it if the new one fails), then a Reset (OnIdle). Returns why it failed, or None."""
        assert self._csms_url is not None
        read = await self._path.send(charger_id, commands.GetVariables((PRIORITY,)))
        rows = read.details.get("results", ())
        value = rows[0].get("attribute_value") if read.status == "Accepted" and rows else None
        slots = plan.network_slots(value if isinstance(value, str) else None)
        if slots is None:
            return f"NetworkConfigurationPriority unreadable ({read.status})"
        new, old = slots
        steps: tuple[tuple[str, commands.Command], ...] = (
            (
                "SetNetworkProfile",
                commands.SetNetworkProfile(new, self._csms_url, target),
            ),
            (
                "SetVariables",
                commands.SetVariables((PRIORITY,), (plan.new_priority(new, old),)),
            ),
        )
        for label, command in steps:
            answer = await self._path.send(charger_id, command)
            await self._audit.record(
                actor,
                ACTION,
                label,
                target=charger_id,
                chargers=[charger_id],
                reason=reason,
                detail={"slot": new, "fallback": old, "to": target, "answer": answer.status},
            )
            if not answer.accepted:
                return f"{label} {answer.status}"
        spec = catalog.get("reset")
        assert spec is not None
        reset = await send_command(
            self._path, actor, charger_id, spec, catalog.ResetParams(type="OnIdle"), reason
        )
        if not reset.accepted:
            return f"Reset {reset.status}"
        return None

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
