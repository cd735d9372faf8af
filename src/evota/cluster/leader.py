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
import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import make_url

from evota.clock import Clock

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


class Follower(Leadership):
    """A node without the ``runners`` component: never leads, its runners never start."""

    @property
    def is_leader(self) -> bool:
        return False

    @property
    def token(self) -> int:
        return 0

    async def add(self, start: Hook, stop: Hook) -> None:
        self._hooks.append((start, stop))

    async def stop(self) -> None:
        return None


# pg_try_advisory_lock's key: "evota" in ASCII, the one lock the runner leader holds.
LOCK_KEY = 0x65766F7461


@dataclass(frozen=True)
class Timing:
    """How fast a dead or cut-off leader is replaced (docs/cluster.md "Runners and the leader").

    ``retry``: how often a follower tries the lock and the leader checks its session;
    ``check_timeout``: a leader whose session does not answer within it steps down (it stops
    its runners) and so does so well before the server frees the lock; the server's TCP
    keepalives (``keepalive_idle + keepalive_interval * keepalive_count``) and
    ``user_timeout`` bound how long the lock of a partitioned leader outlives it.
    """

    retry: float = 2.0
    check_timeout: float = 3.0
    keepalive_idle: int = 5
    keepalive_interval: int = 2
    keepalive_count: int = 3
    user_timeout_ms: int = 10_000

    def takeover_bound(self) -> float:
        """Worst case from the leader's death or cut-off to a follower holding the lock."""
        lapse = max(
            self.keepalive_idle + self.keepalive_interval * self.keepalive_count,
            self.user_timeout_ms / 1000,
        )
        return lapse + self.retry


def asyncpg_dsn(database_url: str) -> str:
    """The SQLAlchemy ``postgresql+asyncpg://`` URL as a DSN asyncpg connects with."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgLeader(Leadership):
    """The leader holds a PostgreSQL session advisory lock on a connection of its own.

    Why PostgreSQL and not a Redis lock: the database is the system of record the runners
    write to, and a session lock is released by the server the moment the session ends — a
    killed leader frees it at once, with no lease to wait out and no clock to trust. Each
    takeover increments ``cluster_leader.token`` in the same session (the fencing token).
    """

    def __init__(
        self,
        database_url: str,
        node_key: str,
        clock: Clock,
        timing: Timing = Timing(),
        on_change: Callable[[bool, int], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__()
        self._dsn = asyncpg_dsn(database_url)
        self._node_key = node_key
        self._clock = clock
        self.timing = timing
        self._on_change = on_change
        self._conn: Any = None  # asyncpg.Connection (untyped library)
        self._token = 0
        self._leading = False
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.changed = asyncio.Condition()  # notified on every gain, loss and attempt
        self.attempts = 0  # lock attempts and session checks made (tests wait on it)

    @property
    def is_leader(self) -> bool:
        return self._leading

    @property
    def token(self) -> int:
        return self._token

    async def add(self, start: Hook, stop: Hook) -> None:
        self._hooks.append((start, stop))
        if self._leading:
            await self._start_hooks()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="leader-election")

    async def wait(self, leading: bool) -> None:
        """Until this node leads (or does not); tests and the harness wait on this."""
        async with self.changed:
            await self.changed.wait_for(lambda: self._leading == leading)

    async def tried(self, attempts: int) -> None:
        """Until this node has tried the lock (or checked its session) ``attempts`` times."""
        async with self.changed:
            await self.changed.wait_for(lambda: self.attempts >= attempts)

    def poke(self) -> None:
        """Try the lock (or check the session) now rather than at the next retry."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._step_down("stopping")

    async def _run(self) -> None:
        while True:
            try:
                if self._conn is None:
                    self._conn = await self._connect()
                if self._leading:
                    await self._conn.fetchval("SELECT 1", timeout=self.timing.check_timeout)
                elif await self._conn.fetchval(
                    "SELECT pg_try_advisory_lock($1)",
                    LOCK_KEY,
                    timeout=self.timing.check_timeout,
                ):
                    await self._take_over()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the session is gone or hangs: the lock may be gone too
                await self._step_down(f"{type(exc).__name__}: {exc}"[:200])
            self.attempts += 1
            async with self.changed:
                self.changed.notify_all()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.timing.retry)

    async def _connect(self) -> Any:
        import asyncpg  # type: ignore[import-untyped]

        t = self.timing
        return await asyncpg.connect(
            self._dsn,
            timeout=t.check_timeout,
            server_settings={
                "application_name": f"evota-leader {self._node_key}"[:63],
                "tcp_keepalives_idle": str(t.keepalive_idle),
                "tcp_keepalives_interval": str(t.keepalive_interval),
                "tcp_keepalives_count": str(t.keepalive_count),
                "tcp_user_timeout": str(t.user_timeout_ms),
            },
        )

    async def _take_over(self) -> None:
        token = await self._conn.fetchval(
            "INSERT INTO cluster_leader (id, token, node, since) VALUES (1, 1, $1, $2) "
            "ON CONFLICT (id) DO UPDATE SET token = cluster_leader.token + 1, "
            "node = excluded.node, since = excluded.since RETURNING token",
            self._node_key,
            self._clock.now(),
            timeout=self.timing.check_timeout,
        )
        self._token = int(token)
        self._leading = True
        log.info("runner leadership taken", node=self._node_key, token=self._token)
        try:
            await self._start_hooks()
        except Exception:
            log.exception("runners failed to start on this leader; stepping down")
            await self._step_down("runners failed to start")
            return
        await self._notify()

    async def _step_down(self, why: str) -> None:
        """Stop the runners first, then let go of the session (and with it the lock)."""
        was = self._leading
        self._leading = False
        self._token = 0
        await self._stop_hooks()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), self.timing.check_timeout)
            if not conn.is_closed():
                conn.terminate()
        if was:
            log.warning("runner leadership lost", node=self._node_key, reason=why)
            await self._notify()

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()
        if self._on_change is not None:
            try:
                await self._on_change(self._leading, self._token)
            except Exception:
                log.exception("leadership listener failed")
