"""Archive-then-prune for the audit log: never a silent deletion.

``archive`` writes the entries up to a cut to a file (evota.audit.archive_format), reads the
file back and checks it, and only then, in one short transaction under the append lock,
records the signed checkpoint; the archived rows are then deleted in bounded batches, each
its own transaction, so appends never wait long. A run that stops midway leaves archived
rows behind the checkpoint: ``verify`` skips them and the next run deletes them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.audit import archive_format, chain
from evota.audit.log import AuditLog, latest_checkpoint, lock_appends
from evota.store.models import AuditCharger, AuditCheckpoint, AuditEntry

log = structlog.get_logger("evota.audit")

ARCHIVE_DIR = "audit-archive"
"""The default place for archives, inside the data directory."""


class ArchiveError(Exception):
    """Archiving refused: no key, a broken chain, or an archive that did not check out."""


@dataclass(frozen=True, slots=True)
class Archived:
    checkpoint: chain.Checkpoint
    path: Path
    entries: int
    deleted: int


async def archive(
    audit: AuditLog,
    directory: Path,
    *,
    before: datetime,
    max_entries: int = 100_000,
    batch: int = 1000,
) -> Archived | None:
    """Archive and prune the entries older than ``before`` (at most ``max_entries`` per
    call; the next call goes on); None when there is nothing to archive."""
    if audit.key is None:
        raise ArchiveError("no audit head key in the data directory: a checkpoint needs it")
    key = audit.key
    engine = audit.engine
    async with engine.connect() as conn:
        previous = await latest_checkpoint(conn)
        prev_seq, prev_hash = (previous.seq, previous.hash) if previous else (0, chain.GENESIS)
        head = await audit.stored_head()
        newest_sealed = head.seq if head is not None else 0
        cut = (
            await conn.execute(
                select(AuditEntry.seq)
                .where(
                    AuditEntry.seq > prev_seq,
                    AuditEntry.seq <= min(newest_sealed, prev_seq + max_entries),
                    AuditEntry.at < before,
                )
                .order_by(AuditEntry.seq.desc())
                .limit(1)
            )
        ).scalar()
    if cut is None:
        await prune_archived(engine, prev_seq, batch=batch)  # what an earlier run left
        return None
    entries: list[chain.Entry] = []
    async for e in audit.entries():  # storage order: the oldest rows come first
        if e.seq > cut:
            break
        if e.seq > prev_seq:
            entries.append(e)
    count, broken = await asyncio.to_thread(chain.verify, entries, chain.Head(prev_seq, prev_hash))
    if broken is None and (not entries or entries[-1].seq != cut):
        broken = chain.Break(cut, count, "missing")
    if broken is not None:
        raise ArchiveError(f"not archived: {chain.explain(broken)} (see evota audit verify)")
    now = audit.clock.now()
    content = archive_format.body(prev_seq, prev_hash, entries, now)
    name = archive_format.file_name(prev_seq, cut)
    cp = chain.seal_checkpoint(
        key,
        chain.Checkpoint(
            prev_seq=prev_seq,
            prev_hash=prev_hash,
            seq=cut,
            hash=entries[-1].hash,
            archive=name,
            archive_sha256=hashlib.sha256(content).hexdigest(),
        ),
    )
    path = directory / name
    await asyncio.to_thread(_write, path, content + archive_format.checkpoint_line(cp))
    checked = archive_format.check(await asyncio.to_thread(path.read_bytes), key)
    if checked.problem is not None or checked.checkpoint != cp:
        raise ArchiveError(f"the archive {path} did not check out: {checked.problem}")
    async with engine.begin() as conn:
        await lock_appends(conn)
        if await latest_checkpoint(conn) != previous:
            raise ArchiveError("another archive run cut the log meanwhile: nothing pruned")
        await conn.execute(
            insert(AuditCheckpoint).values(
                prev_seq=cp.prev_seq,
                prev_hash=cp.prev_hash,
                seq=cp.seq,
                hash=cp.hash,
                archive=cp.archive,
                archive_sha256=cp.archive_sha256,
                mac=cp.mac,
                at=now,
            )
        )
    deleted = await prune_archived(engine, cut, batch=batch)
    log.info("audit entries archived", archive=str(path), first=prev_seq + 1, last=cut)
    return Archived(cp, path, len(entries), deleted)


async def prune_archived(engine: AsyncEngine, upto: int, *, batch: int = 1000) -> int:
    """Delete archived entries (seq <= ``upto``, covered by a checkpoint) and their charger
    links, ``batch`` rows per short transaction."""
    deleted = 0
    while True:
        async with engine.begin() as conn:
            ids = (
                (
                    await conn.execute(
                        select(AuditEntry.id)
                        .where(AuditEntry.seq <= upto)
                        .order_by(AuditEntry.seq)
                        .limit(batch)
                    )
                )
                .scalars()
                .all()
            )
            if not ids:
                return deleted
            await conn.execute(delete(AuditCharger).where(AuditCharger.entry_id.in_(ids)))
            await conn.execute(delete(AuditEntry).where(AuditEntry.id.in_(ids)))
        deleted += len(ids)


def _write(path: Path, data: bytes) -> None:
    """Write the archive durably (private, fsynced, renamed in place: never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
