"""Charger ownership and command routing between two in-process nodes (issue 15 items 1-2).

Two Runtimes on one PostgreSQL database and one Redis, each with its own data directory (the
shared key files copied); the charger side is a raw OCPP-J client, so each answer (result,
CALLERROR, silence, a late answer) is the test's choice.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, update
from websockets.asyncio.client import ClientConnection

from evota.cluster.envelope import Seal
from evota.cluster.presence import Directory, Presence, decode_change, node_key, wins
from evota.cluster.routing import ClusterUnavailable, NodeLost, call_of, error_of, reply_of
from evota.control import commands
from evota.runtime import Runtime
from evota.store.models import AuditEntry, Charger, ChargerEvent
from tests.cluster.harness import cluster_redis, pg_database, start_node  # noqa: F401
from tests.conftest import api_client, connect, provision
from tests.redis_fixtures import RedisServer
from tests.support import until

KEY = "routing-key-0123456789"
BOOT = [2, "boot-1", "BootNotification", {"chargePointVendor": "Acme", "chargePointModel": "X1"}]
FAST = {
    "call_timeout": 2.0,
    "cluster_node_ttl_seconds": 1.5,
    "cluster_heartbeat_seconds": 0.2,
}


async def _node(tmp_path: Path, name: str, db: str, redis: str, first: Runtime | None) -> Runtime:
    return await start_node(tmp_path / name, db, name, first, redis_url=redis, **FAST)


@pytest.fixture
async def nodes(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
    cluster_redis: RedisServer,  # noqa: F811
) -> AsyncIterator[tuple[Runtime, Runtime]]:
    a = await _node(tmp_path, "node-a", pg_database, cluster_redis.url, None)
    b = await _node(tmp_path, "node-b", pg_database, cluster_redis.url, a)
    try:
        yield a, b
    finally:
        for rt in (b, a):
            await rt.stop()


async def _booted(rt: Runtime, identity: str) -> ClientConnection:
    ws = await connect(rt, identity, KEY)
    await ws.send(json.dumps(BOOT))
    answer = json.loads(await ws.recv())
    assert answer[0] == 3 and answer[2]["status"] == "Accepted", answer
    return ws


async def _seen_from(rt: Runtime, identity: str, node: str) -> None:
    await until(lambda: rt.node_of(identity) == node and rt._ready(identity), timeout=10)


async def _call(ws: ClientConnection) -> list[Any]:
    frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert frame[0] == 2, frame
    return frame


async def _audit(rt: Runtime, action: str) -> list[Any]:
    await rt.audit.drain()
    query = select(AuditEntry.outcome, AuditEntry.detail).where(AuditEntry.action == action)
    async with rt.engine.connect() as conn:
        return list((await conn.execute(query)).all())


# -- end to end through the API ---------------------------------------------------------------


async def test_a_command_reaches_a_charger_on_the_other_node(nodes):
    a, b = nodes
    await provision(a, "CP-R1", KEY)
    ws = await _booted(b, "CP-R1")
    await _seen_from(a, "CP-R1", "node-b")
    async with api_client(a) as api:
        detail = (await api.get("/api/v1/chargers/CP-R1")).json()
        assert detail["connected"] is True and detail["node"] == "node-b"
        # the list's filter reads the stored flag, which node b's writer writes behind the
        # connection (EVOTA_WRITE_INTERVAL): wait for it, then the row names node b
        listed = await until(
            lambda: api.get("/api/v1/chargers", params={"connected": "true"}),
            lambda r: r.json()["items"] != [],
            timeout=10,
        )
        assert [c["node"] for c in listed.json()["items"]] == ["node-b"]
        sent = asyncio.create_task(
            api.post(
                "/api/v1/chargers/CP-R1/commands/reset", json={"type": "Soft", "reason": "test"}
            )
        )
        call = await _call(ws)
        assert call[2] == "Reset" and call[3] == {"type": "Soft"}
        await ws.send(json.dumps([3, call[1], {"status": "Accepted"}]))
        r = await sent
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "Accepted"
    [entry] = await _audit(a, "command.reset")
    assert entry.outcome == "Accepted" and entry.detail["answer"] == {"status": "Accepted"}
    await ws.close()
    await until(lambda: not a.is_connected("CP-R1"), timeout=10)
    async with api_client(a) as api:
        detail = (await api.get("/api/v1/chargers/CP-R1")).json()
    assert detail["connected"] is False and detail["node"] is None


async def test_callerror_timeout_and_a_late_answer_cross_nodes_as_on_one(nodes):
    a, b = nodes
    await provision(a, "CP-R2", KEY)
    ws = await _booted(b, "CP-R2")
    await _seen_from(a, "CP-R2", "node-b")
    # CALLERROR: the same exception as on the local path, with the charger's code
    sent = asyncio.create_task(a.send("CP-R2", commands.Reset("Soft")))
    call = await _call(ws)
    await ws.send(json.dumps([4, call[1], "NotSupported", "no resets here", {}]))
    with pytest.raises(commands.CommandRejected) as rejected:
        await sent
    assert rejected.value.code == "NotSupported"
    assert rejected.value.description == "no resets here"
    # silence: the owner's timeout, reported as CommandTimeout
    sent = asyncio.create_task(a.send("CP-R2", commands.Reset("Soft")))
    late = await _call(ws)
    with pytest.raises(commands.CommandTimeout):
        await sent
    # the late answer is dropped; the next CALL is answered normally
    await ws.send(json.dumps([3, late[1], {"status": "Accepted"}]))
    sent = asyncio.create_task(a.send("CP-R2", commands.Reset("Hard")))
    call = await _call(ws)
    assert call[1] != late[1] and call[3] == {"type": "Hard"}
    await ws.send(json.dumps([3, call[1], {"status": "Rejected"}]))
    assert (await sent).status == "Rejected"
    await ws.close()


async def test_one_outstanding_call_per_charger_across_nodes(nodes):
    """Two CALLs from two nodes: the owner's gateway sends the second after the first."""
    a, b = nodes
    await provision(a, "CP-R3", KEY)
    ws = await _booted(b, "CP-R3")
    await _seen_from(a, "CP-R3", "node-b")
    first = asyncio.create_task(a.send("CP-R3", commands.Reset("Soft")))
    call = await _call(ws)
    second = asyncio.create_task(b.send("CP-R3", commands.Reset("Hard")))
    following = asyncio.ensure_future(ws.recv())
    done, _ = await asyncio.wait({following}, timeout=0.5)
    assert not done  # nothing more while the first is open
    await ws.send(json.dumps([3, call[1], {"status": "Accepted"}]))
    assert (await first).status == "Accepted"
    call = json.loads(await asyncio.wait_for(following, 10))
    assert call[3] == {"type": "Hard"}
    await ws.send(json.dumps([3, call[1], {"status": "Accepted"}]))
    assert (await second).status == "Accepted"
    await ws.close()


