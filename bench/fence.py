"""What fencing the runners' commits costs (evota.cluster.fence), on PostgreSQL.

A runner unit of work like a job's state change (UPDATE one row and INSERT one history row,
one transaction) is committed N times through the plain engine and through the fenced one
(the extra ``SELECT token … FOR SHARE`` before COMMIT), one at a time and from several
tasks at once (the share locks of concurrent commits on the one ``cluster_leader`` row).
Rounds alternate plain/fenced so drift on a shared machine hits both alike.

    EVOTA_TEST_POSTGRES_URL=postgresql+asyncpg://evota@127.0.0.1:55432/postgres \\
        .venv/bin/python bench/fence.py --transactions 3000 --concurrency 1,8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.cluster.fence import fenced
from evota.cluster.leader import asyncpg_dsn
from evota.store import db


async def _unit(engine: AsyncEngine, i: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE bench_job SET state = :s, n = n + 1 WHERE id = :id"),
            {"s": f"s{i % 7}", "id": i % 500},
        )
        await conn.execute(
            text("INSERT INTO bench_job_event (job_id, state) VALUES (:id, :s)"),
            {"s": f"s{i % 7}", "id": i % 500},
        )


async def _round(engine: AsyncEngine, n: int, concurrency: int) -> tuple[float, float]:
    """Wall and CPU (this process: evota's side) seconds per transaction, ``n``
    transactions from ``concurrency`` tasks."""
    per = n // concurrency

    async def worker(w: int) -> None:
        for k in range(per):
            await _unit(engine, w * per + k)

    began, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    done = per * concurrency
    return (time.perf_counter() - began) / done, (time.process_time() - cpu) / done


async def main(n: int, levels: list[int], rounds: int) -> None:
    base = os.environ["EVOTA_TEST_POSTGRES_URL"]
    name = "evota_bench_fence_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(asyncpg_dsn(base))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = base.rsplit("/", 1)[0] + "/" + name
    engine = db.create_engine(url)
    try:
        await db.migrate(engine)
        async with engine.begin() as conn:
            await conn.execute(
                text("CREATE TABLE bench_job (id int PRIMARY KEY, state text, n int)")
            )
            await conn.execute(
                text(
                    "CREATE TABLE bench_job_event (id bigserial PRIMARY KEY, job_id int, "
                    "state text, at timestamptz DEFAULT now())"
                )
            )
            await conn.execute(
                text("INSERT INTO bench_job SELECT g, 'new', 0 FROM generate_series(0, 499) g")
            )
            await conn.execute(
                text(
                    "INSERT INTO cluster_leader (id, token, node, since) "
                    "VALUES (1, 1, 'bench', now())"
                )
            )
        guarded = fenced(engine, lambda: 1)
        await _round(engine, 500, 1)  # warm the pool and the caches
        await _round(guarded, 500, 1)
        for c in levels:
            plain: list[tuple[float, float]] = []
            fence: list[tuple[float, float]] = []
            for _ in range(rounds):
                plain.append(await _round(engine, n, c))
                fence.append(await _round(guarded, n, c))
            p, f = (statistics.median(w for w, _ in r) * 1e6 for r in (plain, fence))
            pc, fc = (statistics.median(u for _, u in r) * 1e6 for r in (plain, fence))
            print(
                f"concurrency {c}: wall plain {p:.0f} µs/tx, fenced {f:.0f} µs/tx "
                f"(+{f - p:.0f} µs, {(f / p - 1) * 100:+.1f}%); CPU plain {pc:.0f}, "
                f"fenced {fc:.0f} µs/tx (+{fc - pc:.0f}); median of {rounds} rounds of {n}"
            )
    finally:
        await engine.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transactions", type=int, default=3000)
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    levels = [int(x) for x in a.concurrency.split(",")]
    asyncio.run(main(a.transactions, levels, a.rounds))
