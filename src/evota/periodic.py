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

__all__ = ["Periodic", "raise_if_cancelled"]

log = structlog.get_logger("evota.periodic")


def raise_if_cancelled() -> None:
    """Re-raise a cancel that a library took in.

    A task cancelled while it waits in a client library may see the library return normally
    or raise another error instead of CancelledError (redis-py; SQLAlchemy when its cleanup
    of the cancelled statement fails; ``asyncio.wait_for`` on 3.11 when the inner result is
    ready). A background loop that logs errors and goes on would then run forever and the
    stop that cancelled it would hang. Every such loop calls this in its error handler and
    at the top of each turn.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


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
                raise_if_cancelled()
                log.exception("periodic work failed", task=self.name)