async def test_a_second_connection_on_another_node_replaces_the_first(nodes):
    a, b = nodes
    await provision(a, "CP-R4", KEY)
    old = await _booted(b, "CP-R4")
    await _seen_from(a, "CP-R4", "node-b")
    new = await _booted(a, "CP-R4")
    await a.fleet.writer.flush()  # node-a stored it connected
    await asyncio.wait_for(old.wait_closed(), 10)  # node-b closed the older connection
    assert old.close_reason == "replaced by a new connection"
    await _seen_from(b, "CP-R4", "node-a")
    assert "CP-R4" not in b.gateway.connections
    # node-b stored the close of its connection, then that the charger is connected still
    gone = select(ChargerEvent.id).where(
        ChargerEvent.charger_id == "CP-R4", ChargerEvent.kind == "disconnected"
    )
    await until(lambda: _scalar(b, gone), lambda v: v is not None, timeout=10)
    flag = select(Charger.connected).where(Charger.id == "CP-R4")
    await until(lambda: _scalar(b, flag), lambda v: v is True, timeout=10)
    # node-b's close did not release node-a's newer claim: commands from b reach a
    sent = asyncio.create_task(b.send("CP-R4", commands.Reset("Soft")))
    call = await _call(new)
    await new.send(json.dumps([3, call[1], {"status": "Accepted"}]))
    assert (await sent).status == "Accepted"
    await new.close()


