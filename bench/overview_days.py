"""Benchmark the console overview's day-by-day read and the chart drawing.

Seeds ``--chargers`` chargers on 10 sites and ``--days`` rolled-up days per charger straight
into ``charger_days`` (what the KPI rollup writes), then times, best of five:

- ``console.queries.fleet_days`` over the whole window for an unlimited operator and for one
  scoped to 2 of the 10 sites (what a full load of the overview reads),
- drawing a 30-day time series of two lines and 20 models × 9 versions of stacked bars.

    uv run --frozen python bench/overview_days.py [--chargers 10000] [--days 30]
        [--postgres postgresql+asyncpg://user@host/admin-db]

Without ``--postgres`` it runs on a fresh SQLite file; with it, in a database of its own that
it creates through that URL and drops afterwards (never in the database the URL names).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import timeit
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import create_async_engine

from evota.console import charts, queries
from evota.console.charts import Layer, Series
from evota.evidence.daily import day_number
from evota.store import db
from evota.store.models import Charger, ChargerDay, Site

BATCH = 50_000
TODAY = date(2026, 12, 6)


def operator(sites: set[str] | None) -> Any:
    """What ``scope_filter`` reads of a principal: its fleet.read grants and site limit."""
    scope = SimpleNamespace(
        unlimited=sites is None, sites=sites or set(), regions=set(), tags=set()
    )
    return SimpleNamespace(
        grants=[SimpleNamespace(permissions={"fleet.read"}, scope=scope)], site_limit=None
    )


async def seed(engine: Any, chargers: int, days: int) -> None:
    now = datetime(2026, 12, 6, tzinfo=UTC)
    site = [{"id": f"s{i}", "name": f"S{i}", "timezone": "UTC", "region": "EU", "created_at": now}
            for i in range(10)]  # fmt: skip
    async with engine.begin() as conn:
        await conn.execute(insert(Site), site)
        await conn.execute(
            insert(Charger),
            [
                {"id": f"C{i:06d}", "auth_salt": "x", "auth_hash": "y", "registration": "Accepted",
                 "site_id": f"s{i % 10}", "tags": [], "created_at": now}
                for i in range(chargers)
            ],
        )  # fmt: skip
        rows: list[dict[str, Any]] = []
        for d in range(days):
            day = day_number(TODAY - timedelta(days=d))
            for i in range(chargers):
                rows.append(
                    {"charger_id": f"C{i:06d}", "day": day, "complete": True,
                     "firmware_version": "1.0", "version_changed": False, "vendor": "V",
                     "model": "M", "site_id": f"s{i % 10}", "observed_s": 86400.0,
                     "connected_s": 86400.0, "available_s": 80000.0, "offline_episodes": 1,
                     "reconnects": 0, "faults": i % 3, "faults_by_code": {}, "sessions": 5,
                     "failed_sessions": 1, "repairs": 0, "repair_s": 0.0, "repair_s2": 0.0,
                     "end_state": {}}
                )  # fmt: skip
                if len(rows) >= BATCH:
                    await conn.execute(insert(ChargerDay), rows)
                    rows = []
        if rows:
            await conn.execute(insert(ChargerDay), rows)


async def best_of(n: int, call: Callable[[], Awaitable[Any]]) -> float:
    best = float("inf")
    for _ in range(n):
        started = time.perf_counter()
        await call()
        best = min(best, time.perf_counter() - started)
    return best


async def run(url: str, chargers: int, days: int) -> None:
    engine = db.create_engine(url)
    try:
        await db.migrate(engine)
        await seed(engine, chargers, days)
        rt = SimpleNamespace(engine=engine)
        since = TODAY - timedelta(days=days - 1)
        for name, who in (("unlimited", operator(None)), ("2 of 10 sites", operator({"s1", "s2"}))):
            took = await best_of(5, lambda who=who: queries.fleet_days(rt, who, since))  # type: ignore[misc]
            print(f"fleet_days, {name}: {took * 1000:.0f} ms")
    finally:
        await engine.dispose()


def draw() -> None:
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    at = [t0 + timedelta(days=d) for d in range(30)]
    lines = [Series("a", [(t, 97.0 + i % 3) for i, t in enumerate(at)]),
             Series("b", [(t, 90.0) for t in at])]  # fmt: skip
    cats = [f"Vendor Model {i}" for i in range(20)]
    layers = [Layer(f"1.{j}.0", [float(i + j) for i in range(20)]) for j in range(9)]
    n = 200
    ts = timeit.timeit(lambda: charts.time_series("x", "T", lines, unit="%"), number=n) / n
    sb = timeit.timeit(lambda: charts.stacked_bars("x", "T", cats, layers, share=True), number=n)
    print(
        f"draw: time series 2 x 30 {ts * 1000:.1f} ms, stacked bars 20 x 9 {sb / n * 1000:.1f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chargers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--postgres", help="an admin URL; the bench creates its own database")
    args = parser.parse_args()
    draw()
    if not args.postgres:
        path = Path(tempfile.mkdtemp()) / "overview.db"
        await run(f"sqlite+aiosqlite:///{path}", args.chargers, args.days)
        return
    name = f"evota_bench_overview_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(args.postgres, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        await run(args.postgres.rsplit("/", 1)[0] + f"/{name}", args.chargers, args.days)
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        await admin.dispose()


if __name__ == "__main__":
    asyncio.run(main())
