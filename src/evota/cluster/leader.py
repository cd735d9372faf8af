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
  (table ``cluster_leader``); the runners' commits check it (evota.cluster.fence), so a
  deposed leader's writes fail instead of landing.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import make_url

from evota.clock import Clock
from evota.cluster.envelope import Seal
from evota.cluster.redis import raise_if_cancelled, stop_tasks

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
        """Until this node leads with every runner started (or does not lead)."""
        async with self.changed:
            await self.changed.wait_for(lambda: self._settled() if leading else not self._leading)

    def _settled(self) -> bool:
        return self._leading and self._running == len(self._hooks)

    async def tried(self, attempts: int) -> None:
        """Until this node has tried the lock (or checked its session) ``attempts`` times."""
        async with self.changed:
            await self.changed.wait_for(lambda: self.attempts >= attempts)

    def poke(self) -> None:
        """Try the lock (or check the session) now rather than at the next retry."""
        self._wake.set()

    def deposed(self, why: str) -> None:
        """A runner's commit was refused by the fence (evota.cluster.fence): check the
        session and the term now, and step down (stopping the runners) without waiting."""
        log.warning("runner write refused: deposed", node=self._node_key, reason=why)
        self.poke()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._step_down("stopping")

    async def _run(self) -> None:
        while True:
            raise_if_cancelled()  # a cancel a library swallowed ends the loop here
            try:
                if self._conn is None:
                    self._conn = await self._connect()
                if self._leading:
                    token = await self._conn.fetchval(
                        "SELECT token FROM cluster_leader WHERE id = 1",
                        timeout=self.timing.check_timeout,
                    )
                    if token != self._token:  # another node took over (our lock is gone)
                        await self._step_down(f"deposed: the cluster's term is now {token}")
                elif await self._conn.fetchval(
                    "SELECT pg_try_advisory_lock($1)",
                    LOCK_KEY,
                    timeout=self.timing.check_timeout,
                ):
                    await self._take_over()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the session is gone or hangs: the lock may be gone too
                raise_if_cancelled()
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


# -- calls to the leader's runners ----------------------------------------------------------

Handler = Callable[..., Awaitable[Any]]  # JSON keyword arguments -> a JSON result


class NoLeader(Exception):
    """No leader answered: none elected yet, Redis unreachable, or the call timed out.
    The API answers 503 (the caller may retry; the leader may have done it)."""


