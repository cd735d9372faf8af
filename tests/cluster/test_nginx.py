"""deploy/nginx/evota-cluster.conf, run as written in front of two ``evota serve`` nodes.

Only the nodes' addresses and the listen ports of the file are replaced; if the file changes,
this test runs the new text. The wrapper around it (the http {} context) logs which node
served each request, so the test sees the spreading instead of assuming it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from evota.sim import Fleet, fleet_from_flags
from tests.cluster.harness import Cluster, cluster_redis, pg_database  # noqa: F401
from tests.conftest import TOKEN
from tests.proxies import nginx_command, read, running
from tests.sim.conftest import fast
from tests.support import free_port, until

pytestmark = pytest.mark.slow

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "evota-cluster.conf"
#: The example nodes of the file, in order, and evota's default ports it uses.
EXAMPLE_NODES = ("10.0.0.11", "10.0.0.12")


def rendered(cluster: Cluster, listen: dict[str, int]) -> str:
    """The deploy file with the cluster's nodes and the test's listen ports."""
    text = CONF.read_text()
    for example, node in zip(EXAMPLE_NODES, cluster.nodes, strict=True):
        for default, port in (
            (9000, node.ocpp_port),
            (8000, node.http_port),
            (8001, node.download_port),
        ):
            text = text.replace(f"{example}:{default}", f"127.0.0.1:{port}")
    for default, name in ((9000, "ocpp"), (8000, "http"), (8001, "download")):
        assert text.count(f"listen {default};") == 1, f"one server listens on {default}"
        text = text.replace(f"listen {default};", f"listen 127.0.0.1:{listen[name]};")
    assert not re.search(r"^[^#]*10\.0\.0\.", text, re.M), "every example node was replaced"
    return text


@pytest.fixture
async def behind_nginx(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
    cluster_redis,  # noqa: F811
) -> AsyncIterator[tuple[Cluster, dict[str, int], Path]]:
    async with Cluster(tmp_path / "cluster", pg_database, cluster_redis, nodes=2) as cluster:
        work = tmp_path / "nginx"
        work.mkdir()
        listen = {"ocpp": free_port(), "http": free_port(), "download": free_port()}
        access = work / "access.log"
        http = (
            "    log_format upstream '$request_uri $status $upstream_addr';\n"
            f"    access_log {access} upstream;\n{rendered(cluster, listen)}"
        )
        argv = nginx_command(work, http, worker_connections=256)
        async with running(argv, work, listen["http"], "nginx"):
            yield cluster, listen, access


def served_by(access: Path, prefix: str) -> set[str]:
    """The upstream addresses nginx logged for requests under ``prefix``."""
    seen: set[str] = set()
    for line in read(access).splitlines():
        uri, _, upstreams = line.split(" ", 2)
        if uri.startswith(prefix):
            seen.update(re.findall(r"127\.0\.0\.1:\d+", upstreams))
    return seen


async def connected_on(node_url: str) -> int:
    """The node's own count of open OCPP connections (its /metrics)."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"{node_url}/metrics")).text
    found = re.search(r"^evota_connected_chargers (\S+)$", text, re.M)
    return int(float(found.group(1))) if found else 0


async def test_the_nginx_config_spreads_api_and_chargers_and_moves_them_off_a_dead_node(
    behind_nginx: tuple[Cluster, dict[str, int], Path],
) -> None:
    cluster, listen, access = behind_nginx
    first, second = cluster.nodes
    api_url = f"http://127.0.0.1:{listen['http']}"
    async with httpx.AsyncClient(
        base_url=api_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=15
    ) as api:
        for _ in range(4):  # any node answers: both are used
            r = await api.get("/api/v1/chargers")
            assert r.status_code == 200, r.text
    both_http = {f"127.0.0.1:{first.http_port}", f"127.0.0.1:{second.http_port}"}
    assert served_by(access, "/api/v1/chargers") == both_http

    # Chargers through the OCPP server block: provisioned through the API one, spread by
    # least connections, each accepted.
    spec = fleet_from_flags(6, prefix="NGX-", seed="nginx")
    config = fast(speed=600.0, session_rate=0.0)
    fleet = Fleet.from_spec(spec, f"ws://127.0.0.1:{listen['ocpp']}/ocpp", config=config)
    await fleet.provision(api_url, TOKEN)
    await fleet.start()
    try:
        await fleet.wait_for_all(lambda c: c.accepted, 30)
        counts = [await connected_on(n.http_url) for n in cluster.nodes]
        assert sum(counts) == 6 and min(counts) > 0, counts

        # A dead node: its chargers reconnect through nginx to the other one.
        cluster.kill(0)
        await until(
            lambda: connected_on(second.http_url),
            lambda n: n == 6,
            timeout=30,
            interval=0.2,
            describe=lambda n: f"{n} of 6 chargers on {second.name}",
        )
        await fleet.wait_for_all(lambda c: c.accepted and c.connected, 30)
    finally:
        await fleet.stop()
