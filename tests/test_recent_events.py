"""A charger's newest events (the API's charger detail, evota.api.chargers.recent_events):
newest first by received_at, and on partitioned PostgreSQL (migration 0021) a few index
pages per day partition, not a walk through every partition's primary key."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.dialects import postgresql

from evota.api.chargers import recent_events
from evota.cluster.pruner import create_partition_sql
from evota.store import db, retention
from evota.store.models import ChargerEvent
from tests.cluster.harness import pg_database  # noqa: F401

# 25 day partitions of 20,000 events of 1,000 chargers (a large fleet's day holds more): from
# about this size PostgreSQL's planner answers ORDER BY id DESC by walking primary keys.
DAYS, ROWS = 25, 500_000


async def test_newest_first_by_received_at_whatever_the_insert_order(database_url: str) -> None:
    """Events are listed by when they were received, whatever order their ids have."""
    engine = db.create_engine(database_url)
    try:
        await db.migrate(engine)
        t0 = datetime(2026, 12, 1, 12, tzinfo=UTC)
        rows = [(t0 + timedelta(minutes=m), kind) for m, kind in ((5, "b"), (10, "c"), (1, "a"))]
        async with engine.begin() as conn:
            for at, kind in rows:  # ids in insert order: b, c, a
                await conn.execute(
                    insert(ChargerEvent).values(
                        charger_id="CP-1", kind=kind, received_at=at, data={}
                    )
                )
        async with engine.connect() as conn:
            listed = (await conn.execute(recent_events("CP-1", 2))).all()
        assert [r.kind for r in listed] == ["c", "b"]
    finally:
        await engine.dispose()


async def _pages(conn: Any, statement: Any) -> int:
    """Shared buffers (hit + read) the statement's plan touches, from EXPLAIN ANALYZE."""
    sql = str(
        statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    )
    plan = (await conn.execute(text(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}"))).scalar()
    top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
    return int(top["Shared Hit Blocks"]) + int(top["Shared Read Blocks"])


async def test_a_quiet_chargers_recent_events_read_few_pages_in_each_day_partition(
    pg_database: str,  # noqa: F811
) -> None:
    """Day partitions holding 1,000 chargers' events: listing a charger that has none (the
    worst case: nothing stops a walk early) costs about two index pages per partition, a busy
    one a few. Ordered by id, the planner walked every partition's primary key backwards:
    8,560 pages here, the whole table (70 and 120 with the fix)."""
    engine = db.create_engine(pg_database)
    try:
        await db.migrate(engine)
        first = datetime.now(UTC).date() + timedelta(days=30)  # past the week made ahead
        days = [first + timedelta(days=d) for d in range(DAYS)]
        async with engine.begin() as conn:
            for day in days:
                for sql in create_partition_sql(
                    "charger_events", retention.day_partition("charger_events", day)
                ):
                    await conn.execute(text(sql))
            await conn.execute(
                text(
                    "INSERT INTO charger_events (charger_id, kind, status, data, received_at) "
                    "SELECT 'CP-' || (g % 1000), 'status', 'Available', '{}'::json, "
                    "CAST(:start AS timestamptz) + (g::float / :rows * :days * interval '1 day') "
                    "FROM generate_series(0, :rows - 1) g"
                ),
                {
                    "start": datetime.combine(first, datetime.min.time(), UTC),
                    "rows": ROWS,
                    "days": DAYS,
                },
            )
        async with engine.connect() as conn:
            await conn.execute(text("ANALYZE charger_events"))
            partitions = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM pg_inherits "
                        "WHERE inhparent = 'charger_events'::regclass"
                    )
                )
            ).scalar()
            assert partitions is not None and partitions >= DAYS
            pages = await _pages(conn, recent_events("CP-quiet", 25))
            busy = await _pages(conn, recent_events("CP-7", 25))
        assert pages <= 3 * partitions, pages  # about two index pages per partition
        assert busy <= 5 * partitions, busy
    finally:
        await engine.dispose()
