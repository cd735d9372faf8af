"""Benchmark the audit log: what hash-chaining costs per entry, and how fast a chain verifies.

Appends go through :class:`evota.audit.log.AuditLog` (one transaction per entry: read the
head, seal, insert the entry and its charger link), the way every command to a charger is
recorded. The baseline, measured in the same run on the same database, is the same rows
inserted one transaction per entry with no chain: the ratio is the price of tamper evidence.
Verification walks the whole chain (read + SHA-256 per entry). Appends are measured with one
caller at a time and with 50 concurrent callers (group commit puts them in one transaction).

    uv run --frozen python bench/audit_log.py [--entries 5000] [--repeat 3]
        [--database-url postgresql+asyncpg://...]   # default: a fresh SQLite file
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

from evota.audit.log import Actor, AuditLog
from evota.clock import SystemClock
from evota.store import db
from evota.store.models import AuditCharger, AuditEntry, AuditHead

NO_HEAD = bool(__import__("os").environ.get("BENCH_NO_HEAD"))
ACTOR = Actor("bench", ("operator",), "req-1")


async def _fresh(url: str | None, tmp: Path, round_: int) -> tuple[str, object]:
    if url is None:
        url = f"sqlite+aiosqlite:///{tmp / f'bench-{round_}.db'}"
    engine = db.create_engine(url)
    await db.migrate(engine)
    async with engine.begin() as conn:  # a clean table for every round
        await conn.execute(AuditCharger.__table__.delete())
        await conn.execute(AuditEntry.__table__.delete())
        await conn.execute(AuditHead.__table__.delete())  # a new log, a new head
    return url, engine


async def _baseline(engine: object, n: int) -> float:
    """Plain inserts, one transaction each, same columns, a constant fake hash."""
    now = SystemClock().now()
    t0 = time.perf_counter()
    for i in range(n):
        async with engine.begin() as conn:  # type: ignore[attr-defined]
            result = await conn.execute(
                insert(AuditEntry).values(
                    seq=10_000_000 + i,
                    at=now,
                    actor="bench",
                    role="operator",
                    action="command.reset",
                    outcome="Accepted",
                    target=None,
                    reason="bench",
                    request_id="req-1",
                    detail={"params": {"type": "Soft"}},
                    prev_hash="0" * 64,
                    hash="0" * 64,
                )
            )
            await conn.execute(
                insert(AuditCharger).values(
                    entry_id=result.inserted_primary_key[0], charger_id=f"CP-{i % 1000:04d}"
                )
            )
    return n / (time.perf_counter() - t0)


async def _chained(engine: object, n: int, concurrency: int) -> tuple[float, float]:
    """``concurrency`` callers record at once (1 = one after the other, like single API
    calls; 50 = a bulk operation's answers arriving together)."""
    # With a head key, as evota serve runs it: each group commit also reads and moves the
    # sealed head (HMAC-SHA-256).
    log = AuditLog(engine, SystemClock(), key=None if NO_HEAD else b"k" * 32)  # type: ignore[arg-type]
    await log.start(key_created=True)
    queue = list(range(n))

    async def caller() -> None:
        while queue:
            i = queue.pop()
            await log.record(
                ACTOR,
                "command.reset",
                "Accepted",
                chargers=[f"CP-{i % 1000:04d}"],
                reason="bench",
                detail={"params": {"type": "Soft"}},
            )

    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    appended = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    count, broken = await log.verify()
    assert broken is None and count == n, (count, broken)
    return appended, count / (time.perf_counter() - t0)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    rows: list[tuple[float, float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            _, engine = await _fresh(args.database_url, Path(tmp), 3 * r)
            base = await _baseline(engine, args.entries)
            await engine.dispose()  # type: ignore[attr-defined]
            _, engine = await _fresh(args.database_url, Path(tmp), 3 * r + 1)
            chained, verified = await _chained(engine, args.entries, 1)
            await engine.dispose()  # type: ignore[attr-defined]
            _, engine = await _fresh(args.database_url, Path(tmp), 3 * r + 2)
            burst, _ = await _chained(engine, args.entries, 50)
            await engine.dispose()  # type: ignore[attr-defined]
            rows.append((base, chained, verified, burst))
    backend = "PostgreSQL" if args.database_url else "SQLite (WAL)"
    print(f"audit log, {backend}, {args.entries} entries, {args.repeat} rounds (median)")
    print(f"{'measure':<42} {'per second':>12}")
    base = statistics.median(r[0] for r in rows)
    chained = statistics.median(r[1] for r in rows)
    verified = statistics.median(r[2] for r in rows)
    burst = statistics.median(r[3] for r in rows)
    print(f"{'plain insert, 1 txn/entry (baseline)':<42} {base:>12,.0f}")
    print(f"{'chained append, 1 caller':<42} {chained:>12,.0f}  {chained / base:.2f}x")
    print(f"{'chained append, 50 callers (group commit)':<42} {burst:>12,.0f}  {burst / base:.2f}x")
    print(f"{'verify (read + SHA-256 per entry)':<42} {verified:>12,.0f}")


if __name__ == "__main__":
    asyncio.run(main())
