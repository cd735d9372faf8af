"""The CSMS root rotation's switch on every node (cluster mode; the rotation itself is
evota.control.rotation, its rules evota.pki.rotation).

The switch runs on the runner leader, but every node has a TLS listener and chargers on it.
So each node converges on its own: once the newest switched rotation is in the database, its
listener must serve a chain ending in the new root — already the case when the configured
files are shared or were replaced by hand (reloaded if changed), else the node moves its own
``<cert>.next``/``<key>.next`` in place as the leader did — and then it closes its targeted
chargers' TLS connections made under an older certificate, so they reconnect and check the
new chain. The leader publishes a notice on the live bus (``rotation:switched``) so every node
does it at once; each node also checks every ``RECHECK`` seconds, so a node that missed the
notice (Redis away, started later, ``.next`` put in place late) converges anyway. The notice
carries no authority: a node acts only on what the database says, so a forged notice costs a
database read and nothing more.

Each node records in Redis what the rotation's status needs from it: the chargers it closed,
with the presence epoch clock's time of the close (``evota:rotation:<id>:closed``: a charger
has reconnected once its claim is newer), and whether it serves the new chain or why not
(``evota:rotation:<id>:nodes``). The status, on any node, reads both and the presence mirror,
so it counts every node's chargers, and the old root's removal waits for every live node.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import structlog
from cryptography import x509
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.frames import CloseCode

from evota.cluster.live import LiveBus
from evota.cluster.node import Node
from evota.cluster.presence import Directory
from evota.cluster.redis import key, raise_if_cancelled, stop_tasks
from evota.control.rotation import RootRotations, RotationConflict
from evota.gateway.server import Gateway
from evota.pki import rotation as rules
from evota.store.models import RootRotation

log = structlog.get_logger("evota.cluster.rotation")

TOPIC = "rotation:switched"  # live-bus notice: read the newest switched rotation now
RECHECK = 30.0  # seconds between a node's own checks (a notice may be lost)
KEEP = 90 * 24 * 3600  # seconds the per-rotation records live after their last write
UNKNOWN = "unknown (Redis unreachable)"  # what the status says of the nodes without Redis


def closed_key(rotation_id: str) -> str:
    return key("rotation", rotation_id, "closed")


def nodes_key(rotation_id: str) -> str:
    return key("rotation", rotation_id, "nodes")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- pure -------------------------------------------------------------------------------------


def reconnected(closed: dict[str, int], epoch_of: Callable[[str], int | None]) -> set[str]:
    """The closed chargers connected again since (their claim is newer than the close)."""
    again = set()
    for charger_id, at in closed.items():
        epoch = epoch_of(charger_id)
        if epoch is not None and epoch > at:
            again.add(charger_id)
    return again


def lagging(nodes: dict[str, dict[str, Any]], live: Sequence[str]) -> list[str]:
    """The live nodes that do not serve the new chain (no report yet, or a problem)."""
    out = []
    for node in sorted(live):
        report = nodes.get(node)
        if report is None or report.get("problem") is not None:
            out.append(str(report.get("name", node)) if report else node)
    return out


# -- the shell --------------------------------------------------------------------------------


class RotationSpread:
    """This node's part of every switch; also what ``RootRotations`` asks (``fleetwide``)."""

    def __init__(
        self,
        redis: Redis,
        live: LiveBus,
        node: Node,
        engine: AsyncEngine,
        gateway: Gateway,
        rotations: RootRotations,
        directory: Directory,
        is_connected: Callable[[str], bool],
        *,
        listening: bool,
        recheck: float = RECHECK,
    ) -> None:
        self.redis = redis
        self.live = live
        self.node = node
        self.engine = engine
        self.gateway = gateway
        self.rotations = rotations
        self.directory = directory
        self.is_connected = is_connected
        self.listening = listening  # this node has a TLS listener chargers reach
        self.recheck = recheck
        self._done: set[str] = set()  # rotations this process has converged on
        self._warned: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    # -- what the rotation asks ---------------------------------------------------------------
    def connected(self, charger_ids: Sequence[str]) -> set[str]:
        return {cid for cid in charger_ids if self.is_connected(cid)}

    async def switched(self, rotation_id: str) -> int:
        """On the leader, after the switch is stored: this node now, the others on notice."""
        closing = 0
        try:
            closing = await self.converge()
        except Exception as exc:  # the switch is stored: this node's next check does it
            raise_if_cancelled()
            log.warning("root rotation switch not applied here yet", error=str(exc)[:200])
        self.live.publish(TOPIC, {"rotation_id": rotation_id})
        return closing

    async def reconnection(self, rotation_id: str) -> tuple[set[str], set[str], list[str]]:
        """(chargers closed at the switch on any node, those connected again since, live
        nodes not serving the new chain)."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(closed_key(rotation_id))
                pipe.hgetall(nodes_key(rotation_id))
                closed_raw, nodes_raw = await pipe.execute()
        except (RedisError, OSError) as exc:  # the status still answers; finish waits
            raise_if_cancelled()
            log.warning("root rotation's node records unread", error=str(exc)[:200])
            return set(), set(), [UNKNOWN]
        closed = {_text(k): int(v) for k, v in closed_raw.items()}
        nodes: dict[str, dict[str, Any]] = {}
        for node, raw in nodes_raw.items():
            with contextlib.suppress(orjson.JSONDecodeError, TypeError):
                report = orjson.loads(raw)
                if isinstance(report, dict):
                    nodes[_text(node)] = report

        def epoch_of(charger_id: str) -> int | None:
            presence = self.directory.get(charger_id)
            return presence.epoch if presence is not None else None

        return set(closed), reconnected(closed, epoch_of), lagging(nodes, self.live_nodes())

    def live_nodes(self) -> list[str]:
        return sorted(self.directory.live_nodes)

    # -- every node ---------------------------------------------------------------------------
    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._watch(), name="rotation-switch")]

    async def stop(self) -> None:
        await stop_tasks(self._tasks, "rotation switch")
        self._tasks = []

    async def _watch(self) -> None:
        notices = self.live.subscribe(TOPIC)
        try:
            while True:
                try:
                    await self.converge()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the database or Redis away: the next check retries
                    raise_if_cancelled()
                    log.warning("root rotation switch not checked", error=str(exc)[:200])
                await notices.get(self.recheck)
        finally:
            notices.close()

    async def converge(self) -> int:
        """Serve the newest switched rotation's chain here and close this node's targeted
        TLS connections made under an older certificate; how many were closed."""
        async with self._lock:
            query = (
                select(RootRotation.id, RootRotation.new_root, RootRotation.charger_ids)
                .where(RootRotation.switched_at.is_not(None))
                .order_by(RootRotation.switched_at.desc())
                .limit(1)
            )
            async with self.engine.connect() as conn:
                row = (await conn.execute(query)).first()
            if row is None or row.id in self._done:
                return 0
            problem = self._serve(str(row.new_root)) if self.listening else None
            old = [] if problem is not None else self._under_older(set(row.charger_ids))
            (seconds, micros) = await self.redis.time()
            now = int(seconds) * 1_000_000 + int(micros)
            report = {"name": self.node.name, "problem": problem}
            async with self.redis.pipeline(transaction=False) as pipe:
                if old:
                    pipe.hset(closed_key(row.id), mapping={cid: now for cid, _ in old})
                    pipe.expire(closed_key(row.id), KEEP)
                pipe.hset(nodes_key(row.id), self.node.key, orjson.dumps(report))
                pipe.expire(nodes_key(row.id), KEEP)
                await pipe.execute()
            if problem is not None:
                if self._warned.get(row.id) != problem:
                    self._warned[row.id] = problem
                    log.warning("this node does not serve the rotated certificate", error=problem)
                return 0
            self._done.add(row.id)
        for _, connection in old:
            connection.close(CloseCode.SERVICE_RESTART, "server certificate rotated")
        log.info("server certificate switched on this node", rotation_id=row.id, closing=len(old))
        return len(old)

    def _serve(self, new_root_pem: str) -> str | None:
        """None once the listener serves a chain under the new root; else why not."""
        tls = self.gateway.tls
        if tls is None or tls.files.cert is None:
            return None
        root = x509.load_pem_x509_certificate(new_root_pem.encode())
        if tls.changed():
            self.gateway.reload_tls()
        try:
            chain = x509.load_pem_x509_certificates(tls.files.cert.read_bytes())
        except (OSError, ValueError):
            chain = []
        if chain and rules.chains_to(chain, root) and not tls.changed():
            return None
        try:  # this node's own .next pair, as on the leader
            self.rotations.replace_server_certificate(new_root_pem)
        except RotationConflict as exc:
            return exc.message
        return None

    def _under_older(self, targets: set[str]) -> list[tuple[str, Any]]:
        """Targeted chargers on TLS whose handshake used an older context than the current."""
        tls = self.gateway.tls
        current = tls.current.context if tls is not None else None
        out = []
        for charger_id, connection in self.gateway.connections.items():
            if charger_id not in targets or not connection.secure:
                continue
            transport = connection.transport
            ssl_object = transport.get_extra_info("ssl_object") if transport else None
            if ssl_object is None or ssl_object.context is not current:
                out.append((charger_id, connection))
        return out
