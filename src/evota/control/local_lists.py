"""Keep chargers' local authorization lists in step with the token store.

For each charger evota remembers the list it last had accepted (``local_auth_lists``: the
version and the entries). A sync asks the charger its list version (GetLocalListVersion):
when it still holds evota's last version, only the differences are sent (a Differential
SendLocalList, nothing at all when there are none); otherwise, or when asked, the whole list
(Full). Versions grow by one per accepted update. Every command goes through
:func:`evota.control.dispatch.send_command`, so each leaves its audit entry.

Once a charger accepted a list from evota, :class:`LocalListSync` keeps it current without
an operator: after every change of the token store the connected ones get the differences
(by the operator who made the change), and one that boots catches up (by ``system``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.audit.log import SYSTEM, Actor
from evota.clock import Clock
from evota.control import catalog, commands
from evota.control.dispatch import CommandPath, send_command
from evota.fleet import tokens
from evota.fleet.token_store import TokenAuthority
from evota.store.models import Charger, LocalAuthList

log = structlog.get_logger("evota.tokens")

#: Local list entries are id tags of at most 20 characters (1.6); longer 2.0.1 tokens are
#: answered online only (docs/id-tokens.md).
MAX_LIST_TOKEN = tokens.MAX_ID_TAG_16


@dataclass(frozen=True, slots=True)
class SyncResult:
    charger_id: str
    status: str  # the charger's SendLocalList answer, "unchanged", or "error:<reason>"
    update_type: str | None = None  # Full | Differential
    version: int | None = None
    entries: int = 0  # entries sent
    message: str | None = None


def _params(version: int, update_type: str, entries: dict[str, Any]) -> catalog.Params:
    items: list[dict[str, Any]] = []
    for token, entry in entries.items():
        if entry is None:
            items.append({"id_tag": token})
            continue
        parent = entry.get("parent_id")
        items.append(
            {
                "id_tag": token,
                "status": entry["status"],
                "expiry": entry.get("expires_at"),
                "parent_id_tag": parent if parent and len(parent) <= MAX_LIST_TOKEN else None,
            }
        )
    spec = catalog.COMMANDS["send-local-list"]
    return spec.params.model_validate(
        {"version": version, "update_type": update_type, "entries": items}
    )


async def _stored(lists: LocalListSync, charger_id: str) -> Any | None:
    async with lists.engine.connect() as conn:
        return (
            await conn.execute(select(LocalAuthList).where(LocalAuthList.charger_id == charger_id))
        ).first()


async def _remember(
    lists: LocalListSync, charger_id: str, version: int, entries: dict[str, Any]
) -> None:
    async with lists.engine.begin() as conn:
        await conn.execute(delete(LocalAuthList).where(LocalAuthList.charger_id == charger_id))
        await conn.execute(
            insert(LocalAuthList).values(
                charger_id=charger_id, version=version, entries=entries, synced_at=lists.clock.now()
            )
        )
    lists.managed.add(charger_id)


async def sync_one(
    lists: LocalListSync,
    actor: Actor,
    charger_id: str,
    site_id: str | None,
    *,
    full: bool = False,
    reason: str | None = None,
) -> SyncResult:
    """Bring one charger's local list to what the token store says for its site."""
    wanted = lists.tokens.local_list(site_id, MAX_LIST_TOKEN)
    stored = await _stored(lists, charger_id)
    try:
        held: int | None = None
        if not full or stored is None:
            answer = await send_command(
                lists.commands,
                actor,
                charger_id,
                catalog.COMMANDS["get-local-list-version"],
                catalog.COMMANDS["get-local-list-version"].params(),
                reason,
            )
            held = answer.details.get("list_version")
            if answer.status == "NotSupported" or held == -1:
                return SyncResult(charger_id, "NotSupported", message="no local list support")
        if not full and stored is not None and held == stored.version:
            changes = tokens.list_changes(stored.entries or {}, wanted)
            if not changes:
                return SyncResult(charger_id, "unchanged", None, stored.version)
            result = await _send(
                lists, actor, charger_id, stored.version + 1, "Differential", changes, reason
            )
            if result.status != "VersionMismatch":
                if result.status == "Accepted":
                    await _remember(lists, charger_id, stored.version + 1, wanted)
                return result
        base = max(stored.version if stored is not None else 0, held or 0)
        result = await _send(lists, actor, charger_id, base + 1, "Full", dict(wanted), reason)
        if result.status == "Accepted":
            await _remember(lists, charger_id, base + 1, wanted)
        return result
    except commands.CommandError as exc:
        return SyncResult(charger_id, f"error:{exc.reason}", message=exc.message)


