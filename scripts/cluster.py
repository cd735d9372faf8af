"""An evota cluster on loopback to try scale-out: ``./scripts/cluster`` (docs/cluster.md).

PostgreSQL (its own data directory and port), Redis, moto's S3 server as the shared firmware
store (when the development dependencies are installed), HAProxy in front
(deploy/haproxy/evota-cluster.cfg, filled in) and N ``evota serve`` nodes, then the demo's
simulated fleet (``evota sim``) connecting through HAProxy and so spread over the nodes.
Prints the console URL and the admin token; Ctrl-C (or SIGTERM) stops everything in order.
Everything lives in ``--dir`` and is reused by the next run (keys, database, token).

Ports, from ``--port-base B`` (8000): the console and API on B, downloads on B+1, chargers on
``--ocpp-port`` (B+1000: ws://127.0.0.1:9000/ocpp/{id}); PostgreSQL B+2, Redis B+3, S3 B+4; node i
(1..N) HTTP on B+10+i, OCPP on B+20+i, downloads on B+30+i.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from evota.cluster.node import copy_shared_files
from evota.demo import DEMO_CARDS, demo_fleet_file, seed_cards, seed_users

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "deploy" / "haproxy" / "evota-cluster.cfg"
PG_BIN = Path(os.environ.get("EVOTA_PG_BIN", "/usr/lib/postgresql/15/bin"))
#: What every node must share from the first node's data directory (docs/cluster.md).
BUCKET = "evota"


class Failed(Exception):
    """One line for the operator; the script stops what it started and exits 1."""


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Cluster:
    directory: Path
    nodes: int
    chargers: int
    base: int
    ocpp_port: int
    procs: list[Proc] = field(default_factory=list)
    s3: bool = False  # a shared firmware store: moto's S3 server, when installed
    pg_started: bool = False
    as_postgres: list[str] = field(default_factory=list)

    # -- addresses

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.base}"

    @property
    def ocpp(self) -> str:
        return f"ws://127.0.0.1:{self.ocpp_port}/ocpp"

    @property
    def pg_port(self) -> int:
        return self.base + 2

    @property
    def redis_port(self) -> int:
        return self.base + 3

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.base + 4}"

    def node_ports(self, i: int) -> tuple[int, int, int]:
        """(http, ocpp, download) of node ``i`` (1-based)."""
        return self.base + 10 + i, self.base + 20 + i, self.base + 30 + i

    @property
    def database_url(self) -> str:
        return f"postgresql+asyncpg://evota@127.0.0.1:{self.pg_port}/evota"

    # -- processes

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.directory / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # Ctrl-C reaches this script only; it stops the rest
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    async def until(self, what: str, check: object, timeout: float, procs: list[Proc]) -> None:
        """Poll ``check`` (an async callable) until true; a process exiting fails at once."""
        deadline = time.monotonic() + timeout
        while True:
            for proc in procs:
                if not proc.alive():
                    raise Failed(f"{proc.name} exited ({proc.log}):\n{proc.tail()}")
            if await check():  # type: ignore[operator]
                return
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {p.name}\n{p.tail(5)}" for p in procs)
                raise Failed(f"{what}: not within {timeout:g} s\n{tails}")
            await asyncio.sleep(0.2)

    # -- the parts

    def start_postgres(self) -> None:
        data = self.directory / "postgres"
        if not (PG_BIN / "postgres").exists():
            raise Failed(f"PostgreSQL is not installed in {PG_BIN} (apt-get install postgresql-15)")
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
        data.mkdir(mode=0o700, exist_ok=True)
        if self.as_postgres:
            shutil.chown(data, "postgres", "postgres")
            reach = subprocess.run([*self.as_postgres, "test", "-w", str(data)], check=False)
            if reach.returncode != 0:
                raise Failed(f"the postgres user cannot reach {data}: use a --dir it can traverse")
        if not (data / "PG_VERSION").exists():
            self._pg(["initdb", "-D", str(data), "-U", "evota", "--auth=trust", "-E", "UTF8"])
        options = f"-c listen_addresses=127.0.0.1 -p {self.pg_port} -k /tmp -c max_connections=200"
        self._pg(
            [
                "pg_ctl",
                "-D",
                str(data),
                "-l",
                str(data / "server.log"),
                "-w",
                "-o",
                options,
                "start",
            ]
        )
        self.pg_started = True
        exists = self._pg(
            ["psql", "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "evota", "-d", "postgres",
             "-tAc", "SELECT 1 FROM pg_database WHERE datname = 'evota'"],
        )  # fmt: skip
        if exists.strip() != "1":
            self._pg(
                ["createdb", "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "evota", "evota"]
            )

    def stop_postgres(self) -> None:
        if self.pg_started:
            data = self.directory / "postgres"
            with contextlib.suppress(Failed):
                self._pg(["pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop"])
            self.pg_started = False

    def _pg(self, argv: list[str]) -> str:
        done = subprocess.run(
            [*self.as_postgres, str(PG_BIN / argv[0]), *argv[1:]],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise Failed(f"{argv[0]} failed: {(done.stderr or done.stdout).strip()}")
        return done.stdout

    def start_redis(self) -> Proc:
        server = shutil.which("redis-server")
        if server is None:
            raise Failed("redis-server is not installed (apt-get install redis-server)")
        data = self.directory / "redis"
        data.mkdir(mode=0o700, exist_ok=True)
        return self.spawn(
            "redis",
            [server, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(data), "--daemonize", "no"],
        )  # fmt: skip

    def start_node(self, i: int, token: str) -> Proc:
        http, ocpp, download = self.node_ports(i)
        env = {
            **os.environ,
            "EVOTA_DATABASE_URL": self.database_url,
            "EVOTA_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "EVOTA_NODE_ID": f"node{i}",
            "EVOTA_HOST": "127.0.0.1",
            "EVOTA_DOWNLOAD_PORT": str(download),
            "EVOTA_ADMIN_TOKEN": token,
            "EVOTA_PUBLIC_URL": f"http://127.0.0.1:{self.base + 1}",
            "EVOTA_UPLOAD_PUBLIC_URL": self.api,
            # HAProxy appends X-Forwarded-For; the whole fleet comes from this one address.
            "EVOTA_OCPP_TRUSTED_PROXIES": '["127.0.0.1"]',
            "EVOTA_OCPP_MAX_PREAUTH_PER_ADDRESS": "512",
            "EVOTA_MFA_REQUIRED_ROLES": "[]",
            "EVOTA_LOG_LEVEL": "warning",
        }
        if self.s3:  # every node serves every image: one bucket (docs/cluster.md)
            env.update(
                {
                    "EVOTA_FIRMWARE_STORE": f"s3://{BUCKET}/firmware",
                    "EVOTA_S3_ENDPOINT_URL": self.s3_url,
                    "EVOTA_S3_REGION": "us-east-1",
                    "EVOTA_S3_ACCESS_KEY_ID": "evota-cluster",
                    "EVOTA_S3_SECRET_ACCESS_KEY": "evota-cluster-secret",
                }
            )
        return self.spawn(
            f"node{i}",
            [sys.executable, "-m", "evota", "serve",
             "--data-dir", str(self.directory / f"node{i}"),
             "--http-port", str(http), "--ocpp-port", str(ocpp)],
            env,
        )  # fmt: skip

    def start_s3(self) -> Proc | None:
        """moto's standalone S3 server (a development dependency), else None: local stores."""
        moto = Path(sys.executable).parent / "moto_server"
        if not moto.exists():
            return None
        self.s3 = True
        return self.spawn("s3", [str(moto), "-H", "127.0.0.1", "-p", str(self.base + 4)])

    def create_bucket(self) -> None:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.s3_url,
            region_name="us-east-1",
            aws_access_key_id="evota-cluster",
            aws_secret_access_key="evota-cluster-secret",
        )
        client.create_bucket(Bucket=BUCKET)

    def copy_keys(self, i: int) -> None:
        copy_shared_files(self.directory / "node1", self.directory / f"node{i}")

    def start_haproxy(self) -> Proc:
        binary = shutil.which("haproxy") or (
            "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
        )
        if binary is None:
            raise Failed("haproxy is not installed (apt-get install haproxy)")

        def servers(port: int) -> str:
            return "\n".join(
                f"    server node{i} 127.0.0.1:{self.node_ports(i)[port]}"
                f" check port {self.node_ports(i)[0]}"
                for i in range(1, self.nodes + 1)
            )

        text = TEMPLATE.read_text()
        for marker, value in {
            "stats_socket": str(self.directory / "haproxy.sock"),
            "bind": "127.0.0.1",
            "maxconn": str(max(4000, 2 * self.chargers + 1000)),  # chargers, API, downloads
            "ocpp_port": str(self.ocpp_port),
            "http_port": str(self.base),
            "download_port": str(self.base + 1),
            "ocpp_servers": servers(1),
            "http_servers": servers(0),
            "download_servers": servers(2),
        }.items():
            text = text.replace("{{" + marker + "}}", value)
        if "{{" in text:
            raise Failed(
                f"{TEMPLATE}: a marker this script does not know: {text[text.index('{{') :][:40]}"
            )
        config = self.directory / "haproxy.cfg"
        config.write_text(text)
        return self.spawn("haproxy", [binary, "-db", "-f", str(config)])

    def start_fleet(self, token: str) -> Proc:
        fleet = self.directory / "fleet.yaml"
        fleet.write_text(demo_fleet_file(self.chargers))
        cards = [arg for card in DEMO_CARDS[:10] for arg in ("--id-tag", card)]
        return self.spawn(
            "sim",
            [sys.executable, "-m", "evota", "sim", "--fleet", str(fleet), "--url", self.ocpp,
             "--provision", "--api-url", self.api, "--token", token, "--session-rate", "0.5",
             "--refresh", "10", *cards],
        )  # fmt: skip

    def stop(self) -> None:
        """The fleet first (clean closes), then HAProxy, the nodes, S3, Redis, PostgreSQL."""
        for proc in reversed(self.procs):
            if proc.alive():
                proc.popen.send_signal(signal.SIGINT if proc.name == "sim" else signal.SIGTERM)
                try:
                    proc.popen.wait(30)
                except subprocess.TimeoutExpired:
                    proc.popen.kill()
                    proc.popen.wait(10)
        self.procs.clear()
        self.stop_postgres()


