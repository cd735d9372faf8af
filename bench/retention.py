"""Table growth per 1,000 chargers per day, and what the retention pruner costs (not pytest).

    uv run python bench/retention.py                          # SQLite in a temp dir
    uv run python bench/retention.py --database-url postgresql+asyncpg://evota@127.0.0.1:55432/postgres

Growth: evota runs in this process on a fresh database; a simulated fleet (``--chargers``,
two connectors each, ``--sessions-per-day`` Poisson sessions per charger, 1.6J) connects
and runs ``--hours`` simulated hours at ``--speed`` after a simulated warm-up hour. Rows
added per table during the measured hours are scaled to 1,000 chargers and 24 hours; the
rows one connection leaves (boot, connected, statuses) are added ``--reconnects-per-day``
times. Bytes per row (table and its indexes) are measured on the same database after the
measured rows are copied up to 100,000 per table.

Pruner: ``--prune-rows`` status changes and a fifth as many charger events of one day are
inserted, then the pruner runs with a clock past their retention: rows deleted per second
in batches (``EVOTA_RETENTION_BATCH``), and on PostgreSQL the time to drop the day's
partitions whole.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pydantic import SecretStr  # noqa: E402
from sqlalchemy import func, insert, select, text  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine  # noqa: E402

from evota.cluster.pruner import Pruner  # noqa: E402
from evota.config import Settings  # noqa: E402
from evota.runtime import Runtime  # noqa: E402
from evota.sim.charger import SimConfig  # noqa: E402
from evota.sim.fleet import fleet_from_flags  # noqa: E402
from evota.sim.runner import Fleet  # noqa: E402
from evota.store import db, retention  # noqa: E402
from evota.store.models import (  # noqa: E402
    AuditEntry,
    ChargerEvent,
    ChargingSession,
    ConnectorStatus,
    JobEvent,
)

TOKEN = "bench-admin-token-0123456789"
TABLES = {
    "connector_status_history": ConnectorStatus,
    "charger_events": ChargerEvent,
    "sessions": ChargingSession,
    "job_events": JobEvent,
    "audit_log": AuditEntry,
}


class ShiftedClock:
    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset.total_seconds()


async def fresh_database(url: str | None, tmp: Path) -> tuple[str, Any]:
    """A new database (and how to drop it): SQLite in ``tmp``, or one on the server."""
    if url is None or url.startswith("sqlite"):
        return f"sqlite+aiosqlite:///{tmp / 'evota.db'}", None
    import asyncpg  # type: ignore[import-untyped]

    admin = url.replace("postgresql+asyncpg://", "postgresql://")
    name = "evota_bench_" + uuid.uuid4().hex[:10]
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()

    async def drop() -> None:
        c = await asyncpg.connect(admin)
        await c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await c.close()

    return url.rsplit("/", 1)[0] + "/" + name, drop


async def counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        return {
            name: int((await conn.execute(select(func.count()).select_from(model))).scalar() or 0)
            for name, model in TABLES.items()
        }


async def inflate(engine: AsyncEngine, target: int) -> dict[str, int]:
    """Copy the measured rows (new ids) until each table holds ``target``: bytes per row
    measured on a few thousand rows would be mostly page and partition overhead."""
    out: dict[str, int] = {}
    for name, model in TABLES.items():
        if name in ("audit_log", "job_events"):  # unique seq; none written here
            continue
        table = model.__table__
        cols = [c for c in table.c if c.name != "id"]
        async with engine.begin() as conn:
            n = int((await conn.execute(select(func.count()).select_from(table))).scalar() or 0)
            while 0 < n < target:
                src = select(*cols).limit(target - n)
                await conn.execute(insert(table).from_select([c.name for c in cols], src))
                n = int((await conn.execute(select(func.count()).select_from(table))).scalar() or 0)
        out[name] = n
    return out


async def bytes_per_row(engine: AsyncEngine, rows: dict[str, int]) -> dict[str, float]:
    out: dict[str, float] = {}
    async with engine.connect() as conn:
        for name in TABLES:
            if not rows.get(name):
                continue
            if engine.dialect.name == "postgresql":
                await conn.execute(text("COMMIT"))
                await conn.execute(text(f"VACUUM ANALYZE {name}"))
                size = (
                    await conn.execute(
                        text(
                            "SELECT sum(pg_total_relation_size(relid)) "
                            "FROM pg_partition_tree(:t) WHERE isleaf"
                        ),
                        {"t": name},
                    )
                ).scalar()
                if size is None:
                    size = (
                        await conn.execute(text("SELECT pg_total_relation_size(:t)"), {"t": name})
                    ).scalar()
            else:
                size = (
                    await conn.execute(
                        text(
                            "SELECT sum(pgsize) FROM dbstat WHERE name = :t OR name IN "
                            "(SELECT name FROM sqlite_master WHERE type='index' AND tbl_name=:t)"
                        ),
                        {"t": name},
                    )
                ).scalar()
            out[name] = float(size or 0) / rows[name]
    return out


@dataclass
class Growth:
    per_hour: dict[str, float]
    per_connection: dict[str, float]
    row_bytes: dict[str, float]


async def growth(args: argparse.Namespace, url: str, tmp: Path) -> Growth:
    settings = Settings(
        data_dir=tmp / "data",
        http_port=0,
        ocpp_port=0,
        download_port=0,
        database_url=url,
        admin_token=SecretStr(TOKEN),
        heartbeat_interval=300,
        authorize_all=True,
        approval_actions=[],
        config_boot_delay_seconds=3600.0,
        cert_inventory_boot_delay_seconds=3600.0,
        retention_interval_minutes=0,
    )
    rt = Runtime(settings)
    await rt.start()
    try:
        config = SimConfig(
            speed=args.speed,
            session_rate=args.sessions_per_day / 24.0,
            session_duration=(1800.0, 7200.0),
            meter_interval=300.0,
        )
        fleet = Fleet.from_spec(
            fleet_from_flags(args.chargers, seed="bench-retention"),
            f"ws://127.0.0.1:{rt.ocpp_port}/ocpp",
            config=config,
            ramp_up=5.0,
        )
        await fleet.provision(f"http://127.0.0.1:{rt.http_port}", TOKEN)
        await fleet.start()
        await fleet.wait_for_all(lambda c: c.accepted, timeout=120)
        await asyncio.sleep(2)
        await rt.fleet.writer.flush()
        booted = await counts(rt.engine)
        # What one connection leaves per charger; the audit entries here are provisioning's.
        per_connection = {k: v / args.chargers for k, v in booted.items() if k != "audit_log"}
        await asyncio.sleep(3600.0 / args.speed)  # a simulated warm-up hour: sessions under way
        await rt.fleet.writer.flush()
        before = await counts(rt.engine)
        await asyncio.sleep(args.hours * 3600.0 / args.speed)
        await rt.fleet.writer.flush()
        after = await counts(rt.engine)
        await fleet.stop()
        per_hour = {k: (after[k] - before[k]) / args.hours for k in after}
        row_bytes = await bytes_per_row(rt.engine, await inflate(rt.engine, 100_000))
    finally:
        await rt.stop()
    return Growth(per_hour, per_connection, row_bytes)


async def prune_cost(args: argparse.Namespace, url: str) -> list[tuple[str, int, float]]:
    engine = db.create_engine(url)
    await db.migrate(engine)
    out: list[tuple[str, int, float]] = []
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(2)
    try:
        for label, cut_hours in (("batches", 12.0), ("whole days", 24.0)):
            if label == "whole days" and engine.dialect.name != "postgresql":
                continue
            n = args.prune_rows
            step = 86400.0 / n
            async with engine.begin() as conn:
                for start in range(0, n, 20000):
                    await conn.execute(
                        insert(ConnectorStatus),
                        [
                            {
                                "charger_id": f"SIM-{i % 1000:04d}",
                                "connector_id": 1 + i % 2,
                                "status": "Charging" if i % 3 else "Available",
                                "error_code": "NoError",
                                "received_at": day + timedelta(seconds=i * step),
                            }
                            for i in range(start, min(n, start + 20000))
                        ],
                    )
                await conn.execute(
                    insert(ChargerEvent),
                    [
                        {
                            "charger_id": f"SIM-{i % 1000:04d}",
                            "kind": "connected",
                            "data": {"address": "127.0.0.1"},
                            "received_at": day + timedelta(seconds=i * step * 5),
                        }
                        for i in range(n // 5)
                    ],
                )
            # The clock ``cut_hours`` into the day, 30 days on: a 30-day retention cuts there.
            clock = ShiftedClock(day + timedelta(days=30, hours=cut_hours) - datetime.now(UTC))
            policy = retention.Retention(status_days=30, events_days=30, job_events_days=0)
            pruner = Pruner(engine, clock, policy, batch=args.batch, rollup=False)
            t0 = time.perf_counter()
            result = await pruner.run_once()
            seconds = time.perf_counter() - t0
            removed = result.rows if label == "batches" else n + n // 5
            out.append((label, removed, seconds))
            day += timedelta(days=1)
    finally:
        await engine.dispose()
    return out


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        url, drop = await fresh_database(args.database_url, tmp)
        backend = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
        try:
            g = await growth(args, url, tmp)
        finally:
            if drop is not None:
                await drop()
        scale = 1000.0 / args.chargers
        print(
            f"\n{backend}: {args.chargers} simulated chargers (2 connectors, "
            f"{args.sessions_per_day:g} sessions/charger/day, {args.reconnects_per_day:g} "
            f"reconnects/charger/day), {args.hours:g} simulated h at speed {args.speed:g}\n"
        )
        print("| table | rows/day per 1,000 chargers | bytes/row | MiB/day per 1,000 |")
        print("| --- | ---: | ---: | ---: |")
        total = 0.0
        for name in TABLES:
            rows = (
                g.per_hour[name] * 24 * scale
                + g.per_connection.get(name, 0.0) * args.reconnects_per_day * 1000
            )
            size = rows * g.row_bytes.get(name, 0.0) / 2**20
            total += size
            print(f"| {name} | {rows:,.0f} | {g.row_bytes.get(name, 0.0):.0f} | {size:.1f} |")
        print(f"| total | | | {total:.1f} |\n")
        if args.prune_rows:
            url, drop = await fresh_database(args.database_url, tmp / "p")
            (tmp / "p").mkdir(exist_ok=True)
            try:
                for label, rows, seconds in await prune_cost(args, url):
                    print(
                        f"pruner ({label}): {rows:,} rows in {seconds:.2f} s = "
                        f"{rows / seconds:,.0f} rows/s (batch {args.batch})"
                    )
            finally:
                if drop is not None:
                    await drop()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--chargers", type=int, default=200)
    parser.add_argument("--speed", type=float, default=60.0)
    parser.add_argument("--hours", type=float, default=2.0, help="simulated hours measured")
    parser.add_argument("--sessions-per-day", type=float, default=6.0)
    parser.add_argument("--reconnects-per-day", type=float, default=1.0)
    parser.add_argument("--prune-rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000)
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
