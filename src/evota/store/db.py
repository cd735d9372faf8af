"""Engine creation and migrations. SQLite gets WAL; PostgreSQL is used as configured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, event
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _json_loads(text: str | bytes) -> Any:
    """JSON columns as read: a value nested too deep to parse (stored by a version that did
    not bound what chargers send, see evota.fleet.bounds) reads as a marker, not an error."""
    try:
        return json.loads(text)
    except RecursionError:
        return {"\u2026": "nested too deep to read"}


def create_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(
            url, connect_args={"timeout": 30}, json_deserializer=_json_loads
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url, pool_size=10, max_overflow=10, pool_pre_ping=True, json_deserializer=_json_loads
    )


def sqlite_writer_engine(engine: AsyncEngine) -> Engine | None:
    """A synchronous engine on the same SQLite file, for writes done in a worker thread.

    Under load, every aiosqlite statement waits for its thread to get the GIL from a busy
    event loop (milliseconds each), so a batch of many statements falls behind. Writing a
    whole batch in one worker-thread call needs one hand-over instead of one per statement.
    None for other databases (asyncpg has no such thread).
    """
    if engine.dialect.name != "sqlite":
        return None
    url = engine.url.set(drivername="sqlite")
    sync = sa_create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
    event.listen(sync, "connect", _sqlite_pragmas)
    return sync


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision; safe to run at every start."""

    def _upgrade(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), "head")

    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)
