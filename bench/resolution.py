"""Benchmark remote-resolution analytics over a large history.

Seeds ``--chargers`` chargers × ``--days`` days straight into the tables evota writes (40
connector statuses and 30 sessions per charger, two audited commands per charger; a
``--faulty-share`` of the chargers, default 5%, report Faulted among their statuses), then
times ``GET /api/v1/analytics/resolution``'s two halves: the database reads
(:func:`evota.evidence.resolution_data.resolution_inputs`, unscoped) and the pure report
(:func:`evota.evidence.resolution.report`), for the whole range.

    uv run --frozen python bench/resolution.py [--chargers 10000] [--days 30]
        [--faulty-share 0.05]                         # 1.0: every charger faults (worst case)
        [--database-url postgresql+asyncpg://...]   # default: a fresh SQLite file
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.evidence import resolution as rs
from evota.evidence.resolution_data import resolution_inputs
from evota.store import db
from evota.store.models import AuditCharger, AuditEntry, Charger, ChargingSession, ConnectorStatus

BATCH = 20_000
STATUSES = ("Available", "Available", "Charging", "Preparing", "Faulted")
HEALTHY = ("Available", "Available", "Charging", "Preparing", "Finishing")


async def _insert(engine: AsyncEngine, table: Any, rows: list[dict[str, Any]]) -> None:
    for i in range(0, len(rows), BATCH):
        async with engine.begin() as conn:
            await conn.execute(insert(table), rows[i : i + BATCH])


async def seed(
    engine: AsyncEngine, n: int, days: int, start: datetime, faulty: float
) -> dict[str, int]:
    rng = random.Random(7)
    span = days * 86400
    chargers, statuses, sessions, entries, links = [], [], [], [], []
    seq = 0
    for i in range(n):
        cid = f"R{i:06d}"
        chargers.append(
            {
                "id": cid,
                "auth_salt": "s",
                "auth_hash": "h",
                "registration": "Accepted",
                "tags": [],
                "vendor": "Acme",
                "model": f"M{i % 5}",
                "created_at": start,
            }
        )
        pool = STATUSES if rng.random() < faulty else HEALTHY
        for _ in range(40):
            at = start + timedelta(seconds=rng.randrange(span))
            status = rng.choice(pool)
            statuses.append(
                {
                    "charger_id": cid,
                    "connector_id": rng.randrange(3),
                    "status": status,
                    "error_code": "GroundFailure" if status == "Faulted" else "NoError",
                    "received_at": at,
                }
            )
        for _ in range(30):
            at = start + timedelta(seconds=rng.randrange(span))
            sessions.append(
                {
                    "charger_id": cid,
                    "connector_id": 1,
                    "id_tag": "T",
                    "meter_start_wh": 0,
                    "started_at": at,
                    "outcome": "completed",
                }
            )
        for _ in range(2):
            seq += 1
            entries.append(
                {
                    "id": seq,
                    "seq": seq,
                    "at": start + timedelta(seconds=rng.randrange(span)),
                    "actor": "bench",
                    "role": "operator",
                    "action": rng.choice(("command.reset", "command.unlock-connector")),
                    "outcome": "Accepted",
                    "target": cid,
                    "detail": {},
                    "prev_hash": "0" * 64,
                    "hash": "0" * 64,
                }
            )
            links.append({"entry_id": seq, "charger_id": cid})
    statuses.sort(key=lambda r: r["received_at"])  # ids follow arrival, as the writer's do
    entries.sort(key=lambda r: r["at"])
    await _insert(engine, Charger, chargers)
    await _insert(engine, ConnectorStatus, statuses)
    await _insert(engine, ChargingSession, sessions)
    await _insert(engine, AuditEntry, entries)
    await _insert(engine, AuditCharger, links)
    return {"statuses": len(statuses), "sessions": len(sessions), "commands": len(entries)}


async def run(url: str, n: int, days: int, faulty: float) -> None:
    engine = db.create_engine(url)
    await db.migrate(engine)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    t = time.perf_counter()
    counts = await seed(engine, n, days, start, faulty)
    print(
        f"seeded {n} chargers × {days} days, {faulty:.0%} faulty, {counts} "
        f"in {time.perf_counter() - t:.1f} s"
    )
    now = start + timedelta(days=days + 8)
    window = rs.DEFAULT_WINDOW
    t = time.perf_counter()
    inputs = await resolution_inputs(
        engine,
        lambda q: q,
        since=start,
        until=start + timedelta(days=days),
        window=window,
        now=now,
    )
    read = time.perf_counter() - t
    t = time.perf_counter()
    out = rs.report(
        inputs.actions, inputs.reports, inputs.sessions, inputs.facts, now, window=window
    )
    computed = time.perf_counter() - t
    total = out.total
    print(
        f"reads {read:.2f} s, report {computed:.2f} s: {total.actions} commands, "
        f"{total.faulted} to faulted chargers, {total.resolved} resolved"
    )
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chargers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--faulty-share", type=float, default=0.05)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    if args.database_url:
        asyncio.run(run(args.database_url, args.chargers, args.days, args.faulty_share))
        return
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        asyncio.run(run(url, args.chargers, args.days, args.faulty_share))


if __name__ == "__main__":
    main()
