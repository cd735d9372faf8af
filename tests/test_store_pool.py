"""PostgreSQL's connection pool (evota.store.db): a connection is pinged before use only when
it sat idle in the pool, and a dead idle one is still replaced without an error."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.store import db


def test_ping_due_only_after_idle() -> None:
    assert not db.ping_due(None, 100.0, 1.0)  # just opened
    assert not db.ping_due(99.5, 100.0, 1.0)  # back from use half a second ago
    assert db.ping_due(99.0, 100.0, 1.0)
    assert db.ping_due(100.0, 100.0, 0.0)


def _postgres_only(url: str) -> None:
    if not url.startswith("postgresql"):
        pytest.skip("the pool's ping is PostgreSQL's (SQLite has no server to lose)")


async def _driver_queries(engine: AsyncEngine) -> tuple[list[str], int]:
    """The queries the one pooled connection sends from now on, and its backend's pid."""
    seen: list[str] = []
    async with engine.connect() as conn:
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        driver.add_query_logger(lambda q: seen.append(q.query))
    return seen, int(pid)


async def test_a_connection_back_from_use_is_not_pinged(database_url: str) -> None:
    """Before: pool_pre_ping sent BEGIN, ';' and ROLLBACK ahead of every transaction (13-16%
    of a node's CPU in a reconnect storm)."""
    _postgres_only(database_url)
    engine = db.create_engine(database_url, ping_after_idle=3600.0)
    try:
        seen, _ = await _driver_queries(engine)
        seen.clear()
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 41 + 1"))).scalar_one() == 42
        # the transaction only (its statement is prepared, not logged); a ping adds
        # BEGIN; ; ROLLBACK; ahead of it
        assert seen == ["BEGIN;", "ROLLBACK;"], seen
    finally:
        await engine.dispose()


async def test_an_idle_connection_is_pinged_and_a_dead_one_replaced(database_url: str) -> None:
    _postgres_only(database_url)
    import asyncpg  # type: ignore[import-untyped]

    from evota.cluster.leader import asyncpg_dsn

    engine = db.create_engine(database_url, ping_after_idle=0.0)
    admin = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        seen, pid = await _driver_queries(engine)
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        assert ";" in seen, seen  # idle (at least 0 s): pinged

        # the server ends the pooled connection while it sits in the pool (and waits for it)
        assert await admin.fetchval("SELECT pg_terminate_backend($1, 10000)", pid)
        async with engine.connect() as conn:  # the ping fails, the pool opens a new one
            new_pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert new_pid != pid
    finally:
        await admin.close()
        await engine.dispose()
