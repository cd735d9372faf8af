"""What the playbook engine adds to the OCPP hot path: the cost of one call of its fleet
hook (``PlaybookRunner.charger_event``), which every connector status change and every
stored charger event makes. Run: ``uv run python bench/playbook_hook.py``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from evota.clock import SystemClock
from evota.playbooks.runner import PlaybookRunner

N = 200_000


def _per_call(runner: PlaybookRunner, *args: Any) -> float:
    start = time.perf_counter()
    for _ in range(N):
        runner.charger_event(*args)
    return (time.perf_counter() - start) / N * 1e6


async def main() -> None:
    # Only what the hook touches: evota's clock and the queue (no database, no worker).
    runner = PlaybookRunner.__new__(PlaybookRunner)
    runner._clock = SystemClock()
    runner._queue = asyncio.Queue(2 * N)
    runner.dropped = 0
    status = _per_call(runner, "CP-0001", "status", 1, "Available", "NoError")
    other = _per_call(runner, "CP-0001", "notify_event", 0, None, None)
    print(f"status change: {status:.2f} us per call; a kind no trigger reads: {other:.2f} us")


if __name__ == "__main__":
    asyncio.run(main())
