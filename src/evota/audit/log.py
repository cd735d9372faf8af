"""The audit log's store: append sealed entries, read them back filtered, verify the chain.

Appends are serialized by one writer task per process that commits every entry waiting
at that moment in one transaction (group commit). Several processes (cluster nodes on one
PostgreSQL) take a transaction advisory lock before reading the head (:func:`lock_appends`),
so their batches extend one chain in turn; the unique ``seq`` stays as the backstop (a
batch that meets it is relinked on the new head and retried). Listeners (anomaly rules)
see each entry after it is committed; a failing listener is logged and never loses it.

The same transaction moves the sealed head (``audit_head``: seq, hash and an HMAC keyed by
``audit-head.key`` in the data directory, never in the database), and every
``anchor_interval`` seconds the head is published outside the database: one ``audit head``
log line and one line in ``audit-anchors.jsonl`` next to the key. ``verify`` compares the
chain's end with both.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import structlog
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from evota.audit import chain
from evota.clock import Clock
from evota.signed_tokens import MIN_KEY_BYTES, new_key
from evota.store.models import AuditCharger, AuditCheckpoint, AuditEntry, AuditHead

log = structlog.get_logger("evota.audit")

HEAD_KEY_FILE: Final = "audit-head.key"
ANCHOR_FILE: Final = "audit-anchors.jsonl"
_HEAD_ID: Final = 1

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


def _entry(row: Any, linked: Sequence[str] | None = None) -> chain.Entry:
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
        v=row.v,
        chargers=tuple(row.chargers or ()),
        linked=None if linked is None else tuple(linked),
    )


def head_key(data_dir: Path, *, create: bool = False) -> tuple[bytes | None, bool]:
    """The head's HMAC key from the data directory, and whether it was created just now.

    Only the server creates it (``create``), mode 0600 like the download-token key; other
    processes use it when it is there and otherwise leave the head alone."""
    path = data_dir / HEAD_KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600) if create else None
    except FileExistsError:
        fd = None
    if fd is not None:
        key = new_key()
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key, True
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        return None, False
    if len(key) < MIN_KEY_BYTES:
        raise RuntimeError(f"{path} holds no usable key")
    return key, False


#: The PostgreSQL advisory lock (two-int form, so it cannot meet a one-bigint key) that
#: serializes appends across processes: ``evota`` in ASCII, then 1 for the audit log.
APPEND_LOCK: Final = (0x65766F74, 1)


async def lock_appends(conn: AsyncConnection) -> None:
    """Serialize appends (and the archive's cut) across processes on PostgreSQL: taken first
    in the transaction and held to its end, so the head is read only by the one writer that
    will extend it; several nodes append to one chain instead of racing on ``seq`` and
    retrying. SQLite needs none: one node per file, and its writes are serialized anyway."""
    if conn.dialect.name == "postgresql":
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(:a, :b)"),
            {"a": APPEND_LOCK[0], "b": APPEND_LOCK[1]},
        )


def read_anchor(path: Path) -> chain.Head | None:
    """The furthest head published to the anchor file (None if there is none)."""
    try:
        content = path.read_text()
    except FileNotFoundError:
        return None
    best: chain.Head | None = None
    for line in content.splitlines():
        try:
            item = json.loads(line)
            anchor = chain.Head(int(item["seq"]), str(item["hash"]), str(item.get("mac", "")))
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line after a crash
        if best is None or anchor.seq > best.seq:
            best = anchor
    return best


class AuditLog:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        *,
        key: bytes | None = None,
        anchors: Path | None = None,
        anchor_interval: float = 60.0,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self._listeners: list[Listener] = []
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self.max_batch = 500
        self.key = key
        self.anchors = anchors
        self.anchor_interval = anchor_interval
        self._head: chain.Head | None = None  # the newest head this process sealed
        self._anchored = 0  # the seq last published
        self._next_anchor: float | None = None  # loop time the next anchor is due

    @classmethod
    def for_data_dir(
        cls, engine: AsyncEngine, clock: Clock, data_dir: Path, *, create_key: bool = False
    ) -> tuple[AuditLog, bool]:
        """The log with the data directory's head key and anchor file; and whether the key
        was created now (the server's first start with it: the cut-over)."""
        key, created = head_key(data_dir, create=create_key)
        return cls(engine, clock, key=key, anchors=data_dir / ANCHOR_FILE), created

    async def start(self, key_created: bool) -> None:
        """Seal the head if there is none yet: on an empty log, or when the key was created
        just now (the first start after the upgrade that introduced it: entries before
        this point are sealed as they are). A head missing otherwise was deleted: it is
        not re-created, and verify reports it."""
        if self.key is None:
            return
        async with self.engine.begin() as conn:
            stored = (await conn.execute(select(AuditHead))).first()
            if stored is not None:
                return
            row = (
                await conn.execute(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1))
            ).first()
            if row is not None and not key_created:
                log.error("audit head missing: not re-created, see evota audit verify")
                return
            head = chain.seal_head(self.key, _entry(row) if row is not None else None)
            await conn.execute(
                insert(AuditHead).values(
                    id=_HEAD_ID, seq=head.seq, hash=head.hash, mac=head.mac, at=self.clock.now()
                )
            )
        if head.seq:
            log.warning("audit head sealed over the existing log (cut-over)", seq=head.seq)

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
            chargers=tuple(dict.fromkeys(chargers)),
        )
        charger_ids = draft.chargers
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
            self._maybe_anchor()

    async def drain(self) -> None:
        """Wait until every entry recorded so far is committed (or refused)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    def _maybe_anchor(self, force: bool = False) -> None:
        """Publish the head outside the database (a log line and the anchor file) at most
        every ``anchor_interval`` seconds, the first time one interval after the first
        append, and whenever ``force``d (at stop)."""
        now = asyncio.get_running_loop().time()
        if not force:
            if self._next_anchor is None:
                self._next_anchor = now + self.anchor_interval
            if now < self._next_anchor:
                return
        self._next_anchor = now + self.anchor_interval
        head = self._head
        if head is None or head.seq == self._anchored:
            return
        self._anchored = head.seq
        log.info("audit head", seq=head.seq, hash=head.hash, mac=head.mac)
        if self.anchors is None:
            return
        line = json.dumps(
            {
                "at": self.clock.now().isoformat(),
                "seq": head.seq,
                "hash": head.hash,
                "mac": head.mac,
            }
        )
        try:
            fd = os.open(self.anchors, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(line + "\n")
        except OSError:
            log.exception("cannot write the audit anchor file", path=str(self.anchors))

    def anchor(self) -> None:
        """Publish the current head now (at stop, so the last head is outside the database)."""
        self._maybe_anchor(force=True)

    async def _append_batch(self, batch: list[_Pending]) -> list[chain.Entry]:
        for attempt in range(5):
            try:
                return await self._append(batch)
            except IntegrityError:  # another process appended first: relink and retry
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    async def _append(self, batch: list[_Pending]) -> list[chain.Entry]:
        """One transaction, four statements whatever the batch size: read the newest entry,
        insert the sealed entries, link them to their chargers, move the sealed head."""
        out: list[chain.Entry] = []
        async with self.engine.begin() as conn:
            await lock_appends(conn)
            head = (
                await conn.execute(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1))
            ).first()
            previous = _entry(head) if head is not None else await _after_checkpoint(conn)
            linked_to = previous
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
                        "v": e.v,
                        "chargers": list(e.chargers),
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
            if self.key is not None:
                await self._move_head(conn, linked_to, out[-1])
        return out

    async def _move_head(
        self, conn: AsyncConnection, linked_to: chain.Entry | None, newest: chain.Entry
    ) -> None:
        """Seal ``newest`` as the head, but only if the stored head is the valid seal of the
        entry this batch was linked to (one conditional UPDATE): after a truncation, a
        forged or a deleted head it stays as it is, so the evidence survives the next
        append."""
        assert self.key is not None
        expected = chain.seal_head(self.key, linked_to)
        sealed = chain.seal_head(self.key, newest)
        moved = await conn.execute(
            update(AuditHead)
            .where(
                AuditHead.id == _HEAD_ID,
                AuditHead.seq == expected.seq,
                AuditHead.hash == expected.hash,
                AuditHead.mac == expected.mac,
            )
            .values(seq=sealed.seq, hash=sealed.hash, mac=sealed.mac, at=self.clock.now())
        )
        if moved.rowcount != 1:
            log.error(
                "audit log does not match its sealed head: head not moved, see evota audit verify",
                newest=expected.seq,
            )
            return
        self._head = sealed

    async def entries(self, batch: int = 2000) -> AsyncIterator[chain.Entry]:
        """Every entry in storage order (``id``), in batches, with its charger links."""
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
                links: dict[int, list[str]] = {}
                if rows:
                    for entry_id, charger_id in await conn.execute(
                        select(AuditCharger.entry_id, AuditCharger.charger_id).where(
                            AuditCharger.entry_id > last, AuditCharger.entry_id <= rows[-1].id
                        )
                    ):
                        links.setdefault(entry_id, []).append(charger_id)
            if not rows:
                return
            for row in rows:
                yield _entry(row, links.get(row.id, []))
            last = rows[-1].id

    async def stored_head(self) -> chain.Head | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(AuditHead).where(AuditHead.id == _HEAD_ID))).first()
        return None if row is None else chain.Head(row.seq, row.hash, row.mac)

    @property
    def head_checked(self) -> bool:
        """Whether ``verify`` can check the sealed head (it needs the key)."""
        return self.key is not None

    async def checkpoints(self) -> list[chain.Checkpoint]:
        """Every checkpoint an archived prefix left, oldest first."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.seq))).all()
        return [_checkpoint(row) for row in rows]

    async def verify(self) -> tuple[int, chain.Break | None]:
        """Walk the whole chain (from the last checkpoint when a prefix was archived), then
        compare its end with the sealed head (when this process has the key) and the latest
        anchor; (entries checked, first break)."""
        before = await self.stored_head() if self.key is not None else None
        checkpoints = await self.checkpoints()
        broken = chain.check_checkpoints(checkpoints, self.key)
        if broken is not None:
            return 0, broken
        start = checkpoints[-1].start if checkpoints else None
        base = start.seq if start is not None else 0
        # Entries at or before the checkpoint are archived; a prune that was interrupted
        # leaves some until the next run deletes them.
        collected = [e async for e in self.entries() if e.seq > base]
        count, broken = await asyncio.to_thread(chain.verify, collected, start)
        if broken is not None:
            return count, broken
        if self.key is not None:
            after = await self.stored_head()
            broken = chain.check_head(collected, before, self.key, after=after, start=start)
        if broken is None and self.anchors is not None:
            anchor = await asyncio.to_thread(read_anchor, self.anchors)
            broken = chain.check_anchor(collected, anchor, start)
        return count, broken


def _checkpoint(row: Any) -> chain.Checkpoint:
    return chain.Checkpoint(
        prev_seq=row.prev_seq,
        prev_hash=row.prev_hash,
        seq=row.seq,
        hash=row.hash,
        archive=row.archive,
        archive_sha256=row.archive_sha256,
        mac=row.mac,
    )


async def latest_checkpoint(conn: AsyncConnection) -> chain.Checkpoint | None:
    row = (
        await conn.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.seq.desc()).limit(1))
    ).first()
    return None if row is None else _checkpoint(row)


async def _after_checkpoint(conn: AsyncConnection) -> chain.Entry | None:
    """What the first entry after a wholly archived log links to: the last checkpoint, as
    an entry stub (only its seq and hash are read)."""
    cp = await latest_checkpoint(conn)
    if cp is None:
        return None
    return chain.Entry(
        seq=cp.seq, at=datetime.min, actor="", role="", action="", outcome="", hash=cp.hash
    )


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
