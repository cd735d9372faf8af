"""Which node holds each charger's connection: claims in Redis and a local mirror of them.

One liveness key per node (``evota:node:<node key>``, ``NODE_TTL`` long, renewed every
``HEARTBEAT`` seconds) and one hash per connected charger (``evota:charger:<id>`` -> node key,
node name, epoch, accepted, protocol, site). A claim counts only while its node's liveness key
exists, so a node that dies loses all its chargers at once, without a write per charger. The
epoch grows with every claim (Redis ``TIME``, never below the last one, so it keeps growing
across a Redis restart): a late release or update of an older connection never touches a
newer claim.

A second connection replaces the first cluster-wide: the claim script tells the previous owner
(a message to its node channel) to close the older connection.

``Directory`` mirrors the claims in memory (pub/sub of every change + a full read every
``RESYNC`` seconds, bounded to ``MAX_ENTRIES``), so ``get`` answers without I/O: the runtime's
"is this charger ready / where is it / which protocol" questions for chargers on other nodes.

The pure parts (what a claim hash or a change message means, which change wins) are plain
functions; ``ChargerPresence`` is the shell.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from redis.asyncio import Redis

from evota.cluster.envelope import Seal
from evota.cluster.node import Node
from evota.cluster.redis import key, raise_if_cancelled, stop_tasks
from evota.fleet.events import Registration

if TYPE_CHECKING:  # the gateway sits below the cluster layer; only its registry is read
    from evota.gateway.server import Gateway

log = structlog.get_logger("evota.cluster.presence")

NODE_TTL_MS = 10_000  # a node not heard of for this long is dead: its claims lapse
HEARTBEAT = 3.0  # seconds between liveness renewals (and reads of who else is alive)
#: Seconds between full reads of the claims: the safety net (pub/sub drops a message only with
#: the connection, and a lost subscription re-reads at once). One read of 20,000 claims costs
#: a node ~1.3 s of CPU, so every 30 s was 4% of a core per node (docs/cluster.md).
RESYNC = 300.0
MAX_ENTRIES = 1_000_000  # the mirror's bound: a fleet far beyond 100,000 chargers
MAX_INBOX_BYTES = 8 * 1024 * 1024  # a node-channel message evota could have written
BATCH = 500  # claim operations per Redis round trip (a reconnect storm)
CHANNEL = key("presence")  # every claim change, for every node's mirror
NODES = key("nodes")  # the node keys that ever announced themselves (live or not yet swept)
EPOCH = key("presence", "epoch")


# Node channel messages that must carry the cluster key's seal (routed CALLs and answers).
SEALED = frozenset({"call", "reply"})


def node_key(node: str) -> str:
    """The node's liveness key, and (the same name) its inbox channel."""
    return key("node", node)


def charger_key(charger_id: str) -> str:
    return key("charger", charger_id)


def node_chargers_key(node: str) -> str:
    return key("node", node, "chargers")


# -- pure -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Presence:
    """Where a charger is connected, as the cluster knows it."""

    node: str  # the owning node's key (name + incarnation)
    node_name: str  # what operators see
    accepted: bool  # booted and accepted: may be sent commands
    protocol: str | None  # ocpp1.6 | ocpp2.0.1
    site_id: str | None
    epoch: int


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_claim(fields: Mapping[Any, Any]) -> Presence | None:
    """A claim hash (bytes or str keys) as a Presence; None when it is not a whole claim."""
    values = {_text(k): _text(v) for k, v in fields.items() if v is not None}
    try:
        return Presence(
            node=values["node"],
            node_name=values.get("name", values["node"]),
            accepted=values.get("accepted") == "1",
            protocol=values.get("protocol") or None,
            site_id=values.get("site") or None,
            epoch=int(values["epoch"]),
        )
    except (KeyError, ValueError):
        return None


def decode_change(data: bytes) -> tuple[str, Presence | None, int] | None:
    """A message of the presence channel: (charger id, its claim or None when released,
    epoch); None for anything else (logged by the caller, never raised)."""
    try:
        msg = orjson.loads(data)
        charger_id = msg["id"]
        epoch = int(msg["epoch"])
        if not isinstance(charger_id, str) or not charger_id:
            return None
        if msg.get("op") == "del":
            return charger_id, None, epoch
        if msg.get("op") == "set":
            presence = decode_claim(msg)
            return (charger_id, presence, epoch) if presence is not None else None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return None


