"""Gateway benchmark: evota against a plain ``ocpp`` central system and ``ocpp-rpc`` strict.

N simulated chargers each keep one CALL outstanding, back to back: StatusNotification with
``--protocol ocpp1.6`` (the default), TransactionEvent(Updated) with seven sampled values
with ``--protocol ocpp2.0.1`` (every server then speaks 2.0.1). For
each server (started here as a separate process on loopback ports, one after the other in
the same run) it reports msg/s, p50/p99 round trip, CALLERRORs and other anomalies, server
and client CPU, server RSS; and, in memory mode, the server RSS added per idle authenticated
connection. See bench/README.md for what each column means and the caveats.

    python bench/gateway.py --connections 200 --duration 10 --servers evota,plain-ocpp,ocpp-rpc
    python bench/gateway.py --mode memory --idle-connections 10000
    python bench/gateway.py --protocol ocpp2.0.1 --connections 200 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import json
import multiprocessing as mp
import os
import platform
import resource
import secrets
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
NODE_DIR = BENCH / "node"
VENV_BIN = ROOT / ".venv" / "bin"
RESULTS = BENCH / "results"
ALL_SERVERS = ("evota", "plain-ocpp", "ocpp-rpc")
LOAD_MESSAGE = {
    "ocpp1.6": "StatusNotification (status alternating Available/Preparing)",
    "ocpp2.0.1": "TransactionEvent(Updated) with 7 sampled values, one transaction per charger",
}
OCPP_PATH = "/ocpp/"  # ws://HOST:PORT/ocpp/{chargerId}; the baselines take the last segment


class ServerUnavailable(Exception):
    """The server could not be started or prepared; the run goes on without it."""


# -- processes -----------------------------------------------------------------------------


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def tree(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss(pid: int) -> int:
    total = 0
    for p in tree(pid):
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def tree_cpu(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def event_loop_of(pid: int) -> str:
    """For Python servers: is uvloop mapped into the process (tree)? Reported, not judged."""
    procs = tree(pid)
    try:
        if not procs or "python" not in procs[0].exe():
            return ""
    except psutil.Error:
        return ""
    for p in procs:
        try:
            maps = Path(f"/proc/{p.pid}/maps").read_text()
        except OSError:
            continue
        if "uvloop" in maps:
            return "uvloop"
    return "asyncio"


def median_rss(pid: int, samples: int = 3, interval: float = 0.5) -> int:
    values = []
    for i in range(samples):
        if i:
            time.sleep(interval)
        values.append(tree_rss(pid))
    return int(statistics.median(values))


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Running:
    name: str
    proc: subprocess.Popen
    host: str
    ocpp_port: int
    http_port: int | None
    log_path: Path
    log_file: Any

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise ServerUnavailable(
                f"{self.name} exited with code {self.proc.returncode}; log tail:\n"
                + log_tail(self.log_path)
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            # start_new_session=True made the server the leader of its own process group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log_file.close()


class ServerKind:
    name = ""

    def __init__(self, args: argparse.Namespace, cpus: list[int] | None) -> None:
        self.args = args
        self.cpus = cpus

    def check(self) -> None:
        """Raise ServerUnavailable if it cannot run here."""

    def command(self, ocpp_port: int, http_port: int | None) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def wants_http_port(self) -> bool:
        return False

    def versions(self) -> str:
        return ""

    def start(self, tag: str) -> Running:
        host = self.args.host
        ocpp_port = free_port(host)
        http_port = free_port(host) if self.wants_http_port() else None
        argv, env = self.command(ocpp_port, http_port)
        RESULTS.mkdir(parents=True, exist_ok=True)
        log_path = RESULTS / f"{self.name}-{tag}.log"
        log_file = open(log_path, "w")  # noqa: SIM115 (closed in Running.stop)
        cpus = self.cpus

        def preexec() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)

        proc = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,
            cwd=ROOT,
        )
        run = Running(self.name, proc, host, ocpp_port, http_port, log_path, log_file)
        try:
            self.wait_ready(run)
        except BaseException:
            run.stop()
            raise
        return run

    def wait_ready(self, run: Running) -> None:
        deadline = time.monotonic() + self.args.startup_timeout
        while time.monotonic() < deadline:
            run.check_alive()
            try:
                with socket.create_connection((run.host, run.ocpp_port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise ServerUnavailable(f"{self.name} did not listen within {self.args.startup_timeout}s")

    def prepare_chargers(self, run: Running, chargers: list[tuple[str, str]]) -> bool:
        """Make the server know these chargers (only evota needs it). True if it did work."""
        return False


class PlainOcpp(ServerKind):
    name = "plain-ocpp"

    def command(self, ocpp_port: int, http_port: int | None) -> tuple[list[str], dict[str, str]]:
        python = VENV_BIN / "python"
        argv = [
            str(python if python.exists() else sys.executable),
            str(BENCH / "plain_ocpp_csms.py"),
            "--host", self.args.host,
            "--port", str(ocpp_port),
            "--log-level", self.args.server_log_level,
            "--protocol", self.args.protocol,
        ]  # fmt: skip
        return argv, {}

    def versions(self) -> str:
        return f"ocpp {_dist_version('ocpp')}, websockets {_dist_version('websockets')}"


class OcppRpc(ServerKind):
    name = "ocpp-rpc"

    def check(self) -> None:
        if not _which("node"):
            raise ServerUnavailable("node is not installed")
        if not (NODE_DIR / "node_modules" / "ocpp-rpc" / "package.json").exists():
            print("bench/node/node_modules missing: running npm ci", flush=True)
            r = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund"],
                cwd=NODE_DIR,
                capture_output=True,
                text=True,
            )
            if r.returncode != 0:
                raise ServerUnavailable(f"npm ci failed: {r.stderr.strip()[-500:]}")

    def command(self, ocpp_port: int, http_port: int | None) -> tuple[list[str], dict[str, str]]:
        argv = [
            "node", str(NODE_DIR / "ocpp_rpc_server.js"),
            "--host", self.args.host,
            "--port", str(ocpp_port),
        ]  # fmt: skip
        return argv, {}

    def versions(self) -> str:
        try:
            pkg = json.loads((NODE_DIR / "node_modules/ocpp-rpc/package.json").read_text())
            ws = json.loads((NODE_DIR / "node_modules/ws/package.json").read_text())
            return f"ocpp-rpc {pkg['version']}, ws {ws['version']}, node {_node_version()}"
        except (OSError, KeyError, ValueError):
            return f"node {_node_version()}"


class Evota(ServerKind):
    name = "evota"

    def __init__(self, args: argparse.Namespace, cpus: list[int] | None) -> None:
        super().__init__(args, cpus)
        self.token = secrets.token_urlsafe(24)
        self.data_dir = Path(tempfile.mkdtemp(prefix="evota-bench-"))
        self.provisioned: set[str] = set()
        self.binary = VENV_BIN / "evota"

    def check(self) -> None:
        if not self.binary.exists():
            raise ServerUnavailable(f"{self.binary} does not exist")
        try:
            r = subprocess.run(
                [str(self.binary), "serve", "--help"],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=ROOT,
            )
        except subprocess.TimeoutExpired:
            raise ServerUnavailable("`evota serve --help` timed out") from None
        if r.returncode != 0:
            err = (r.stderr or r.stdout).strip().splitlines()
            why = err[-1] if err else f"exit {r.returncode}"
            raise ServerUnavailable(f"`evota serve` is not available yet: {why}")

    def wants_http_port(self) -> bool:
        return True

    def command(self, ocpp_port: int, http_port: int | None) -> tuple[list[str], dict[str, str]]:
        argv = [
            str(self.binary), "serve",
            "--data-dir", str(self.data_dir),
            "--http-port", str(http_port),
            "--ocpp-port", str(ocpp_port),
        ]  # fmt: skip
        env = {
            "EVOTA_ADMIN_TOKEN": self.token,
            "EVOTA_LOG_LEVEL": self.args.server_log_level,
            # every simulated charger connects from loopback: one source, as behind one NAT
            "EVOTA_OCPP_MAX_PREAUTH_PER_ADDRESS": "512",
        }
        return argv, env

    def wait_ready(self, run: Running) -> None:
        deadline = time.monotonic() + self.args.startup_timeout
        url = f"http://{run.host}:{run.http_port}/healthz"
        while time.monotonic() < deadline:
            run.check_alive()
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise ServerUnavailable(f"evota /healthz not 200 within {self.args.startup_timeout}s")
        # The OCPP listener may come up separately from the HTTP one.
        super().wait_ready(run)

    def prepare_chargers(self, run: Running, chargers: list[tuple[str, str]]) -> bool:
        todo = [c for c in chargers if c[0] not in self.provisioned]
        if not todo:
            return False
        t0 = time.perf_counter()
        asyncio.run(self._provision(run, todo))
        self.provisioned.update(c[0] for c in todo)
        print(f"  provisioned {len(todo)} chargers in {time.perf_counter() - t0:.1f}s", flush=True)
        return True

    async def _provision(self, run: Running, chargers: list[tuple[str, str]]) -> None:
        sem = asyncio.Semaphore(16)
        headers = {"Authorization": f"Bearer {self.token}"}
        limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
        base = f"http://{run.host}:{run.http_port}"
        async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as client:

            async def one(ident: str, key: str) -> None:
                async with sem:
                    r = await client.post(
                        "/api/v1/chargers", json={"id": ident, "auth_key": key}, timeout=30
                    )
                if r.status_code != 201:
                    raise ServerUnavailable(
                        f"POST /api/v1/chargers {ident}: HTTP {r.status_code} {r.text[:300]}"
                    )

            await asyncio.gather(*(one(i, k) for i, k in chargers))

    def versions(self) -> str:
        return f"evota {_dist_version('evota')}"

    def cleanup(self) -> None:
        if not self.args.keep_data:
            subprocess.run(["rm", "-rf", "--", str(self.data_dir)], check=False)


KINDS = {"evota": Evota, "plain-ocpp": PlainOcpp, "ocpp-rpc": OcppRpc}


def _which(cmd: str) -> str | None:
    from shutil import which

    return which(cmd)


def _node_version() -> str:
    try:
        return subprocess.run(
            ["node", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


# -- load workers --------------------------------------------------------------------------


@dataclass
class Workers:
    procs: list[Any]
    pipes: list[Any]

    def send(self, msg: tuple) -> None:
        for p in self.pipes:
            p.send(msg)

    def recv(self, expected: str, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        out = []
        for pipe, proc in zip(self.pipes, self.procs, strict=True):
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"load worker did not report {expected!r} within {timeout:.0f}s")
            try:
                msg = pipe.recv()
            except (EOFError, OSError):
                proc.join(1)
                raise RuntimeError(f"load worker died (exit code {proc.exitcode})") from None
            if msg[0] != expected:
                raise RuntimeError(f"load worker sent {msg[0]!r}, expected {expected!r}")
            out.append(msg[1])
        return out

    def stop(self) -> None:
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
                p.join(5)


def start_workers(
    run: Running,
    chargers: list[tuple[str, str]],
    n_procs: int,
    cpus: list[int] | None,
    idle_status: bool,
    probe_validation: bool = False,
    protocol: str = "ocpp1.6",
) -> Workers:
    ctx = mp.get_context("spawn")
    n_procs = max(1, min(n_procs, len(chargers)))
    procs, pipes = [], []
    for w in range(n_procs):
        cfg = loadgen.WorkerConfig(
            host=run.host,
            port=run.ocpp_port,
            path_prefix=OCPP_PATH,
            chargers=chargers[w::n_procs],
            worker_index=w,
            idle_status=idle_status,
            probe_validation=probe_validation and w == 0,
            cpus=cpus,
            protocol=protocol,
        )
        parent, child = ctx.Pipe()
        p = ctx.Process(target=loadgen.run_worker, args=(cfg, child), daemon=True)
        p.start()
        child.close()
        procs.append(p)
        pipes.append(parent)
    return Workers(procs, pipes)


def setup_timeout(n: int) -> float:
    return 60.0 + n / 50.0


def sleep_until(t_wall: float) -> None:
    time.sleep(max(0.0, t_wall - time.time()))


# -- the two measurements ------------------------------------------------------------------


@dataclass
class Throughput:
    requested: int
    connected: int = 0
    msgs: int = 0
    window_s: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    callerrors: dict[str, int] = field(default_factory=dict)
    unexpected: int = 0
    dropped: int = 0
    unanswered: int = 0
    setup_failures: dict[str, int] = field(default_factory=dict)
    server_calls: int = 0
    server_cpu_pct: float = 0.0
    client_cpu_pct: float = 0.0
    server_rss: int = 0
    validation: str = "?"
    event_loop: str = ""

    @property
    def rate(self) -> float:
        return self.msgs / self.window_s if self.window_s else 0.0

    @property
    def errors(self) -> int:
        return (
            sum(self.callerrors.values())
            + self.unexpected
            + self.dropped
            + self.unanswered
            + sum(self.setup_failures.values())
        )


@dataclass
class Memory:
    requested: int
    connected: int = 0
    rss_before: int = 0
    rss_after: int = 0
    setup_failures: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    setup_s: float = 0.0

    @property
    def per_conn_kib(self) -> float | None:
        if not self.connected:
            return None
        return (self.rss_after - self.rss_before) / self.connected / 1024


def percentile(sorted_values: list[int], p: float) -> int:
    """Nearest-rank percentile."""
    k = max(0, min(len(sorted_values) - 1, int(-(-p * len(sorted_values) // 1)) - 1))
    return sorted_values[k]


def merge_failures(reports: list[dict], key: str = "failures") -> dict[str, int]:
    out: dict[str, int] = {}
    for r in reports:
        for k, v in r.get(key, {}).items():
            out[k] = out.get(k, 0) + v
    return out


def measure_throughput(kind: ServerKind, args: argparse.Namespace, chargers, pin) -> Throughput:
    res = Throughput(requested=args.connections)
    run = kind.start("throughput")
    workers = None
    try:
        kind.prepare_chargers(run, chargers[: args.connections])
        workers = start_workers(
            run,
            chargers[: args.connections],
            args.client_procs,
            pin.client,
            idle_status=False,
            probe_validation=True,
            protocol=args.protocol,
        )
        ready = workers.recv("ready", setup_timeout(args.connections))
        res.connected = sum(r["connected"] for r in ready)
        res.setup_failures = merge_failures(ready)
        setup_s = max(r["setup_s"] for r in ready)
        res.validation = ready[0].get("validation_probe") or "?"
        res.event_loop = event_loop_of(run.proc.pid)
        print(f"  {res.connected}/{args.connections} connected and booted in {setup_s:.1f}s")
        if not res.connected:
            raise ServerUnavailable(f"no charger could connect: {res.setup_failures}")
        t_go = time.time() + 0.5
        workers.send(("go", t_go, args.warmup, args.duration, args.grace))
        sleep_until(t_go + args.warmup)
        cpu0, w0 = tree_cpu(run.proc.pid), time.perf_counter()
        sleep_until(t_go + args.warmup + args.duration)
        cpu1, w1 = tree_cpu(run.proc.pid), time.perf_counter()
        res.server_rss = tree_rss(run.proc.pid)
        res.server_cpu_pct = 100.0 * (cpu1 - cpu0) / (w1 - w0)
        results = workers.recv("result", args.warmup + args.duration + args.grace + 30)
        run.check_alive()
        lat = array("q")
        for r in results:
            lat.frombytes(r["lat"])
            res.msgs += r["ok"]
            res.unexpected += r["unexpected"]
            res.dropped += r["dropped"]
            res.unanswered += r["unanswered"]
            res.server_calls += r["server_calls"]  # includes those during connect/boot
            for code, n in r["callerrors"].items():
                res.callerrors[code] = res.callerrors.get(code, 0) + n
        res.window_s = statistics.mean(r["window_s"] for r in results)
        res.client_cpu_pct = 100.0 * sum(r["client_cpu_s"] for r in results) / res.window_s
        if lat:
            values = sorted(lat)
            res.p50_ms = percentile(values, 0.50) / 1e6
            res.p99_ms = percentile(values, 0.99) / 1e6
        workers.send(("close",))
        workers.recv("closed", 30)
    finally:
        if workers:
            workers.stop()
        run.stop()
    return res


def measure_memory(kind: ServerKind, args: argparse.Namespace, chargers, pin) -> Memory:
    n = args.idle_connections
    res = Memory(requested=n)
    run = kind.start("memory")
    workers = None
    try:
        if kind.prepare_chargers(run, chargers[:n]):
            # Start afresh so that memory the provisioning requests left behind (freed heap
            # the idle connections could reuse without growing RSS) is not in the baseline.
            run.stop()
            run = kind.start("memory")
        if args.idle_warmup:
            # A few connections first, so one-off lazy initialisation (imports, schema
            # compilation, first-use caches) is not charged to the idle connections.
            warm = start_workers(
                run, chargers[: args.idle_warmup], 1, pin.client, True, protocol=args.protocol
            )
            try:
                warm.recv("ready", setup_timeout(args.idle_warmup))
                warm.send(("close",))
                warm.recv("closed", 30)
            finally:
                warm.stop()
            time.sleep(1.0)
        run.check_alive()
        res.rss_before = median_rss(run.proc.pid)
        workers = start_workers(
            run, chargers[:n], args.client_procs, pin.client, True, protocol=args.protocol
        )
        ready = workers.recv("ready", setup_timeout(n))
        res.connected = sum(r["connected"] for r in ready)
        res.setup_failures = merge_failures(ready)
        res.setup_s = max(r["setup_s"] for r in ready)
        print(f"  {res.connected}/{n} idle connections open and booted in {res.setup_s:.1f}s")
        time.sleep(args.idle_settle)
        run.check_alive()
        res.rss_after = median_rss(run.proc.pid)
        workers.send(("close",))
        closed = workers.recv("closed", 60)
        # Connections the server dropped while idle do not count as held.
        still_open = sum(c["open_before_close"] for c in closed)
        res.dropped = res.connected - still_open
        res.connected = still_open
    finally:
        if workers:
            workers.stop()
        run.stop()
    return res


# -- report --------------------------------------------------------------------------------


@dataclass
class Pinning:
    server: list[int] | None
    client: list[int] | None
    description: str


def plan_pinning(spec: str) -> Pinning:
    available = sorted(os.sched_getaffinity(0))
    if spec == "none":
        return Pinning(None, None, f"none (server and client share CPUs {available})")
    if spec == "auto":
        if len(available) < 2:
            return Pinning(None, None, f"none (only CPU {available} available)")
        half = len(available) // 2
        server, client = available[:half], available[half:]
    else:
        s, _, c = spec.partition(":")
        server, client = _cpu_list(s), _cpu_list(c)
    return Pinning(server, client, f"server on CPUs {server}, load generator on CPUs {client}")


def _cpu_list(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def raise_nofile(needed: int) -> str:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    note = f"RLIMIT_NOFILE soft {soft}, hard {hard}"
    if soft < needed:
        note += f" (WARNING: {needed} wanted; raise the hard limit)"
    return note


def machine_info(pin: Pinning, nofile: str) -> list[str]:
    vm = psutil.virtual_memory()
    return [
        f"date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}",
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs "
        f"({len(os.sched_getaffinity(0))} usable), {vm.total / 2**30:.1f} GiB RAM",
        f"cpu: {_cpu_model()}",
        f"python: {platform.python_version()} ({sys.executable})",
        f"node: {_node_version()}",
        f"pinning: {pin.description}",
        f"fd limit: {nofile}",
        f"git: {_git_rev()}",
    ]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _git_rev() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        if rev.returncode != 0:
            return "no commit yet"
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        return rev.stdout.strip() + (" (working tree has changes)" if dirty else "")
    except OSError:
        return "?"


def fmt(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


def build_report(
    args: argparse.Namespace,
    rows: dict[str, dict[str, Any]],
    info: list[str],
    load_before: tuple[float, ...],
    load_after: tuple[float, ...],
    client_capacity_pct: float,
) -> str:
    plain = rows.get("plain-ocpp", {}).get("throughput")
    rpc = rows.get("ocpp-rpc", {}).get("throughput")
    head = (
        "| server | conns | msg/s | vs plain ocpp | p50 ms | p99 ms | errors | server CPU % "
        "| client CPU % | server RSS MiB | validates | idle conns | RSS/idle conn KiB |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    notes: list[str] = []
    for name, row in rows.items():
        rounds = row.get("rounds", [])
        if len(rounds) > 1:
            rates = ", ".join(f"{t.rate:,.0f}" for t in rounds)
            notes.append(f"- {name} msg/s per round: {rates} (the row shows the median round)")
    for name, row in rows.items():
        tp: Throughput | None = row.get("throughput")
        mem: Memory | None = row.get("memory")
        if row.get("unavailable"):
            notes.append(f"- **{name}** not measured: {row['unavailable']}")
        cells = [name]
        if tp:
            conns = f"{tp.connected}" + ("" if tp.connected == tp.requested else f"/{tp.requested}")
            ratio = fmt(tp.rate / plain.rate, 2) + "×" if plain and plain.rate else "–"
            cells += [
                conns,
                fmt(tp.rate, 0),
                ratio,
                fmt(tp.p50_ms, 2),
                fmt(tp.p99_ms, 2),
                str(tp.errors),
                fmt(tp.server_cpu_pct, 0),
                fmt(tp.client_cpu_pct, 0),
                fmt(tp.server_rss / 2**20, 1),
                "yes" if tp.validation.startswith("yes") else "NO",
            ]
            notes.append(f"- {name} schema validation probe: {tp.validation}")
            detail = []
            if tp.callerrors:
                detail.append(f"CALLERRORs {tp.callerrors}")
            for label, value in (
                ("unexpected frames", tp.unexpected),
                ("connections dropped", tp.dropped),
                ("CALLs unanswered at the end", tp.unanswered),
                ("server-initiated CALLs (answered NotSupported)", tp.server_calls),
            ):
                if value:
                    detail.append(f"{label} {value}")
            if tp.setup_failures:
                detail.append(f"connect/boot failures {tp.setup_failures}")
            if tp.client_cpu_pct > 0.85 * client_capacity_pct:
                detail.append(
                    f"load generator used {tp.client_cpu_pct:.0f}% CPU of "
                    f"{client_capacity_pct:.0f}% available: msg/s may be capped by the client"
                )
            if detail:
                notes.append(f"- {name} throughput: " + "; ".join(detail))
        else:
            cells += ["–"] * 10
        if mem:
            idle = str(mem.connected)
            if mem.connected != mem.requested:
                idle += f"/{mem.requested}"
            cells += [idle, fmt(mem.per_conn_kib, 1)]
            notes.append(
                f"- {name} memory: RSS {mem.rss_before / 2**20:.1f} MiB before, "
                f"{mem.rss_after / 2**20:.1f} MiB with {mem.connected} idle connections "
                f"(opened and booted in {mem.setup_s:.1f}s)"
                + (f"; connect/boot failures {mem.setup_failures}" if mem.setup_failures else "")
                + (f"; {mem.dropped} dropped while idle" if mem.dropped else "")
            )
        else:
            cells += ["–", "–"]
        lines.append("| " + " | ".join(cells) + " |")

    targets = []
    ev = rows.get("evota", {})
    etp: Throughput | None = ev.get("throughput")
    emem: Memory | None = ev.get("memory")
    if etp and plain and plain.rate:
        r = etp.rate / plain.rate
        scale = ""
        if args.connections != 200:
            scale = f" (target is set at 200; this ran {args.connections})"
        targets.append(
            f"- evota / plain ocpp msg/s = {r:.2f}× (target ≥ 5×){scale}: "
            + ("met" if r >= 5 else "NOT met")
        )
    if etp and rpc and rpc.rate:
        r = etp.rate / rpc.rate
        targets.append(
            f"- evota / ocpp-rpc strict msg/s = {r:.2f}× (target ≥ 1×): "
            + ("met" if r >= 1 else "NOT met")
        )
    if emem and emem.per_conn_kib is not None:
        scale = (
            ""
            if args.idle_connections == 10000
            else f" (target is set at 10,000; this ran {args.idle_connections})"
        )
        targets.append(
            f"- evota RSS per idle connection = {emem.per_conn_kib:.1f} KiB "
            f"(target ≤ 32 KiB){scale}: " + ("met" if emem.per_conn_kib <= 32 else "NOT met")
        )
    if etp and etp.errors:
        targets.append(
            f"- evota had {etp.errors} errors in the throughput run: its msg/s is suspect"
        )

    versions = []
    for name, row in rows.items():
        if row.get("versions"):
            tp = row.get("throughput")
            loop = f", event loop {tp.event_loop}" if tp and tp.event_loop else ""
            versions.append(f"- {name}: {row['versions']}{loop}")
    out = [
        "# Gateway benchmark",
        "",
        "```",
        "$ " + " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        *info,
        f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}, "
        f"after: {' '.join(f'{x:.2f}' for x in load_after)}",
        f"protocol: {args.protocol}, load message {LOAD_MESSAGE[args.protocol]}",
        f"throughput: {args.connections} connections, warm-up {args.warmup}s, "
        f"window {args.duration}s, {args.client_procs} load process(es)",
        f"memory: {args.idle_connections} idle connections (BootNotification + one "
        f"StatusNotification each), settle {args.idle_settle}s",
        "```",
        "",
        *lines,
        "",
    ]
    if versions:
        out += ["Servers:", *versions, ""]
    if targets:
        out += ["Targets:", *targets, ""]
    if load_before[0] > 0.5:
        notes.append(
            f"- the machine was busy when the run started (1-min load {load_before[0]:.2f}): "
            "other work competes for the CPUs; rerun on a quiet machine for figures to publish"
        )
    if notes:
        out += ["Notes:", *notes, ""]
    return "\n".join(out)


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="OCPP gateway benchmark: evota vs plain ocpp vs ocpp-rpc strict",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--servers", default=",".join(ALL_SERVERS), help="comma-separated subset")
    p.add_argument("--mode", choices=("both", "throughput", "memory"), default="both")
    p.add_argument(
        "--protocol",
        choices=loadgen.PROTOCOLS,
        default="ocpp1.6",
        help="what every server and the load generator speak (see LOAD_MESSAGE)",
    )
    p.add_argument("--connections", type=int, default=200, help="throughput: chargers")
    p.add_argument("--duration", type=float, default=10.0, help="throughput: measured seconds")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="throughput rounds, servers interleaved; each row shows the server's median round",
    )
    p.add_argument("--warmup", type=float, default=3.0, help="throughput: seconds before window")
    p.add_argument("--grace", type=float, default=5.0, help="seconds to wait for last answers")
    p.add_argument("--idle-connections", type=int, default=10000, help="memory: idle chargers")
    p.add_argument("--idle-settle", type=float, default=5.0, help="memory: seconds before RSS")
    p.add_argument("--idle-warmup", type=int, default=10, help="memory: throwaway connections")
    p.add_argument("--client-procs", type=int, default=1, help="load generator processes")
    p.add_argument(
        "--pin",
        default="auto",
        help="CPU pinning: auto (server on the first half of the usable CPUs, load generator "
        "on the second half), none, or SERVER:CLIENT lists such as 0:1 or 0-1:2-3",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--startup-timeout", type=float, default=60.0)
    p.add_argument(
        "--server-log-level",
        default="warning",
        help="log level for evota (EVOTA_LOG_LEVEL) and the plain ocpp server",
    )
    p.add_argument("--output", type=Path, default=RESULTS / "latest.md")
    p.add_argument("--keep-data", action="store_true", help="keep evota's temporary data dir")
    args = p.parse_args(argv)
    args.server_list = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.server_list) - set(ALL_SERVERS)
    if unknown:
        p.error(f"unknown server(s) {sorted(unknown)}; choose from {', '.join(ALL_SERVERS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Servers run in their own sessions: make SIGTERM unwind through the finally blocks that
    # stop them, as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    pin = plan_pinning(args.pin)
    biggest = max(
        args.connections if args.mode != "memory" else 0,
        args.idle_connections if args.mode != "throughput" else 0,
    )
    # Load workers and servers inherit this; each side holds one fd per connection.
    nofile = raise_nofile(biggest + 1024)
    info = machine_info(pin, nofile)
    print("\n".join(info), flush=True)
    load_before = os.getloadavg()
    # One identity and AuthorizationKey per simulated charger, shared by all servers.
    chargers = [(f"BENCH-{i:05d}", secrets.token_urlsafe(18)) for i in range(1, biggest + 1)]

    rows: dict[str, dict[str, Any]] = {name: {} for name in args.server_list}
    kinds = {name: KINDS[name](args, pin.server) for name in args.server_list}
    for name, kind in kinds.items():
        try:
            kind.check()
            rows[name]["versions"] = kind.versions()
        except (ServerUnavailable, RuntimeError) as exc:
            print(f"  {name} not measured: {exc}", flush=True)
            rows[name]["unavailable"] = str(exc)
    live = [name for name in args.server_list if not rows[name].get("unavailable")]
    try:
        if args.mode in ("both", "throughput"):
            # Rounds interleave the servers, so drift in the machine's speed hits all alike;
            # each server's row is its median round.
            for round_no in range(1, args.repeat + 1):
                for name in live:
                    if rows[name].get("unavailable"):
                        continue
                    label = f" (round {round_no}/{args.repeat})" if args.repeat > 1 else ""
                    print(f"[{name}] throughput, {args.connections} connections{label}", flush=True)
                    try:
                        tp = measure_throughput(kinds[name], args, chargers, pin)
                    except (ServerUnavailable, RuntimeError) as exc:
                        print(f"  {name} not measured: {exc}", flush=True)
                        rows[name]["unavailable"] = str(exc)
                        continue
                    rows[name].setdefault("rounds", []).append(tp)
                    print(
                        f"  {tp.rate:,.0f} msg/s, p50 {fmt(tp.p50_ms, 2)} ms, p99 "
                        f"{fmt(tp.p99_ms, 2)} ms, errors {tp.errors}, server CPU "
                        f"{tp.server_cpu_pct:.0f}%, client CPU {tp.client_cpu_pct:.0f}%",
                        flush=True,
                    )
            for name in live:
                rounds = sorted(rows[name].get("rounds", []), key=lambda t: t.rate)
                if rounds:
                    rows[name]["throughput"] = rounds[(len(rounds) - 1) // 2]
        if args.mode in ("both", "memory"):
            for name in live:
                if rows[name].get("unavailable"):
                    continue
                print(f"[{name}] memory, {args.idle_connections} idle connections", flush=True)
                try:
                    mem = measure_memory(kinds[name], args, chargers, pin)
                except (ServerUnavailable, RuntimeError) as exc:
                    print(f"  {name} not measured: {exc}", flush=True)
                    rows[name]["unavailable"] = str(exc)
                    continue
                rows[name]["memory"] = mem
                print(f"  {fmt(mem.per_conn_kib)} KiB per idle connection", flush=True)
    finally:
        for kind in kinds.values():
            if isinstance(kind, Evota):
                kind.cleanup()

    client_cpus = pin.client or sorted(os.sched_getaffinity(0))
    report = build_report(args, rows, info, load_before, os.getloadavg(), 100.0 * len(client_cpus))
    print()
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
