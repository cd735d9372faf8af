"""The audit log's store: append sealed entries, read them back filtered, verify the chain.

Appends are serialized by one writer task per process that commits every entry waiting
at that moment in one transaction (group commit); the unique ``seq`` catches a second
process, and the batch is relinked on the new head and retried. Listeners (anomaly rules)
see each entry after it is committed; a failing listener is logged and never loses it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.audit import chain
from evota.clock import Clock
from evota.store.models import AuditCharger, AuditEntry

log = structlog.get_logger("evota.audit")

Listener = Callable[["Recorded"], Awaitable[None]]
_Pending = tuple[chain.Entry, tuple[str, ...], "asyncio.Future[chain.Entry]"]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did something: an operator, a token, or evota itself (``system``)."""

    name: str
    roles: tuple[str, ...] = ()
    request_id: str | None = None

    @property
    def role(self) -> str:
        return ",".join(self.roles)


SYSTEM = Actor("system", ("system",))


@dataclass(frozen=True, slots=True)
class Recorded:
    entry: chain.Entry
    chargers: tuple[str, ...]


def _entry(row: Any) -> chain.Entry:
    return chain.Entry(
        seq=row.seq,
        at=row.at,
        actor=row.actor,
        role=row.role,
        action=row.action,
        outcome=row.outcome,
        target=row.target,
        reason=row.reason,
        request_id=row.request_id,
        detail=row.detail or {},
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


class AuditLog:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self._listeners: list[Listener] = []
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self.max_batch = 500

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def record(
        self,
        actor: Actor,
        action: str,
        outcome: str,
        *,
        target: str | None = None,
        chargers: Sequence[str] = (),
        reason: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> int:
        """Append one entry; returns its sequence number."""
        draft = chain.Entry(
            seq=0,
            at=self.clock.now(),
            actor=actor.name,
            role=actor.role,
            action=action,
            outcome=outcome,
            target=target,
            reason=reason,
            request_id=actor.request_id,
            detail=_jsonable(dict(detail or {})),
        )
        charger_ids = tuple(dict.fromkeys(chargers))
        done: asyncio.Future[chain.Entry] = asyncio.get_running_loop().create_future()
        self._pending.append((draft, charger_ids, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="audit-append")
        sealed = await done
        recorded = Recorded(sealed, charger_ids)
        for listener in self._listeners:
            try:
                await listener(recorded)
            except Exception:
                log.exception("audit listener failed", action=action)
        return sealed.seq

    async def _flush(self) -> None:
        """Group commit: every entry waiting when a transaction starts goes into it, so a
        burst (a bulk operation's answers) costs one commit, not one per entry."""
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: len(batch)]
            try:
                sealed = await self._append_batch(batch)
            except Exception as exc:  # the database refused: each caller sees the error
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, _, fut), entry in zip(batch, sealed, strict=True):
                if not fut.done():
                    fut.set_result(entry)

    async def _append_batch(self, batch: list[_Pending]) -> list[chain.Entry]:
        for attempt in range(5):
            try:
                return await self._append(batch)
            except IntegrityError:  # another process appended first: relink and retry
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    async def _append(self, batch: list[_Pending]) -> list[chain.Entry]:
        """One transaction, three statements whatever the batch size: read the head, insert
        the sealed entries, link them to their chargers."""
        out: list[chain.Entry] = []
        async with self.engine.begin() as conn:
            head = (
                await conn.execute(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1))
            ).first()
            previous = _entry(head) if head is not None else None
            for draft, _, _ in batch:
                previous = chain.seal(previous, draft)
                out.append(previous)
            await conn.execute(
                insert(AuditEntry),
                [
                    {
                        "seq": e.seq,
                        "at": e.at,
                        "actor": e.actor,
                        "role": e.role,
                        "action": e.action,
                        "outcome": e.outcome,
                        "target": e.target,
                        "reason": e.reason,
                        "request_id": e.request_id,
                        "detail": dict(e.detail),
                        "prev_hash": e.prev_hash,
                        "hash": e.hash,
                    }
                    for e in out
                ],
            )
            if any(chargers for _, chargers, _ in batch):
                rows = await conn.execute(
                    select(AuditEntry.seq, AuditEntry.id).where(
                        AuditEntry.seq >= out[0].seq, AuditEntry.seq <= out[-1].seq
                    )
                )
                ids = {seq: entry_id for seq, entry_id in rows}
                await conn.execute(
                    insert(AuditCharger),
                    [
                        {"entry_id": ids[e.seq], "charger_id": c}
                        for e, (_, chargers, _) in zip(out, batch, strict=True)
                        for c in chargers
                    ],
                )
        return out

    async def entries(self, batch: int = 2000) -> AsyncIterator[chain.Entry]:
        """Every entry in storage order (``id``), in batches."""
        last = 0
        while True:
            async with self.engine.connect() as conn:
                rows = (
                    await conn.execute(
                        select(AuditEntry)
                        .where(AuditEntry.id > last)
                        .order_by(AuditEntry.id)
                        .limit(batch)
                    )
                ).all()
            if not rows:
                return
            for row in rows:
                yield _entry(row)
            last = rows[-1].id

    async def verify(self) -> tuple[int, chain.Break | None]:
        """Walk the whole chain; (entries checked, first break or None)."""
        collected = [e async for e in self.entries()]
        return await asyncio.to_thread(chain.verify, collected)


def _jsonable(value: Any) -> Any:
    """Details are hashed as JSON: datetimes become ISO strings, tuples lists, sets sorted."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