async def test_a_connected_flag_cleared_by_another_nodes_late_write_is_stored_again(nodes):
    """Under a storm a charger's old node's disconnect can land after its new node's connect
    (two nodes' write queues): the stored flag says disconnected while node-b holds it. The
    holder's periodic check stores it connected again; a charger it does not hold is left."""
    a, b = nodes
    await provision(a, "CP-R9", KEY)
    await provision(a, "CP-R10", KEY)
    ws = await _booted(b, "CP-R9")
    other = await _booted(a, "CP-R10")
    await _seen_from(b, "CP-R9", "node-b")
    await _seen_from(b, "CP-R10", "node-a")
    await b.fleet.writer.flush()
    await a.fleet.writer.flush()
    async with a.engine.begin() as conn:  # what the old node's late write leaves behind
        await conn.execute(
            update(Charger).where(Charger.id.in_(["CP-R9", "CP-R10"])).values(connected=False)
        )
    assert await b._reassert_connected() == 1  # only the charger node-b holds
    await b.fleet.writer.flush()
    flags = select(Charger.id, Charger.connected).where(Charger.id.in_(["CP-R9", "CP-R10"]))
    async with a.engine.connect() as conn:
        assert dict((await conn.execute(flags)).all()) == {"CP-R9": True, "CP-R10": False}
    assert await b._reassert_connected() == 0  # nothing left to fix
    await ws.close()
    await other.close()


async def test_disabling_a_charger_on_another_node_stops_it_there(nodes):
    """The operator's node is not the charger's: the owner applies the change at once."""
    a, b = nodes
    await provision(a, "CP-R8", KEY)
    ws = await _booted(b, "CP-R8")
    await _seen_from(a, "CP-R8", "node-b")
    async with api_client(a) as api:
        r = await api.patch(
            "/api/v1/chargers/CP-R8", json={"registration": "Rejected", "reason": "stolen"}
        )
    assert r.status_code == 200, r.text
    state = b.gateway.connections["CP-R8"].state
    assert state is not None
    await until(lambda: not state.accepted, timeout=10)  # on the node holding it
    await until(lambda: not a._ready("CP-R8"), timeout=10)  # and in the cluster's view
    await ws.close()


async def test_node_lost_mid_call(nodes):
    """The owner dies with the CALL open: node_lost once its liveness lapses, not a hang;
    the API answers 503 and the audit entry says node_lost."""
    a, b = nodes
    await provision(a, "CP-R5", KEY)
    ws = await _booted(b, "CP-R5")
    await _seen_from(a, "CP-R5", "node-b")
    async with api_client(a) as api:
        sent = asyncio.create_task(
            api.post(
                "/api/v1/chargers/CP-R5/commands/reset", json={"type": "Soft", "reason": "test"}
            )
        )
        await _call(ws)
        _die(b)  # liveness no longer renewed, inbox no longer read: a dead process
        r = await asyncio.wait_for(sent, 15)
    assert r.status_code == 503, r.text
    assert r.json()["reason"] == "node_lost"
    [entry] = await _audit(a, "command.reset")
    assert entry.outcome == "error:node_lost"
    await until(lambda: not a.is_connected("CP-R5"), timeout=10)
    flag = select(Charger.connected).where(Charger.id == "CP-R5")  # the sweep's doing
    await until(lambda: _scalar(a, flag), lambda v: v is False, timeout=10)
    await ws.close()


async def _scalar(rt: Runtime, query: Any) -> Any:
    async with rt.engine.connect() as conn:
        return (await conn.execute(query)).scalar()


