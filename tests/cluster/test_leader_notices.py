"""Changes made through any node's API reach the runner leader's services (leader calls).

Playbooks: the runner runs on the leader, so a change reaches it (``playbooks.*``), and the
kill switch is stored, so a new leader keeps it. Before, both acted on the node the request
reached: a kill switch flipped through a non-leader node stopped nothing, and a playbook
enabled there did not run until the leader restarted. Campaigns: a charger's site or tags,
or a site's timezone, edited through another node is noticed by the leader's campaign
runner (``campaigns.facts``), which keeps its members' facts between evaluations."""

from __future__ import annotations

from pathlib import Path

from evota.cluster.leader import PgLeader
from evota.runtime import Runtime
from tests.cluster.harness import cluster_redis, pg_database, start_node  # noqa: F401
from tests.conftest import api_client
from tests.redis_fixtures import RedisServer
from tests.support import until

KEY = "key-0123456789abcdef"
PLAYBOOK = {
    "name": "boots",
    "enabled": True,
    "trigger": {"kind": "repeated_boots", "count": 3, "within_minutes": 60},
    "steps": [{"escalate": {"message": "boot loop"}}],
}


async def test_a_change_through_another_node_reaches_the_leaders_runner(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
    cluster_redis: RedisServer,  # noqa: F811
) -> None:
    a = await start_node(tmp_path / "a", pg_database, "a", None, redis_url=cluster_redis.url)
    b: Runtime | None = None
    try:
        assert isinstance(a.leadership, PgLeader)
        await until(lambda: a.leader_calls.serving, timeout=10)  # takes calls
        b = await start_node(tmp_path / "b", pg_database, "b", a, redis_url=cluster_redis.url)
        assert not b.leadership.is_leader
        async with api_client(b) as api:
            r = await api.post("/api/v1/sites", json={"id": "s1", "name": "s1", "timezone": "UTC"})
            assert r.status_code == 201, r.text
            r = await api.post("/api/v1/chargers", json={"id": "CP-1", "auth_key": KEY})
            assert r.status_code == 201, r.text
            r = await api.patch("/api/v1/chargers/CP-1", json={"site_id": "s1", "tags": ["x"]})
            assert r.status_code == 200, r.text
            assert "CP-1" in a.campaigns.facts._noticed  # the leader reads it again
            r = await api.patch("/api/v1/sites/s1", json={"timezone": "Europe/Paris"})
            assert r.status_code == 200, r.text
            assert "s1" in a.campaigns.facts._sites
            assert not b.campaigns.facts._sites  # told to the leader, not kept here
            r = await api.post("/api/v1/playbooks", json=PLAYBOOK)
            assert r.status_code == 201, r.text
            assert "boots" in a.playbooks.playbooks  # the leader's runner runs it now
            r = await api.put("/api/v1/playbooks/kill-switch", json={"kill_switch": True})
            assert r.status_code == 200 and r.json() == {"kill_switch": True}, r.text
            assert a.playbooks.kill_switch  # engaged where the runs are
        async with api_client(a) as api:  # every node reads the same switch
            assert (await api.get("/api/v1/playbooks/kill-switch")).json()["kill_switch"]
            assert (await api.get("/api/v1/playbooks")).json()["kill_switch"]
        await a.stop()  # the leader goes: the new one keeps the switch engaged
        await until(lambda: b is not None and b.leader_calls.serving, timeout=30)
        assert b.playbooks.kill_switch and "boots" in b.playbooks.playbooks
        async with api_client(b) as api:
            r = await api.put("/api/v1/playbooks/kill-switch", json={"kill_switch": False})
            assert r.status_code == 200 and r.json() == {"kill_switch": False}
        assert not b.playbooks.kill_switch
    finally:
        if b is not None:
            await b.stop()
        if a.leadership.is_leader:
            await a.stop()
