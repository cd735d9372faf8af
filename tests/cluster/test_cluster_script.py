"""``./scripts/cluster`` comes up (PostgreSQL, Redis, HAProxy, three nodes, a fleet spread over
them), prints what it promises, and stops everything it started on Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cluster.harness import require_haproxy
from tests.redis_fixtures import REDIS
from tests.support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
CHARGERS = 20


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_base(span: int = 41) -> int:
    """A run of ``span`` free ports in this worker's block: the script's layout takes 40 from
    its base, the chargers' port is the 41st."""
    while True:
        base = free_port()
        if base % 1000 <= 1000 - span and all(_bindable(base + i) for i in range(span)):
            return base


@pytest.fixture
def cluster_dir() -> Iterator[Path]:
    """A directory PostgreSQL's own user can reach (pytest's tmp_path is private to root)."""
    if not (PG_BIN / "postgres").exists() or REDIS is None:
        pytest.skip("PostgreSQL 15 and redis-server are needed (scripts/test installs them)")
    require_haproxy()
    path = Path(tempfile.mkdtemp(prefix="evota-cluster-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_scripts_cluster_comes_up_spreads_the_fleet_and_stops_on_ctrl_c(
    cluster_dir: Path,
) -> None:
    base = port_base()
    ocpp = base + 40
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / "scripts" / "cluster"),
        "--chargers", str(CHARGERS), "--dir", str(cluster_dir),
        "--port-base", str(base), "--ocpp-port", str(ocpp),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(240):
            while not any("Press Ctrl-C" in line for line in seen):
                line = (await proc.stdout.readline()).decode()
                if not line:
                    errors = (await proc.stderr.read()).decode()
                    raise AssertionError(f"scripts/cluster exited early: {''.join(seen)}{errors}")
                seen.append(line)
        banner = "".join(seen)
        console = re.search(r"^  console\s+(http://127\.0\.0\.1:\d+)/", banner, re.M)
        token = re.search(r"^  admin token\s+(\S+)$", banner, re.M)
        spread = re.search(r"connected: node1 (\d+), node2 (\d+), node3 (\d+)$", banner, re.M)
        assert console and token and spread, banner
        assert console.group(1) == f"http://127.0.0.1:{base}"
        assert "firmware store s3://evota/firmware" in banner, banner  # one bucket for all
        counts = [int(n) for n in spread.groups()]
        assert sum(counts) == CHARGERS and min(counts) > 0, counts  # spread over every node
        async with httpx.AsyncClient(
            base_url=console.group(1), headers={"Authorization": f"Bearer {token.group(1)}"}
        ) as api:
            page = (await api.get("/api/v1/chargers", params={"limit": 1})).json()
            assert page["total"] == CHARGERS, page
        logins = dict(re.findall(r"console login\s+(\w+) / (\S+)", banner))
        assert set(logins) == {"ann", "ben"}, banner
        async with httpx.AsyncClient(base_url=console.group(1)) as browser:
            r = await browser.post(
                "/api/v1/auth/login", json={"username": "ann", "password": logins["ann"]}
            )
            assert r.status_code == 200, r.text
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(proc.stderr.read(), 120)
        code = await proc.wait()
    assert code == 0, rest.decode()
    assert b"Traceback" not in rest and rest.decode().rstrip().endswith("stopped"), rest
    # Everything it started is gone: the balancer, every node, S3, Redis and PostgreSQL.
    ports = [base, base + 1, ocpp, base + 2, base + 3, base + 4]
    ports += [base + offset + i for offset in (10, 20, 30) for i in (1, 2, 3)]
    assert [p for p in ports if _listening(p)] == []
    assert not (cluster_dir / "postgres" / "postmaster.pid").exists()
