"""Benchmark the fleet's firmware picture and a version scorecard on a large fleet.

Seeds ``--chargers`` chargers (two models, 20 sites) straight into the tables evota writes:
a boot every ``--boot-every`` days per charger over ``--days`` days, and a campaign that
updated half the fleet from 1.0 to 2.0 on the middle day. Then times, with no scope filter
(an unlimited operator) and with a one-site scope:

- ``history`` (the per-day versions, ``GET /api/v1/fleet/firmware``) for 30 and ``--days`` days,
- ``scorecard_inputs`` + ``build`` for the new image (``GET /api/v1/firmware/{id}/scorecard``).

    uv run --frozen python bench/fleet_firmware.py [--chargers 100000] [--days 366]
        [--boot-every 7] [--postgres postgresql+asyncpg://user@host/admin-db]

Without ``--postgres`` it runs on a fresh SQLite file; with it, in a database of its own that
it creates through that URL and drops afterwards (never in the database the URL names).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.evidence import scorecard as sc
from evota.evidence.firmware_reads import history, scorecard_inputs
from evota.store import db
from evota.store.models import Campaign, Charger, ChargerEvent, Firmware, Job, Site

BATCH = 20_000


async def _insert(engine: AsyncEngine, table: Any, rows: list[dict[str, Any]]) -> None:
    for i in range(0, len(rows), BATCH):
        async with engine.begin() as conn:
            await conn.execute(insert(table), rows[i : i + BATCH])


async def seed(engine: AsyncEngine, n: int, days: int, boot_every: int, now: datetime) -> str:
    """The fleet and its history; returns the new image's id."""
    rng = random.Random(3)
    start = now - timedelta(days=days)
    await _insert(
        engine,
        Site,
        [
            {
                "id": f"s{i}",
                "name": f"s{i}",
                "timezone": "UTC",
                "region": f"r{i % 4}",
                "created_at": start,
            }
            for i in range(20)
        ],
    )
    old_id, new_id, campaign = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    ids = [f"B{i:06d}" for i in range(n)]
    await _insert(
        engine,
        Charger,
        [
            {
                "id": cid,
                "auth_salt": "s",
                "auth_hash": "h",
                "registration": "Accepted",
                "site_id": f"s{i % 20}",
                "vendor": "Acme",
                "model": "AC22" if i % 2 else "DC150",
                "firmware_version": "2.0" if i % 2 == 0 else "1.0",
                "created_at": start,
            }
            for i, cid in enumerate(ids)
        ],
    )
    await _insert(
        engine,
        Firmware,
        [
            {
                "id": fid,
                "vendor": "Acme",
                "version": v,
                "models": [],
                "sha256": "0" * 64,
                "size": 1,
                "state": "released",
                "created_at": start,
                "updated_at": start,
            }
            for fid, v in ((old_id, "1.0"), (new_id, "2.0"))
        ],
    )
    async with engine.begin() as conn:
        await conn.execute(
            insert(Campaign).values(
                id=campaign,
                name="bench",
                firmware_id=new_id,
                state="completed",
                created_at=start,
                updated_at=start,
            )
        )
    middle = start + timedelta(days=days // 2)
    jobs = []
    for cid in ids[::2]:
        done = middle + timedelta(hours=rng.uniform(1, 20))
        jobs.append(
            {
                "charger_id": cid,
                "firmware_id": new_id,
                "campaign_id": campaign,
                "kind": "update",
                "state": "succeeded",
                "target_version": "2.0",
                "previous_version": "1.0",
                "created_at": done,
                "updated_at": done,
                "finished_at": done,
            }
        )
    await _insert(engine, Job, jobs)
    updated = set(ids[::2])
    for chunk in range(0, n, 2000):
        events = []
        for cid in ids[chunk : chunk + 2000]:
            at = start + timedelta(hours=rng.uniform(0, 24 * boot_every))
            while at < now:
                version = "2.0" if cid in updated and at > middle + timedelta(days=1) else "1.0"
                events.append(
                    {
                        "charger_id": cid,
                        "kind": "boot",
                        "status": "Accepted",
                        "data": {"vendor": "Acme", "model": "AC22", "firmware_version": version},
                        "received_at": at,
                    }
                )
                at += timedelta(days=boot_every)
        await _insert(engine, ChargerEvent, events)
    return new_id


def _site_scope(site: str) -> Any:
    return lambda q: q.where(Charger.site_id == site)


async def run(url: str, n: int, days: int, boot_every: int) -> list[str]:
    engine = db.create_engine(url)
    await db.migrate(engine)
    now = datetime.now(UTC)
    t = time.perf_counter()
    new_id = await seed(engine, n, days, boot_every, now)
    if engine.dialect.name == "postgresql":  # what autovacuum does to a table this size
        async with engine.begin() as conn:
            await conn.execute(text("ANALYZE"))
    out = [
        f"seeded {n} chargers, {days} days, a boot every {boot_every} days: "
        f"{time.perf_counter() - t:.1f} s"
    ]
    for label, scoped in (("all", lambda q: q), ("one site", _site_scope("s0"))):
        for window in sorted({30, days}):
            t = time.perf_counter()
            result = await history(engine, scoped, now=now, days=window)
            elapsed = time.perf_counter() - t
            out.append(
                f"history {window} days ({label}): {elapsed:.2f} s, today {dict(result[-1].counts)}"
            )
        t = time.perf_counter()
        inputs = await scorecard_inputs(engine, new_id, scoped, now=now)
        assert inputs is not None
        card = sc.build(inputs)
        out.append(
            f"scorecard ({label}): {time.perf_counter() - t:.2f} s, running {card.running}, "
            f"campaign jobs {card.campaigns[0]['jobs']}"
        )
    await engine.dispose()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.append(f"peak RSS of the whole run (seeding included): {rss:.0f} MiB")
    return out


async def _on_postgres(admin_url: str, chargers: int, days: int, boot_every: int) -> list[str]:
    import asyncpg  # type: ignore[import-untyped]

    plain = admin_url.replace("postgresql+asyncpg://", "postgresql://")
    name = "evota_bench_fleet_" + uuid.uuid4().hex[:8]
    conn = await asyncpg.connect(plain)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    try:
        return await run(admin_url.rsplit("/", 1)[0] + "/" + name, chargers, days, boot_every)
    finally:
        conn = await asyncpg.connect(plain)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chargers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=366)
    parser.add_argument("--boot-every", type=int, default=7)
    parser.add_argument("--postgres", help="admin URL: the bench creates its own database")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.postgres:
            work = _on_postgres(args.postgres, args.chargers, args.days, args.boot_every)
        else:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
            work = run(url, args.chargers, args.days, args.boot_every)
        for line in asyncio.run(work):
            print(line)


if __name__ == "__main__":
    main()
