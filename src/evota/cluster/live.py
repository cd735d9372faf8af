"""Live updates from every node (cluster mode): Redis pub/sub fan-out.

What the console's live regions, the campaign SSE stream and ``evota campaign watch`` show is
read from PostgreSQL, which every node writes, so they see every node's chargers already.
Two things are only in one process's memory and are fanned out here:

- the campaign runner's notes ("why chargers wait"), kept on the leader: a
  :class:`Replicated` mapping publishes each change, every node keeps a copy (the API reads
  ``rt.campaigns.notes`` on any node) and reloads it from a Redis hash after a reconnect;
- change notices (topics such as ``campaign:<id>``): an SSE stream on any node wakes at once
  instead of at its next poll.

A node publishes through a bounded outbox and one task, so a publisher never waits for Redis
or for a reader; each subscriber has a bounded queue that drops its oldest notice when full
(a notice is a hint to read again, and the reader reads the database anyway), so a slow SSE
client holds back no one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from evota.cluster.node import Node
from evota.cluster.redis import key, raise_if_cancelled, stop_tasks

_cancelled = raise_if_cancelled  # evota.cluster.redis


log = structlog.get_logger("evota.cluster.live")

CHANNEL = key("live")
STATE = key("live", "state")  # hash: "<mapping>|<key>" -> JSON value


class Subscription:
    """One reader's notices, at most ``size`` kept (the oldest is dropped first)."""

    def __init__(self, bus: LiveBus, topic: str, size: int) -> None:
        self.topic = topic
        self.dropped = 0
        self._bus = bus
        self._items: deque[dict[str, Any]] = deque(maxlen=size)
        self._ready = asyncio.Event()

    def put(self, data: dict[str, Any]) -> None:
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(data)
        self._ready.set()

    async def get(self, timeout: float) -> dict[str, Any] | None:
        """The next notice, or None after ``timeout`` seconds without one."""
        if not self._items:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout)
        return self._items.popleft() if self._items else None

    def close(self) -> None:
        self._bus.unsubscribe(self)


