"""Failure behaviour of charger ownership and routing with real processes (issue 15 item 7):
three (or two) ``evota serve`` nodes behind HAProxy, the fleet simulator as the chargers.

* SIGKILL a gateway node: its chargers reconnect through the balancer to the others, their
  presence moves, and commands sent through any node reach them again.
* Redis restarts: every node keeps serving its own chargers; a command for a charger on
  another node is a 503 problem (``cluster_unavailable``) until Redis is back, then works.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from evota.sim import ChargerSpec
from evota.sim.charger import SimConfig, SimulatedCharger
from tests.cluster.harness import Cluster, cluster_redis, pg_database  # noqa: F401
from tests.redis_fixtures import RedisServer

pytestmark = pytest.mark.slow

KEY = "cluster-failure-key-0123"
SIM = SimConfig(
    call_timeout=10.0,
    backoff_initial=0.2,
    backoff_max=1.0,
    ping_interval=None,
    close_timeout=0.5,
)
FAST_PRESENCE = {
    "EVOTA_CLUSTER_NODE_TTL_SECONDS": "3",
    "EVOTA_CLUSTER_HEARTBEAT_SECONDS": "0.5",
    "EVOTA_CALL_TIMEOUT": "10",
}


async def _fleet(cluster: Cluster, ids: list[str]) -> list[SimulatedCharger]:
    async with cluster.api() as api:
        for cid in ids:
            r = await api.post("/api/v1/chargers", json={"id": cid, "auth_key": KEY})
            assert r.status_code == 201, r.text
    sims = [SimulatedCharger(ChargerSpec(cid, KEY), cluster.ocpp_url, SIM) for cid in ids]
    for sim in sims:
        sim.start()
    return sims


async def _where(api: httpx.AsyncClient, ids: list[str]) -> dict[str, Any]:
    """charger id -> the node the API names (None: not connected)."""
    found = {}
    for cid in ids:
        r = await api.get(f"/api/v1/chargers/{cid}")
        # a balancer that has not yet noticed a killed node answers 503 for a moment
        body = r.json() if r.status_code == 200 else {"connected": False}
        found[cid] = body["node"] if body["connected"] else None
    return found


async def _command(api: httpx.AsyncClient, cid: str) -> httpx.Response:
    return await api.post(f"/api/v1/chargers/{cid}/commands/get-configuration", json={})


async def test_sigkill_a_gateway_node_its_chargers_move_and_commands_reach_them(
    tmp_path,
    pg_database,  # noqa: F811
    cluster_redis: RedisServer,  # noqa: F811
):
    ids = [f"CP-K{i}" for i in range(6)]
    async with Cluster(tmp_path, pg_database, cluster_redis, nodes=3, env=FAST_PRESENCE) as c:
        sims = await _fleet(c, ids)
        try:
            async with c.api() as api:
                where: dict[str, Any] = {}

                async def all_placed() -> bool:
                    where.update(await _where(api, ids))
                    return all(where.values()) and all(s.accepted for s in sims)

                await c.wait_until(all_placed, 60, 0.2, "every charger connected")
                victim = next(n for n in c.nodes if n.name in where.values())
                moved = [cid for cid, node in where.items() if node == victim.name]
                c.kill(victim.index)

                async def all_moved() -> bool:
                    where.update(await _where(api, ids))
                    return all(where.values()) and victim.name not in where.values()

                await c.wait_until(all_moved, 60, 0.2, f"chargers of {victim.name} moved")
                # every node's API reaches every moved charger, wherever it is now
                for node in c.nodes:
                    if node.alive:
                        async with c.api(node.index) as direct:
                            for cid in moved:
                                r = await _command(direct, cid)
                                assert r.status_code == 200, (node.name, cid, r.text)
        finally:
            await asyncio.gather(*(sim.stop() for sim in sims))


async def test_redis_restart_own_chargers_served_cross_node_503_until_back(
    tmp_path,
    pg_database,  # noqa: F811
    cluster_redis: RedisServer,  # noqa: F811
):
    ids = [f"CP-Q{i}" for i in range(4)]
    async with Cluster(tmp_path, pg_database, cluster_redis, nodes=2, env=FAST_PRESENCE) as c:
        sims = await _fleet(c, ids)
        try:
            async with c.api(0) as first:
                where: dict[str, Any] = {}

                async def spread() -> bool:
                    where.update(await _where(first, ids))
                    return all(where.values()) and all(s.accepted for s in sims)

                await c.wait_until(spread, 60, 0.2, "every charger connected")
                local = [cid for cid, n in where.items() if n == c.nodes[0].name]
                remote = [cid for cid, n in where.items() if n == c.nodes[1].name]
                assert local and remote, where  # leastconn spreads them over both

                cluster_redis.stop()

                async def refused() -> bool:
                    r = await _command(first, remote[0])
                    return r.status_code == 503

                await c.wait_until(refused, 30, 0.2, "cross-node commands refused")
                r = await _command(first, remote[0])
                assert r.headers["content-type"].startswith("application/problem+json")
                assert r.json()["reason"] == "cluster_unavailable"
                for cid in local:  # its own chargers: served as ever
                    r = await _command(first, cid)
                    assert r.status_code == 200, r.text

                cluster_redis.start()  # empty: it kept nothing

                async def routed() -> bool:
                    r = await _command(first, remote[0])
                    return r.status_code == 200

                await c.wait_until(routed, 30, 0.2, "cross-node commands work again")
                for cid in remote:
                    r = await _command(first, cid)
                    assert r.status_code == 200, r.text
        finally:
            await asyncio.gather(*(sim.stop() for sim in sims))
