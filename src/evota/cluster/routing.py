"""Commands to chargers on other nodes: ``ClusterSend`` has ``Gateway.send``'s signature.

A charger connected here is sent to as before. Otherwise the mirror (``presence.Directory``)
names the owner; the command is encoded here in the charger's OCPP version, published to the
owner's node channel as one CALL, sent by the owner's gateway (its one-outstanding-CALL rule,
its timeout, its late-answer handling, its schema check) and the owner publishes the answer
or the error back to this node's channel. The same exceptions come out as on the local path,
so ``control.dispatch.send_command`` audits alike; two more, both ``ChargerOffline`` (a
runner waits for the charger to be back, as for an offline one):

* ``NodeLost``: the owner died (its liveness lapsed) with the CALL in flight, or was not
  listening at all. Never a hang: the wait ends when the owner's liveness does.
* ``ClusterUnavailable``: Redis does not answer, so chargers on other nodes cannot be
  reached (chargers on this node still can).

Messages carry only what evota wrote and are bounded (``MAX_INBOX_BYTES``); a node serves at
most ``max_serving`` remote CALLs at once and has at most ``max_inflight`` out.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import TYPE_CHECKING, Any

import structlog

from evota.cluster.presence import MAX_INBOX_BYTES, ChargerPresence, node_key
from evota.control import commands
from evota.control.commands import ChargerOffline, Command, CommandResult
from evota.ocpp.dialect import DIALECTS

if TYPE_CHECKING:
    from evota.gateway.server import Gateway

log = structlog.get_logger("evota.cluster.routing")

MAX_INFLIGHT = 10_000  # remote CALLs this node waits for at once
MAX_SERVING = 2_000  # remote CALLs this node sends for others at once
MAX_TIMEOUT = 600.0  # a remote CALL's timeout is clamped to this
_ACTION = re.compile(r"^[A-Z][A-Za-z0-9]{0,63}$")  # an OCPP action name, nothing else
_ERRORS: dict[str, type[commands.CommandError]] = {
    "offline": ChargerOffline,
    "timeout": commands.CommandTimeout,
    "unsupported": commands.CommandNotSupported,
}


class NodeLost(ChargerOffline):
    """The node holding the charger's connection died (or vanished) with the CALL open."""

    reason = "node_lost"


class ClusterUnavailable(ChargerOffline):
    """Redis is unavailable: chargers on other nodes cannot be reached for now."""

    reason = "cluster_unavailable"


def _short(text: Any, limit: int = 500) -> str:
    return str(text)[:limit]


def error_of(charger_id: str, reply: dict[str, Any]) -> commands.CommandError:
    """The exception the local path would have raised, from an owner's error reply (pure)."""
    kind = reply.get("err")
    message = _short(reply.get("msg", "command failed on the charger's node"))
    if kind == "callerror":
        return commands.CommandRejected(
            charger_id, _short(reply.get("code", ""), 64), _short(reply.get("description", ""))
        )
    return _ERRORS.get(str(kind), commands.CommandError)(charger_id, message)


def reply_of(exc: commands.CommandError) -> dict[str, Any]:
    """An error as the owner sends it back (pure; the inverse of ``error_of``)."""
    if isinstance(exc, commands.CommandRejected):
        return {"err": "callerror", "code": exc.code, "description": exc.description}
    return {"err": exc.reason, "msg": exc.message}


def call_of(msg: dict[str, Any]) -> tuple[str, str, str, str, dict[str, Any], float] | None:
    """(request id, origin node, charger id, action, payload, timeout) of a CALL message,
    None when any part is not what evota writes (pure)."""
    rid, origin, cid = msg.get("id"), msg.get("from"), msg.get("c")
    action, payload, timeout = msg.get("a"), msg.get("p"), msg.get("to")
    if not (isinstance(rid, str) and 0 < len(rid) <= 64):
        return None
    if not (isinstance(origin, str) and 0 < len(origin) <= 300):
        return None
    if not (isinstance(cid, str) and 0 < len(cid) <= 255):
        return None
    if not (isinstance(action, str) and _ACTION.match(action)) or not isinstance(payload, dict):
        return None
    if not isinstance(timeout, int | float) or timeout <= 0:
        return None
    return rid, origin, cid, action, payload, min(float(timeout), MAX_TIMEOUT)


