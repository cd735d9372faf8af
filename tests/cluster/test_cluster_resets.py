"""A Reset answered Scheduled completes on whichever node the charger boots onto (issue 15,
evota.cluster.resets): two in-process nodes on one PostgreSQL and one Redis, a simulated
2.0.1 charger with a session running (so it answers Scheduled) that reboots onto the other
node once the session ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from evota.cluster.envelope import Seal
from evota.cluster.resets import decode, encode, pending_key
from evota.runtime import Runtime
from evota.sim.charger import SimulatedCharger, charger_url
from evota.sim.control.transactions import request_stop
from evota.sim.fleet import ChargerSpec
from evota.store.models import AuditEntry, ChargerEvent
from tests.cluster.harness import cluster_redis, pg_database, start_node  # noqa: F401
from tests.conftest import api_client, provision
from tests.redis_fixtures import RedisServer
from tests.sim.conftest import fast
from tests.support import until

KEY = "cluster-reset-key-0123456789"
FAST = {"call_timeout": 5.0, "cluster_node_ttl_seconds": 1.5, "cluster_heartbeat_seconds": 0.2}


@pytest.fixture
async def nodes(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
    cluster_redis: RedisServer,  # noqa: F811
) -> AsyncIterator[tuple[Runtime, Runtime]]:
    a = await start_node(tmp_path / "a", pg_database, "node-a", redis_url=cluster_redis.url, **FAST)
    b = await start_node(
        tmp_path / "b", pg_database, "node-b", a, redis_url=cluster_redis.url, **FAST
    )
    try:
        yield a, b
    finally:
        for rt in (b, a):
            await rt.stop()


async def _completed(rt: Runtime) -> list[Any]:
    await rt.audit.drain()
    query = select(AuditEntry).where(AuditEntry.action == "charger.reset_completed")
    async with rt.engine.connect() as conn:
        return list((await conn.execute(query)).all())


async def _events(rt: Runtime, charger_id: str, kind: str) -> int:
    await rt.fleet.writer.flush()
    query = select(func.count()).where(
        ChargerEvent.charger_id == charger_id, ChargerEvent.kind == kind
    )
    async with rt.engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


def _url(rt: Runtime) -> str:
    return f"ws://127.0.0.1:{rt.ocpp_port}/ocpp"


async def test_a_scheduled_reset_sent_through_one_node_completes_on_the_node_it_boots_onto(
    nodes: tuple[Runtime, Runtime],
) -> None:
    a, b = nodes
    await provision(a, "RST-1", KEY)
    charger = SimulatedCharger(ChargerSpec("RST-1", KEY, protocol="ocpp2.0.1"), _url(a), fast())
    charger.start()
    try:
        await until(lambda: charger.accepted and "RST-1" in a.gateway.connections, timeout=15)
        session = charger.begin_session(1, duration=10**9)
        await until(
            lambda: 1 in charger.transactions and charger.transactions[1].transaction_id is not None
        )
        async with api_client(a) as api:
            r = await api.post(
                "/api/v1/chargers/RST-1/commands/reset", json={"type": "Soft", "reason": "test"}
            )
        assert r.status_code == 200 and r.json()["status"] == "Scheduled", r.text
        boots = await _events(a, "RST-1", "boot")
        # The balancer sends the rebooted charger to node b.
        charger.use_network(charger_url(_url(b), "RST-1"), 1)
        request_stop(charger, 1, "Local")
        await session
        await until(lambda: "RST-1" in b.gateway.connections, timeout=15)
        [entry] = await until(lambda: _completed(a), timeout=15)
        assert entry.actor == "system" and entry.outcome == "completed"
        assert entry.target == "RST-1"
        assert entry.detail["requested_by"] == "bootstrap-admin"
        assert (entry.detail["type"], entry.detail["boot_reason"]) == ("Soft", "RemoteReset")
        assert entry.detail["scheduled_at"]
        assert await until(lambda: _events(b, "RST-1", "reset"), lambda n: n == 1)
        # Another boot (a charger may boot as often as it likes) completes nothing more.
        checked = b.resets.checked if b.resets is not None else 0
        await charger.reboot(reason="PowerUp")
        await until(lambda: _events(b, "RST-1", "boot"), lambda n: n >= boots + 2, timeout=15)
        await until(lambda: b.resets is not None and b.resets.checked > checked, timeout=15)
        assert len(await _completed(a)) == 1
        assert await _events(b, "RST-1", "reset") == 1
    finally:
        await charger.stop()


async def test_a_pending_reset_written_into_redis_without_the_cluster_key_completes_nothing(
    nodes: tuple[Runtime, Runtime],
) -> None:
    """Someone able to write to Redis stores a 'pending reset' for a charger: its next boot
    writes no entry (no Reset was sent)."""
    a, b = nodes
    await provision(a, "RST-2", KEY)
    assert b.live is not None and b.resets is not None
    forged = encode(Seal(b"not-the-cluster-key"), "RST-2", _pending())
    await b.live.redis.set(pending_key("RST-2"), forged)
    charger = SimulatedCharger(ChargerSpec("RST-2", KEY, protocol="ocpp2.0.1"), _url(b), fast())
    charger.start()
    try:
        await until(lambda: charger.accepted and "RST-2" in b.gateway.connections, timeout=15)
        await until(lambda: b.live.redis.exists(pending_key("RST-2")), lambda n: n == 0)
        await until(lambda: b.resets is not None and b.resets.checked >= 1)
        assert await _completed(a) == []
        assert await _events(b, "RST-2", "reset") == 0
    finally:
        await charger.stop()


async def test_with_redis_away_a_scheduled_reset_waits_on_the_sending_node_as_on_one(
    nodes: tuple[Runtime, Runtime],
    cluster_redis: RedisServer,  # noqa: F811
) -> None:
    a, _ = nodes
    await provision(a, "RST-3", KEY)
    charger = SimulatedCharger(ChargerSpec("RST-3", KEY, protocol="ocpp2.0.1"), _url(a), fast())
    charger.start()
    try:
        await until(lambda: charger.accepted and "RST-3" in a.gateway.connections, timeout=15)
        session = charger.begin_session(1, duration=10**9)
        await until(lambda: 1 in charger.transactions and charger.transactions[1].transaction_id)
        cluster_redis.stop()
        async with api_client(a) as api:
            r = await api.post(
                "/api/v1/chargers/RST-3/commands/reset", json={"type": "Soft", "reason": "test"}
            )
        assert r.status_code == 200 and r.json()["status"] == "Scheduled", r.text
        request_stop(charger, 1, "Local")
        await session
        [entry] = await until(lambda: _completed(a), timeout=15)
        assert entry.target == "RST-3" and entry.detail["requested_by"] == "bootstrap-admin"
    finally:
        await charger.stop()
        cluster_redis.start()


def _pending(**extra: Any) -> dict[str, Any]:
    return {"type": "Soft", "at": "2026-01-01T00:00:00+00:00", "by": "op", "until": 2e9, **extra}


def test_a_pending_reset_is_taken_only_by_its_charger_before_its_deadline() -> None:
    seal = Seal(b"k" * 32)
    stored = encode(seal, "CP-1", _pending())
    assert decode(seal, "CP-1", stored, 1e9) == {**_pending(), "charger": "CP-1"}
    assert decode(seal, "CP-2", stored, 1e9) is None  # moved to another charger's key
    assert decode(seal, "CP-1", stored, 3e9) is None  # past its deadline (a replay)
    assert decode(Seal(b"x" * 32), "CP-1", stored, 1e9) is None  # another key
    tampered = stored.replace(b'"by":"op"', b'"by":"OP"')
    assert decode(seal, "CP-1", tampered, 1e9) is None
    assert decode(seal, "CP-1", b"short", 1e9) is None
