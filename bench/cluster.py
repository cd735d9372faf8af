"""Cluster benchmark (issue 15): evota nodes behind HAProxy on one PostgreSQL and one Redis.

Every figure is compared with a baseline measured in the same run:

1. **reconnect storm**: N simulated chargers (evota.sim, split over ``--procs`` processes)
   connect at once through HAProxy and each sends BootNotification and a StatusNotification
   per connector (0..n); the time until every one is accepted and persisted (read from the
   database: connected with a boot after the start, every connector's status row written).
   Baseline: one node, the same load, the same database contents (both copied from one
   provisioned template database).
2. **cross-node command latency**: ``--commands`` Soft Reset round trips through node A's
   API, alternating chargers held by node B and by node A (each charger once: it reboots).
3. **campaign at scale**: a campaign (waves 20 / 10% / 50% / 100%, like bench/campaign_e2e.py)
   over the whole fleet; evota's CPU per job = the node processes' user+system (/proc) ÷
   jobs. ``--campaign-baseline`` runs bench/campaign_e2e.py's single node in the same run.
4. **failover**: a gateway node (not the leader) is SIGKILLed: time until 99% (and 100%) of
   its chargers are claimed again by another node and accepted (Redis presence). Then, in
   the campaign's second wave, the runner leader is SIGKILLed: time to the new leader's lock
   and to the next gate evaluation (database), as tests/cluster/test_leader_failover.py.

Nodes run with evota's default cluster timings (node TTL 10 s, heartbeat 3 s). Uses
tests/cluster/harness.py (needs EVOTA_TEST_POSTGRES_URL, redis-server, haproxy, moto_server
for the shared firmware store).

    export EVOTA_TEST_POSTGRES_URL=postgresql+asyncpg://evota@127.0.0.1:55432/postgres
    .venv/bin/python bench/cluster.py --chargers 2000 --procs 2 --campaign-baseline
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from tests.cluster.harness import (  # noqa: E402
    HAPROXY,
    Cluster,
    create_database,
    drop_database,
    free_port,
)
from tests.conftest import PG_URL, TOKEN  # noqa: E402
from tests.redis_fixtures import RedisServer  # noqa: E402
from tests.s3_fixtures import S3Server  # noqa: E402

import loadgen  # noqa: E402
from evota.cluster.leader import asyncpg_dsn  # noqa: E402
from evota.cluster.presence import charger_key  # noqa: E402
from evota.firmware import signing  # noqa: E402
from evota.logging import configure as configure_logging  # noqa: E402
from evota.sim import Fleet, SiteSpec, fleet_from_flags  # noqa: E402
from evota.sim.charger import SimConfig  # noqa: E402
from evota.sim.fleet import FleetSpec  # noqa: E402

console = Console()
SIM = {
    "speed": 60.0,  # install 30 sim s = 0.5 s; heartbeats (EVOTA_HEARTBEAT_INTERVAL) 60 s
    "install_duration": 30.0,
    "reboot_delay": 30.0,  # 0.5 s offline after a Reset or an install
    "ping_interval": None,
    "call_timeout": 120.0,
    "open_timeout": 60.0,
    "backoff_initial": 0.5,
    "backoff_max": 5.0,
}
NODE_ENV = {
    "EVOTA_LOG_LEVEL": "warning",
    "EVOTA_LOG_JSON": "true",
    "EVOTA_HEARTBEAT_INTERVAL": "3600",
    "EVOTA_JOB_VERIFY_SECONDS": "1",
    # every simulated charger arrives from HAProxy on loopback: one address, as behind a NAT
    "EVOTA_OCPP_MAX_PREAUTH": "4096",
    "EVOTA_OCPP_MAX_PREAUTH_PER_ADDRESS": "4096",
}
WAVES = [{"count": 20}, {"percent": 10}, {"percent": 50}, {"percent": 100}]
POLICY = {
    "success_threshold": 0.8,
    "soak_seconds": 2,
    "health_window_seconds": 2,
    "max_per_site_fraction": 0.5,
}


def raise_nofile(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        with contextlib.suppress(ValueError, OSError):  # needs CAP_SYS_RESOURCE
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# HAProxy holds two files per proxied connection and refuses to start when its file limit
# (the container's hard limit: 20,000) is below 2 x maxconn + a few; a bigger storm is split
# over several HAProxy processes in front of the same nodes
LB_MAXCONN = 9000


class BenchCluster(Cluster):
    """The test harness's cluster with HAProxy sized for the storm, and as many more HAProxy
    processes (same nodes, own ports) as the storm needs (``lbs``)."""

    maxconn = 4000
    lbs = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.extra: list[subprocess.Popen[bytes]] = []
        self.extra_ports: list[int] = []

    def render_haproxy(self) -> str:
        return super().render_haproxy().replace("maxconn 4000", f"maxconn {self.maxconn}")

    @property
    def ocpp_urls(self) -> list[str]:
        """Where chargers connect: one URL per HAProxy process."""
        return [self.ocpp_url] + [f"ws://127.0.0.1:{p}/ocpp" for p in self.extra_ports]

    @property
    def lb_pids(self) -> list[int]:
        procs = ([self.haproxy] if self.haproxy is not None else []) + self.extra
        return [p.pid for p in procs]

    async def start(self) -> None:
        await super().start()
        base = self.render_haproxy()
        for k in range(1, self.lbs):
            ports = [free_port(), free_port(), free_port()]
            text = base.replace(str(self.stats_socket), str(self.directory / f"haproxy{k}.sock"))
            for old, new in zip(
                (self.lb_ocpp_port, self.lb_http_port, self.lb_download_port), ports, strict=True
            ):
                text = text.replace(f":{old}\n", f":{new}\n")
            cfg = self.directory / f"haproxy{k}.cfg"
            cfg.write_text(text)
            with (self.directory / f"haproxy{k}.log").open("wb") as out:
                proc = subprocess.Popen(  # noqa: ASYNC220
                    [str(HAPROXY), "-db", "-f", str(cfg)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.extra.append(proc)
            self.extra_ports.append(ports[0])
            sock = self.directory / f"haproxy{k}.sock"
            await self.wait_until(
                lambda s=sock, p=proc: s.exists() or p.poll() is not None,  # type: ignore[misc]
                10,
                message=f"HAProxy {k}'s stats socket",
            )
            if proc.poll() is not None:
                raise RuntimeError(f"haproxy {k} exited, see {cfg.parent}/haproxy{k}.log")
            await self.wait_until(
                lambda s=sock: self._ocpp_up(s),  # type: ignore[misc]
                30,
                message=f"HAProxy {k} seeing every node UP",
            )

    def _ocpp_up(self, sock: Path) -> bool:
        """Every node UP in the OCPP backend of the HAProxy behind stats socket ``sock``."""
        saved, self.stats_socket = self.stats_socket, sock
        try:
            rows = [r.split(",") for r in self._stats("show stat\n").splitlines()]
        finally:
            self.stats_socket = saved
        up = {r[1] for r in rows if len(r) > 17 and r[0] == "evota_ocpp" and r[17] == "UP"}
        return all(n.name in up for n in self.nodes)

    def marked_down(self) -> int:
        """Servers marked DOWN by a failed health check so far, over every HAProxy process
        (the stats' ``chkdown``): a node cut off while it was only busy shows here."""
        total = 0
        saved = self.stats_socket
        socks = [saved] + [self.directory / f"haproxy{k}.sock" for k in range(1, self.lbs)]
        try:
            for sock in socks:
                self.stats_socket = sock
                for row in (r.split(",") for r in self._stats("show stat\n").splitlines()):
                    if len(row) > 22 and row[1] not in ("FRONTEND", "BACKEND", "svname"):
                        total += int(row[22] or 0)
        except (OSError, ValueError):  # a benchmark figure, not worth failing the run for
            return -1
        finally:
            self.stats_socket = saved
        return total

    async def stop(self) -> None:
        for proc in self.extra:
            if proc.poll() is None:
                proc.kill()
                await asyncio.to_thread(proc.wait, 10)
        self.extra = []
        await super().stop()


def fleet_spec(args: argparse.Namespace, ca_pem: str) -> FleetSpec:
    sites = [SiteSpec(id=f"s{i}", name=f"Site {i}", timezone="UTC") for i in range(20)]
    base = fleet_from_flags(args.chargers, prefix="CL-", seed="cluster-bench", sites=sites)
    chargers = tuple(replace(c, firmware_roots=(ca_pem,)) for c in base.chargers)
    return replace(base, chargers=chargers)


# -- simulator processes ---------------------------------------------------------------------


def sim_worker(spec: FleetSpec, url: str, pipe: Any) -> None:
    """One process's share of the fleet; started, stopped and asked over ``pipe``."""
    raise_nofile(len(spec.chargers) + 1024)
    configure_logging("warning")
    asyncio.run(_sim_worker(spec, url, pipe))


async def _sim_worker(spec: FleetSpec, url: str, pipe: Any) -> None:
    fleet = Fleet.from_spec(spec, url, config=SimConfig(**SIM), ramp_up=0.0)  # type: ignore[arg-type]
    pipe.send(("ready", len(fleet)))
    while True:
        cmd = await loadgen._recv(pipe)
        if cmd[0] == "start":
            await fleet.start()
            try:
                await fleet.wait_for_all(lambda c: c.accepted, cmd[1], poll=0.1)
                pipe.send(("accepted", time.time(), ""))
            except Exception as exc:
                pipe.send(("accepted", None, str(exc)[:300]))
        elif cmd[0] == "versions":
            pipe.send(("versions", {c.identity: c.firmware_version for c in fleet}))
        elif cmd[0] == "stop":
            await fleet.stop()
            pipe.send(("stopped", fleet.summary().line()))
            return


class Sims:
    def __init__(self, spec: FleetSpec, urls: list[str], procs: int) -> None:
        ctx = mp.get_context("spawn")
        self.pipes: list[Any] = []
        self.procs: list[Any] = []
        for i in range(procs):
            part = replace(spec, chargers=spec.chargers[i::procs])
            parent, child = ctx.Pipe()
            url = urls[i % len(urls)]  # process i through HAProxy i (several: a big storm)
            proc = ctx.Process(target=sim_worker, args=(part, url, child), daemon=True)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)
        for pipe in self.pipes:
            assert pipe.recv()[0] == "ready"

    def ask(self, *cmd: Any, timeout: float = 600) -> list[Any]:
        for pipe in self.pipes:
            pipe.send(cmd)
        answers = []
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise TimeoutError(f"simulator did not answer {cmd[0]}")
            answers.append(pipe.recv())
        return answers

    def start(self, timeout: float) -> None:
        for pipe in self.pipes:
            pipe.send(("start", timeout))

    def accepted(self, timeout: float) -> tuple[float | None, str]:
        last: float | None = 0.0
        errors = []
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                return None, "simulator hung"
            _, at, err = pipe.recv()
            if at is None:
                last = None
                errors.append(err)
            elif last is not None:
                last = max(last, at)
        return last, "; ".join(errors)

    def stop(self) -> None:
        with contextlib.suppress(TimeoutError, OSError, EOFError):
            self.ask("stop", timeout=120)
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


