"""The multi-node harness itself: nodes behind HAProxy, a SIGKILLed node leaves the pool."""

from __future__ import annotations

import pytest

from tests.cluster.harness import SHARED_KEYS, Cluster, cluster_redis, pg_database  # noqa: F401

pytestmark = pytest.mark.slow


async def test_two_nodes_behind_haproxy_and_a_killed_node_leaves_the_pool(
    tmp_path,
    pg_database,  # noqa: F811
    cluster_redis,  # noqa: F811
):
    async with Cluster(tmp_path, pg_database, cluster_redis, nodes=2) as cluster:
        for name in SHARED_KEYS:  # every node has the first node's keys
            assert (cluster.nodes[1].data_dir / name).read_bytes() == (
                cluster.nodes[0].data_dir / name
            ).read_bytes()
        async with cluster.api() as api:
            assert (await api.get("/healthz")).status_code == 200
            assert (await api.get("/api/v1/chargers")).status_code == 200
        cluster.kill(0)
        await cluster.wait_lb(0, "DOWN")
        async with cluster.api() as api:
            assert (await api.get("/healthz")).status_code == 200  # node2 answers
        await cluster.restart(0)
        await cluster.wait_lb(0, "UP")


async def test_a_cluster_whose_balancer_cannot_start_leaves_no_node_running(
    tmp_path,
    pg_database: str,  # noqa: F811
    cluster_redis,  # noqa: F811
) -> None:
    """A failed start stops the nodes it started: before, they outlived the test run (found
    as two orphaned `evota serve` processes after HAProxy lost its port in a busy run)."""
    import socket

    cluster = Cluster(tmp_path, pg_database, cluster_redis, nodes=2)
    with socket.socket() as taken:  # HAProxy's download port, held by someone else
        taken.bind(("127.0.0.1", cluster.lb_download_port))
        taken.listen()
        with pytest.raises(RuntimeError, match="haproxy"):
            async with cluster:
                pass
    assert all(node.process is None for node in cluster.nodes)
