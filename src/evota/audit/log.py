"""The audit log's store: append sealed entries, read them back filtered, verify the chain.

Appends are serialized (one lock per process, and the unique ``seq`` catches a second
process: the append is retried on the new head). Listeners (anomaly rules) see each entry
after it is committed; a failing listener is logged and never loses the entry.
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
        self._lock = asyncio.Lock()
        self._listeners: list[Listener] = []

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
        async with self._lock:
            for attempt in range(5):
                try:
                    sealed = await self._append(draft, charger_ids)
                    break
                except IntegrityError:  # another process appended first: relink and retry
                    if attempt == 4:
                        raise
        recorded = Recorded(sealed, charger_ids)
        for listener in self._listeners:
            try:
                await listener(recorded)
            except Exception:
                log.exception("audit listener failed", action=action)
        return sealed.seq

    async def _append(self, draft: chain.Entry, chargers: tuple[str, ...]) -> chain.Entry:
        async with self.engine.begin() as conn:
            head = (
                await conn.execute(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1))
            ).first()
            sealed = chain.seal(_entry(head) if head is not None else None, draft)
            result = await conn.execute(
                insert(AuditEntry).values(
                    seq=sealed.seq,
                    at=sealed.at,
                    actor=sealed.actor,
                    role=sealed.role,
                    action=sealed.action,
                    outcome=sealed.outcome,
                    target=sealed.target,
                    reason=sealed.reason,
                    request_id=sealed.request_id,
                    detail=dict(sealed.detail),
                    prev_hash=sealed.prev_hash,
                    hash=sealed.hash,
                )
            )
            entry_id = result.inserted_primary_key[0]  # type: ignore[index]
            if chargers:
                await conn.execute(
                    insert(AuditCharger),
                    [{"entry_id": entry_id, "charger_id": c} for c in chargers],
                )
        return sealed

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
