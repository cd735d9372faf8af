"""Charger password changes without lock-outs (issue 16 §8, docs/security-profiles.md).

The shell around :mod:`evota.fleet.key_changes`. :meth:`PasswordChanges.change` makes a new
key, writes it (hashed) as a pending change *before* sending it, then sends
ChangeConfiguration ``AuthorizationKey`` (1.6) / SetVariables ``SecurityCtrlr.BasicAuthPassword``
(2.0.1, the same command through :mod:`evota.ocpp.v201_variables`) through the audited command
path. While the change is pending the fleet service admits the charger with either key; the
charger's first connection with the new key makes it the only one
(:meth:`evota.fleet.service.FleetService.authenticate` promotes it and calls
:meth:`promoted`). Rejected, no answer, or no connection with it by the deadline: the old key
stays, the change is recorded as such, audited, and (deadline) alerted. Pending changes are
watched again after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Final

import structlog
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.audit.anomalies import Alert
from evota.audit.log import SYSTEM, Actor, AuditLog
from evota.clock import Clock
from evota.control import catalog, commands
from evota.control.dispatch import CommandPath, send_command
from evota.fleet import key_changes
from evota.fleet.credentials import hash_key
from evota.store.models import ChargerKeyChange

log = structlog.get_logger(__name__)

ACTION: Final = "charger.password"  # the audit action of each step after the command
ALERT_RULE: Final = "charger_password_not_taken"


class ChangePending(Exception):
    """The charger already has a pending password change (one at a time: the charger could
    otherwise hold either new key)."""


class PasswordChanges:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        audit: AuditLog,
        path: CommandPath,
        raise_alert: Callable[[Alert], Awaitable[int]],
        *,
        grace: timedelta = timedelta(minutes=10),
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._audit = audit
        self._path = path
        self._raise_alert = raise_alert
        self.grace = grace
        self._watchers: dict[int, asyncio.Task[None]] = {}
        self._done: dict[int, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[Any]] = set()  # audit entries of promotions

    async def start(self) -> None:
        """Watch the changes a previous run left pending (their deadlines still hold)."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(ChargerKeyChange.id, ChargerKeyChange.charger_id, ChargerKeyChange.until)
                    .where(ChargerKeyChange.state.in_(key_changes.PENDING))
                    .limit(100_000)
                )
            ).all()
        for row in rows:
            self._watch(row.id, row.charger_id, row.until)

    async def stop(self) -> None:
        tasks = [*self._watchers.values(), *self._tasks]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._watchers.clear()

    async def change(self, actor: Actor, charger_id: str, reason: str | None) -> dict[str, Any]:
        """Send the charger a new key; returns the change (``state``: ``accepted`` — now
        waiting for the charger to connect with it — or ``rejected``). Raises
        :class:`ChangePending`, or the command's ``CommandError`` (the change is then
        ``failed`` and the old key stays)."""
        now = self._clock.now()
        key = key_changes.new_key()
        salt, digest = hash_key(key)
        async with self._engine.begin() as conn:
            pending = (
                await conn.execute(
                    select(ChargerKeyChange.id, ChargerKeyChange.until).where(
                        ChargerKeyChange.charger_id == charger_id,
                        ChargerKeyChange.state.in_(key_changes.PENDING),
                    )
                )
            ).all()
            if any(now < row.until for row in pending):
                raise ChangePending(charger_id)
            change_id = (
                await conn.execute(
                    insert(ChargerKeyChange).values(
                        charger_id=charger_id,
                        salt=salt,
                        hash=digest,
                        state="sending",
                        until=now + self.grace,
                        actor=actor.name[:100],
                        created_at=now,
                    )
                )
            ).inserted_primary_key[0]  # type: ignore[index]
        spec = catalog.get("change-configuration")
        assert spec is not None
        params = catalog.ChangeConfigurationParams.connection_change("AuthorizationKey", key)
        try:
            result = await send_command(self._path, actor, charger_id, spec, params, reason)
        except commands.CommandError as exc:
            await self._finish(change_id, charger_id, "failed", f"no answer: {exc.reason}")
            raise
        state = key_changes.after_answer(result.status)
        if state == "rejected":
            await self._finish(change_id, charger_id, state, f"charger answered {result.status}")
            return {"charger_id": charger_id, "state": state, "until": None}
        until = self._clock.now() + self.grace
        async with self._engine.begin() as conn:
            updated = await conn.execute(
                update(ChargerKeyChange)
                .where(ChargerKeyChange.id == change_id, ChargerKeyChange.state == "sending")
                .values(state=state, until=until)
            )
        if updated.rowcount == 0:  # the charger reconnected with it before we got here
            return {"charger_id": charger_id, "state": "active", "until": None}
        self._watch(change_id, charger_id, until)
        return {"charger_id": charger_id, "state": state, "until": until.isoformat()}

    def promoted(self, charger_id: str, change_id: int) -> None:
        """The fleet service's hook: the charger connected with the new key, now its key."""
        event = self._done.get(change_id)
        if event is not None:
            event.set()
        task = asyncio.get_running_loop().create_task(
            self._audit.record(
                SYSTEM,
                ACTION,
                "active",
                target=charger_id,
                chargers=[charger_id],
                detail={"change": change_id, "step": "connected with the new key"},
            )
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settled(self) -> None:
        """Wait for every watcher (tests)."""
        while self._watchers or self._tasks:
            pending = [*self._watchers.values(), *self._tasks]
            await asyncio.gather(*pending, return_exceptions=True)

    def _watch(self, change_id: int, charger_id: str, until: datetime) -> None:
        event = self._done.setdefault(change_id, asyncio.Event())
        task = asyncio.get_running_loop().create_task(
            self._deadline(change_id, charger_id, until, event)
        )
        self._watchers[change_id] = task
        task.add_done_callback(lambda _t: self._watchers.pop(change_id, None))

    async def _deadline(
        self, change_id: int, charger_id: str, until: datetime, event: asyncio.Event
    ) -> None:
        try:
            wait = max(0.0, (until - self._clock.now()).total_seconds())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), wait)
            if event.is_set():
                return
            if await self._finish(
                change_id, charger_id, "expired", "no connection with the new key by the deadline"
            ):
                await self._raise_alert(
                    Alert(
                        rule=ALERT_RULE,
                        subject=charger_id,
                        at=self._clock.now(),
                        message=(
                            f"{charger_id} accepted a new password but did not connect with it "
                            "by the deadline; it keeps its old one"
                        ),
                        chargers=(charger_id,),
                    )
                )
        finally:
            self._done.pop(change_id, None)

    async def _finish(self, change_id: int, charger_id: str, state: str, detail: str) -> bool:
        """Close a pending change (only if still pending: the charger may have just used the
        new key) and audit it; returns whether it was still pending."""
        async with self._engine.begin() as conn:
            updated = await conn.execute(
                update(ChargerKeyChange)
                .where(
                    ChargerKeyChange.id == change_id,
                    ChargerKeyChange.state.in_(key_changes.PENDING),
                )
                .values(state=state, finished_at=self._clock.now(), detail=detail[:200])
            )
        if updated.rowcount == 0:
            return False
        log.warning("charger password change not taken", charger_id=charger_id, state=state)
        await self._audit.record(
            SYSTEM,
            ACTION,
            state,
            target=charger_id,
            chargers=[charger_id],
            detail={"change": change_id, "step": detail, "kept": "the old key"},
        )
        return True