# -- database and Redis readings -------------------------------------------------------------


async def pg(url: str) -> Any:
    import asyncpg  # type: ignore[import-untyped]

    return await asyncpg.connect(asyncpg_dsn(url))


async def clone_database(template: str) -> str:
    conn = await pg(PG_URL or "")
    name = "evota_bench_" + uuid.uuid4().hex[:12]
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template.rsplit("/", 1)[1]}"')
    finally:
        await conn.close()
    return (PG_URL or "").rsplit("/", 1)[0] + "/" + name


async def persisted(conn: Any, since: datetime) -> tuple[int, int]:
    """Chargers with a boot since ``since``, connector statuses written since.

    Not ``connected``: in a storm on several nodes, a charger whose first connection was
    dropped and taken over by another node can read ``connected = false`` afterwards (the
    old node's disconnect written after the new node's connect; 444 of 20,000 in one run,
    see docs/performance.md), which would hold the measurement until its timeout.
    """
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM chargers WHERE last_boot_at >= $1) AS b,"
        " (SELECT count(*) FROM connectors WHERE updated_at >= $1) AS s",
        since,
    )
    return int(row["b"]), int(row["s"])


async def connected_rows(conn: Any) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM chargers WHERE connected"))


async def owners(redis_url: str, ids: list[str]) -> dict[str, tuple[str, bool]]:
    """charger id -> (node name, accepted) from the presence claims."""
    from redis.asyncio import Redis

    r = Redis.from_url(redis_url, decode_responses=True)
    try:
        pipe = r.pipeline(transaction=False)
        for cid in ids:
            pipe.hmget(charger_key(cid), "name", "accepted")
        rows = await pipe.execute()
    finally:
        await r.aclose()
    return {cid: (row[0] or "", row[1] == "1") for cid, row in zip(ids, rows, strict=True)}