async def healthy(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            return (await http.get(f"{url}/healthz")).status_code == 200
    except httpx.HTTPError:
        return False


async def listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


async def connected_on(url: str) -> int:
    """A node's own count of open OCPP connections (its /metrics)."""
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            text = (await http.get(f"{url}/metrics")).text
    except httpx.HTTPError:
        return 0
    found = re.search(r"^evota_connected_chargers (\S+)$", text, re.M)
    return int(float(found.group(1))) if found else 0


def admin_token(directory: Path) -> str:
    """Made once and kept (0600) in the cluster's directory, so a rerun prints the same."""
    path = directory / "admin-token"
    if path.exists():
        return path.read_text().strip()
    token = "evota_cluster_" + secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


async def console_users(cluster: Cluster) -> dict[str, str]:
    """The demo's two console users (all roles, so one can approve the other's campaign
    start), written straight to the database; passwords kept in the cluster's directory."""
    from types import SimpleNamespace

    from evota.clock import SystemClock
    from evota.store import db

    engine = db.create_engine(cluster.database_url)
    try:
        runtime = SimpleNamespace(engine=engine, clock=SystemClock())
        return await seed_users(runtime, cluster.directory)
    finally:
        await engine.dispose()


async def run(cluster: Cluster, stopping: asyncio.Event, out: IO[str]) -> None:
    def say(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    token = admin_token(cluster.directory)
    say(f"PostgreSQL on 127.0.0.1:{cluster.pg_port} ({cluster.directory / 'postgres'})")
    await asyncio.to_thread(cluster.start_postgres)
    redis = cluster.start_redis()
    await cluster.until("Redis", lambda: listening(cluster.redis_port), 20, [redis])
    say(f"Redis on 127.0.0.1:{cluster.redis_port}")
    s3 = cluster.start_s3()
    if s3 is not None:
        await cluster.until("S3", lambda: listening(cluster.base + 4), 30, [s3])
        await asyncio.to_thread(cluster.create_bucket)
        store = f"s3://{BUCKET}/firmware on moto's S3 server {cluster.s3_url} (in memory)"
    else:
        store = "local on each node: an image is served only by the node it was uploaded to"
    say(f"firmware store {store}")
    first = cluster.start_node(1, token)  # creates the keys and migrates the database
    await cluster.until(
        "node1", lambda: healthy(f"http://127.0.0.1:{cluster.node_ports(1)[0]}"), 120, [first]
    )
    for i in range(2, cluster.nodes + 1):
        cluster.copy_keys(i)
    others = [cluster.start_node(i, token) for i in range(2, cluster.nodes + 1)]
    for i, proc in enumerate(others, start=2):
        url = f"http://127.0.0.1:{cluster.node_ports(i)[0]}"
        await cluster.until(f"node{i}", lambda url=url: healthy(url), 120, [proc])
    say(f"{cluster.nodes} evota nodes up (logs in {cluster.directory / 'logs'})")
    lb = cluster.start_haproxy()
    await cluster.until("HAProxy", lambda: healthy(cluster.api), 30, [lb])
    await seed_cards(cluster.api, token)
    users = await console_users(cluster)
    sim = cluster.start_fleet(token)
    say(f"{cluster.chargers} simulated chargers connecting through HAProxy ({cluster.ocpp})")
    nodes = [f"http://127.0.0.1:{cluster.node_ports(i)[0]}" for i in range(1, cluster.nodes + 1)]
    counts: list[int] = []

    async def all_connected() -> bool:
        nonlocal counts
        counts = [await connected_on(url) for url in nodes]
        return sum(counts) >= cluster.chargers

    await cluster.until("the fleet", all_connected, 120 + cluster.chargers / 20, [sim, lb])
    spread = ", ".join(f"node{i} {n}" for i, n in enumerate(counts, start=1))
    node_lines = "".join(
        f"  node{i}          {url}/  (pid {proc.popen.pid}, {proc.log})\n"
        for i, (url, proc) in enumerate(zip(nodes, [first, *others], strict=True), start=1)
    )
    say(
        "\nevota cluster is running\n"
        f"  console        {cluster.api}/  (HAProxy: any node answers)\n"
        f"  admin token    {token}\n"
        + "".join(
            f"  console login  {name} / {password}  (all roles)\n"
            for name, password in users.items()
        )
        + f"  OCPP endpoint  {cluster.ocpp}/{{chargerId}}  (HAProxy: least connections)\n"
        f"  downloads      http://127.0.0.1:{cluster.base + 1}/\n"
        f"  firmware store {store}\n"
        f"  fleet          {cluster.chargers} simulated chargers connected: {spread}\n"
        f"{node_lines}"
        f"  PostgreSQL     {cluster.database_url}\n"
        f"  Redis          redis://127.0.0.1:{cluster.redis_port}/0\n"
        "  try            EVOTA_URL="
        + cluster.api
        + " EVOTA_TOKEN="
        + token
        + " uv run evota charger list --connected\n"
        "                 kill -9 a node's pid: its chargers reconnect through HAProxy to the"
        " others\n"
        "Press Ctrl-C to stop."
    )
    await stopping.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chargers", type=int, default=2000, help="simulated chargers (2000)")
    parser.add_argument(
        "--nodes", type=int, default=3, choices=range(1, 10), help="evota nodes (3)"
    )
    parser.add_argument("--dir", type=Path, default=Path("evota-cluster"), help="./evota-cluster")
    parser.add_argument("--port-base", type=int, default=8000, help="see the module's doc (8000)")
    parser.add_argument("--ocpp-port", type=int, help="chargers' port (--port-base + 1000)")
    args = parser.parse_args()
    if args.chargers < 1:
        parser.error("--chargers must be at least 1")
    if not 1024 <= args.port_base <= 64000:
        parser.error("--port-base must be between 1024 and 64000")
    directory = args.dir.resolve()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o711)  # PostgreSQL runs as its own user inside it
    ocpp_port = args.ocpp_port or args.port_base + 1000
    cluster = Cluster(directory, args.nodes, args.chargers, args.port_base, ocpp_port)

    async def go() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        task = asyncio.create_task(run(cluster, stopping, sys.stdout))
        stop = asyncio.create_task(stopping.wait())
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        else:
            task.result()

    try:
        asyncio.run(go())
    except Failed as exc:
        print(f"scripts/cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not interrupt the stop and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stopping: fleet, HAProxy, nodes, S3, Redis, PostgreSQL", file=sys.stderr)
        cluster.stop()
    print("stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
