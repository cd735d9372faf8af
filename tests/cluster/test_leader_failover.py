"""SIGKILL the runner leader in the middle of a campaign wave (issue 15 item 7): three
``evota serve`` nodes behind HAProxy on PostgreSQL, Redis and an S3 store, a simulated fleet.
Another node takes the leadership over, reconciles from the database and completes the
campaign with the outcome it would have had without the kill: every charger on the new
version, one update job each, no rollback. The time from the kill to the new leader and to
the next gate evaluation is measured and printed (docs/cluster.md, docs/performance.md).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from evota.cluster.leader import asyncpg_dsn
from evota.sim import Fleet
from tests.cluster.harness import Cluster, cluster_redis, pg_database  # noqa: F401
from tests.conftest import TOKEN, Keys
from tests.redis_fixtures import RedisServer
from tests.s3_fixtures import Bucket
from tests.sim.conftest import fast
from tests.test_campaigns import POLICY, fleet_spec
from tests.test_firmware_update import FAST_JOBS, trust, upload

pytestmark = pytest.mark.slow

ENV = {
    "EVOTA_CLUSTER_NODE_TTL_SECONDS": "3",
    "EVOTA_CLUSTER_HEARTBEAT_SECONDS": "0.5",
    "EVOTA_CAMPAIGN_TICK_SECONDS": "0.2",
    **{f"EVOTA_{name.upper()}": str(value) for name, value in FAST_JOBS.items()},
}


async def _leader(database_url: str) -> tuple[str, int, datetime]:
    """(node name, fencing token, since) from the database."""
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        row = await conn.fetchrow("SELECT node, token, since FROM cluster_leader WHERE id = 1")
    finally:
        await conn.close()
    if row is None:
        return "", 0, datetime.min.replace(tzinfo=UTC)
    return str(row["node"]).split(":")[0], int(row["token"]), row["since"]


async def _first_gate_after(database_url: str, campaign_id: str, after: datetime) -> datetime:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        at = await conn.fetchval(
            "SELECT min(at) FROM gate_evaluations WHERE campaign_id = $1 AND at > $2",
            campaign_id,
            after,
        )
    finally:
        await conn.close()
    assert at is not None, "no gate evaluation after the kill"
    return at  # type: ignore[no-any-return]


async def test_sigkill_the_runner_leader_mid_wave_another_node_completes_the_campaign(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
    cluster_redis: RedisServer,  # noqa: F811
    s3: Bucket,
    keys: Keys,
) -> None:
    env = {**ENV, **{f"EVOTA_{k.upper()}": str(v) for k, v in s3.settings().items()}}
    async with Cluster(tmp_path, pg_database, cluster_redis, nodes=3, env=env) as c:
        async with c.api() as api:
            await trust(api, keys)
            fw = await upload(api, tmp_path, keys, "2.0.0", size=32 * 1024)
        spec = fleet_spec(12, keys)
        config = fast(speed=600.0, install_duration=1.0, download_retry_interval=0.2)
        fleet = Fleet.from_spec(spec, c.ocpp_url, config=config)
        await fleet.provision(c.http_url, TOKEN)
        await fleet.start()
        ids = {charger.identity for charger in fleet}
        try:
            async with c.api() as api:

                async def booted() -> bool:
                    page = (await api.get("/api/v1/chargers", params={"limit": 100})).json()
                    seen = {ch["id"] for ch in page["items"] if ch["vendor"] and ch["connected"]}
                    return ids <= seen

                await c.wait_until(booted, 60, 0.2, "every charger booted")
                leader, token, _since = await _leader(pg_database)
                assert leader in {n.name for n in c.nodes}

                body: dict[str, Any] = {"name": "failover", "firmware_id": fw["id"]}
                body |= {
                    "policy": POLICY,
                    "waves": [{"count": 2}, {"percent": 60}, {"percent": 100}],
                }
                r = await api.post("/api/v1/campaigns", json=body)
                assert r.status_code == 201, r.text
                campaign_id = r.json()["id"]
                r = await api.post(f"/api/v1/campaigns/{campaign_id}/start", json={"reason": "t"})
                assert r.status_code == 200, r.text

                async def in_second_wave() -> bool:
                    got = (await api.get(f"/api/v1/campaigns/{campaign_id}")).json()
                    return bool(got["current_wave"] >= 1)

                await c.wait_until(in_second_wave, 90, 0.1, "the campaign's second wave")
                victim = next(n for n in c.nodes if n.name == leader)
                killed_at = datetime.now(UTC)
                killed = time.monotonic()
                c.kill(victim.index)

                async def new_leader() -> bool:
                    name, new_token, _ = await _leader(pg_database)
                    return name != leader and new_token > token

                await c.wait_until(new_leader, 30, 0.1, "a new runner leader")
                took_over = time.monotonic() - killed
                _name, _token, since = await _leader(pg_database)

                async def finished() -> bool:
                    r = await api.get(f"/api/v1/campaigns/{campaign_id}")
                    return r.status_code == 200 and r.json()["state"] in {
                        "completed",
                        "failed",
                        "aborted",
                        "paused",
                    }

                await c.wait_until(finished, 180, 0.3, "the campaign ends")
                done = (await api.get(f"/api/v1/campaigns/{campaign_id}")).json()
                assert done["state"] == "completed", done
                gate = await _first_gate_after(pg_database, campaign_id, killed_at)
                jobs = (
                    await api.get("/api/v1/jobs", params={"campaign_id": campaign_id, "limit": 100})
                ).json()["items"]
            # the same outcome as without the kill: one update per charger, each succeeded
            assert sorted(j["charger_id"] for j in jobs) == sorted(ids), jobs
            assert {j["kind"] for j in jobs} == {"update"}
            assert {j["state"] for j in jobs} == {"succeeded"}, jobs
            assert all(ch.firmware_version == "2.0.0" for ch in fleet)
            print(
                f"\nleader SIGKILL -> new leader: {took_over:.2f} s "
                f"(lock taken {(since - killed_at).total_seconds():.2f} s after the kill); "
                f"-> next gate evaluation: {(gate - killed_at).total_seconds():.2f} s"
            )
            assert took_over <= 15.0
        finally:
            await fleet.stop()
