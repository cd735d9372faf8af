"""Charger events relayed from every node to the runner leader's services (cluster mode).

The fleet service calls its listeners in process. With several nodes a charger may be
connected to any node, while the services that act on what it says (job, campaign, playbook
and operations runners, certificates, passwords, profile upgrades, configuration, local
lists, the alert monitor) run on the leader only (:mod:`evota.cluster.leader`). So in
cluster mode :meth:`EventRelay.install` swaps the fleet's listeners for publishers and keeps
the originals as the leader's handlers:

- every node appends what its chargers cause to one Redis Stream (``evota:events``), from a
  bounded outbox by one task, whatever queued meanwhile in one entry: the hot path never
  waits for Redis, and a storm costs few Redis commands;
- the leader reads it through a consumer group and calls the original listeners in the
  order the node published them; it acknowledges (and deletes) an entry once called. A new
  leader first claims what the previous one read and did not acknowledge, then reads on:
  at least once, never lost to a leadership change. A repeat is harmless: these are charger
  reports, which a charger itself may repeat, and each service takes a repeat as a no-op;
- what stays local: the vendor profile cache (every node reads it), and the CSR check of
  SignCertificate, whose answer the charger waits for.

Everything a charger can cause is bounded: each charger has a token bucket on its node (a
flood of status changes is cut at the source, counted in ``evota_cluster_events``), the
outbox holds at most ``Limits.outbox`` entries while Redis is away, the stream is trimmed to
``Limits.maxlen`` entries of at most ``Limits.batch`` calls each.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from evota import metrics
from evota.audit import anomalies
from evota.audit.log import AuditLog, Recorded
from evota.cluster.envelope import Seal
from evota.cluster.node import Node
from evota.cluster.redis import key, raise_if_cancelled, stop_tasks
from evota.fleet.service import FleetService

_cancelled = raise_if_cancelled  # evota.cluster.redis


log = structlog.get_logger("evota.cluster.events")

STREAM = key("events")
GROUP = "leader"

# What a stream entry names: the fleet's listener lists, the firmware observer's calls and
# the alert monitor's audit events.
READY, BOOT, CHARGER, SECURITY, KEY, CHANNEL = "ready", "boot", "charger", "security", "key", "chan"
JOB_BOOTED, JOB_READY, JOB_STATUS = "job.booted", "job.ready", "job.status"
JOB_FAULTED, JOB_GONE = "job.faulted", "job.gone"
AUDIT = "audit"


@dataclass(frozen=True, slots=True)
class Limits:
    outbox: int = 10_000  # entries a node holds while Redis is slow or away
    burst: float = 120.0  # events one charger may cause at once ...
    rate: float = 2.0  # ... and per second after that
    maxlen: int = 20_000  # the stream's length in entries (approximate trim)
    batch: int = 256  # calls per entry: one XADD carries what queued meanwhile
    read: int = 16  # entries per read on the leader
    buckets: int = 100_000  # chargers whose buckets are remembered


# -- pure parts ---------------------------------------------------------------------------
@dataclass(slots=True)
class Bucket:
    tokens: float
    at: float


def take(bucket: Bucket | None, now: float, limits: Limits) -> tuple[Bucket, bool]:
    """A token bucket: whether one more event fits, and the bucket after it (O(1) per charger,
    where a sliding window would keep ``burst`` times per charger)."""
    if bucket is None:
        bucket = Bucket(limits.burst, now)
    tokens = min(limits.burst, bucket.tokens + (now - bucket.at) * limits.rate)
    if tokens < 1.0:
        return Bucket(tokens, now), False
    return Bucket(tokens - 1.0, now), True


Call = tuple[str, Sequence[Any]]  # (kind, arguments)


def encode(calls: Iterable[Call], origin: str) -> dict[bytes, bytes]:
    """A stream entry: the calls in order as one JSON array (datetimes as ISO text), and the
    node they come from. Many calls per entry: Redis and its client cost per command."""
    return {b"c": orjson.dumps([[kind, list(args)] for kind, args in calls]), b"n": origin.encode()}


def decode(fields: dict[bytes, bytes]) -> list[tuple[str, list[Any]]]:
    """The entry's calls; ValueError for an entry this version cannot read."""
    try:
        calls = orjson.loads(fields[b"c"])
    except (KeyError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"unreadable event entry: {exc}") from None
    if not isinstance(calls, list) or not all(
        isinstance(c, list) and len(c) == 2 and isinstance(c[0], str) and isinstance(c[1], list)
        for c in calls
    ):
        raise ValueError("unreadable event entry: not a list of [kind, arguments]")
    return [(kind, args) for kind, args in calls]


