"""Migrations build the schema from empty on both databases, and match the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from evota.store import db
from evota.store.models import Base


async def test_migrations_up_from_empty_match_models(database_url):
    engine = db.create_engine(database_url)
    try:
        await db.migrate(engine)
        await db.migrate(engine)  # idempotent at every start

        def check(conn):
            tables = set(inspect(conn).get_table_names())
            assert set(Base.metadata.tables) <= tables
            assert "alembic_version" in tables
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            # Type-only differences from SQLite reflection are not schema drift.
            assert [d for d in diff if d[0] not in ("modify_type",)] == []

        async with engine.connect() as conn:
            await conn.run_sync(check)
    finally:
        await engine.dispose()


async def test_sqlite_uses_wal(sqlite_url):
    engine = db.create_engine(sqlite_url)
    try:
        async with engine.connect() as conn:
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one()
        assert mode == "wal"
    finally:
        await engine.dispose()