def wins(current: Presence | None, epoch: int) -> bool:
    """Does a change with ``epoch`` replace what the mirror holds? Never an older one."""
    return current is None or epoch >= current.epoch


# -- the mirror -------------------------------------------------------------------------------


class Directory:
    """The cluster's claims in memory: ``get`` is synchronous and does no I/O."""

    def __init__(self, own_node: str, max_entries: int = MAX_ENTRIES) -> None:
        self.own_node = own_node
        self.max_entries = max_entries
        self._entries: dict[str, Presence] = {}
        # Releases seen since the last full read (charger -> epoch): an older claim met
        # later (a full read taken before the release) must not bring the charger back.
        self._gone: dict[str, int] = {}
        self._during: dict[str, tuple[Presence | None, int]] | None = None
        self.live_nodes: frozenset[str] = frozenset({own_node})
        self.available = False  # Redis answered the last heartbeat
        self._full_warned = False

    def get(self, charger_id: str) -> Presence | None:
        """The charger's claim, if its node is alive (None: not connected anywhere)."""
        presence = self._entries.get(charger_id)
        if presence is None or presence.node not in self.live_nodes:
            return None
        return presence

    def __len__(self) -> int:
        return len(self._entries)

    def connected_ids(self) -> list[str]:
        live = self.live_nodes
        return [cid for cid, p in self._entries.items() if p.node in live]

    def apply(self, charger_id: str, presence: Presence | None, epoch: int) -> None:
        during = self._during
        if during is not None and len(during) < self.max_entries:
            seen = during.get(charger_id)
            if seen is None or epoch >= seen[1]:  # the newest change is what counts
                during[charger_id] = (presence, epoch)
        current = self._entries.get(charger_id)
        if not wins(current, epoch) or epoch < self._gone.get(charger_id, 0):
            return
        if presence is None:
            self._entries.pop(charger_id, None)
            if len(self._gone) >= self.max_entries:
                self._gone.clear()  # bounded; the next full read is the truth again
            self._gone[charger_id] = epoch
        elif current is not None or self._room():
            self._entries[charger_id] = presence

    def begin_read(self) -> None:
        """A full read starts: changes from now on are replayed over what it finds."""
        self._during = {}

    def replace(self, entries: dict[str, Presence]) -> None:
        """A full read: what it found, with every change that arrived meanwhile on top."""
        during = self._during or {}
        self._during = None
        self._entries = entries
        self._gone = {}
        for charger_id, (presence, epoch) in during.items():
            self.apply(charger_id, presence, epoch)

    def _room(self) -> bool:
        if len(self._entries) < self.max_entries:
            return True
        if not self._full_warned:
            log.warning("presence mirror full; further chargers not mirrored", max=self.max_entries)
            self._full_warned = True
        return False


# -- Redis scripts ----------------------------------------------------------------------------

# KEYS: charger hash, epoch counter, own charger set.
# ARGV: charger id, node key, node name, accepted, protocol, site, mode, key prefix.
# mode "claim" takes the charger whoever held it and tells the previous live owner to close
# its connection; "reclaim" (after Redis lost its data) takes it only when nobody alive holds it.
_CLAIM = """
local prefix = ARGV[8]
local old = redis.call('HGET', KEYS[1], 'node')
if ARGV[7] == 'reclaim' and old and old ~= ARGV[2]
   and redis.call('EXISTS', prefix .. 'node:' .. old) == 1 then
  return {0, old}
end
local t = redis.call('TIME')
local e = math.max(tonumber(redis.call('GET', KEYS[2]) or '0') + 1,
                   tonumber(t[1]) * 1000000 + tonumber(t[2]))
local es = string.format('%.0f', e)
redis.call('SET', KEYS[2], es)
redis.call('HSET', KEYS[1], 'node', ARGV[2], 'name', ARGV[3], 'epoch', es,
           'accepted', ARGV[4], 'protocol', ARGV[5], 'site', ARGV[6])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('PUBLISH', prefix .. 'presence', cjson.encode({op='set', id=ARGV[1], node=ARGV[2],
  name=ARGV[3], epoch=es, accepted=ARGV[4], protocol=ARGV[5], site=ARGV[6]}))
if old and old ~= ARGV[2] then
  redis.call('SREM', prefix .. 'node:' .. old .. ':chargers', ARGV[1])
  redis.call('PUBLISH', prefix .. 'node:' .. old,
             cjson.encode({t='close', id=ARGV[1], epoch=es}))
end
return {es, old or ''}
"""