def _die(rt: Runtime) -> None:
    """What SIGKILL does to a node's presence: its tasks stop, nothing is cleaned up."""
    assert rt.presence is not None
    for task in rt.presence._tasks:
        task.cancel()
    rt.presence._tasks = []
    rt.presence = None  # its stop() must not clean up either


async def test_redis_away_local_chargers_work_cross_node_is_503(
    tmp_path,
    pg_database,  # noqa: F811
    cluster_redis,  # noqa: F811
):
    a = await _node(tmp_path, "node-a", pg_database, cluster_redis.url, None)
    b = await _node(tmp_path, "node-b", pg_database, cluster_redis.url, a)
    try:
        await provision(a, "CP-R6", KEY)
        ws = await _booted(b, "CP-R6")
        await _seen_from(a, "CP-R6", "node-b")
        cluster_redis.stop()
        assert a.presence is not None
        await until(lambda: not a.presence.directory.available, timeout=10)
        async with api_client(a) as api:
            r = await api.post(
                "/api/v1/chargers/CP-R6/commands/reset", json={"type": "Soft", "reason": "t"}
            )
        assert r.status_code == 503, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["reason"] == "cluster_unavailable"
        with pytest.raises(ClusterUnavailable):
            await a.send("CP-R6", commands.Reset("Soft"))
        # the owner still serves its own charger
        sent = asyncio.create_task(b.send("CP-R6", commands.Reset("Soft")))
        call = await _call(ws)
        await ws.send(json.dumps([3, call[1], {"status": "Accepted"}]))
        assert (await sent).status == "Accepted"
        # Redis back (empty: it kept nothing): the claims are asserted again, routing works
        cluster_redis.start()
        await _seen_from(a, "CP-R6", "node-b")
        sent = asyncio.create_task(a.send("CP-R6", commands.Reset("Hard")))
        call = await _call(ws)
        await ws.send(json.dumps([3, call[1], {"status": "Accepted"}]))
        assert (await sent).status == "Accepted"
        await ws.close()
    finally:
        for rt in (b, a):
            await rt.stop()


async def test_offline_everywhere_is_charger_offline(nodes):
    a, _ = nodes
    await provision(a, "CP-R7", KEY)
    with pytest.raises(commands.ChargerOffline) as offline:
        await a.send("CP-R7", commands.Reset("Soft"))
    assert type(offline.value) is commands.ChargerOffline


# -- pure parts -------------------------------------------------------------------------------


def _presence(node: str, epoch: int) -> Presence:
    return Presence(node, node, True, "ocpp1.6", None, epoch)


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 50)), max_size=30))
def test_the_mirror_keeps_the_newest_change_whatever_the_order(changes):
    """Claims and releases applied in any order leave what the newest one says."""
    directory = Directory("me")
    directory.live_nodes = frozenset({"me", "n"})
    for claimed, epoch in changes:
        directory.apply("CP", _presence("n", epoch) if claimed else None, epoch)
    if not changes:
        assert directory.get("CP") is None
        return
    newest = max(epoch for _, epoch in changes)
    final = [claimed for claimed, epoch in changes if epoch == newest]
    got = directory.get("CP")
    # among changes of the same epoch, the last one applied wins
    assert (got is not None) == final[-1]
    if got is not None:
        assert got.epoch == newest
    # a full read that missed all of them, taken while they arrived, changes nothing
    directory.begin_read()
    for claimed, epoch in changes:
        directory.apply("CP", _presence("n", epoch) if claimed else None, epoch)
    directory.replace({"CP": _presence("n", 0)})
    assert directory.get("CP") == got


def test_a_claim_of_a_dead_node_is_no_claim():
    directory = Directory("me")
    directory.apply("CP", _presence("gone", 5), 5)
    assert directory.get("CP") is None  # "gone" is not among the live nodes
    directory.live_nodes = frozenset({"me", "gone"})
    assert directory.get("CP") == _presence("gone", 5)
    assert not wins(_presence("gone", 5), 4)