def node_cpu(cluster: Cluster) -> dict[int, float]:
    cpu = {}
    for n in cluster.nodes:
        if n.alive and n.process is not None:
            try:
                t = psutil.Process(n.process.pid).cpu_times()
                cpu[n.index] = t.user + t.system + t.children_user + t.children_system
            except psutil.NoSuchProcess:
                pass
    return cpu


def side_cpu(cluster: Cluster, sims: Sims) -> tuple[float, float]:
    """CPU seconds of the simulator processes and of HAProxy so far."""

    def cpu(pid: int | None) -> float:
        try:
            t = psutil.Process(pid).cpu_times()
        except (psutil.NoSuchProcess, ValueError):
            return 0.0
        return float(t.user + t.system)

    lbs = cluster.lb_pids if isinstance(cluster, BenchCluster) else []
    return sum(cpu(p.pid) for p in sims.procs), sum(cpu(p) for p in lbs)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))] if s else float("nan")


# -- the measurements ------------------------------------------------------------------------


async def storm(
    args: argparse.Namespace, template: str, spec: FleetSpec, nodes: int, env: dict[str, str]
) -> tuple[dict[str, Any], BenchCluster, Sims, str]:
    """Start ``nodes`` on a copy of the template, then every charger at once."""
    db = await clone_database(template)
    redis = RedisServer(args.tmp / f"redis-{nodes}")
    redis.start()
    cluster = BenchCluster(args.tmp / f"c{nodes}", db, redis, nodes=nodes, env=env)
    cluster.lbs = -(-args.chargers // args.lb_conns) if nodes > 1 else 1
    cluster.maxconn = min(-(-args.chargers // cluster.lbs) + 500, LB_MAXCONN + 500)
    if args.procs % cluster.lbs:
        raise SystemExit(f"--procs must be a multiple of the {cluster.lbs} HAProxy processes")
    try:
        await cluster.start()
    except BaseException:
        await cluster.stop()
        redis.stop()
        await drop_database(db)
        raise
    sims = Sims(spec, cluster.ocpp_urls, args.procs)
    expected_b = len(spec.chargers)
    expected_s = sum(c.connectors + 1 for c in spec.chargers)
    conn = await pg(db)
    cpu0, others0, idle0 = node_cpu(cluster), side_cpu(cluster, sims), psutil.cpu_times().idle
    spies = []
    if args.spy_storm and nodes in args.spy_nodes:
        spies = [
            py_spy(args, n, f"{args.spy_storm}.{nodes}-{n.name}.txt", args.spy_seconds, 100)
            for n in cluster.nodes
        ]
    since = datetime.now(UTC)
    t0 = time.time()
    sims.start(args.storm_timeout)
    done_at: float | None = None
    b = s = 0
    while time.time() - t0 < args.storm_timeout:
        b, s = await persisted(conn, since)
        if b >= expected_b and s >= expected_s:
            done_at = time.time()
            break
        await asyncio.sleep(0.2)
    cpu1, others1, idle1 = node_cpu(cluster), side_cpu(cluster, sims), psutil.cpu_times().idle
    accepted_at, err = sims.accepted(60)
    connected = await connected_rows(conn)
    await conn.close()
    for spy in spies:
        await asyncio.to_thread(spy.wait, args.spy_seconds + 60)
    result = {
        "nodes": nodes,
        "accepted_s": None if accepted_at is None else accepted_at - t0,
        "persisted_s": None if done_at is None else done_at - t0,
        "booted": b,
        "statuses": s,
        "connected_rows": connected,
        "expected": (expected_b, expected_s),
        "cpu_s": sum(cpu1.values()) - sum(cpu0.values()),
        "sim_cpu_s": others1[0] - others0[0],
        "haproxy_cpu_s": others1[1] - others0[1],
        "idle_s": idle1 - idle0,
        "error": err,
    }
    console.print(f"storm on {nodes} node(s): {result}")
    return result, cluster, sims, db


async def close(cluster: Cluster, sims: Sims, db: str) -> None:
    sims.stop()
    await cluster.stop()
    cluster.redis.stop()
    await drop_database(db)


async def latency(args: argparse.Namespace, cluster: Cluster, ids: list[str]) -> dict[str, Any]:
    where = await owners(cluster.redis.url, ids)
    a, b = cluster.nodes[0].name, cluster.nodes[1].name
    on_a = [cid for cid, (n, ok) in where.items() if n == a and ok]
    on_b = [cid for cid, (n, ok) in where.items() if n == b and ok]
    per = min(args.commands // 2, len(on_a), len(on_b))
    times: dict[str, list[float]] = {"B": [], "A": []}
    failed: dict[str, int] = {"B": 0, "A": 0}
    async with cluster.api(0) as api:
        for i in range(per):
            for label, cid in (("B", on_b[i]), ("A", on_a[i])):
                t = time.perf_counter()
                r = await api.post(
                    f"/api/v1/chargers/{cid}/commands/reset",
                    json={"type": "Soft", "reason": "bench"},
                )
                took = time.perf_counter() - t
                if r.status_code == 200:
                    times[label].append(took * 1000)
                else:
                    failed[label] += 1
                    if failed[label] == 1:
                        console.print(f"reset {cid} via {a}: {r.status_code} {r.text[:200]}")
    result = {"per_side": per, "times": times, "failed": failed}
    console.print(
        f"latency: {per} each; B p50 {pct(times['B'], 0.5):.1f} p99 {pct(times['B'], 0.99):.1f}"
        f"; A p50 {pct(times['A'], 0.5):.1f} p99 {pct(times['A'], 0.99):.1f}; failed {failed}"
    )
    return result


async def gateway_failover(cluster: Cluster, ids: list[str], leader: str) -> dict[str, Any]:
    where = await owners(cluster.redis.url, ids)
    counts = {n.name: sum(1 for v in where.values() if v[0] == n.name) for n in cluster.nodes}
    victim = max(
        (n for n in cluster.nodes if n.name != leader), key=lambda n: counts.get(n.name, 0)
    )
    moved = [cid for cid, (n, _) in where.items() if n == victim.name]
    t0 = time.monotonic()
    cluster.kill(victim.index)
    marks: dict[str, float] = {}
    while time.monotonic() - t0 < 120:
        now = await owners(cluster.redis.url, moved)
        back = sum(1 for n, ok in now.values() if n and n != victim.name and ok)
        for name, share in (("50%", 0.5), ("99%", 0.99), ("100%", 1.0)):
            if name not in marks and back >= share * len(moved):
                marks[name] = time.monotonic() - t0
        if "100%" in marks:
            break
        await asyncio.sleep(0.1)
    result = {"victim": victim.name, "chargers": len(moved), "marks": marks, "counts": counts}
    console.print(f"gateway failover: {result}")
    await cluster.restart(victim.index)
    await cluster.wait_lb(victim.index, "UP")
    return result


async def leader_of(db: str) -> tuple[str, int, datetime]:
    conn = await pg(db)
    try:
        row = await conn.fetchrow("SELECT node, token, since FROM cluster_leader WHERE id = 1")
    finally:
        await conn.close()
    if row is None:
        return "", 0, datetime.min.replace(tzinfo=UTC)
    return str(row["node"]).split(":")[0], int(row["token"]), row["since"]


async def campaign(
    args: argparse.Namespace, cluster: Cluster, db: str, keys: dict[str, Any]
) -> dict[str, Any]:
    async with cluster.api() as api:
        api.timeout = 120  # type: ignore[assignment]
        r = await api.post(
            "/api/v1/firmware/trusted-roots",
            json={"vendor": "Evota", "certificate": keys["ca_pem"]},
        )
        assert r.status_code in (200, 201, 409), r.text
        image = args.tmp / "fw.bin"
        image.write_bytes(b"EVOTA-SIM-FIRMWARE 2.0.0\n" + os.urandom(args.image_kb * 1024))
        with image.open("rb") as f:
            r = await api.post(
                "/api/v1/firmware",
                data={
                    "vendor": "Evota",
                    "version": "2.0.0",
                    "models": ["Sim-AC22"],
                    "signature": signing.sign_file(image, keys["key"]),
                    "signing_certificate": keys["cert"].decode(),
                },
                files={"file": ("fw.bin", f)},
            )
        assert r.status_code == 201, r.text
        policy = dict(POLICY)
        if args.max_concurrent:  # updates at once, sized to the download caps
            policy["max_concurrent"] = args.max_concurrent
        body = {"name": "bench", "firmware_id": r.json()["id"], "waves": WAVES, "policy": policy}
        r = await api.post("/api/v1/campaigns", json=body)
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        cpu0 = node_cpu(cluster)
        down0 = cluster.marked_down() if isinstance(cluster, BenchCluster) else 0
        t0 = time.perf_counter()
        r = await api.post(f"/api/v1/campaigns/{cid}/start", json={"reason": "bench"})
        assert r.status_code == 200, r.text
        killed: dict[str, Any] = {}
        cpu_dead = 0.0
        api_errors = 0  # status polls the balancer answered with an error or dropped
        while True:
            try:
                r = await api.get(f"/api/v1/campaigns/{cid}")
            except httpx.TransportError:  # the balancer dropped the request: ask again
                api_errors += 1
                await asyncio.sleep(0.5)
                continue
            if r.status_code != 200:  # HAProxy noticing a killed node: 503 for a moment
                api_errors += 1
                await asyncio.sleep(0.2)
                continue
            c = r.json()
            if c["state"] != "running":
                break
            if time.perf_counter() - t0 > args.campaign_timeout:
                console.print(f"campaign still running after {args.campaign_timeout:.0f} s")
                break
            if args.kill_leader and not killed and c["current_wave"] >= 1:
                leader, token, _ = await leader_of(db)
                victim = next(n for n in cluster.nodes if n.name == leader)
                before = node_cpu(cluster)
                cpu_dead = before.get(victim.index, 0.0) - cpu0.get(victim.index, 0.0)
                killed = {"node": leader, "token": token, "at": datetime.now(UTC)}
                killed["mono"] = time.monotonic()
                cluster.kill(victim.index)
                cpu0.pop(victim.index, None)
            if killed and "took_over" not in killed:
                name, token, since = await leader_of(db)
                if name != killed["node"] and token > killed["token"]:
                    killed["took_over"] = time.monotonic() - killed["mono"]
                    killed["lock_s"] = (since - killed["at"]).total_seconds()
            await asyncio.sleep(0.5)
        wall = time.perf_counter() - t0
        cpu1 = node_cpu(cluster)
        by_node = {i: round(v - cpu0[i], 1) for i, v in cpu1.items() if i in cpu0}
        cpu = cpu_dead + sum(by_node.values())
    jobs = sum(n for w in c["waves"] for state, n in w["jobs"].items() if state != "pending")
    succeeded = sum(w["jobs"].get("succeeded", 0) for w in c["waves"])
    gate_s = None
    if killed:
        conn = await pg(db)
        try:
            at = await conn.fetchval(
                "SELECT min(at) FROM gate_evaluations WHERE campaign_id = $1 AND at > $2",
                cid,
                killed["at"],
            )
        finally:
            await conn.close()
        gate_s = None if at is None else (at - killed["at"]).total_seconds()
    down = (cluster.marked_down() if isinstance(cluster, BenchCluster) else 0) - down0
    result = {
        "api_errors": api_errors,
        "lb_marked_down": down,
        "state": c["state"],
        "reason": c.get("state_reason"),
        "waves": " ".join(str(w["size"]) for w in c["waves"]),
        "jobs": jobs,
        "succeeded": succeeded,
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_by_node": by_node,
        "killed": {k: v for k, v in killed.items() if k not in ("at", "mono")},
        "gate_s": gate_s,
    }
    console.print(f"campaign: {result}")
    return result


def campaign_baseline(args: argparse.Namespace) -> dict[str, Any]:
    """bench/campaign_e2e.py's single node (SQLite), same number of chargers, this run."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(BENCH / "campaign_e2e.py"), "--chargers", str(args.baseline_chargers)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=1800,
        check=False,
    )
    row = next((line for line in out.stdout.splitlines() if "completed" in line), "")
    nums = re.findall(r"[\d.]+", row.split("│", 3)[-1] if "│" in row else row)
    result: dict[str, Any] = {"raw": row.strip() or out.stdout[-500:] + out.stderr[-500:]}
    if len(nums) >= 4:
        result |= {
            "jobs": int(nums[-4]),
            "wall_s": float(nums[-3]),
            "cpu_s": float(nums[-2]),
            "ms_per_job": float(nums[-1]),
        }
    result["took_s"] = time.perf_counter() - t0
    console.print(f"campaign baseline: {result}")
    return result


# -- report ----------------------------------------------------------------------------------


def fmt(x: float | None, unit: str = "s", digits: int = 1) -> str:
    return "—" if x is None else f"{x:.{digits}f} {unit}".strip()


def ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or not b else f"{a / b:.2f}×"


def report(args: argparse.Namespace, res: dict[str, Any]) -> None:
    n = args.chargers
    if 3 in res.get("storm", {}):
        three = res["storm"][3]
        one = res["storm"].get(1) or {k: None for k in three} | {"booted": "—", "statuses": "—"}
        t = Table(title=f"reconnect storm: {n} chargers at once through HAProxy")
        for col in ("", "1 node", "3 nodes", "3 / 1"):
            t.add_column(col)
        t.add_row(
            "all accepted (simulator)",
            fmt(one["accepted_s"]),
            fmt(three["accepted_s"]),
            ratio(three["accepted_s"], one["accepted_s"]),
        )
        t.add_row(
            "all booted + statuses persisted",
            fmt(one["persisted_s"]),
            fmt(three["persisted_s"]),
            ratio(three["persisted_s"], one["persisted_s"]),
        )
        t.add_row(
            "evota CPU (all nodes)",
            fmt(one["cpu_s"]),
            fmt(three["cpu_s"]),
            ratio(three["cpu_s"], one["cpu_s"]),
        )
        t.add_row(
            "evota CPU per charger",
            fmt(None if one["cpu_s"] is None else 1000 * one["cpu_s"] / n, "ms", 2),
            fmt(1000 * three["cpu_s"] / n, "ms", 2),
            "",
        )
        for label, k in (("simulator CPU", "sim_cpu_s"), ("HAProxy CPU", "haproxy_cpu_s")):
            t.add_row(label, fmt(one[k]), fmt(three[k]), "")
        t.add_row(
            "machine idle CPU (2 cores) until persisted",
            fmt(one["idle_s"]),
            fmt(three["idle_s"]),
            "",
        )
        t.add_row(
            "rows seen (booted / statuses)",
            f"{one['booted']} / {one['statuses']}",
            f"{three['booted']} / {three['statuses']}",
            f"of {three['expected'][0]} / {three['expected'][1]}",
        )
        console.print(t)
        for r in (one, three):
            if r["error"]:
                console.print(f"  {r['nodes']} node(s): {r['error']}")
    if "latency" in res:
        lat = res["latency"]
        t = Table(title=f"Soft Reset round trips through node A's API ({lat['per_side']} each)")
        for col in ("charger on", "p50 ms", "p99 ms", "failed", "p50 vs same node"):
            t.add_column(col)
        a50 = pct(lat["times"]["A"], 0.5)
        for label, name in (("A", "node A (same)"), ("B", "node B (routed)")):
            v = lat["times"][label]
            t.add_row(
                name,
                f"{pct(v, 0.5):.1f}",
                f"{pct(v, 0.99):.1f}",
                str(lat["failed"][label]),
                ratio(pct(v, 0.5), a50),
            )
        console.print(t)
    if "campaign" in res:
        c = res["campaign"]
        t = Table(title=f"campaign over {n} chargers")
        for col in ("run", "state", "waves", "jobs", "wall s", "evota CPU s", "CPU ms / job"):
            t.add_column(col)
        t.add_row(
            "3 nodes" + (" (leader killed in wave 2)" if c["killed"] else ""),
            c["state"],
            c["waves"],
            f"{c['jobs']} ({c['succeeded']} ok)",
            f"{c['wall_s']:.1f}",
            f"{c['cpu_s']:.1f}",
            f"{1000 * c['cpu_s'] / max(1, c['jobs']):.1f}",
        )
        base = res.get("campaign_baseline")
        if base and "ms_per_job" in base:
            t.add_row(
                f"1 node, SQLite (campaign_e2e.py, {args.baseline_chargers} chargers)",
                "completed",
                "",
                str(base["jobs"]),
                f"{base['wall_s']:.1f}",
                f"{base['cpu_s']:.1f}",
                f"{base['ms_per_job']:.1f}",
            )
        console.print(t)
        if base and "ms_per_job" in base:
            console.print(
                "  CPU per job, 3 nodes / 1 node: "
                + ratio(1000 * c["cpu_s"] / max(1, c["jobs"]), base["ms_per_job"])
            )
        elif base:
            console.print(f"  baseline did not finish: {base['raw']}")
    if "gateway" in res or ("campaign" in res and res["campaign"]["killed"]):
        t = Table(title="failover (SIGKILL)")
        for col in ("what", "measured"):
            t.add_column(col)
        g = res.get("gateway")
        if g:
            for mark in ("50%", "99%", "100%"):
                t.add_row(
                    f"gateway {g['victim']} ({g['chargers']} chargers): {mark} back",
                    fmt(g["marks"].get(mark)),
                )
        c = res.get("campaign")
        if c and c["killed"]:
            k = c["killed"]
            t.add_row(
                f"runner leader {k['node']}: lock taken by another node",
                fmt(k.get("lock_s"), "s", 2),
            )
            t.add_row(
                "runner leader: new leader seen (0.5 s polls)", fmt(k.get("took_over"), "s", 2)
            )
            t.add_row("runner leader: next gate evaluation", fmt(c["gate_s"], "s", 2))
        console.print(t)
    la = os.getloadavg()
    console.print(f"load average at the end: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")


async def main(args: argparse.Namespace) -> None:
    if not PG_URL:
        raise SystemExit("set EVOTA_TEST_POSTGRES_URL (the cluster runs on PostgreSQL)")
    raise_nofile(4 * args.chargers + 4096)
    configure_logging("warning")
    args.tmp = Path(tempfile.mkdtemp(prefix="evota-cluster-bench-"))
    console.print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC, {os.cpu_count()} CPUs, load "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, {args.chargers} chargers, "
        f"{args.procs} simulator processes"
    )
    ca_key, ca_cert = signing.generate_ca("Bench Root", "Bench")
    key, cert = signing.generate_signing_key("Bench", "Bench", ca_key=ca_key, ca_cert=ca_cert)
    keys: dict[str, Any] = {"ca_pem": ca_cert.decode(), "key": key, "cert": cert}
    spec = fleet_spec(args, keys["ca_pem"])
    ids = [c.identity for c in spec.chargers]

    # the template: migrated and provisioned once, copied for each storm
    template = await create_database()
    redis = RedisServer(args.tmp / "redis-t")
    redis.start()
    t0 = time.perf_counter()
    async with Cluster(args.tmp / "template", template, redis, nodes=1, env=NODE_ENV) as c:
        await Fleet.from_spec(spec, c.ocpp_url).provision(c.http_url, TOKEN, concurrency=32)
    redis.stop()
    console.print(f"provisioned {len(ids)} chargers in {time.perf_counter() - t0:.0f} s")

    s3 = S3Server()
    s3.start()
    bucket = "evota-bench-" + uuid.uuid4().hex[:8]
    s3.client().create_bucket(Bucket=bucket)
    env = {
        **NODE_ENV,
        "EVOTA_FIRMWARE_STORE": f"s3://{bucket}/evota",
        "EVOTA_S3_ENDPOINT_URL": s3.url,
        "EVOTA_S3_REGION": "us-east-1",
        "EVOTA_S3_ACCESS_KEY_ID": "evota-test-key",
        "EVOTA_S3_SECRET_ACCESS_KEY": "evota-test-secret-never-logged",
    }
    res: dict[str, Any] = {"storm": {}}
    if args.idle:
        try:
            await idle(args, template, spec, env)
        finally:
            s3.stop()
            await drop_database(template)
        return
    try:
        if not args.skip_single:
            r1, c1, sims1, db1 = await storm(args, template, spec, 1, env)
            res["storm"][1] = r1
            await close(c1, sims1, db1)
        r3, c3, sims, db = await storm(args, template, spec, 3, env)
        res["storm"][3] = r3
        try:
            if args.storm_only:
                return
            if args.commands:
                res["latency"] = await latency(args, c3, ids)
                # the reset chargers reboot; wait until all are back before the next part
                await wait_all_accepted(c3, ids)
            leader, _, _ = await leader_of(db)
            res["gateway"] = await gateway_failover(c3, ids, leader)
            await wait_all_accepted(c3, ids)
            if not args.no_campaign:
                res["campaign"] = await campaign(args, c3, db, keys)
        finally:
            await close(c3, sims, db)
        if args.campaign_baseline and not args.storm_only:
            res["campaign_baseline"] = campaign_baseline(args)
    finally:
        s3.stop()
        await drop_database(template)
        report(args, res)


def py_spy(
    args: argparse.Namespace, node: Any, out: str, seconds: float, rate: int
) -> subprocess.Popen[bytes]:
    """py-spy recording ``node``'s process for ``seconds`` (.json speedscope, .svg
    flamegraph, else collapsed stacks); it samples from outside the process."""
    fmt_ = {".json": "speedscope", ".svg": "flamegraph"}.get(Path(out).suffix, "raw")
    return subprocess.Popen(
        [args.py_spy_bin, "record", "--pid", str(node.process.pid), "--rate", str(rate),
         "--duration", str(int(seconds)), "--format", fmt_, "--output", out, "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def idle(
    args: argparse.Namespace, template: str, spec: FleetSpec, env: dict[str, str]
) -> None:
    """Three nodes holding the whole fleet, connected and doing nothing, for ``--idle`` s.

    Reports each node's CPU over the window (the runner leader marked) after a settle time;
    with ``--py-spy FILE`` the leader is recorded by py-spy meanwhile (.json speedscope,
    .svg flamegraph, else collapsed stacks).
    """
    _, cluster, sims, db = await storm(args, template, spec, 3, env)
    try:
        await asyncio.sleep(args.settle)
        leader, _, _ = await leader_of(db)
        spy = None
        lead = next(n for n in cluster.nodes if n.name == leader)
        if args.py_spy:
            spy = py_spy(args, lead, args.py_spy, args.idle, 200)
        cpu0, t0 = node_cpu(cluster), time.monotonic()
        await asyncio.sleep(args.idle)
        cpu1, wall = node_cpu(cluster), time.monotonic() - t0
        if spy is not None:
            await asyncio.to_thread(spy.wait, 60)
        t = Table(title=f"idle: 3 nodes holding {args.chargers} chargers, {wall:.0f} s")
        for col in ("node", "CPU s", "cores"):
            t.add_column(col)
        for n in cluster.nodes:
            used = cpu1.get(n.index, 0.0) - cpu0.get(n.index, 0.0)
            name = n.name + (" (runner leader)" if n.name == leader else "")
            t.add_row(name, f"{used:.2f}", f"{used / wall:.3f}")
        console.print(t)
        la = os.getloadavg()
        console.print(f"load average at the end: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    finally:
        await close(cluster, sims, db)


async def wait_all_accepted(cluster: Cluster, ids: list[str], timeout: float = 180) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        live = {n.name for n in cluster.nodes if n.alive}
        where = await owners(cluster.redis.url, ids)
        if all(n in live and ok for n, ok in where.values()):
            return
        await asyncio.sleep(0.5)
    console.print("not every charger came back within the timeout")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--chargers", type=int, default=2000)
    p.add_argument("--procs", type=int, default=2, help="simulator processes")
    p.add_argument("--commands", type=int, default=1000, help="Reset round trips (0: skip)")
    p.add_argument("--storm-timeout", type=float, default=600.0)
    p.add_argument("--image-kb", type=int, default=256)
    p.add_argument("--no-campaign", action="store_true")
    p.add_argument(
        "--lb-conns", type=int, default=LB_MAXCONN, help="chargers per HAProxy process at most"
    )
    p.add_argument("--storm-only", action="store_true", help="the two storms, nothing after")
    p.add_argument(
        "--skip-single",
        action="store_true",
        help="no one-node storm (one process cannot hold 20,000 sockets under a 20,000 file limit)",
    )
    p.add_argument("--kill-leader", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--max-concurrent", type=int, default=0, help="campaign policy (0: none)")
    p.add_argument("--campaign-timeout", type=float, default=7200.0, help="stop polling after")
    p.add_argument("--campaign-baseline", action="store_true", help="run bench/campaign_e2e.py too")
    p.add_argument(
        "--idle", type=float, default=0.0, help="only: 3 nodes holding the fleet idle, N s"
    )
    p.add_argument("--settle", type=float, default=20.0, help="--idle: wait before measuring")
    p.add_argument("--py-spy", default="", help="--idle: record the leader to this file")
    p.add_argument(
        "--spy-storm", default="", help="record each node's storm with py-spy: PREFIX.N-node.txt"
    )
    p.add_argument("--spy-seconds", type=float, default=30.0, help="--spy-storm: how long")
    p.add_argument(
        "--spy-nodes", type=int, nargs="+", default=[1, 3], help="--spy-storm: which storms"
    )
    p.add_argument("--py-spy-bin", default="/tmp/pyspy/bin/py-spy")
    p.add_argument("--baseline-chargers", type=int, default=2000, help="its fleet (docs: 2,000)")
    asyncio.run(main(p.parse_args()))
