"""Benchmark post-rollout KPIs: the daily rollup and the KPI queries over a large history.

Seeds ``--chargers`` chargers × ``--days`` days of history straight into the tables evota
writes (connections, connector statuses, sessions, boots, a campaign updating half the fleet
on the middle day), then times:

- the full rollup into ``charger_days`` (what the first run after an upgrade does),
- an incremental run one day later (what every periodic run does),
- ``campaign_kpis`` (before/after and the control group) and ``firmware_kpis`` (version vs
  predecessor) over the pre-aggregated rows: the issue's target is < 2 s,
- the baseline in the same run: the campaign's before/after session and fault counts alone
  read from the raw ``sessions`` and ``connector_status_history`` tables,
- for each, the longest the event loop was stalled meanwhile (a 10 ms timer's lateness): the
  gateway and the console share that loop.

    uv run --frozen python bench/kpis.py [--chargers 10000] [--days 30]
        [--database-url postgresql+asyncpg://...]   # default: a fresh SQLite file
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.evidence import daily, kpi_service
from evota.evidence.rollup import Rollup
from evota.store import db
from evota.store.models import (
    Campaign,
    Charger,
    ChargerEvent,
    ChargingSession,
    ConnectorStatus,
    Firmware,
    Job,
)

BATCH = 20_000


class Clock:
    def __init__(self, now: datetime) -> None:
        self.at = now

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return time.monotonic()


async def _insert(engine: AsyncEngine, table: Any, rows: list[dict[str, Any]]) -> None:
    for i in range(0, len(rows), BATCH):
        async with engine.begin() as conn:
            await conn.execute(insert(table), rows[i : i + BATCH])


async def seed(engine: AsyncEngine, n: int, days: int, start: datetime) -> tuple[str, str, int]:
    """History of ``n`` chargers over ``days`` days; returns (campaign, new image, rows)."""
    rng = random.Random(13)
    old_id, new_id, campaign = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    update_day = days // 2
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
                "version": version,
                "models": [],
                "sha256": "0" * 64,
                "size": 1,
                "state": "released",
                "created_at": start,
                "updated_at": start,
            }
            for fid, version in ((old_id, "1.0"), (new_id, "2.0"))
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
    updated = ids[::2]
    jobs = []
    for cid in updated:
        done = start + timedelta(days=update_day, hours=rng.uniform(1, 20))
        jobs.append(
            {
                "charger_id": cid,
                "firmware_id": new_id,
                "campaign_id": campaign,
                "kind": "update",
                "state": "succeeded",
                "target_version": "2.0",
                "previous_version": "1.0",
                "created_at": done - timedelta(minutes=20),
                "updated_at": done,
                "finished_at": done,
            }
        )
    await _insert(engine, Job, jobs)
    total = n + len(jobs)
    updated_set = set(updated)
    for chunk in range(0, n, 1000):
        events: list[dict[str, Any]] = []
        statuses: list[dict[str, Any]] = []
        sessions: list[dict[str, Any]] = []
        for cid in ids[chunk : chunk + 1000]:
            t0 = start + timedelta(minutes=rng.uniform(0, 60))
            events += [
                {"charger_id": cid, "kind": "connected", "data": {}, "received_at": t0},
                {
                    "charger_id": cid,
                    "kind": "boot",
                    "data": {"firmware_version": "1.0"},
                    "received_at": t0,
                },
            ]
            statuses.append(_status(cid, "Available", "NoError", t0))
            for d in range(days):
                base = start + timedelta(days=d)
                new = cid in updated_set and d > update_day
                if rng.random() < 0.2:  # a connection drop, 5 % of them long
                    off = base + timedelta(hours=rng.uniform(1, 20))
                    back = off + timedelta(minutes=30 if rng.random() < 0.25 else 1)
                    events += [
                        {"charger_id": cid, "kind": "disconnected", "data": {}, "received_at": off},
                        {"charger_id": cid, "kind": "connected", "data": {}, "received_at": back},
                    ]
                if rng.random() < (0.15 if new else 0.05):  # a fault, repaired in 0.5-3 h
                    at = base + timedelta(hours=rng.uniform(0, 20))
                    code = rng.choice(("GroundFailure", "OverCurrentFailure", "OtherError"))
                    statuses.append(_status(cid, "Faulted", code, at))
                    statuses.append(
                        _status(
                            cid, "Available", "NoError", at + timedelta(hours=rng.uniform(0.5, 3))
                        )
                    )
                for _ in range(3):
                    stop = base + timedelta(hours=rng.uniform(1, 23))
                    failed = rng.random() < (0.08 if new else 0.02)
                    sessions.append(
                        {
                            "charger_id": cid,
                            "connector_id": 1,
                            "id_tag": "T",
                            "meter_start_wh": 0,
                            "started_at": stop - timedelta(minutes=40),
                            "stopped_at": stop,
                            "outcome": "interrupted" if failed else "completed",
                        }
                    )
        await _insert(engine, ChargerEvent, events)
        await _insert(engine, ConnectorStatus, statuses)
        await _insert(engine, ChargingSession, sessions)
        total += len(events) + len(statuses) + len(sessions)
    return campaign, new_id, total


def _status(cid: str, status: str, code: str, at: datetime) -> dict[str, Any]:
    return {
        "charger_id": cid,
        "connector_id": 1,
        "status": status,
        "error_code": code,
        "received_at": at,
    }


async def raw_baseline(engine: AsyncEngine, campaign: str, update_day: int, days: int) -> None:
    """Sessions, failed sessions and Faulted reports of the updated chargers, before and after
    their update, counted from the raw tables (what the KPIs would cost without charger_days)."""
    first, last = daily.day_start(update_day - days), daily.day_start(update_day + days + 1)
    chargers = select(Job.charger_id).where(Job.campaign_id == campaign)
    async with engine.connect() as conn:
        await conn.execute(
            select(func.count(), func.sum(func.length(ChargingSession.outcome))).where(
                ChargingSession.charger_id.in_(chargers),
                ChargingSession.stopped_at >= first,
                ChargingSession.stopped_at < last,
            )
        )
        await conn.execute(
            select(func.count()).where(
                ConnectorStatus.charger_id.in_(chargers),
                ConnectorStatus.status == "Faulted",
                ConnectorStatus.received_at >= first,
                ConnectorStatus.received_at < last,
            )
        )


async def timed(what: str, results: dict[str, tuple[float, float]], coro: Any) -> Any:
    """Run ``coro``; record its seconds and the longest the event loop was kept from running
    a 10 ms timer meanwhile (what the gateway and the console would have waited)."""
    stalls = [0.0]
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            stalls.append(time.perf_counter() - t - 0.01)

    task = asyncio.create_task(probe())
    t0 = time.perf_counter()
    value = await coro
    results[what] = (time.perf_counter() - t0, max(stalls))
    done.set()
    await task
    return value


async def run(url: str, chargers: int, days: int) -> dict[str, Any]:
    engine = db.create_engine(url)
    await db.migrate(engine)
    start = datetime(2026, 1, 5, tzinfo=UTC)
    results: dict[str, tuple[float, float]] = {}
    campaign, new_id, rows = await timed(
        "seed (not a KPI cost)", results, seed(engine, chargers, days, start)
    )
    if engine.dialect.name == "postgresql":
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE"))
    end = start + timedelta(days=days, hours=1)
    rollup = Rollup(engine, Clock(end))
    done = await timed("rollup, full history", results, rollup.run(end))
    later = end + timedelta(days=1)
    await timed("rollup, next day (incremental)", results, rollup.run(later))
    update_day = daily.day_number(start) + days // 2
    window = min(7, days // 2 - 1)
    k = await timed(
        f"campaign KPIs ({window} d before/after + control)",
        results,
        kpi_service.campaign_kpis(engine, campaign, None, later, window),
    )
    f = await timed(
        f"firmware KPIs (vs predecessor, {days} d)",
        results,
        kpi_service.firmware_kpis(engine, new_id, None, later, days),
    )
    await timed(
        "baseline: 2 raw counts (sessions, faults) before/after",
        results,
        raw_baseline(engine, campaign, update_day, window),
    )
    await engine.dispose()
    return {
        "results": results,
        "rows": rows,
        "day_rows": done.rows,
        "success": (
            k["before"]["session_success_rate"],
            k["after"]["session_success_rate"],
            f["comparison"]["session_success_rate"]["verdict"],
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chargers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'kpis.db'}"
        out = asyncio.run(run(url, args.chargers, args.days))
    backend = url.split("+")[0].split(":")[0]
    print(
        f"{backend}: {args.chargers} chargers × {args.days} days, {out['rows']:,} history rows, "
        f"{out['day_rows']:,} charger-days; session success before/after/verdict: {out['success']}"
    )
    print("| step | seconds | longest event-loop stall ms |")
    print("| --- | ---: | ---: |")
    for what, (seconds, stall) in out["results"].items():
        print(f"| {what} | {seconds:.2f} | {1000 * stall:.0f} |")


if __name__ == "__main__":
    main()