def test_the_mirror_is_bounded():
    directory = Directory("me", max_entries=2)
    directory.live_nodes = frozenset({"me", "n"})
    for i in range(5):
        directory.apply(f"CP{i}", _presence("n", i + 1), i + 1)
    assert len(directory) == 2


def test_change_messages_are_parsed_strictly():
    assert decode_change(b"not json") is None
    assert decode_change(b'{"op":"set","id":"CP","epoch":"x"}') is None
    assert decode_change(b'{"op":"set","id":7,"epoch":1,"node":"n"}') is None
    assert decode_change(b'{"op":"del","id":"CP","epoch":"3"}') == ("CP", None, 3)
    change = decode_change(
        b'{"op":"set","id":"CP","epoch":"3","node":"n:1","name":"n","accepted":"1",'
        b'"protocol":"ocpp1.6","site":""}'
    )
    assert change == ("CP", Presence("n:1", "n", True, "ocpp1.6", None, 3), 3)


def test_remote_calls_and_errors_round_trip():
    ok = {"id": "r1", "from": "n:1", "c": "CP", "a": "Reset", "p": {"type": "Soft"}, "to": 5}
    assert call_of(ok) == ("r1", "n:1", "CP", "Reset", {"type": "Soft"}, 5.0)
    assert call_of({**ok, "a": "../../etc/passwd"}) is None  # never a path to a schema file
    assert call_of({**ok, "to": -1}) is None
    assert call_of({**ok, "p": []}) is None
    assert call_of({**ok, "to": 10**9})[-1] == 600.0
    for exc in (
        commands.ChargerOffline("CP", "gone"),
        commands.CommandTimeout("CP", "slow"),
        commands.CommandRejected("CP", "NotSupported", "no"),
        commands.CommandError("CP", "bad"),
    ):
        back = error_of("CP", reply_of(exc))
        assert type(back) is type(exc) and back.message == exc.message
    assert isinstance(NodeLost("CP", "x"), commands.ChargerOffline)


# -- messages between nodes are sealed (evota.cluster.envelope) --------------------------------


async def test_a_call_written_to_redis_without_the_cluster_key_reaches_no_charger(nodes):
    """Whoever can write to Redis must not be able to command chargers: a routed CALL
    without the seal, with a seal of another key, or replayed is refused by the owner."""
    a, b = nodes
    await provision(a, "CP-SEAL", KEY)
    ws = await _booted(b, "CP-SEAL")
    await _seen_from(a, "CP-SEAL", "node-b")
    assert a.presence is not None and b.presence is not None and a.seal is not None
    channel = node_key(b.node.key)
    forged = {
        "t": "call",
        "id": "forged-1",
        "from": a.node.key,
        "c": "CP-SEAL",
        "a": "UnlockConnector",
        "p": {"connectorId": 1},
        "to": 5,
    }
    redis = a.presence.redis
    assert await redis.publish(channel, json.dumps(forged))  # b listens, and must refuse
    wrong_key = Seal(b"k" * 32).seal({**forged, "id": "forged-2"})
    assert await redis.publish(channel, wrong_key)
    genuine = a.seal.seal({**forged, "id": "replayed", "a": "Reset", "p": {"type": "Soft"}})
    assert await redis.publish(channel, genuine)  # once: the owner sends it
    call = await _call(ws)  # not the unsealed or wrongly sealed unlocks before it
    assert call[2:] == ["Reset", {"type": "Soft"}]
    await ws.send(json.dumps([3, call[1], {"status": "Accepted"}]))
    assert await redis.publish(channel, genuine)  # twice: a replay, refused
    # the next CALL the charger sees is the operator's, not the replayed soft reset
    sent = asyncio.create_task(a.send("CP-SEAL", commands.Reset("Hard")))
    call = await _call(ws)
    assert call[2:] == ["Reset", {"type": "Hard"}]
    await ws.send(json.dumps([3, call[1], {"status": "Accepted"}]))
    assert (await sent).status == "Accepted"
    assert b.seal is not None and b.seal.refused >= 3
    await ws.close()