# KEYS: charger hash. ARGV: charger id, epoch, accepted, site, key prefix.
_UPDATE = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'accepted', ARGV[3], 'site', ARGV[4])
local h = redis.call('HGETALL', KEYS[1])
local m = {op='set', id=ARGV[1]}
for i = 1, #h, 2 do m[h[i]] = h[i + 1] end
redis.call('PUBLISH', ARGV[5] .. 'presence', cjson.encode(m))
return 1
"""

# KEYS: charger hash, owner's charger set. ARGV: charger id, epoch (or ''), node, key prefix.
# With an epoch: release that claim only (2: another node holds a newer one); without: drop
# whatever claim ``node`` still holds (a dead node's, swept by a live one).
_RELEASE = """
local e = redis.call('HGET', KEYS[1], 'epoch')
if ARGV[2] ~= '' then
  if e ~= ARGV[2] then
    if e and redis.call('HGET', KEYS[1], 'node') ~= ARGV[3] then return 2 end
    return 0
  end
elseif redis.call('HGET', KEYS[1], 'node') ~= ARGV[3] then
  redis.call('SREM', KEYS[2], ARGV[1])
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[4] .. 'presence', cjson.encode({op='del', id=ARGV[1], epoch=e}))
return 1
"""


@dataclass(slots=True)
class _Op:
    kind: str  # claim | reclaim | update | release
    charger_id: str
    epoch: int = 0


InboxHandler = Callable[[dict[str, Any]], Awaitable[None] | None]


class ChargerPresence:
    """This node's claims, its liveness, its inbox and the mirror of everybody's claims.

    Connection events arrive synchronously from the fleet service (``charger_event``); the
    Redis writes they cause go through one queue and one task, in order, batched.
    """

    def __init__(
        self,
        redis: Redis,
        node: Node,
        gateway: Gateway,
        *,
        on_lapsed: Callable[[list[str]], Awaitable[None]] | None = None,
        on_superseded: Callable[[str], None] | None = None,
        heartbeat: float = HEARTBEAT,
        node_ttl_ms: int = NODE_TTL_MS,
        resync: float = RESYNC,
    ) -> None:
        self.redis = redis
        self.node = node
        self.gateway = gateway
        self.on_lapsed = on_lapsed  # chargers of a dead node no one claimed (the database)
        # A connection closed here while another node holds the charger: what this node
        # wrote on the close (disconnected) is not the truth; the callee says it is connected.
        self.on_superseded = on_superseded
        self.heartbeat = heartbeat
        self.node_ttl_ms = node_ttl_ms
        self.resync_interval = resync
        self.directory = Directory(node.key)
        # The cluster key's seal (evota.cluster.envelope): routed CALLs and their answers are
        # refused without it. The runtime sets it; None refuses every sealed message.
        self.seal: Seal | None = None
        self.inbox: dict[str, InboxHandler] = {
            "close": self._close_replaced,
            "changed": self._apply_changed,
        }
        self._mine: dict[str, int] = {}  # charger id -> epoch of this node's claim
        self._queue: asyncio.Queue[_Op] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._handling: set[asyncio.Task[Any]] = set()
        self._dirty = True  # claims to assert again at the next heartbeat (Redis was away)
        self._claim = redis.register_script(_CLAIM)
        self._update = redis.register_script(_UPDATE)
        self._release = redis.register_script(_RELEASE)
        self._synced = asyncio.Event()
        # Cross-node commands need both: Redis answers the heartbeat, and this node's inbox is
        # subscribed (else the answers to its own CALLs would be lost).
        self._beat_ok = False
        self._subscribed = asyncio.Event()

    # -- life cycle

    async def start(self) -> None:
        """Announce this node, then keep its claims, liveness and mirror current."""
        try:
            await self._beat()
        except Exception as exc:  # Redis away at start: the node serves its own chargers
            log.warning("redis unavailable at start; presence retries", error=str(exc))
        self._tasks = [
            asyncio.create_task(self._writer(), name="presence-writer"),
            asyncio.create_task(self._subscriber(), name="presence-subscriber"),
            asyncio.create_task(self._heartbeats(), name="presence-heartbeat"),
        ]
        if self._beat_ok:  # Redis is there: serve once the inbox is subscribed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._subscribed.wait(), 5.0)

    async def stop(self) -> None:
        """A clean stop: this node's claims and liveness go at once (no wait for the TTL)."""
        await stop_tasks(self._tasks, "presence")
        self._tasks = []
        with contextlib.suppress(Exception):
            await self._flush(self._drain())
            await self._sweep(self.node.key)
            await self.redis.delete(node_key(self.node.key))
            await self.redis.srem(NODES, self.node.key)

    async def wait_synced(self, timeout: float = 10.0) -> None:
        """Until the mirror has been read whole once (tests, start-up)."""
        await asyncio.wait_for(self._synced.wait(), timeout)

    # -- connection events (synchronous, from the fleet service; must not block)

    def charger_event(
        self, charger_id: str, kind: str, connector: int, status: str | None, error: str | None
    ) -> None:
        if kind == "connected":
            self._queue.put_nowait(_Op("claim", charger_id))
        elif kind == "boot":
            self._queue.put_nowait(_Op("update", charger_id))
        elif kind == "disconnected" and charger_id not in self.gateway.connections:
            self._queue.put_nowait(_Op("release", charger_id))

    def changed(self, charger_id: str, changes: Mapping[str, Any]) -> None:
        """An operator changed the charger's registration or site (already in the database):
        a connection here gets its claim updated; another node holding it is told, so that
        it applies them to its connection (a disabled charger stops at once)."""
        if charger_id in self.gateway.connections:
            self._queue.put_nowait(_Op("update", charger_id))
            return
        fields = {k: changes[k] for k in ("registration", "site_id") if k in changes}
        where = self.directory.get(charger_id)
        if not fields or where is None or where.node == self.node.key:
            return
        message = orjson.dumps({"t": "changed", "id": charger_id, **fields})
        task = asyncio.get_running_loop().create_task(self._tell(where.node, message))
        self._handling.add(task)
        task.add_done_callback(self._handling.discard)

    async def _tell(self, node: str, message: bytes) -> None:
        try:
            await self.redis.publish(node_key(node), message)
        except Exception as exc:  # the owner reads the database at the charger's next boot
            log.warning("could not tell the charger's node of a change", error=str(exc))

    def _apply_changed(self, msg: dict[str, Any]) -> None:
        """Another node's operator changed a charger connected here."""
        conn = self.gateway.connections.get(str(msg.get("id")))
        state = conn.state if conn is not None else None
        if state is None:
            return
        if "registration" in msg:
            try:
                state.registration = Registration(msg["registration"])
            except ValueError:
                return
        site = msg.get("site_id", state.site_id)
        if site is None or (isinstance(site, str) and len(site) <= 255):
            state.site_id = site
        self._queue.put_nowait(_Op("update", state.id))

    # -- the writer

    def _drain(self) -> list[_Op]:
        ops: list[_Op] = []
        while not self._queue.empty() and len(ops) < BATCH:
            ops.append(self._queue.get_nowait())
        return ops

    async def _writer(self) -> None:
        while True:
            raise_if_cancelled()
            first = await self._queue.get()
            ops = [first, *self._drain()]
            try:
                await self._flush(ops)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelled()
                # Lost writes are made good at the next heartbeat after Redis answers again.
                self._dirty = True
                log.warning("presence writes failed; reasserting later", error=str(exc))

    def _fields(self, charger_id: str) -> tuple[str, str, str] | None:
        conn = self.gateway.connections.get(charger_id)
        state = conn.state if conn is not None else None
        if state is None:
            return None
        return ("1" if state.accepted else "0", state.protocol or "", state.site_id or "")

    async def _flush(self, ops: list[_Op]) -> None:
        if not ops:
            return
        prefix = key("")
        pipe = self.redis.pipeline(transaction=False)
        sent: list[_Op] = []
        for op in ops:
            cid = op.charger_id
            if op.kind in ("claim", "reclaim"):
                fields = self._fields(cid)
                if fields is None:  # gone again before its claim was written
                    continue
                keys = [charger_key(cid), EPOCH, node_chargers_key(self.node.key)]
                args = [cid, self.node.key, self.node.name, *fields, op.kind, prefix]
                await self._claim(keys, args, client=pipe)
            elif op.kind == "update":
                fields = self._fields(cid)
                epoch = self._mine.get(cid)
                if fields is None or epoch is None:
                    continue
                args = [cid, str(epoch), fields[0], fields[2], prefix]
                await self._update([charger_key(cid)], args, client=pipe)
            else:  # release
                epoch = self._mine.pop(cid, None)
                if epoch is None or cid in self.gateway.connections:
                    continue
                keys = [charger_key(cid), node_chargers_key(self.node.key)]
                await self._release(keys, [cid, str(epoch), self.node.key, prefix], client=pipe)
            sent.append(op)
        if not sent:
            return
        results = await pipe.execute(raise_on_error=False)
        for op, result in zip(sent, results, strict=True):
            if isinstance(result, Exception):
                raise result
            if op.kind in ("claim", "reclaim"):
                self._claimed(op, result)
            elif op.kind == "release" and result == 2 and self.on_superseded is not None:
                self.on_superseded(op.charger_id)

    def _claimed(self, op: _Op, result: Any) -> None:
        epoch, previous = int(result[0]), _text(result[1])
        if epoch == 0:  # reclaim: a live node holds it; this connection is the older one
            log.info("charger claimed by another node; closing", charger_id=op.charger_id)
            self._close_local(op.charger_id)
            return
        if op.charger_id in self.gateway.connections:
            self._mine[op.charger_id] = epoch
        else:  # closed meanwhile: its release found no epoch, so release now
            self._mine[op.charger_id] = epoch
            self._queue.put_nowait(_Op("release", op.charger_id))
        if previous and previous != self.node.key:
            log.info("charger moved from another node", charger_id=op.charger_id, previous=previous)

    # -- liveness, the mirror, the inbox

    async def _heartbeats(self) -> None:
        while True:
            raise_if_cancelled()  # a cancel a library swallowed mid-beat ends the loop here
            await asyncio.sleep(self.heartbeat)
            try:
                await self._beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelled()
                self._available(beat_ok=False, error=str(exc))
                self._dirty = True

    def _available(
        self, *, beat_ok: bool | None = None, subscribed: bool | None = None, error: str = ""
    ) -> None:
        if beat_ok is not None:
            self._beat_ok = beat_ok
        if subscribed is True:
            self._subscribed.set()
        elif subscribed is False:
            self._subscribed.clear()
        now = self._beat_ok and self._subscribed.is_set()
        if now != self.directory.available:
            if now:
                log.info("redis available; presence current", nodes=len(self.directory.live_nodes))
            else:
                log.warning("redis unavailable; cross-node commands refused", error=error)
        self.directory.available = now

    async def _beat(self) -> None:
        me = self.node.key
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(node_key(me), self.node.name, px=self.node_ttl_ms, get=True)
        pipe.sadd(NODES, me)
        pipe.smembers(NODES)
        previous, _, members = await pipe.execute()
        others = sorted(_text(m) for m in members if _text(m) != me)
        alive = await self._alive(others)
        self.directory.live_nodes = frozenset({me, *alive})
        self._available(beat_ok=True)
        if previous is None or self._dirty:  # Redis lost our claims (or never had them)
            self._dirty = False
            for cid in list(self.gateway.connections):
                self._queue.put_nowait(_Op("reclaim", cid))
            await self._resync()
        for dead in sorted(set(others) - alive):
            await self._sweep(dead)

    async def _alive(self, nodes: list[str]) -> set[str]:
        if not nodes:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for node in nodes:
            pipe.exists(node_key(node))
        found = await pipe.execute()
        return {node for node, there in zip(nodes, found, strict=True) if there}

    async def _sweep(self, dead: str) -> None:
        """Drop a dead node's leftover claims (one live node does it) and tell the caller
        which chargers no one holds now."""
        if dead != self.node.key and not await self.redis.set(
            key("sweep", dead), self.node.key, nx=True, px=60_000
        ):
            return
        members = await self.redis.smembers(node_chargers_key(dead))
        lapsed: list[str] = []
        prefix = key("")
        ids = sorted(_text(m) for m in members)
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            pipe = self.redis.pipeline(transaction=False)
            for cid in chunk:
                keys = [charger_key(cid), node_chargers_key(dead)]
                await self._release(keys, [cid, "", dead, prefix], client=pipe)
            done = await pipe.execute()
            lapsed.extend(cid for cid, ok in zip(chunk, done, strict=True) if ok == 1)
        await self.redis.delete(node_chargers_key(dead))
        if dead != self.node.key:
            await self.redis.srem(NODES, dead)
            log.info("node gone; its claims lapsed", node=dead, chargers=len(lapsed))
        if lapsed and self.on_lapsed is not None and dead != self.node.key:
            try:
                await self.on_lapsed(lapsed)
            except Exception:
                log.exception("could not record the lapsed chargers", node=dead)

    async def _resync(self) -> None:
        """Read every claim (a SCAN in batches): the mirror from scratch."""
        self.directory.begin_read()
        entries: dict[str, Presence] = {}
        prefix = charger_key("")
        cursor = 0
        while True:
            cursor, names = await self.redis.scan(cursor, match=prefix + "*", count=1000)
            pipe = self.redis.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(name)
            for name, fields in zip(names, await pipe.execute(), strict=True):
                presence = decode_claim(fields)
                if presence is not None and len(entries) < self.directory.max_entries:
                    entries[_text(name)[len(prefix) :]] = presence
            if cursor == 0:
                break
        self.directory.replace(entries)
        self._synced.set()

    async def _subscriber(self) -> None:
        """The presence channel and this node's inbox; reconnects and re-reads on loss."""
        delay = 0.1
        while True:
            raise_if_cancelled()
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL, node_key(self.node.key))
                await self._resync()
                self._available(subscribed=True)
                delay = 0.1
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    raise_if_cancelled()
                    if message is None:
                        if self._resync_due():
                            await self._resync()
                        continue
                    self._received(_text(message["channel"]), message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelled()
                log.debug("presence subscription lost", error=str(exc))
                self._available(subscribed=False, error=str(exc))
                self._dirty = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    _last_resync = 0.0

    def _resync_due(self) -> bool:
        now = asyncio.get_running_loop().time()
        if now - self._last_resync < self.resync_interval:
            return False
        self._last_resync = now
        return True

    def _received(self, channel: str, data: Any) -> None:
        if not isinstance(data, bytes) or len(data) > MAX_INBOX_BYTES:
            return
        if channel == CHANNEL:
            change = decode_change(data)
            if change is not None:
                self.directory.apply(*change)
            return
        try:
            msg = orjson.loads(data)
            kind = str(msg.get("t")) if isinstance(msg, dict) else ""
        except orjson.JSONDecodeError:
            kind = ""
        handler = self.inbox.get(kind)
        if handler is None:
            log.warning("unknown message on the node channel", size=len(data))
            return
        if kind in SEALED:  # what makes this node act on a charger must be genuine
            opened = self.seal.open(data) if self.seal is not None else None
            if opened is None:
                log.warning("node channel: an unsealed, stale or replayed message refused", t=kind)
                return
            msg = opened
        result = handler(msg)
        if result is not None:
            task = asyncio.ensure_future(result)
            self._handling.add(task)
            task.add_done_callback(self._handling.discard)

    def _close_replaced(self, msg: dict[str, Any]) -> None:
        """Another node took the charger: close the older connection held here."""
        charger_id, epoch = msg.get("id"), msg.get("epoch")
        if not isinstance(charger_id, str):
            return
        mine = self._mine.get(charger_id)
        try:
            newer = int(epoch) if epoch is not None else 0
        except (TypeError, ValueError):
            return
        if mine is not None and mine > newer:
            return  # the charger came back here after that claim
        log.info("charger reconnected to another node; closing here", charger_id=charger_id)
        self._close_local(charger_id)

    def _close_local(self, charger_id: str) -> None:
        from websockets.frames import CloseCode

        conn = self.gateway.connections.get(charger_id)
        if conn is not None:
            conn.close(CloseCode.NORMAL_CLOSURE, "replaced by a new connection")


def connected_anywhere(directory: Directory, local: Iterable[str]) -> list[str]:
    """Every charger connected in the cluster: this node's own and the mirror's."""
    ids = set(local)
    ids.update(directory.connected_ids())
    return sorted(ids)
