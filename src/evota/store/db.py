"""Engine creation and migrations. SQLite gets WAL; PostgreSQL is used as configured."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, event, exc
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


# A pooled PostgreSQL connection idle this long is pinged before it is handed out (it may
# have been closed meanwhile: a restarted server, a proxy's idle timeout); one back from use
# more recently is not. SQLAlchemy's pool_pre_ping pings at every checkout, which for asyncpg
# is BEGIN, an empty query and ROLLBACK: three round trips before every transaction, 13-16%
# of a node's CPU in a reconnect storm (docs/performance.md, "Cluster").
PING_AFTER_IDLE: Final = 1.0
_IDLE_SINCE: Final = "evota_idle_since"


def create_engine(url: str, *, ping_after_idle: float = PING_AFTER_IDLE) -> AsyncEngine:
    """SQLite with WAL and its pragmas; PostgreSQL pooled, a connection pinged only when it
    sat idle in the pool for ``ping_after_idle`` seconds (see :data:`PING_AFTER_IDLE`)."""
    if url.startswith("sqlite"):
        engine = create_async_engine(
            url, connect_args={"timeout": 30}, json_deserializer=_json_loads
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_async_engine(url, pool_size=10, max_overflow=10, json_deserializer=_json_loads)
    _ping_when_idle(engine, ping_after_idle)
    return engine


def ping_due(idle_since: float | None, now: float, after: float) -> bool:
    """Whether a pooled connection back in the pool since ``idle_since`` (None: never
    checked in, i.e. just opened) needs a ping before use."""
    return idle_since is not None and now - idle_since >= after


def _ping_when_idle(engine: AsyncEngine, after: float) -> None:
    def checkin(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    def checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if not ping_due(record.info.pop(_IDLE_SINCE, None), time.monotonic(), after):
            return
        try:
            dbapi_conn.ping()
        except Exception as error:  # the pool replaces it with a new connection
            raise exc.DisconnectionError(str(error)) from error

    event.listen(engine.sync_engine.pool, "checkin", checkin)
    event.listen(engine.sync_engine.pool, "checkout", checkout)


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
