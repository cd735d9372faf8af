"""Scheduled resets completed on whichever node the charger boots onto (cluster mode).

A 2.0.1 charger answers a Reset ``Scheduled`` (OnIdle) and reboots once its sessions end;
that boot writes the charger event ``reset`` and the audit entry ``charger.reset_completed``
(evota.control.dispatch). On one node the pending reset waits in the fleet service's memory.
In a cluster the Reset may be sent from one node's API, the charger be held by a second and
reboot onto a third (the balancer), so the pending reset is kept in Redis instead
(``evota:reset:<charger>``, ``RESET_TTL`` long) and the node that sees the boot takes it with
one ``GETDEL``: exactly one node gets it, so there is exactly one entry per reset. A reset
whose charger never boots again writes nothing (on one node it waits until evota restarts;
here until the key expires).

The value carries the cluster key's MAC (evota.cluster.envelope) over the charger id, the
reset and its deadline: a Redis writer cannot make a boot complete a reset that was never
sent, nor move one to another charger or past its deadline. A charger cannot either: its
boots only take what evota stored for its own id, so forged boots complete nothing.

Boots are taken in batches by one task (a reconnect storm costs one pipelined round trip
per batch, not a connection per boot), and only 2.0.1 boots ask (1.6 has no Scheduled).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from functools import partial
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis

from evota.audit.log import AuditLog
from evota.clock import Clock
from evota.cluster.envelope import Seal
from evota.cluster.redis import key, raise_if_cancelled, stop_tasks
from evota.control.dispatch import reset_completed
from evota.fleet.service import FleetService, PendingReset

log = structlog.get_logger("evota.cluster.resets")

RESET_TTL = 7 * 24 * 3600  # seconds a scheduled reset waits for its charger's boot
BATCH = 500  # boots asked about per Redis round trip
MAC_BYTES = 32  # HMAC-SHA256


def pending_key(charger_id: str) -> str:
    return key("reset", charger_id)


# -- pure -------------------------------------------------------------------------------------


def encode(seal: Seal, charger_id: str, pending: dict[str, Any]) -> bytes:
    """The stored value: the MAC, then the pending reset (with its charger id) as JSON."""
    body = orjson.dumps({**pending, "charger": charger_id}, option=orjson.OPT_SORT_KEYS)
    return seal.tag(body) + body


def decode(seal: Seal, charger_id: str, raw: bytes, now: float) -> dict[str, Any] | None:
    """The pending reset if evota stored it for this charger and it is not past its
    deadline; None otherwise (forged, another charger's, expired)."""
    body = raw[MAC_BYTES:]
    if len(raw) <= MAC_BYTES or not seal.check(body, raw[:MAC_BYTES]):
        return None
    try:
        pending = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(pending, dict) or pending.get("charger") != charger_id:
        return None
    until = pending.get("until")
    if not isinstance(until, int | float) or until < now:
        return None
    if not isinstance(pending.get("type"), str) or not isinstance(pending.get("by"), str):
        return None
    return pending


# -- the shell --------------------------------------------------------------------------------


class SharedResets:
    """Scheduled resets kept in Redis; the runtime hands ``scheduled`` to the command path
    and ``booted`` to the fleet service (``FleetService.reset_claim``)."""

    def __init__(
        self, redis: Redis, seal: Seal, fleet: FleetService, audit: AuditLog, clock: Clock
    ) -> None:
        self.redis = redis
        self.seal = seal
        self.fleet = fleet
        self.audit = audit
        self.clock = clock
        self._queue: asyncio.Queue[tuple[str, str | None, datetime]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.checked = 0  # boots asked about (tests wait on it)

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._claimer(), name="reset-claims")]

    async def stop(self) -> None:
        await stop_tasks(self._tasks, "reset claims")
        self._tasks = []

    async def scheduled(self, charger_id: str, reset_type: str, requested_by: str) -> None:
        """A Reset was answered Scheduled: stored before the API answers. With Redis away it
        waits in this node's memory, as on one node (completed if the charger boots here)."""
        now = self.clock.now()
        pending = {
            "type": reset_type,
            "at": now.isoformat(),
            "by": requested_by,
            "until": now.timestamp() + RESET_TTL,
        }
        try:
            await self.redis.set(
                pending_key(charger_id), encode(self.seal, charger_id, pending), ex=RESET_TTL
            )
        except Exception as exc:
            raise_if_cancelled()
            log.warning(
                "scheduled reset kept on this node only", charger_id=charger_id, error=str(exc)
            )
            done = partial(reset_completed, self.audit, requested_by, charger_id)
            self.fleet.reset_scheduled(charger_id, reset_type, done)

    def booted(self, charger_id: str, boot_reason: str | None, now: datetime) -> None:
        """A 2.0.1 charger booted here with no reset pending in this node's memory (must
        not block: the claim is made by the claimer task)."""
        self._queue.put_nowait((charger_id, boot_reason, now))

    async def _claimer(self) -> None:
        while True:
            boots = [await self._queue.get()]
            while not self._queue.empty() and len(boots) < BATCH:
                boots.append(self._queue.get_nowait())
            try:
                await self._claim(boots)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the keys stay until their TTL; a later boot takes them
                raise_if_cancelled()
                log.warning("scheduled resets not checked", boots=len(boots), error=str(exc))

    async def _claim(self, boots: list[tuple[str, str | None, datetime]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for charger_id, _, _ in boots:
            pipe.getdel(pending_key(charger_id))
        found = await pipe.execute()
        self.checked += len(boots)
        for (charger_id, reason, when), raw in zip(boots, found, strict=True):
            if raw is None:
                continue
            pending = decode(self.seal, charger_id, raw, when.timestamp())
            if pending is None:
                log.warning("a pending reset refused (forged or expired)", charger_id=charger_id)
                continue
            done = partial(reset_completed, self.audit, pending["by"], charger_id)
            scheduled_at = datetime.fromisoformat(str(pending["at"]))
            self.fleet.reset_done(
                charger_id, PendingReset(pending["type"], scheduled_at, done), reason, when
            )
