"""Which node runs the runners: one leader per cluster.

The runners (jobs, campaigns, operations, alerts, approvals, rollups, feeds, playbooks,
certificates, passwords, profile upgrades, rotations, local lists, configuration polling)
must run exactly once per cluster. The runtime hands each one's ``start`` and ``stop`` to a
``Leadership``: they run when this node gains leadership and stop when it loses it.

- ``SoleLeader`` (single node, no Redis): always the leader; ``add`` starts at once, so the
  start order and behaviour are today's.
- ``PgLeader`` (cluster): a PostgreSQL session advisory lock on a dedicated connection. The
  lock lives and dies with that session, so a killed leader frees it at once and a partitioned
  one within the keepalive bound; each takeover increments a fencing token in the database
  (table ``cluster_leader``), so a deposed leader's writes can be told apart.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("evota.cluster.leader")

Hook = Callable[[], Awaitable[None]]


class Leadership(abc.ABC):
    """Runs registered ``start`` hooks on gaining leadership and ``stop`` hooks on losing it."""

    def __init__(self) -> None:
        self._hooks: list[tuple[Hook, Hook]] = []
        self._running = 0  # how many hooks' starts have run (and not been stopped)

    @property
    @abc.abstractmethod
    def is_leader(self) -> bool:
        """This node runs the runners now."""

    @property
    @abc.abstractmethod
    def token(self) -> int:
        """The fencing token of this node's current term (0: not the leader)."""

    @abc.abstractmethod
    async def add(self, start: Hook, stop: Hook) -> None:
        """Register a runner: ``start`` runs now if this node leads, else on gaining."""

    async def start(self) -> None:  # noqa: B027  (SoleLeader needs nothing)
        """Stand for election (after every ``add`` of the runtime's start)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop the runners (last added first) and step down."""

    async def _start_hooks(self) -> None:
        for start, _ in self._hooks[self._running :]:
            await start()
            self._running += 1

    async def _stop_hooks(self) -> None:
        """Last started first; one failing stop does not keep the others running."""
        while self._running:
            self._running -= 1
            _, stop = self._hooks[self._running]
            try:
                await stop()
            except Exception:
                log.exception("runner stop failed")


class SoleLeader(Leadership):
    """Single-node mode: this process is always the leader; runners start when added."""

    @property
    def is_leader(self) -> bool:
        return True

    @property
    def token(self) -> int:
        return 1

    async def add(self, start: Hook, stop: Hook) -> None:
        self._hooks.append((start, stop))
        await self._start_hooks()

    async def stop(self) -> None:
        await self._stop_hooks()