class LeaderCalls:
    """An API call into a runner, run where the runners are.

    On the leader (and always in single-node mode, ``redis`` None) the handler runs in
    process. Elsewhere the call is published on the leader's channel
    (``evota:leader-calls:<node key>``; the leader's key is ``evota:leader``, refreshed while
    it leads) and the answer comes back on the caller's ``evota:leader-replies:<node key>``,
    bounded by ``timeout``. Exceptions of the registered types cross with their attributes,
    so the API maps them as if the call had been local.
    """

    def __init__(
        self,
        leadership: Leadership,
        node_key: str,
        redis: Any = None,  # redis.asyncio.Redis (cluster mode)
        *,
        timeout: float = 60.0,
        refresh: float = 2.0,
    ) -> None:
        self.leadership = leadership
        self.node_key = node_key
        self.redis = redis
        self.timeout = timeout
        self.refresh = refresh
        self.handlers: dict[str, Handler] = {}
        self._errors: dict[str, type[Exception]] = {}
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._ready = False  # this node leads and its runners have started
        # The cluster key's seal (evota.cluster.envelope), set by the runtime in cluster mode:
        # a call is an operator's action, so one that Redis alone vouches for is refused.
        self.seal: Seal | None = None
        self.served: Counter[str] = Counter()  # other nodes' calls answered here, by name

    @property
    def serving(self) -> bool:
        return self._ready and self.leadership.is_leader

    async def opened(self) -> None:
        """Leadership hook, added after every runner: calls are taken from now on."""
        self._ready = True
        await self.advertise_now()

    async def closed(self) -> None:
        """Leadership hook: the runners are about to stop; calls go elsewhere."""
        self._ready = False

    def register(self, name: str, handler: Handler) -> None:
        self.handlers[name] = handler

    def crossing(self, *types: type[Exception]) -> None:
        """Exceptions (and their subclasses) that reach a remote caller as themselves."""
        pending = list(types)
        while pending:
            cls = pending.pop()
            self._errors[_type_name(cls)] = cls
            pending.extend(cls.__subclasses__())

    async def call(self, name: str, /, **kwargs: Any) -> Any:
        handler = self.handlers[name]  # KeyError: a programming error, on any node
        if self.redis is None or self.serving:
            return await handler(**kwargs)
        return await self._forward(name, kwargs)

    # -- the caller's side ---------------------------------------------------------------------
    async def _forward(self, name: str, kwargs: dict[str, Any]) -> Any:

        from evota.cluster.redis import key

        call_id = secrets.token_hex(8)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = future
        if self.seal is None:
            raise NoLeader("no cluster key to seal the call to the runner leader")
        message = self.seal.seal(  # not JSON: a programming error, not a missing leader
            {"t": "lcall", "id": call_id, "from": self.node_key, "name": name, "kwargs": kwargs}
        )
        try:
            try:
                leader = await self.redis.get(key("leader"))
                if leader is None:
                    raise NoLeader("no runner leader is elected now; try again shortly")
                heard = await self.redis.publish(key("leader-calls", leader.decode()), message)
            except NoLeader:
                raise
            except Exception as exc:  # Redis down or slow: bounded by the client's timeouts
                raise NoLeader(
                    f"the runner leader cannot be reached: {type(exc).__name__}"
                ) from None
            if not heard:
                raise NoLeader("the runner leader is not listening (it may have just stopped)")
            try:
                answer = await asyncio.wait_for(future, self.timeout)
            except TimeoutError:
                raise NoLeader(
                    f"the runner leader did not answer within {self.timeout:g} s"
                ) from None
        finally:
            self._waiting.pop(call_id, None)
        if "error" in answer:
            raise self._error(answer["error"])
        if answer.get("not_leader"):
            raise NoLeader("the runner leadership is moving; try again shortly")
        return answer.get("result")

    def _error(self, error: dict[str, Any]) -> Exception:
        cls = self._errors.get(str(error.get("type")))
        message = str(error.get("message") or "the leader could not do it")
        if cls is None:
            return RuntimeError(f"on the runner leader: {message}")
        exc = cls.__new__(cls)
        Exception.__init__(exc, message)
        exc.__dict__.update(error.get("attrs") or {})
        return exc

    # -- the leader's side ---------------------------------------------------------------------
    async def start(self) -> None:
        """Listen for calls and replies (every node); advertise this node while it leads."""
        if self.redis is None:
            return
        self._tasks = [
            asyncio.create_task(self._listen(), name="leader-calls"),
            asyncio.create_task(self._advertise(), name="leader-advertise"),
        ]

    async def stop(self) -> None:
        await stop_tasks([*self._tasks, *self._running], "leader calls")
        self._tasks = []
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(NoLeader("this node is stopping"))
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()

    async def _advertise(self) -> None:
        from evota.cluster.redis import key

        while True:
            raise_if_cancelled()
            try:
                if self.serving:
                    await self.redis.set(
                        key("leader"), self.node_key, px=int(self.refresh * 5 * 1000)
                    )
            except Exception as exc:  # Redis down: callers answer 503 until it is back
                raise_if_cancelled()
                log.warning("cannot advertise the leader", error=type(exc).__name__)
            await asyncio.sleep(self.refresh)

    async def advertise_now(self) -> None:
        """On gaining leadership: callers find this node at once, not at the next refresh."""
        from evota.cluster.redis import key

        if self.redis is not None and self.serving:
            with contextlib.suppress(Exception):
                await self.redis.set(key("leader"), self.node_key, px=int(self.refresh * 5 * 1000))

    async def _listen(self) -> None:
        from evota.cluster.redis import key

        calls = key("leader-calls", self.node_key)
        replies = key("leader-replies", self.node_key)
        while True:
            raise_if_cancelled()
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(calls, replies)
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=self.refresh
                    )
                    raise_if_cancelled()
                    if message is None:
                        continue
                    if message["channel"].decode() == replies:
                        self._answered(message["data"])
                    else:
                        task = asyncio.create_task(self._serve(message["data"]))
                        self._running.add(task)
                        task.add_done_callback(self._running.discard)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away: subscribe again when it is back
                raise_if_cancelled()
                log.warning("leader calls: Redis lost", error=type(exc).__name__)
                await asyncio.sleep(self.refresh)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _answered(self, data: bytes) -> None:

        answer = self.seal.open(data) if self.seal is not None else None
        if answer is None or answer.get("t") != "lreply":
            log.warning("leader calls: an unsealed, stale or replayed answer refused")
            return
        future = self._waiting.get(str(answer.get("id")))
        if future is not None and not future.done():
            future.set_result(answer)

    async def _serve(self, data: bytes) -> None:
        import orjson

        from evota.cluster.redis import key

        seal = self.seal
        call = seal.open(data) if seal is not None else None
        # Redis carries calls, it does not vouch for them (evota.cluster.envelope)
        if seal is None or call is None or call.get("t") != "lcall":
            log.warning("leader calls: an unsealed, stale or replayed call refused")
            return
        try:
            call_id, caller, name = str(call["id"]), str(call["from"]), str(call["name"])
            kwargs = dict(call.get("kwargs") or {})
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("leader calls: a malformed call was ignored")
            return
        answer: dict[str, Any] = {"t": "lreply", "id": call_id}
        handler = self.handlers.get(name)
        if not self.serving:
            answer["not_leader"] = True
        elif handler is None:
            answer["error"] = {"type": "", "message": f"no leader call {name!r}"}
        else:
            self.served[name] += 1
            try:
                answer["result"] = await handler(**kwargs)
            except Exception as exc:
                answer["error"] = self._error_json(exc)
        try:
            await self.redis.publish(key("leader-replies", caller), seal.seal(answer, default=str))
        except Exception as exc:  # the caller times out with a 503
            log.warning("leader calls: cannot answer", call=name, error=type(exc).__name__)

    def _error_json(self, exc: Exception) -> dict[str, Any]:
        name = _type_name(type(exc))
        if name not in self._errors:
            log.exception("leader call failed", error=name)
            return {"type": "", "message": "the runner leader failed to do it (see its log)"}
        attrs = {k: v for k, v in vars(exc).items() if _jsonable(v)}
        return {"type": name, "message": str(exc), "attrs": attrs}


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _jsonable(value: Any) -> bool:
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, list | tuple):
        return all(_jsonable(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _jsonable(v) for k, v in value.items())
    return False