def audit_event(args: list[Any]) -> tuple[anomalies.Event, int | None]:
    """The rules' view of an audit entry and the entry's sequence number."""
    at, actor, action, outcome, roles, chargers, client, *seq = args
    event = anomalies.Event(
        datetime.fromisoformat(at),
        actor,
        action,
        outcome,
        frozenset(roles),
        tuple(chargers),
        client,
    )
    return event, int(seq[0]) if seq and seq[0] is not None else None


def _when(text: Any) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) else None


# -- the shell ------------------------------------------------------------------------------
class _AnyCharger(dict[str, Any]):
    """The relay's ``active``: the fleet asks before each firmware call, and only the leader
    knows which chargers have a job, so every call goes out and the leader filters."""

    def __contains__(self, _charger_id: object) -> bool:
        return True


class RelayedObserver:
    """Stands in for the job runner in a node's fleet service (``FleetService.jobs``)."""

    def __init__(self, relay: EventRelay) -> None:
        self.active: dict[str, Any] = _AnyCharger()
        self._relay = relay

    def booted(
        self, charger_id: str, firmware_version: str | None, reason: str | None = None
    ) -> None:
        self._relay.publish(JOB_BOOTED, charger_id, firmware_version, reason)

    def ready(self, charger_id: str) -> None:
        self._relay.publish(JOB_READY, charger_id)

    def firmware_status(self, charger_id: str, status: str, request_id: int | None) -> None:
        self._relay.publish(JOB_STATUS, charger_id, status, request_id)

    def faulted(self, charger_id: str, connector_id: int) -> None:
        self._relay.publish(JOB_FAULTED, charger_id, connector_id)

    def disconnected(self, charger_id: str) -> None:
        self._relay.publish(JOB_GONE, charger_id)


@dataclass
class Handlers:
    """The leader's in-process receivers: the fleet's original listeners and observer."""

    ready: list[Callable[[str], None]] = field(default_factory=list)
    boot: list[Callable[[str, str | None, str | None, str | None], None]] = field(
        default_factory=list
    )
    charger: list[Callable[[str, str, int, str | None, str | None], None]] = field(
        default_factory=list
    )
    security: list[Callable[[str, str, str | None, datetime | None], None]] = field(
        default_factory=list
    )
    key: list[Callable[[str, int], None]] = field(default_factory=list)
    channel: list[Callable[[str, int], None]] = field(default_factory=list)
    jobs: Any = None  # FirmwareObserver (the job runner)
    audit: Callable[[anomalies.Event, int | None], Awaitable[None]] | None = None


