"""The audit chain with several nodes: appends from several processes on one PostgreSQL
extend one chain (evota.audit.log.lock_appends), never fork it or lose an entry."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from evota.audit.log import Actor, AuditLog, head_key
from evota.clock import SystemClock
from evota.store import db
from evota.store.models import AuditEntry
from tests.cluster.harness import pg_database  # noqa: F401


@pytest.fixture
def pg_url(pg_database: str) -> str:  # noqa: F811
    """PostgreSQL only (a fresh database per test)."""
    return pg_database


async def test_concurrent_appends_from_several_nodes_make_one_verifying_chain(
    tmp_path: Path, pg_url: str
) -> None:
    """Three AuditLogs, each with its own engine (its own connection pool, as three nodes
    have), append 150 entries each at once. Without the lock their batches race on the same
    ``seq`` and a batch that loses five times in a row is refused: entries lost."""
    setup = db.create_engine(pg_url)
    await db.migrate(setup)
    await setup.dispose()
    key, _ = head_key(tmp_path, create=True)
    engines = [db.create_engine(pg_url) for _ in range(3)]
    logs = [AuditLog(e, SystemClock(), key=key) for e in engines]
    try:
        await logs[0].start(key_created=True)
        for log in logs:
            log.max_batch = 3  # many small transactions: many chances to interleave

        async def node(i: int, log: AuditLog) -> list[int]:
            actor = Actor(f"node{i}", ("system",))
            return list(
                await asyncio.gather(
                    *(log.record(actor, "test.append", "ok", target=str(n)) for n in range(150))
                )
            )

        seqs = await asyncio.gather(*(node(i, log) for i, log in enumerate(logs)))
        flat = sorted(s for part in seqs for s in part)
        assert flat == list(range(1, 451))
        count, broken = await logs[1].verify()
        assert (count, broken) == (450, None)
        async with engines[0].connect() as conn:
            stored = (await conn.execute(select(func.count()).select_from(AuditEntry))).scalar()
        assert stored == 450
        head = await logs[2].stored_head()
        assert head is not None and head.seq == 450
    finally:
        for e in engines:
            await e.dispose()
