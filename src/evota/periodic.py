"""A piece of background work repeated every so often, one task, stopped cleanly.

The KPI rollup and the release-feed check both want the same shape: the first run one
interval after start (so a start stays quick), a failing run logged and tried again next
time (the database may be down, a vendor's server unreachable), and a stop that waits for
the task to end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

__all__ = ["Periodic"]

log = structlog.get_logger("evota.periodic")


class Periodic:
    """Calls ``work`` every ``interval`` seconds from :meth:`start` until :meth:`stop`."""

    def __init__(self, name: str, work: Callable[[], Awaitable[object]]) -> None:
        self.name = name
        self.work = work
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, interval_seconds: float) -> None:
        """Start repeating (an interval of 0 or less: never; a second start: no-op)."""
        if self._task is None and interval_seconds > 0:
            self._task = asyncio.create_task(self._loop(interval_seconds), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.work()
            except Exception:
                log.exception("periodic work failed", task=self.name)
