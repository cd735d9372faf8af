"""A real evota cluster on loopback for the multi-node tests (issue 15).

``Cluster`` starts N ``evota serve`` processes (``sys.executable -m evota serve``, distinct
ports and ``EVOTA_NODE_ID``) on one fresh PostgreSQL database and one Redis, with HAProxy in
front (``deploy/haproxy/evota-cluster.cfg``, filled in here). Chargers (the fleet simulator)
connect to ``cluster.ocpp_url``, API clients to ``cluster.http_url``; both go through HAProxy.

The nodes share the data directory's key files (``SHARED_KEYS``): the first node creates
them, the harness copies them into every other node's data directory before it starts, as
docs/cluster.md tells operators to do.

Usage::

    async with Cluster(tmp_path, pg_database, redis, nodes=3) as cluster:
        cluster.kill(1)                       # SIGKILL, like a dead VM
        await cluster.wait_until(lambda: ..., timeout=30)
        await cluster.restart(1)

``pg_database`` (a fresh PostgreSQL database, skipped without EVOTA_TEST_POSTGRES_URL) and
``cluster_redis`` (a Redis of the test's own that it may stop and start) are fixtures here.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from evota.cluster.node import SHARED_FILES, copy_shared_files
from evota.runtime import Runtime
from tests.conftest import PG_URL, TOKEN, start_runtime
from tests.redis_fixtures import REDIS, RedisServer, free_port

HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None
)
TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "evota-cluster.cfg"

# What evota keeps in a data directory that every node of a cluster must share: the audit
# head key (the chain's keyed head), the download and upload token keys (a URL issued by one
# node is honoured by another), the built-in charger CA (any node signs chargers' CSRs).
SHARED_KEYS = SHARED_FILES  # evota.cluster.node: what every node must hold


async def start_node(
    home: Path, database_url: str, name: str, first: Runtime | None = None, **overrides: Any
) -> Runtime:
    """An in-process node: its own data directory (``home/data``) holding the first node's
    shared files, as an operator copies them (docs/cluster.md)."""
    if first is not None:
        copy_shared_files(first.settings.data_dir, home / "data")
    return await start_runtime(home, database_url, node_id=name, **overrides)


async def start_nodes(
    home: Path, database_url: str, redis_url: str, n: int = 2, **overrides: Any
) -> list[Runtime]:
    """``n`` in-process cluster nodes (``node0``…) on one PostgreSQL and one Redis, each
    holding the first node's shared files."""
    nodes: list[Runtime] = []
    for i in range(n):
        first = nodes[0] if nodes else None
        node = await start_node(
            home / f"node{i}", database_url, f"node{i}", first, redis_url=redis_url, **overrides
        )
        nodes.append(node)
    return nodes


# -- fixtures ---------------------------------------------------------------------------------


async def create_database() -> str:
    """A fresh database on EVOTA_TEST_POSTGRES_URL's server; its SQLAlchemy URL."""
    import asyncpg  # type: ignore[import-untyped]

    assert PG_URL
    name = "evota_cluster_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return PG_URL.rsplit("/", 1)[0] + "/" + name


async def drop_database(url: str) -> None:
    import asyncpg

    assert PG_URL
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _require_postgres() -> None:
    if not PG_URL:
        if os.environ.get("EVOTA_REQUIRE_POSTGRES") == "1":
            raise RuntimeError("EVOTA_REQUIRE_POSTGRES=1 but EVOTA_TEST_POSTGRES_URL is unset")
        pytest.skip("EVOTA_TEST_POSTGRES_URL not set (a cluster needs PostgreSQL)")


@pytest.fixture
async def pg_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for one test (a cluster runs on PostgreSQL only)."""
    _require_postgres()
    url = await create_database()
    yield url
    await drop_database(url)


@pytest.fixture
def cluster_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own (a test may ``stop()`` and ``start()`` it: same port)."""
    if REDIS is None:
        pytest.skip("redis-server not installed (scripts/test installs it as root)")
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def require_haproxy() -> None:
    if HAPROXY is None:
        if os.environ.get("EVOTA_REQUIRE_HAPROXY") == "1":
            raise RuntimeError("EVOTA_REQUIRE_HAPROXY=1 but haproxy is not installed")
        pytest.skip("haproxy not installed (scripts/test installs it as root)")


# -- the cluster ------------------------------------------------------------------------------


