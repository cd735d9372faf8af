"""The write-behind queue keeps data through database failures and isolates bad items."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from evota.clock import SystemClock
from evota.fleet.writer import FleetWriter
from evota.store import db
from evota.store.models import Charger, ConnectorStatus

from .support import until


def status(charger_id: str, connector: int, value: str) -> tuple:
    now = datetime.now(UTC)
    return (charger_id, connector, value, "NoError", None, None, None, now)


@pytest.fixture
async def engine(sqlite_url):
    engine = db.create_engine(sqlite_url)
    await db.migrate(engine)
    async with engine.begin() as conn:
        await conn.execute(
            Charger.__table__.insert().values(
                id="CP-1",
                auth_salt="00",
                auth_hash="00",
                registration="Accepted",
                tags=[],
                connected=False,
                created_at=datetime.now(UTC),
            )
        )
    yield engine
    await engine.dispose()


async def count_history(engine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(ConnectorStatus))).scalar_one()


async def test_failed_flush_keeps_every_row_in_order(engine):
    writer = FleetWriter(engine, SystemClock())
    writer.status(status("CP-1", 1, "Available"))
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE connector_status_history RENAME TO hidden"))
    with pytest.raises(OperationalError):
        await writer.flush()
    writer.status(status("CP-1", 1, "Charging"))  # newer data queued meanwhile
    assert writer.backlog == 2
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE hidden RENAME TO connector_status_history"))
    await writer.flush()
    assert writer.backlog == 0
    async with engine.connect() as conn:
        rows = (
            await conn.execute(select(ConnectorStatus.status).order_by(ConnectorStatus.id))
        ).all()
    assert [r[0] for r in rows] == ["Available", "Charging"]


async def test_an_item_the_database_refuses_does_not_block_the_rest(engine):
    writer = FleetWriter(engine, SystemClock(), interval=0.01)
    writer.status(status("CP-unknown", 1, "Available"))  # violates the connectors foreign key
    writer.status(status("CP-1", 1, "Available"))
    writer.status(status("CP-1", 2, "Faulted"))
    writer.start()
    try:
        await until(lambda: writer.backlog == 0 and count_history(engine), lambda n: n == 2)
    finally:
        await writer.stop()
    assert writer.dropped == 1
    assert await count_history(engine) == 2


def test_sqlite_timestamps_match_sqlalchemy():
    from datetime import UTC, datetime, timedelta, timezone

    from sqlalchemy.dialects.sqlite import DATETIME

    from evota.fleet.writer import _sqlite_ts

    process = DATETIME().bind_processor(None)
    for value in (
        datetime(2026, 3, 29, 1, 2, 3, 0, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 2, 3, 456, tzinfo=timezone(timedelta(hours=-5))),
    ):
        assert _sqlite_ts(value) == process(value.astimezone(UTC).replace(tzinfo=None))