class EventRelay:
    def __init__(
        self,
        redis: Redis,
        node: Node,
        *,
        limits: Limits | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        seal: Seal | None = None,
    ) -> None:
        self.redis = redis
        self.node = node
        self.seal = seal  # the cluster key (evota.cluster.envelope); None relays nothing
        self.limits = limits or Limits()
        self.handlers = Handlers()
        self._monotonic = monotonic
        self._buckets: dict[str, Bucket] = {}
        self._outbox: deque[Call] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._publisher: asyncio.Task[None] | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._seen: deque[bytes] = deque(maxlen=4 * self.limits.read)  # entries just handled
        self.handled = 0  # entries this node handled as leader (tests, metrics)
        self.dropped_flood = 0  # a charger over its rate
        self.dropped_full = 0  # the outbox full (Redis away for long)

    # -- wiring ---------------------------------------------------------------------------
    def install(
        self, fleet: FleetService, *, local_boot: Iterable[Callable[..., None]] = ()
    ) -> None:
        """Move the fleet's listeners to the leader's side and publish in their place.
        ``local_boot`` also stay on this node (caches every node reads)."""
        h = self.handlers
        h.ready, fleet.ready_listeners[:] = list(fleet.ready_listeners), [self._ready]
        h.boot = list(fleet.boot_listeners)
        fleet.boot_listeners[:] = [*local_boot, self._boot]
        h.charger, fleet.charger_listeners[:] = list(fleet.charger_listeners), [self._charger]
        h.security, fleet.security_listeners[:] = list(fleet.security_listeners), [self._security]
        h.key, fleet.key_listeners[:] = list(fleet.key_listeners), [self._key]
        h.channel, fleet.channel_listeners[:] = list(fleet.channel_listeners), [self._channel]
        h.jobs, fleet.jobs = fleet.jobs, RelayedObserver(self)

    def install_audit(
        self, audit: AuditLog, observe: Callable[[anomalies.Event, int | None], Awaitable[None]]
    ) -> None:
        """Every node's audit entries reach the leader's anomaly rules (``observe``)."""
        self.handlers.audit = observe
        audit.listen(self._audited)

    def _ready(self, charger_id: str) -> None:
        self.publish(READY, charger_id)

    def _boot(self, charger_id: str, vendor: str | None, model: str | None, fw: str | None) -> None:
        self.publish(BOOT, charger_id, vendor, model, fw)

    def _charger(
        self, charger_id: str, kind: str, connector: int, status: str | None, error: str | None
    ) -> None:
        self.publish(CHARGER, charger_id, kind, connector, status, error)

    def _security(
        self, charger_id: str, kind: str, info: str | None, timestamp: datetime | None
    ) -> None:
        self.publish(SECURITY, charger_id, kind, info, timestamp)

    def _key(self, charger_id: str, change_id: int) -> None:
        self.publish(KEY, charger_id, change_id)

    def _channel(self, charger_id: str, profile: int) -> None:
        self.publish(CHANNEL, charger_id, profile)

    async def _audited(self, recorded: Recorded) -> None:
        event = anomalies.event_of(recorded.entry, recorded.chargers)
        if event is not None:  # most entries are not for the rules: nothing to send
            e = event
            args = [e.at, e.actor, e.action, e.outcome, sorted(e.roles), list(e.chargers), e.client]
            args.append(recorded.entry.seq)  # a new leader's rebuild may have counted it
            self._queue((AUDIT, args))

    # -- publishing (every node) ------------------------------------------------------------
    def publish(self, kind: str, charger_id: str, *args: Any) -> None:
        """Queue one call for the leader; never blocks, never raises (the hot path)."""
        bucket, ok = take(self._buckets.get(charger_id), self._monotonic(), self.limits)
        if len(self._buckets) >= self.limits.buckets and charger_id not in self._buckets:
            self._forget_full()
        self._buckets[charger_id] = bucket
        if not ok:
            self.dropped_flood += 1
            metrics.CLUSTER_EVENTS.labels("dropped_flood").inc()
            return
        self._queue((kind, (charger_id, *args)))

    def _queue(self, entry: Call) -> None:
        if len(self._outbox) >= self.limits.outbox:
            self.dropped_full += 1
            metrics.CLUSTER_EVENTS.labels("dropped_full").inc()
            return
        self._outbox.append(entry)
        self._idle.clear()
        self._wake.set()

    def _forget_full(self) -> None:
        """Drop the buckets that have refilled: they hold nothing a new bucket would not."""
        now, limits = self._monotonic(), self.limits
        for cid in [
            c
            for c, b in self._buckets.items()
            if take(b, now, limits)[0].tokens >= limits.burst - 1
        ]:
            del self._buckets[cid]
        if len(self._buckets) >= limits.buckets:  # all busy: forget the oldest half
            for cid in list(self._buckets)[: limits.buckets // 2]:
                del self._buckets[cid]

    @property
    def queued(self) -> int:
        """Entries waiting for Redis."""
        return len(self._outbox)

    def start(self) -> None:
        """Start the publisher (every node, from the start: chargers may connect at once)."""
        if self._publisher is None:
            self._publisher = asyncio.create_task(self._publish_loop(), name="events-publish")

    def _sealed(self, fields: dict[bytes, bytes]) -> dict[bytes, bytes]:
        """The entry with its tag: the leader acts on what the cluster key vouches for, not
        on whatever someone able to write to Redis appends (evota.cluster.envelope)."""
        if self.seal is None:
            raise RedisError("no cluster key to tag relayed events")
        return {**fields, b"m": self.seal.tag(fields[b"n"] + b"|" + fields[b"c"])}

    def _genuine(self, fields: dict[bytes, bytes]) -> bool:
        body = fields.get(b"n", b"") + b"|" + fields.get(b"c", b"")
        return self.seal is not None and self.seal.check(body, fields.get(b"m"))

    async def flushed(self) -> None:
        """Wait until every queued entry is in Redis (tests, a clean stop)."""
        await self._idle.wait()

    async def _publish_loop(self) -> None:
        delay = 0.05
        while True:
            _cancelled()  # a cancel a library swallowed ends the loop here
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                batch = [self._outbox[i] for i in range(min(len(self._outbox), self.limits.batch))]
                try:
                    await self.redis.xadd(
                        STREAM,
                        self._sealed(encode(batch, self.node.key)),  # type: ignore[arg-type]
                        maxlen=self.limits.maxlen,
                        approximate=True,
                    )
                except (RedisError, OSError) as exc:  # kept in order, retried
                    _cancelled()  # redis-py may turn a cancel into a connection error
                    log.warning("events not relayed yet", error=str(exc), queued=len(self._outbox))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                delay = 0.05
                for _ in batch:
                    self._outbox.popleft()
                metrics.CLUSTER_EVENTS.labels("published").inc(len(batch))
            self._idle.set()

    async def stop(self, *, flush: bool = True) -> None:
        """Publish what is queued (for at most 5 s), then stop."""
        if self._publisher is not None:
            if flush and self._outbox:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.flushed(), timeout=5.0)
            await stop_tasks([self._publisher], "event relay")
            self._publisher = None
        await self.unlead()

    # -- consuming (the leader) -------------------------------------------------------------
    async def lead(self) -> None:
        """Leadership gained: read the stream (what a previous leader left pending first)."""
        if self._consumer is None or self._consumer.done():
            self._consumer = asyncio.create_task(self._consume(), name="events-consume")

    async def unlead(self) -> None:
        """Leadership lost: stop reading; what was read and not acknowledged stays pending."""
        task, self._consumer = self._consumer, None
        if task is not None:
            await stop_tasks([task], "event reader")

    async def _consume(self) -> None:
        me = self.node.key
        delay = 0.05
        while True:
            _cancelled()
            try:
                await self._create_group()
                await self._claim_pending(me)
                while True:
                    got: Any = await self.redis.xreadgroup(
                        GROUP, me, {STREAM: ">"}, count=self.limits.read, block=1000
                    )
                    _cancelled()  # a cancel redis-py took in while blocked: stop now
                    for _stream, entries in got or ():
                        await self._handle(entries)
                    delay = 0.05
            except (RedisError, OSError) as exc:  # Redis away: read again when it is back
                _cancelled()  # redis-py may turn a cancel into a connection error
                log.warning("event stream unreadable", error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _create_group(self) -> None:
        try:
            await self.redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _claim_pending(self, me: str) -> None:
        """Take over every entry read by any consumer and not acknowledged (a dead or deposed
        leader's, or this node's own before it lost leadership), then drop the consumers
        that hold nothing, so the group does not grow with every node incarnation."""
        start: bytes | str = "0-0"
        while True:
            reply = await self.redis.xautoclaim(
                STREAM, GROUP, me, min_idle_time=0, start_id=start, count=self.limits.read
            )
            start, entries = reply[0], reply[1]
            entries = [(i, f) for i, f in entries if f is not None]  # deleted meanwhile
            if entries:
                log.info("claimed pending events", count=len(entries))
                await self._handle(entries)
            if start in (b"0-0", "0-0"):
                break
        for consumer in await self.redis.xinfo_consumers(STREAM, GROUP):
            name = consumer["name"]
            name = name.decode() if isinstance(name, bytes) else name
            if name != me and not consumer["pending"]:
                await self.redis.xgroup_delconsumer(STREAM, GROUP, name)

    async def _handle(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        for entry_id, fields in entries:
            if entry_id in self._seen:
                continue
            try:
                if not self._genuine(fields):
                    raise ValueError("an entry without the cluster key's tag")
                calls = decode(fields)
            except ValueError:
                metrics.CLUSTER_EVENTS.labels("failed").inc()
                log.exception("relayed events unreadable", entry=entry_id)
                calls = []
            for kind, args in calls:
                try:
                    await self._call(kind, args)
                    metrics.CLUSTER_EVENTS.labels("handled").inc()
                except Exception:  # one bad call or listener never stops the others
                    metrics.CLUSTER_EVENTS.labels("failed").inc()
                    log.exception("relayed event failed", entry=entry_id, kind=kind)
                self.handled += 1
            self._seen.append(entry_id)
        ids = [entry_id for entry_id, _ in entries]
        if ids:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xack(STREAM, GROUP, *ids)
                pipe.xdel(STREAM, *ids)
                await pipe.execute()

    async def _call(self, kind: str, args: list[Any]) -> None:
        h = self.handlers
        match kind:
            case "ready":
                for ready in h.ready:
                    ready(args[0])
            case "boot":
                for boot in h.boot:
                    boot(args[0], args[1], args[2], args[3])
            case "charger":
                for charger in h.charger:
                    charger(args[0], args[1], int(args[2]), args[3], args[4])
            case "security":
                for security in h.security:
                    security(args[0], args[1], args[2], _when(args[3]))
            case "key":
                for promoted in h.key:
                    promoted(args[0], int(args[1]))
            case "chan":
                for channel in h.channel:
                    channel(args[0], int(args[1]))
            case "audit":
                if h.audit is not None:
                    await h.audit(*audit_event(args))
            case _ if kind.startswith("job."):
                self._job(kind, args)
            case _:
                raise ValueError(f"unknown event kind {kind!r}")

    def _job(self, kind: str, args: list[Any]) -> None:
        jobs, charger_id = self.handlers.jobs, args[0]
        if jobs is None or charger_id not in jobs.active:  # as the fleet service checks
            return
        match kind:
            case "job.booted":
                jobs.booted(charger_id, args[1], args[2])
            case "job.ready":
                jobs.ready(charger_id)
            case "job.status":
                jobs.firmware_status(charger_id, args[1], args[2])
            case "job.faulted":
                jobs.faulted(charger_id, int(args[1]))
            case "job.gone":
                jobs.disconnected(charger_id)
            case _:
                raise ValueError(f"unknown event kind {kind!r}")