class LiveBus:
    def __init__(
        self, redis: Redis, node: Node, *, queue_size: int = 64, outbox: int = 10_000
    ) -> None:
        self.redis = redis
        self.node = node
        self.queue_size = queue_size
        self._outbox: deque[tuple[bytes, str | None, bool]] = deque()
        self._outbox_max = outbox
        self._wake = asyncio.Event()
        self._topics: dict[str, set[Subscription]] = {}
        self._mappings: dict[str, Replicated] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.subscribed = asyncio.Event()  # set while this node hears the channel
        self.dropped = 0

    # -- subscribers ------------------------------------------------------------------------
    def subscribe(self, topic: str) -> Subscription:
        sub = Subscription(self, topic, self.queue_size)
        self._topics.setdefault(topic, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._topics.get(sub.topic)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._topics[sub.topic]

    def replicated(self, name: str, limit: int | None = None) -> Replicated:
        """A mapping whose writes reach every node's copy (values: JSON; ``limit``: keep
        that many items of a sequence)."""
        mapping = Replicated(self, name, limit)
        self._mappings[name] = mapping
        return mapping

    # -- publishing -------------------------------------------------------------------------
    def publish(
        self, topic: str, data: dict[str, Any], *, state: str | None = None, forget: bool = False
    ) -> None:
        """Fan ``data`` out to every node's subscribers of ``topic``; never blocks.
        ``state``: also keep it under that field of the state hash (Replicated), or remove
        the field (``forget``)."""
        if len(self._outbox) >= self._outbox_max:
            self.dropped += 1
            return
        message = orjson.dumps({"t": topic, "d": data, "n": self.node.name})
        self._outbox.append((message, state, forget))
        self._wake.set()

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._publish_loop(), name="live-publish"),
                asyncio.create_task(self._listen_loop(), name="live-listen"),
            ]

    async def stop(self) -> None:
        await stop_tasks(self._tasks, "live bus")
        self._tasks = []

    async def _publish_loop(self) -> None:
        delay = 0.05
        while True:
            _cancelled()  # a cancel a library swallowed ends the loop here
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                message, state, forget = self._outbox[0]
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        if state is not None and forget:
                            pipe.hdel(STATE, state)
                        elif state is not None:
                            pipe.hset(STATE, state, message)
                        pipe.publish(CHANNEL, message)
                        await pipe.execute()
                except (RedisError, OSError) as exc:
                    _cancelled()  # redis-py may turn a cancel into a connection error
                    log.warning("live update not published yet", error=str(exc))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                delay = 0.05
                self._outbox.popleft()

    async def _listen_loop(self) -> None:
        delay = 0.05
        while True:
            _cancelled()
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                await self._reload()  # what changed while this node was not listening
                self.subscribed.set()
                delay = 0.05
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    _cancelled()  # a cancel redis-py took in while waiting: stop now
                    if message is not None and message.get("type") == "message":
                        self._deliver(message["data"])
            except (RedisError, OSError) as exc:
                _cancelled()  # redis-py may turn a cancel into a connection error
                self.subscribed.clear()
                log.warning("live updates unheard", error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    async def _reload(self) -> None:
        stored = await self.redis.hgetall(STATE)  # type: ignore[misc]
        for raw in stored.values():
            self._deliver(raw, notify=False)

    def _deliver(self, raw: bytes | str, *, notify: bool = True) -> None:
        try:
            message = orjson.loads(raw)
            topic, data = message["t"], message["d"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("unreadable live update")
            return
        mapping = self._mappings.get(data.get("mapping", "")) if isinstance(data, dict) else None
        if mapping is not None:
            mapping.received(data["key"], data.get("value"), deleted=bool(data.get("deleted")))
        if notify:
            for sub in list(self._topics.get(topic, ())):
                sub.put(data)


class Replicated(dict[str, Any]):
    """A dict written on one node (a runner on the leader) and read on all: each write or
    removal that changes it is published and applied to every node's copy (a sequence is
    cut to ``limit`` items on the way; it arrives as a tuple)."""

    def __init__(self, bus: LiveBus, name: str, limit: int | None) -> None:
        super().__init__()
        self._bus = bus
        self._name = name
        self._limit = limit

    def _wire(self, value: Any) -> Any:
        if self._limit is not None:
            return list(value)[: self._limit]
        return list(value) if isinstance(value, tuple) else value

    def __setitem__(self, item: str, value: Any) -> None:
        shown = self._wire(value)
        if item in self and self._wire(self[item]) == shown:
            return
        super().__setitem__(item, value)
        self._send(item, {"mapping": self._name, "key": item, "value": shown})

    def __delitem__(self, item: str) -> None:
        super().__delitem__(item)
        self._send(item, {"mapping": self._name, "key": item, "deleted": True}, forget=True)

    def pop(self, item: str, *default: Any) -> Any:
        if item not in self:
            return super().pop(item, *default)
        value = super().pop(item)
        self._send(item, {"mapping": self._name, "key": item, "deleted": True}, forget=True)
        return value

    def _send(self, item: str, data: dict[str, Any], *, forget: bool = False) -> None:
        state = f"{self._name}|{item}"
        self._bus.publish(f"{self._name}:{item}", data, state=state, forget=forget)

    def received(self, item: str, value: Any, *, deleted: bool = False) -> None:
        """Another node's (or this node's own) change, as published: applied, not resent."""
        if deleted:
            super().pop(item, None)
        elif item not in self or self._wire(self[item]) != value:
            super().__setitem__(item, tuple(value) if isinstance(value, list) else value)


@contextlib.asynccontextmanager
async def waiter(
    bus: LiveBus | None, topic: str
) -> AsyncIterator[Callable[[float], Awaitable[Any]]]:
    """``wait(seconds)``: sleep that ends early on a notice for ``topic`` from any node.
    Without a bus (single node) it is a plain sleep, as before the cluster."""
    if bus is None:
        yield asyncio.sleep
        return
    sub = bus.subscribe(topic)
    try:
        yield sub.get
    finally:
        sub.close()
