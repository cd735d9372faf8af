"""Audit archive-then-prune: the archive verifies on its own and ends at a signed
checkpoint, the remaining chain verifies from it, and tampering with either is caught:
an edited archive, rows deleted without a checkpoint, a checkpoint not signed by the key."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, select, update
from typer.testing import CliRunner

from evota.audit import archive_format, chain
from evota.audit.archive import ArchiveError, archive
from evota.audit.log import Actor, AuditLog
from evota.cli import app as cli_app
from evota.signed_tokens import new_key
from evota.store import db
from evota.store.models import AuditCharger, AuditCheckpoint, AuditEntry
from tests.conftest import ShiftedClock

runner = CliRunner()
ACTOR = Actor("alice", ("admin",))


@pytest.fixture
async def audit(tmp_path: Path, database_url: str) -> AsyncIterator[AuditLog]:
    engine = db.create_engine(database_url)
    await db.migrate(engine)
    log, created = AuditLog.for_data_dir(engine, ShiftedClock(), tmp_path, create_key=True)
    await log.start(created)
    try:
        yield log
    finally:
        await log.drain()
        await engine.dispose()


async def _record(audit: AuditLog, n: int, *, days_ago: float = 0) -> None:
    clock = audit.clock
    assert isinstance(clock, ShiftedClock)
    clock.offset = -timedelta(days=days_ago)
    for i in range(n):
        await audit.record(ACTOR, "site.create", "ok", target=f"s{i}", chargers=[f"CP{i % 3}"])
    clock.offset = timedelta(0)


async def test_archive_then_prune_leaves_a_verifying_chain_and_archive(
    tmp_path: Path, audit: AuditLog
) -> None:
    await _record(audit, 12, days_ago=40)
    await _record(audit, 3)
    done = await archive(audit, tmp_path / "arch", before=audit.clock.now().replace(day=1))
    assert done is not None
    assert (done.entries, done.deleted, done.checkpoint.seq) == (12, 12, 12)
    assert (done.path.stat().st_mode & 0o777) == 0o600
    async with audit.engine.connect() as conn:
        seqs = (await conn.execute(select(AuditEntry.seq).order_by(AuditEntry.seq))).scalars()
        assert list(seqs) == [13, 14, 15]
        links = (await conn.execute(select(AuditCharger.entry_id))).scalars().all()
        assert len(links) == 3  # the archived entries' links went with them
    assert await audit.verify() == (3, None)
    checked = archive_format.check(done.path.read_bytes(), audit.key)
    assert (checked.problem, checked.entries, checked.signed) == (None, 12, True)
    assert checked.checkpoint == done.checkpoint

    # Later: everything is archived, then the log goes on from the second checkpoint.
    await _record(audit, 2)
    later = audit.clock.now()
    second = await archive(audit, tmp_path / "arch", before=later.replace(year=later.year + 1))
    assert second is not None
    assert (second.checkpoint.prev_seq, second.checkpoint.seq) == (12, 17)
    assert second.checkpoint.prev_hash == done.checkpoint.hash
    assert await audit.verify() == (0, None)
    assert await audit.record(ACTOR, "site.create", "ok", target="after") == 18
    assert await audit.verify() == (1, None)
    assert archive_format.check(second.path.read_bytes(), audit.key).problem is None
    assert await archive(audit, tmp_path / "arch", before=later.replace(day=1)) is None


async def test_an_edited_archive_is_detected(tmp_path: Path, audit: AuditLog) -> None:
    await _record(audit, 5, days_ago=40)
    done = await archive(audit, tmp_path, before=audit.clock.now().replace(day=1))
    assert done is not None
    lines = done.path.read_bytes().splitlines(keepends=True)
    entry = json.loads(lines[2])
    entry["actor"] = "mallory"
    edited = [lines[0], lines[1], (json.dumps(entry) + "\n").encode(), *lines[3:]]
    problem = archive_format.check(b"".join(edited), audit.key).problem
    assert problem is not None and "edited" in problem
    # The body's hash rewritten in the checkpoint too: its MAC no longer matches.
    cp = json.loads(lines[-1])["checkpoint"]
    cp["archive_sha256"] = hashlib.sha256(b"".join(edited[:-1])).hexdigest()
    forged = [*edited[:-1], (json.dumps({"checkpoint": cp}) + "\n").encode()]
    problem = archive_format.check(b"".join(forged), audit.key).problem
    assert problem is not None and "not signed by the key" in problem
    # Without the key the chain inside still names the edited entry.
    problem = archive_format.check(b"".join(forged), None).problem
    assert problem == "entry 2 does not match its hash or its predecessor: it was changed"
    # A truncated archive (its last entries dropped) no longer ends at its checkpoint.
    short = [*lines[:-2], lines[-1]]
    assert archive_format.check(b"".join(short), audit.key).problem is not None


async def test_rows_deleted_without_a_checkpoint_are_detected(audit: AuditLog) -> None:
    await _record(audit, 6)
    async with audit.engine.begin() as conn:
        await conn.execute(delete(AuditCharger))
        await conn.execute(delete(AuditEntry).where(AuditEntry.seq <= 3))
    _, broken = await audit.verify()
    assert broken is not None and (broken.seq, broken.reason) == (1, "missing")


async def test_a_checkpoint_not_signed_by_the_key_is_detected(
    tmp_path: Path, audit: AuditLog
) -> None:
    """Someone who can write the database but has not the key deletes a prefix and writes a
    checkpoint for it: its MAC, made with another key, does not pass."""
    await _record(audit, 6)
    async with audit.engine.begin() as conn:
        row = (await conn.execute(select(AuditEntry).where(AuditEntry.seq == 3))).one()
        cp = chain.seal_checkpoint(
            new_key(), chain.Checkpoint(0, chain.GENESIS, 3, row.hash, "made-up", "0" * 64)
        )
        await conn.execute(delete(AuditCharger))
        await conn.execute(delete(AuditEntry).where(AuditEntry.seq <= 3))
        await conn.execute(
            insert(AuditCheckpoint).values(
                **{k: getattr(cp, k) for k in chain.Checkpoint.__dataclass_fields__},
                at=audit.clock.now(),
            )
        )
    _, broken = await audit.verify()
    assert broken is not None and (broken.reason, broken.head) == ("checkpoint_forged", 3)
    assert "without the key" in chain.explain(broken)


async def test_a_checkpoint_moved_past_the_archive_is_detected(
    tmp_path: Path, audit: AuditLog
) -> None:
    """A signed checkpoint whose seq is changed in the database fails its MAC; one that is
    deleted leaves a chain that starts after 1: missing."""
    await _record(audit, 6, days_ago=40)
    await _record(audit, 2)
    done = await archive(audit, tmp_path, before=audit.clock.now().replace(day=1))
    assert done is not None
    async with audit.engine.begin() as conn:
        await conn.execute(update(AuditCheckpoint).values(seq=7))
        await conn.execute(delete(AuditEntry).where(AuditEntry.seq == 7))
    assert (await audit.verify())[1] == chain.Break(7, 0, "checkpoint_forged", head=7)
    async with audit.engine.begin() as conn:
        await conn.execute(delete(AuditCheckpoint))
    _, broken = await audit.verify()
    assert broken is not None and (broken.seq, broken.reason) == (1, "missing")


async def test_archive_refuses_a_broken_chain_and_a_missing_key(
    tmp_path: Path, audit: AuditLog
) -> None:
    await _record(audit, 4, days_ago=40)
    async with audit.engine.begin() as conn:
        await conn.execute(update(AuditEntry).where(AuditEntry.seq == 2).values(actor="mallory"))
    with pytest.raises(ArchiveError, match="entry 2 does not match"):
        await archive(audit, tmp_path, before=audit.clock.now())
    async with audit.engine.connect() as conn:
        assert len((await conn.execute(select(AuditEntry.seq))).all()) == 4  # nothing pruned
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".jsonl")]
    keyless = replace_key(audit)
    with pytest.raises(ArchiveError, match="no audit head key"):
        await archive(keyless, tmp_path, before=audit.clock.now())


def replace_key(audit: AuditLog) -> AuditLog:
    return AuditLog(audit.engine, audit.clock, key=None)


async def test_cli_archives_and_verifies_an_archive(
    tmp_path: Path, audit: AuditLog, database_url: str
) -> None:
    await _record(audit, 5, days_ago=40)
    await _record(audit, 1)
    out = tmp_path / "out"
    args = ["--data-dir", str(tmp_path), "--database-url", database_url]
    res = await asyncio.to_thread(
        runner.invoke,
        cli_app,
        ["audit", "archive", "--older-than-days", "30", "--output-dir", str(out), *args],
    )
    assert res.exit_code == 0, res.output
    assert "archived entries 1-5" in res.output
    (path,) = out.glob("audit-*.jsonl")
    res = await asyncio.to_thread(
        runner.invoke, cli_app, ["audit", "verify-archive", str(path), "--data-dir", str(tmp_path)]
    )
    assert res.exit_code == 0, res.output
    assert "archive intact: entries 1-5 (5), ends at checkpoint 5" in res.output
    linked = ["audit", "verify-archive", str(path), *args]  # and the database has its checkpoint
    res = await asyncio.to_thread(runner.invoke, cli_app, linked)
    assert res.exit_code == 0, res.output
    res = await asyncio.to_thread(runner.invoke, cli_app, ["audit", "verify", *args])
    assert res.exit_code == 0, res.output
    assert "1 entries verified" in res.output
    async with audit.engine.begin() as conn:
        cps = (await conn.execute(select(AuditCheckpoint))).mappings().all()
        await conn.execute(delete(AuditCheckpoint))
    res = await asyncio.to_thread(runner.invoke, cli_app, linked)
    assert res.exit_code == 1
    assert "its checkpoint is not in the database" in res.output
    async with audit.engine.begin() as conn:
        await conn.execute(insert(AuditCheckpoint), [dict(cp) for cp in cps])
    path.write_bytes(path.read_bytes().replace(b'"alice"', b'"mallory"', 1))
    res = await asyncio.to_thread(
        runner.invoke, cli_app, ["audit", "verify-archive", str(path), "--data-dir", str(tmp_path)]
    )
    assert res.exit_code == 1
    assert "edited" in res.output
    res = await asyncio.to_thread(
        runner.invoke, cli_app, ["audit", "archive", "--older-than-days", "-1", *args]
    )
    assert res.exit_code != 0 and "--older-than-days must be 0 or more" in res.output