@dataclass
class NodeProcess:
    """One ``evota serve`` process; its ports stay the same across restarts."""

    index: int
    name: str
    directory: Path
    http_port: int = field(default_factory=free_port)
    ocpp_port: int = field(default_factory=free_port)
    download_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_file(self) -> Path:
        return self.directory / f"evota-{self.starts}.log"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ocpp_url(self) -> str:
        return f"ws://127.0.0.1:{self.ocpp_port}/ocpp"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Cluster:
    """N evota nodes + HAProxy on one PostgreSQL database and one Redis (see module doc)."""

    def __init__(
        self,
        directory: Path,
        database_url: str,
        redis: RedisServer,
        *,
        nodes: int = 3,
        env: dict[str, str] | None = None,
        start_timeout: float = 90.0,
    ) -> None:
        self.directory = directory
        self.database_url = database_url
        self.redis = redis
        self.env = dict(env or {})
        self.start_timeout = start_timeout
        self.nodes = [
            NodeProcess(i, f"node{i + 1}", directory / f"node{i + 1}") for i in range(nodes)
        ]
        self.lb_http_port = free_port()
        self.lb_ocpp_port = free_port()
        self.lb_download_port = free_port()
        self.haproxy: subprocess.Popen[bytes] | None = None
        self.haproxy_config = directory / "haproxy.cfg"
        self.stats_socket = directory / "haproxy.sock"

    # -- addresses

    @property
    def http_url(self) -> str:
        """The API and console through the load balancer."""
        return f"http://127.0.0.1:{self.lb_http_port}"

    @property
    def ocpp_url(self) -> str:
        """Where chargers connect: the load balancer (append ``/<charger id>``)."""
        return f"ws://127.0.0.1:{self.lb_ocpp_port}/ocpp"

    def ports(self, node: int) -> dict[str, int]:
        n = self.nodes[node]
        return {"http": n.http_port, "ocpp": n.ocpp_port, "download": n.download_port}

    def api(self, node: int | None = None, token: str | None = TOKEN) -> httpx.AsyncClient:
        """An API client through the load balancer, or straight to one node."""
        base = self.http_url if node is None else self.nodes[node].http_url
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=base, headers=headers, timeout=15)

    # -- life cycle

    async def __aenter__(self) -> Cluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """The first node (it creates the keys and migrates), then the others, then HAProxy."""
        require_haproxy()
        first, *rest = self.nodes
        try:
            await self._start_node(first)
            for node in rest:
                self._copy_keys(first.data_dir, node.data_dir)
            await asyncio.gather(*(self._start_node(node) for node in rest))
            await self._start_haproxy()
        except BaseException:  # a failed start leaves no node running (they outlived the run)
            await self.stop()
            raise

    async def stop(self) -> None:
        """SIGTERM every node (a clean stop), then HAProxy; SIGKILL what does not stop."""
        for node in self.nodes:
            if node.alive:
                assert node.process is not None
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.process is not None:
                try:
                    await asyncio.to_thread(node.process.wait, 30)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    await asyncio.to_thread(node.process.wait, 10)
                node.process = None
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.kill()
            await asyncio.to_thread(self.haproxy.wait, 10)
        self.haproxy = None

    def kill(self, node: int) -> None:
        """SIGKILL: no clean stop, no released lease, no closing frames (a dead VM)."""
        n = self.nodes[node]
        assert n.process is not None
        n.process.kill()
        n.process.wait(10)

    async def terminate(self, node: int) -> None:
        """SIGTERM and wait: a clean stop."""
        n = self.nodes[node]
        assert n.process is not None
        n.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(n.process.wait, 30)

    async def restart(self, node: int) -> None:
        """Start a stopped or killed node again (same name and ports, a new incarnation)."""
        n = self.nodes[node]
        if n.alive:
            await self.terminate(node)
        await self._start_node(n)

    # -- waiting

    async def wait_until(
        self,
        condition: Callable[[], bool | Awaitable[bool]],
        timeout: float = 30.0,
        interval: float = 0.05,
        message: str = "",
    ) -> None:
        """Poll ``condition`` (sync or async) until true; fail with the nodes' logs if not."""
        deadline = time.monotonic() + timeout
        while True:
            result = condition()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            if time.monotonic() > deadline:
                logs = "\n".join(
                    f"--- {n.name} ({'up' if n.alive else 'down'})\n{n.log_tail(15)}"
                    for n in self.nodes
                )
                raise AssertionError(f"timed out after {timeout} s: {message}\n{logs}")
            await asyncio.sleep(interval)

    async def lb_servers(self) -> dict[str, dict[str, str]]:
        """HAProxy's view: backend -> server name -> status ("UP", "DOWN", ...)."""
        reply = await asyncio.to_thread(self._stats, "show stat\n")
        lines = reply.splitlines()
        header = lines[0].lstrip("# ").split(",")
        seen: dict[str, dict[str, str]] = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("svname") in (None, "", "FRONTEND", "BACKEND"):
                continue
            seen.setdefault(row["pxname"], {})[row["svname"]] = row.get("status", "")
        return seen

    async def wait_lb(self, node: int, status: str = "UP", timeout: float = 30.0) -> None:
        """Until HAProxy reports ``node`` with ``status`` in every backend."""
        name = self.nodes[node].name

        async def reached() -> bool:
            servers = await self.lb_servers()
            return bool(servers) and all(
                backend.get(name, "").startswith(status) for backend in servers.values()
            )

        await self.wait_until(reached, timeout, 0.1, f"{name} {status} in HAProxy")

    # -- internals

    def node_env(self, node: NodeProcess) -> dict[str, str]:
        env = {
            **os.environ,
            "COLUMNS": "200",
            "EVOTA_DATABASE_URL": self.database_url,
            "EVOTA_REDIS_URL": self.redis.url,
            "EVOTA_NODE_ID": node.name,
            "EVOTA_HOST": "127.0.0.1",
            "EVOTA_DOWNLOAD_PORT": str(node.download_port),
            "EVOTA_ADMIN_TOKEN": TOKEN,
            "EVOTA_PUBLIC_URL": f"http://127.0.0.1:{self.lb_download_port}",
            "EVOTA_UPLOAD_PUBLIC_URL": self.http_url,
            "EVOTA_OCPP_TRUSTED_PROXIES": '["127.0.0.1"]',
            "EVOTA_APPROVAL_ACTIONS": "[]",
            "EVOTA_AUTHORIZE_ALL": "true",
            "EVOTA_LOG_JSON": "true",
        }
        env.update(self.env)
        return env

    def _spawn_node(self, node: NodeProcess) -> subprocess.Popen[bytes]:
        with node.log_file.open("wb") as out:
            return subprocess.Popen(
                [
                    sys.executable, "-m", "evota", "serve",
                    "--data-dir", str(node.data_dir),
                    "--http-port", str(node.http_port),
                    "--ocpp-port", str(node.ocpp_port),
                ],
                env=self.node_env(node),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    async def _start_node(self, node: NodeProcess) -> None:
        node.directory.mkdir(parents=True, exist_ok=True)
        node.starts += 1
        node.process = self._spawn_node(node)
        deadline = time.monotonic() + self.start_timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if not node.alive:
                    raise RuntimeError(f"{node.name} exited at start:\n{node.log_tail()}")
                try:
                    r = await client.get(f"{node.http_url}/healthz")
                    if r.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{node.name} did not become healthy:\n{node.log_tail()}")
                await asyncio.sleep(0.1)

    @staticmethod
    def _copy_keys(source: Path, target: Path) -> None:
        copy_shared_files(source, target)

    def render_haproxy(self) -> str:
        """The deploy template with this cluster's addresses."""

        def servers(port: str) -> str:
            return "\n".join(
                f"    server {n.name} 127.0.0.1:{getattr(n, port)} check port {n.http_port}"
                for n in self.nodes
            )

        text = TEMPLATE.read_text()
        for marker, value in {
            "stats_socket": str(self.stats_socket),
            "bind": "127.0.0.1",
            "maxconn": "4000",
            "ocpp_port": str(self.lb_ocpp_port),
            "http_port": str(self.lb_http_port),
            "download_port": str(self.lb_download_port),
            "ocpp_servers": servers("ocpp_port"),
            "http_servers": servers("http_port"),
            "download_servers": servers("download_port"),
        }.items():
            text = text.replace("{{" + marker + "}}", value)
        assert "{{" not in text, "a marker of the HAProxy template was not filled in"
        return text

    async def _start_haproxy(self) -> None:
        assert HAPROXY is not None
        self.haproxy_config.write_text(self.render_haproxy())
        self.haproxy = self._spawn_haproxy()
        await self.wait_until(
            lambda: self.stats_socket.exists() or self.haproxy is None or not self._lb_alive(),
            10,
            message="HAProxy's stats socket",
        )
        if not self._lb_alive():
            log = (self.directory / "haproxy.log").read_text(errors="replace")
            raise RuntimeError(f"haproxy exited:\n{log}")
        for node in self.nodes:
            if node.alive:
                await self.wait_lb(node.index, "UP")

    def _spawn_haproxy(self) -> subprocess.Popen[bytes]:
        assert HAPROXY is not None
        with (self.directory / "haproxy.log").open("wb") as out:
            return subprocess.Popen(
                [HAPROXY, "-db", "-f", str(self.haproxy_config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _lb_alive(self) -> bool:
        return self.haproxy is not None and self.haproxy.poll() is None

    def _stats(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_socket))
            sock.sendall(command.encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()