class ClusterSend:
    """``Gateway.send`` for the whole cluster (see the module doc)."""

    def __init__(
        self,
        presence: ChargerPresence,
        gateway: Gateway,
        *,
        max_inflight: int = MAX_INFLIGHT,
        max_serving: int = MAX_SERVING,
        poll: float = 0.2,
    ) -> None:
        self.presence = presence
        self.gateway = gateway
        self.max_inflight = max_inflight
        self.max_serving = max_serving
        self.poll = poll  # how often a waiting CALL checks that its owner is alive
        # the owner's own timeout, plus the time it takes to learn that it died
        self.grace = presence.node_ttl_ms / 1000 + 2 * presence.heartbeat + 1.0
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._serving: set[asyncio.Task[None]] = set()
        presence.inbox["call"] = self._serve
        presence.inbox["reply"] = self._answered

    async def __call__(
        self, charger_id: str, command: Command, timeout: float | None = None
    ) -> CommandResult:
        gateway = self.gateway
        if charger_id in gateway.connections:
            return await gateway.send(charger_id, command, timeout)
        directory = self.presence.directory
        if not directory.available:
            raise ClusterUnavailable(
                charger_id,
                "the cluster's Redis is unavailable: chargers on other nodes cannot be "
                "reached until it is back",
            )
        where = directory.get(charger_id)
        if where is None or where.node == self.presence.node.key:
            raise ChargerOffline(charger_id, "charger is not connected")
        dialect = DIALECTS.get(where.protocol or "")
        if dialect is None:
            raise ChargerOffline(charger_id, "charger is not connected")
        if dialect.subprotocol == "ocpp2.0.1":
            command = await gateway.with_transaction_ids(charger_id, command)
        try:
            action, payload = dialect.encode_command(command)
        except commands.CommandError as exc:
            exc.charger_id = exc.charger_id or charger_id
            raise
        wait = timeout or gateway.call_timeout
        reply = await self._remote(where.node, where.node_name, charger_id, action, payload, wait)
        answer = reply.get("ok")
        if not isinstance(answer, dict):
            raise error_of(charger_id, reply)
        return dialect.decode_result(command, answer)

    def _seal(self, msg: dict[str, Any]) -> bytes:
        if self.presence.seal is None:
            raise ClusterUnavailable(str(msg.get("c") or ""), "no cluster key to seal messages")
        return self.presence.seal.seal(msg)

    @property
    def inflight(self) -> int:
        return len(self._pending)

    async def _remote(
        self,
        owner: str,
        owner_name: str,
        charger_id: str,
        action: str,
        payload: dict[str, Any],
        timeout: float,
    ) -> dict[str, Any]:
        if len(self._pending) >= self.max_inflight:
            raise commands.CommandError(charger_id, "too many commands in flight to other nodes")
        rid = secrets.token_hex(12)
        message = self._seal(
            {
                "t": "call",
                "id": rid,
                "from": self.presence.node.key,
                "c": charger_id,
                "a": action,
                "p": payload,
                "to": timeout,
            }
        )
        if len(message) > MAX_INBOX_BYTES:
            raise commands.CommandError(charger_id, f"{action} is too large to route")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[rid] = future
        try:
            await self._publish(owner, owner_name, charger_id, message, min(timeout, 5.0))
            deadline = loop.time() + timeout + self.grace
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise commands.CommandTimeout(
                        charger_id, f"no answer to {action} from node {owner_name}"
                    )
                try:
                    return await asyncio.wait_for(asyncio.shield(future), min(self.poll, remaining))
                except TimeoutError:
                    if owner not in self.presence.directory.live_nodes:
                        raise NodeLost(
                            charger_id,
                            f"node {owner_name} holding the charger's connection was lost "
                            f"before the charger answered {action}",
                        ) from None
        finally:
            self._pending.pop(rid, None)
            if not future.done():
                future.cancel()

    async def _publish(
        self, owner: str, owner_name: str, charger_id: str, message: bytes, patience: float
    ) -> None:
        """Hand the CALL to the owner's inbox. Nobody listening: the owner is resubscribing
        (Redis just came back) while it is alive, else it is gone."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        while True:
            try:
                if await self.presence.redis.publish(node_key(owner), message):
                    return
            except Exception as exc:
                raise ClusterUnavailable(
                    charger_id, f"the cluster's Redis is unavailable: {_short(exc, 200)}"
                ) from None
            if owner not in self.presence.directory.live_nodes or loop.time() > deadline:
                raise NodeLost(
                    charger_id, f"node {owner_name} holding the charger's connection is gone"
                )
            await asyncio.sleep(self.poll)

    def _answered(self, msg: dict[str, Any]) -> None:
        future = self._pending.get(str(msg.get("id")))
        if future is None or future.done():
            log.debug("late answer from another node dropped")
            return
        future.set_result(msg)

    def _serve(self, msg: dict[str, Any]) -> None:
        call = call_of(msg)
        if call is None:
            log.warning("malformed remote call dropped")
            return
        task = asyncio.get_running_loop().create_task(self._run(*call))
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    async def _run(
        self,
        rid: str,
        origin: str,
        charger_id: str,
        action: str,
        payload: dict[str, Any],
        timeout: float,
    ) -> None:
        reply: dict[str, Any]
        try:
            if len(self._serving) > self.max_serving:
                raise commands.CommandError(charger_id, "the charger's node is busy; try again")
            conn = self.gateway.connections.get(charger_id)
            if conn is None or conn.dialect is None:
                raise ChargerOffline(charger_id, "charger is not connected")
            reply = {"ok": await conn.call(action, payload, timeout)}
        except commands.CommandError as exc:
            reply = reply_of(exc)
        except Exception:
            log.exception("remote call failed", charger_id=charger_id, action=action)
            reply = {"err": "error", "msg": f"{action} failed on the charger's node"}
        reply.update(t="reply", id=rid)
        try:
            await self.presence.redis.publish(node_key(origin), self._seal(reply))
        except Exception as exc:
            log.warning("could not return a remote call's answer", error=str(exc))