async def _send(
    lists: LocalListSync,
    actor: Actor,
    charger_id: str,
    version: int,
    update_type: str,
    entries: dict[str, Any],
    reason: str | None,
) -> SyncResult:
    spec = catalog.COMMANDS["send-local-list"]
    answer = await send_command(
        lists.commands, actor, charger_id, spec, _params(version, update_type, entries), reason
    )
    return SyncResult(charger_id, answer.status, update_type, version, len(entries))


async def sync(
    lists: LocalListSync,
    actor: Actor,
    chargers: dict[str, str | None],
    *,
    full: bool = False,
    reason: str | None = None,
    concurrency: int = 20,
) -> list[SyncResult]:
    """Sync ``chargers`` (id → site), a few at a time; one result per charger, in order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(charger_id: str, site_id: str | None) -> SyncResult:
        async with gate:
            return await sync_one(lists, actor, charger_id, site_id, full=full, reason=reason)

    return list(await asyncio.gather(*(one(c, s) for c, s in chargers.items())))


#: The reason automatic syncs are audited with.
AUTO_REASON = "id tokens changed"
BOOT_REASON = "charger booted"


class LocalListSync:
    """Keeps the local lists evota manages current: differences after each token change to
    every connected charger that holds one, a catch-up when such a charger boots."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        token_store: TokenAuthority,
        commands: CommandPath,
        ready: Callable[[str], bool],
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.tokens = token_store  # what each site's list should hold
        self.commands = commands
        self.ready = ready  # connected and accepted
        self.managed: set[str] = set()  # chargers that accepted a list from evota
        self._actor: Actor = SYSTEM
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        self._boots: set[asyncio.Task[SyncResult]] = set()

    async def start(self) -> None:
        async with self.engine.connect() as conn:
            self.managed = set((await conn.execute(select(LocalAuthList.charger_id))).scalars())

    async def stop(self) -> None:
        tasks = [*self._boots, *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def tokens_changed(self, actor: Actor) -> None:
        """Called after every change of the token store (must not block)."""
        if not self.managed:
            return
        self._actor, self._dirty = actor, True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="local-list-sync")

    async def idle(self) -> None:
        """Wait for the automatic syncs under way (tests, a clean stop)."""
        while (self._task is not None and not self._task.done()) or self._boots:
            await asyncio.gather(
                *([self._task] if self._task else []), *self._boots, return_exceptions=True
            )

    async def _run(self) -> None:
        while self._dirty:  # changes during a run: one more run covers them all
            self._dirty = False
            ids = sorted(c for c in self.managed if self.ready(c))
            if not ids:
                continue
            async with self.engine.connect() as conn:
                rows = (
                    await conn.execute(
                        select(Charger.id, Charger.site_id).where(Charger.id.in_(ids))
                    )
                ).all()
            try:
                await sync(self, self._actor, {r.id: r.site_id for r in rows}, reason=AUTO_REASON)
            except Exception:  # never let one failure stop later syncs
                log.exception("automatic local list sync failed")

    def charger_ready(self, charger_id: str) -> None:
        """A charger booted and was accepted (a fleet ready listener: must not block)."""
        if charger_id not in self.managed:
            return
        task = asyncio.create_task(self._catch_up(charger_id), name="local-list-catch-up")
        self._boots.add(task)
        task.add_done_callback(self._boots.discard)

    async def _catch_up(self, charger_id: str) -> SyncResult:
        async with self.engine.connect() as conn:
            site = (
                await conn.execute(select(Charger.site_id).where(Charger.id == charger_id))
            ).scalar()
        return await sync_one(self, SYSTEM, charger_id, site, reason=BOOT_REASON)
