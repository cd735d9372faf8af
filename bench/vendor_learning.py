"""Benchmark learning vendor profile values from job histories (evota.fleet.vendor_learning).

Fills a fresh database with ``--jobs`` succeeded update jobs (7 history events each, the
shape a 2.0.1 update leaves) on 1,000 chargers of 4 models, then times
``VendorStore.observations()``: one query over ``job_events`` joined to jobs and chargers,
streamed in chunks, folded per job by the pure learner. Reports the wall time and the peak
Python memory of a second read (tracemalloc), which stays flat however many jobs there are.

    uv run --frozen python bench/vendor_learning.py [--jobs 100000]
        [--database-url postgresql+asyncpg://...]   # default: a fresh SQLite file
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from evota.clock import SystemClock
from evota.fleet.vendor_store import VendorStore
from evota.store import db
from evota.store.models import Charger, Firmware, Job, JobEvent

CHARGERS = 1000
STEPS = (
    (0, "created", "queued", None),
    (5, "firmware_status", "downloading", "Downloading"),
    (65, "firmware_status", "downloaded", "Downloaded"),
    (66, "firmware_status", "installing", "Installing"),
    (186, "firmware_status", "rebooting", "InstallRebooting"),
    (306, "boot", "verifying", None),
    (307, "firmware_status", "verifying", "Installed"),
)


async def fill(engine: object, jobs: int) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    async with engine.begin() as conn:  # type: ignore[attr-defined]
        await conn.execute(
            insert(Charger),
            [
                {
                    "id": f"CP-{i:05d}",
                    "auth_salt": "s",
                    "auth_hash": "h",
                    "registration": "Accepted",
                    "vendor": "Acme",
                    "model": f"M{i % 4}",
                    "tags": [],
                    "created_at": t0,
                }
                for i in range(CHARGERS)
            ],
        )
        await conn.execute(
            insert(Firmware).values(
                id="fw",
                vendor="Acme",
                version="2.0",
                state="released",
                sha256="0" * 64,
                size=1,
                filename="fw.bin",
                models=[],
                hardware_revisions=[],
                supersedes=[],
                created_at=t0,
                updated_at=t0,
            )
        )
        batch = 5000
        for start in range(0, jobs, batch):
            ids = range(start + 1, min(jobs, start + batch) + 1)
            await conn.execute(
                insert(Job),
                [
                    {
                        "id": n,
                        "charger_id": f"CP-{n % CHARGERS:05d}",
                        "firmware_id": "fw",
                        "kind": "update",
                        "state": "succeeded",
                        "target_version": "2.0",
                        "created_at": t0 + timedelta(minutes=n),
                        "updated_at": t0 + timedelta(minutes=n),
                    }
                    for n in ids
                ],
            )
            await conn.execute(
                insert(JobEvent),
                [
                    {
                        "job_id": n,
                        "at": t0 + timedelta(minutes=n, seconds=at + n % 30),
                        "event": event,
                        "state": state,
                        "detail": {"status": status} if status else {},
                    }
                    for n in ids
                    for at, event, state, status in STEPS
                ],
            )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        engine = db.create_engine(url)
        await db.migrate(engine)
        started = time.perf_counter()
        await fill(engine, args.jobs)
        print(f"filled {args.jobs} jobs in {time.perf_counter() - started:.1f} s")
        store = VendorStore(engine, SystemClock())
        started = time.perf_counter()
        observed = await store.observations()
        elapsed = time.perf_counter() - started
        tracemalloc.start()  # a second read for the memory: tracing slows it several times
        await store.observations()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        await engine.dispose()
    print(
        f"learned from {sum(o.jobs for o in observed)} jobs ({len(observed)} models) in "
        f"{elapsed:.2f} s, peak {peak / 2**20:.1f} MiB; "
        f"suggested for {observed[0].model}: {dict(observed[0].suggested)}"
    )


if __name__ == "__main__":
    asyncio.run(main())
