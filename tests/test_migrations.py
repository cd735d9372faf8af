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


async def test_upgrade_from_a_populated_database_partitions_history_on_postgresql(
    database_url: str,
) -> None:
    """From 0020 with rows in place: on PostgreSQL the status history and charger events
    become partitioned by day (the old rows the first partition, not copied), ids go on from
    the same sequence, the models still match, and the pruner creates days ahead, moves what
    the default partition caught and drops expired days whole. SQLite keeps its tables."""
    from datetime import UTC, datetime, timedelta

    from alembic import command
    from sqlalchemy import func, insert, select, text

    from evota.cluster.pruner import Pruner, partition_names
    from evota.store import retention
    from evota.store.models import ChargerEvent, ConnectorStatus
    from tests.conftest import ShiftedClock

    engine = db.create_engine(database_url)
    old = datetime.now(UTC) - timedelta(days=100)

    def status(at: datetime) -> dict[str, object]:
        return {
            "charger_id": "CP1",
            "connector_id": 1,
            "status": "Available",
            "error_code": "NoError",
            "received_at": at,
        }

    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(db.alembic_config(c), "0020"))
            await conn.execute(insert(ConnectorStatus), [status(old)] * 5)
            await conn.execute(
                insert(ChargerEvent),
                [{"charger_id": "CP1", "kind": "boot", "data": {}, "received_at": old}] * 3,
            )
        await db.migrate(engine)
        async with engine.begin() as conn:
            await conn.execute(insert(ConnectorStatus), [status(datetime.now(UTC))])
            ids = (await conn.execute(select(ConnectorStatus.id))).scalars().all()
            assert sorted(ids) == [1, 2, 3, 4, 5, 6]
            assert (await conn.execute(select(func.count(ChargerEvent.id)))).scalar() == 3
            if engine.dialect.name != "postgresql":
                return
            kind = await conn.execute(
                text("SELECT relkind::text FROM pg_class WHERE relname = :t"),
                {"t": "connector_status_history"},
            )
            assert kind.scalar() == "p"
            names = await partition_names(conn, "connector_status_history")
        assert len(names) == 1 + 1 + 8  # the old table, the default, tomorrow and 7 days on

        def check(c):  # the models still describe the schema
            diff = compare_metadata(MigrationContext.configure(c), Base.metadata)
            assert [d for d in diff if d[0] not in ("modify_type",)] == []

        async with engine.connect() as conn:
            await conn.run_sync(check)

        # 40 days on: a row arrives before any partition for its day exists (the default
        # catches it), then the pruner runs with a 30-day retention.
        clock = ShiftedClock()
        clock.advance(days=40)
        async with engine.begin() as conn:
            await conn.execute(insert(ConnectorStatus), [status(clock.now())])
        policy = retention.Retention(status_days=30, events_days=30, job_events_days=0)
        result = await Pruner(engine, clock, policy, rollup=False).run_once()
        today = clock.now().date()
        assert f"connector_status_history_p{today:%Y%m%d}" in result.created
        assert any(n.startswith("connector_status_history_before") for n in result.dropped)
        assert result.rows == 0  # whole days dropped, no row deletes
        async with engine.connect() as conn:
            rows = (await conn.execute(select(ConnectorStatus.id))).scalars().all()
            assert rows == [7]  # the old rows and the migration day's went with their days
            schema = retention.PARTITION_SCHEMA
            default = await conn.execute(
                text(f"SELECT count(*) FROM {schema}.connector_status_history_default")
            )
            assert default.scalar() == 0  # moved into its day's partition
            assert (await conn.execute(select(func.count(ChargerEvent.id)))).scalar() == 0
    finally:
        await engine.dispose()
