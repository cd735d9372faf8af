"""TLS benchmark: what security profiles 2 and 3 cost evota against profile 1, in one run.

One ``evota serve`` on loopback with both listeners (``ws://`` and ``wss://`` with a charger
CA for mutual TLS), certificates made as tests/pki_fixtures.py makes them (EC P-256), chargers
provisioned on profiles 1, 2 and 3. Then, against that one process:

- **handshakes/s**: C concurrent clients each connect, upgrade (101 required) and close, over
  and over: ``ws://`` with Basic auth (profile 1), ``wss://`` with Basic auth (2) and
  ``wss://`` with a client certificate (3); full handshakes, no session resumption;
- **msg/s**: N chargers boot and send StatusNotification back to back (bench/loadgen.py, one
  CALL outstanding each) over ws and wss; then the same from the Node ``ocpp-rpc`` client
  (bench/node/tls_load.js), the independent implementation;
- **reconnect storm**: S chargers connect and boot at once on profile 1, then S on profile 3:
  time until all are accepted, the server's CPU seconds and peak RSS;
- with ``--rsa``: the handshakes again with an RSA 2048 server certificate (SIGHUP reload).

The server runs on the first half of the CPUs, the clients on the other half (as
bench/gateway.py pins them). Ratios are against profile 1 in the same run.

    .venv/bin/python bench/tls.py --storm 5000 --rsa          # the full run (~4 minutes)
    .venv/bin/python bench/tls.py --chargers 500 --duration 2 # quick
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID  # noqa: E402
from tests import pki_fixtures  # noqa: E402

import gateway  # noqa: E402
import loadgen  # noqa: E402

PROFILES = (1, 2, 3)
PATH = "/ocpp/"


@dataclass
class Charger:
    ident: str
    key: str  # AuthorizationKey (profiles 1 and 2; provisioned for 3 too, never sent)
    profile: int
    cert: str | None = None
    cert_key: str | None = None


@dataclass
class Fleet:
    by_profile: dict[int, list[Charger]] = field(default_factory=dict)

    def take(self, profile: int, n: int) -> list[Charger]:
        return self.by_profile[profile][:n]


# -- the server ------------------------------------------------------------------------------


class TlsEvota(gateway.Evota):
    """``evota serve`` with the wss:// listener, the charger CA and the CPO name set."""

    def __init__(
        self, args: argparse.Namespace, cpus: list[int] | None, pki: Any, cert: Path, key: Path
    ) -> None:
        super().__init__(args, cpus)
        self.pki, self.cert, self.key = pki, cert, key
        self.tls_port = gateway.free_port(args.host)
        self.profiles: dict[str, int] = {}

    def command(self, ocpp_port: int, http_port: int | None) -> tuple[list[str], dict[str, str]]:
        argv, env = super().command(ocpp_port, http_port)
        env.update(
            EVOTA_OCPP_TLS_PORT=str(self.tls_port),
            EVOTA_OCPP_TLS_CERT=str(self.cert),
            EVOTA_OCPP_TLS_KEY=str(self.key),
            EVOTA_OCPP_CHARGER_CA=str(self.pki.charger_ca),
            EVOTA_CPO_NAME=self.pki.cpo,
            # a storm comes from one address here: let it in as a NAT'd fleet would be
            EVOTA_OCPP_MAX_PREAUTH=str(max(512, self.args.storm_concurrency * 2)),
            EVOTA_OCPP_MAX_PREAUTH_PER_ADDRESS=str(max(512, self.args.storm_concurrency * 2)),
            # no certificate inventory or renewal CALLs in the middle of a measurement
            EVOTA_CERT_INVENTORY_BOOT_DELAY_SECONDS="3600",
            EVOTA_CERT_AUTO_RENEW="false",
        )
        return argv, env

    def wait_ready(self, run: gateway.Running) -> None:
        super().wait_ready(run)
        deadline = time.monotonic() + self.args.startup_timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((run.host, self.tls_port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise gateway.ServerUnavailable("the wss:// listener did not come up")

    async def _provision(self, run: gateway.Running, chargers: list[tuple[str, str]]) -> None:
        sem = asyncio.Semaphore(16)
        headers = {"Authorization": f"Bearer {self.token}"}
        base = f"http://{run.host}:{run.http_port}"
        async with httpx.AsyncClient(base_url=base, headers=headers) as client:

            async def one(ident: str, key: str) -> None:
                body = {"id": ident, "auth_key": key, "security_profile": self.profiles[ident]}
                async with sem:
                    r = await client.post("/api/v1/chargers", json=body, timeout=30)
                if r.status_code != 201:
                    raise gateway.ServerUnavailable(f"POST {ident}: {r.status_code} {r.text}")

            await asyncio.gather(*(one(i, k) for i, k in chargers))


def make_fleet(pki: Any, counts: dict[int, int]) -> Fleet:
    fleet = Fleet()
    for profile, n in counts.items():
        rows = []
        for i in range(n):
            ident = f"TLSB-P{profile}-{i:05d}"
            c = Charger(ident, base64.b64encode(os.urandom(18)).decode(), profile)
            if profile == 3:
                cred = pki.mint(ident, name=ident)
                c.cert, c.cert_key = str(cred.cert_path), str(cred.key_path)
            rows.append(c)
        fleet.by_profile[profile] = rows
    return fleet


def rsa_server(pki: Any) -> tuple[bytes, bytes]:
    """An RSA 2048 server certificate for the same names, from the same CSMS root."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = pki_fixtures._leaf(
        pki.server.cert.subject,
        key,
        pki.csms_root,
        pki.now - pki_fixtures.timedelta(hours=1),
        pki.now + pki_fixtures.timedelta(days=365),
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        san=list(
            pki.server.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ),
    )
    return pki_fixtures.cert_pem(cert), pki_fixtures.key_pem(key)


def served_key_type(host: str, port: int, ca: str) -> str:
    ctx = loadgen.client_context(ca)
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    public = x509.load_der_x509_certificate(der).public_key()
    return "rsa" if isinstance(public, rsa.RSAPublicKey) else "ec"


# -- handshakes ------------------------------------------------------------------------------


def _handshake_proc(cfg: dict[str, Any], out: Any) -> None:
    if cfg["cpus"]:
        os.sched_setaffinity(0, cfg["cpus"])
    out.send(asyncio.run(_handshakes(cfg, out)))


async def _handshakes(cfg: dict[str, Any], out: Any) -> dict[str, Any]:
    """Connect, upgrade, close, in a loop per charger; says "window" when it counts."""
    host, port, ca = cfg["host"], cfg["port"], cfg["ca"]
    chargers: list[Charger] = [Charger(**c) for c in cfg["chargers"]]
    shared = loadgen.client_context(ca) if ca else None
    contexts = {
        c.ident: loadgen.client_context(ca, c.cert, c.cert_key) if c.cert else shared
        for c in chargers
    }
    ok, errors = 0, Counter[str]()
    counting = False
    stop = False

    async def one(c: Charger) -> None:
        nonlocal ok
        tls = contexts[c.ident]
        ws_key = base64.b64encode(os.urandom(16)).decode()
        auth = base64.b64encode(f"{c.ident}:{c.key}".encode()).decode()
        req = (
            f"GET {PATH}{c.ident} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {ws_key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: ocpp1.6\r\n"
            + ("" if c.cert else f"Authorization: Basic {auth}\r\n")
            + "\r\n"
        )
        while not stop:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        host, port, ssl=tls, server_hostname=host if tls else None
                    ),
                    10,
                )
                writer.write(req.encode())
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                writer.transport.abort()
                if head.startswith(b"HTTP/1.1 101"):
                    if counting:
                        ok += 1
                elif counting:
                    errors[head.split(b"\r\n", 1)[0].decode(errors="replace")] += 1
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                if counting:
                    errors[type(exc).__name__] += 1

    tasks = [asyncio.create_task(one(c)) for c in chargers]
    await asyncio.sleep(cfg["warmup"])
    counting = True
    out.send("window")
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(cfg["duration"])
    counting = False
    cpu1, t1 = time.process_time(), time.perf_counter()
    stop = True
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"ok": ok, "errors": dict(errors), "window_s": t1 - t0, "client_cpu_s": cpu1 - cpu0}


@dataclass
class Rate:
    per_s: float = 0.0
    server_cpu_ms: float = 0.0  # server CPU per handshake / per message
    client_cpu_pct: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    extra: str = ""


def measure_handshakes(
    run: gateway.Running, kind: TlsEvota, chargers: list[Charger], tls: bool, args: Any, pin: Any
) -> Rate:
    cfg = {
        "host": run.host,
        "port": kind.tls_port if tls else run.ocpp_port,
        "ca": str(kind.pki.server_ca) if tls else None,
        "chargers": [c.__dict__ for c in chargers],
        "warmup": 1.0,
        "duration": args.duration,
        "cpus": pin.client,
    }
    parent, child = mp.get_context("spawn").Pipe()
    proc = mp.get_context("spawn").Process(target=_handshake_proc, args=(cfg, child))
    proc.start()
    if not parent.poll(120) or parent.recv() != "window":
        proc.kill()
        raise RuntimeError("handshake client did not start")
    cpu0 = gateway.tree_cpu(run.proc.pid)
    if not parent.poll(args.duration + 60):
        proc.kill()
        raise RuntimeError("handshake client did not report")
    cpu1 = gateway.tree_cpu(run.proc.pid)
    res = parent.recv()
    proc.join(5)
    ok = res["ok"]
    return Rate(
        per_s=ok / res["window_s"],
        server_cpu_ms=1000 * (cpu1 - cpu0) / max(ok, 1),
        client_cpu_pct=100 * res["client_cpu_s"] / res["window_s"],
        errors=res["errors"],
    )


# -- messages and storms (bench/loadgen.py) -------------------------------------------------


def start_load(
    run: gateway.Running,
    kind: TlsEvota,
    chargers: list[Charger],
    tls: bool,
    pin: Any,
    concurrency: int = 64,
) -> gateway.Workers:
    cfg = loadgen.WorkerConfig(
        host=run.host,
        port=kind.tls_port if tls else run.ocpp_port,
        path_prefix=PATH,
        chargers=[(c.ident, "" if c.cert else c.key) for c in chargers],
        idle_status=False,
        cpus=pin.client,
        connect_concurrency=concurrency,
        connect_timeout=120.0,
        tls_ca=str(kind.pki.server_ca) if tls else None,
        tls_certs={c.ident: (c.cert, c.cert_key) for c in chargers if c.cert and c.cert_key},
    )
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=loadgen.run_worker, args=(cfg, child), daemon=True)
    proc.start()
    child.close()
    return gateway.Workers([proc], [parent])


def measure_messages(
    run: gateway.Running, kind: TlsEvota, chargers: list[Charger], tls: bool, args: Any, pin: Any
) -> Rate:
    workers = start_load(run, kind, chargers, tls, pin)
    try:
        ready = workers.recv("ready", gateway.setup_timeout(len(chargers)))[0]
        if ready["connected"] < len(chargers):
            return Rate(errors=ready["failures"], extra=f"{ready['connected']} connected")
        t_go = time.time() + 0.5
        workers.send(("go", t_go, 1.0, args.duration, 5.0))
        gateway.sleep_until(t_go + 1.0)
        cpu0 = gateway.tree_cpu(run.proc.pid)
        gateway.sleep_until(t_go + 1.0 + args.duration)
        cpu1 = gateway.tree_cpu(run.proc.pid)
        r = workers.recv("result", args.duration + 40)[0]
        workers.send(("close",))
        workers.recv("closed", 30)
    finally:
        workers.stop()
    lat = sorted(gateway.array("q", r["lat"]))
    errors = {**r["callerrors"], "dropped": r["dropped"], "unanswered": r["unanswered"]}
    return Rate(
        per_s=r["ok"] / r["window_s"],
        server_cpu_ms=1000 * (cpu1 - cpu0) / max(r["ok"], 1),
        client_cpu_pct=100 * r["client_cpu_s"] / r["window_s"],
        errors={k: v for k, v in errors.items() if v},
        extra=f"p50 {gateway.percentile(lat, 0.5) / 1e6:.1f} ms" if lat else "",
    )


@dataclass
class Storm:
    accepted: int
    seconds: float
    server_cpu_s: float
    peak_rss_mib: float
    rss_before_mib: float
    failures: dict[str, int]


def storm(
    run: gateway.Running, kind: TlsEvota, chargers: list[Charger], tls: bool, args: Any, pin: Any
) -> Storm:
    peak = [gateway.tree_rss(run.proc.pid)]
    before = peak[0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], gateway.tree_rss(run.proc.pid))

    workers = start_load(run, kind, chargers, tls, pin, args.storm_concurrency)
    sampler = threading.Thread(target=sample, daemon=True)
    cpu0 = gateway.tree_cpu(run.proc.pid)
    sampler.start()
    try:
        ready = workers.recv("ready", gateway.setup_timeout(len(chargers)) + 120)[0]
        cpu1 = gateway.tree_cpu(run.proc.pid)
        done.set()
        sampler.join()
        workers.send(("close",))
        workers.recv("closed", 60)
    finally:
        done.set()
        workers.stop()
    return Storm(
        ready["connected"],
        ready["setup_s"],
        cpu1 - cpu0,
        peak[0] / 2**20,
        before / 2**20,
        ready["failures"],
    )


# -- the Node client ------------------------------------------------------------------------


def node_modules() -> str | None:
    for d in (BENCH / "node" / "node_modules", ROOT / "tests" / "node" / "node_modules"):
        if (d / "ocpp-rpc" / "package.json").exists():
            return str(d)
    return None


def measure_node(
    run: gateway.Running, kind: TlsEvota, chargers: list[Charger], tls: bool, args: Any, pin: Any
) -> Rate:
    modules = node_modules()
    if modules is None or shutil.which("node") is None:
        return Rate(extra="no node or ocpp-rpc (cd bench/node && npm ci)")
    scheme, port = ("wss", kind.tls_port) if tls else ("ws", run.ocpp_port)
    cfg = {
        "endpoint": f"{scheme}://{run.host}:{port}/ocpp",
        "ca": str(kind.pki.server_ca) if tls else None,
        "warmup": 1.0,
        "duration": args.duration,
        "chargers": [
            {"id": c.ident, "cert": c.cert, "key": c.cert_key}
            if c.cert
            else {"id": c.ident, "password": c.key}
            for c in chargers
        ],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(cfg, f)
    cpus = pin.client

    def preexec() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    proc = subprocess.Popen(
        ["node", str(BENCH / "node" / "tls_load.js"), f.name],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "NODE_PATH": modules},
        preexec_fn=preexec,
    )
    # the server's CPU over the client's window: setup takes a while, so sample around it
    assert proc.stdout is not None
    try:
        out, _ = proc.communicate(timeout=args.duration + 120)
    finally:
        os.unlink(f.name)
    res = json.loads(out.strip().splitlines()[-1])
    errors = {"failed connects": res["failed"], "errors": res["errors"]}
    return Rate(
        per_s=res["ok"] / max(res["window_s"], 1e-9),
        client_cpu_pct=100 * res["cpu_s"] / max(res["window_s"], 1e-9),
        errors={k: v for k, v in errors.items() if v},
        extra=res["error"] or f"{res['connected']} connected",
    )


# -- the run ---------------------------------------------------------------------------------


def _row(name: str, unit: str, rates: dict[int, Rate], cpu: bool = True) -> list[str]:
    """One table row: rate (server CPU per unit, µs), ratio to profile 1; client CPU, errors."""
    base = rates.get(1)
    cells = []
    for p in PROFILES:
        r = rates.get(p)
        if r is None:
            cells.append("–")
            continue
        text = f"{r.per_s:,.0f}"
        if cpu and r.server_cpu_ms:
            text += f" ({1000 * r.server_cpu_ms:,.0f} µs)"
        if base and base.per_s and p != 1:
            text += f", {r.per_s / base.per_s:.2f}×"
        cells.append(text)
    notes = []
    for p, r in sorted(rates.items()):
        note = f"P{p} client CPU {r.client_cpu_pct:.0f} %"
        if r.extra:
            note += f", {r.extra}"
        if r.errors:
            note += f", errors {r.errors}"
        notes.append(note)
    return [f"| {name} | {unit} | " + " | ".join(cells) + f" | {'; '.join(notes)} |"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--chargers", type=int, default=None, help="storm size (alias of --storm)")
    p.add_argument("--storm", type=int, default=5000, help="chargers per reconnect storm")
    p.add_argument("--storm-concurrency", type=int, default=256, help="connects in flight")
    p.add_argument("--connections", type=int, default=200, help="msg/s: chargers")
    p.add_argument("--node-connections", type=int, default=50, help="msg/s of the Node client")
    p.add_argument("--handshake-clients", type=int, default=32, help="concurrent handshakes")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measured window")
    p.add_argument("--repeat", type=int, default=1, help="handshake rounds (median)")
    p.add_argument("--rsa", action="store_true", help="also an RSA 2048 server certificate")
    p.add_argument("--no-node", action="store_true")
    p.add_argument("--pin", default="auto")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--startup-timeout", type=float, default=60.0)
    p.add_argument("--server-log-level", default="warning")
    p.add_argument("--keep-data", action="store_true")
    args = p.parse_args(argv)
    if args.chargers is not None:
        args.storm = args.chargers
    small = max(args.connections, args.handshake_clients, args.node_connections)
    pin = gateway.plan_pinning(args.pin)
    nofile = gateway.raise_nofile(2 * args.storm + 2048)
    print("\n".join(gateway.machine_info(pin, nofile)), flush=True)
    load_before = os.getloadavg()

    work = Path(tempfile.mkdtemp(prefix="evota-tls-bench-"))
    t0 = time.perf_counter()
    pki = pki_fixtures.make_pki(work / "pki")
    cert, key = work / "server.pem", work / "server.key"
    shutil.copy(pki.server.cert_path, cert)
    shutil.copy(pki.server.key_path, key)
    fleet = make_fleet(pki, {1: max(small, args.storm), 2: small, 3: max(small, args.storm)})
    print(
        f"certificates: {args.storm + small} minted (EC P-256) in {time.perf_counter() - t0:.1f}s",
        flush=True,
    )
    kind = TlsEvota(args, pin.server, pki, cert, key)
    kind.profiles = {c.ident: c.profile for rows in fleet.by_profile.values() for c in rows}
    run = kind.start("tls")
    lines: list[str] = []
    try:
        everyone = [(c.ident, c.key) for rows in fleet.by_profile.values() for c in rows]
        kind.prepare_chargers(run, everyone)

        def handshakes(label: str) -> dict[int, Rate]:
            rounds: dict[int, list[Rate]] = {p: [] for p in PROFILES}
            for _ in range(args.repeat):
                for prof in PROFILES:
                    chargers = fleet.take(prof, args.handshake_clients)
                    rate = measure_handshakes(run, kind, chargers, prof > 1, args, pin)
                    rounds[prof].append(rate)
                    print(f"  {label} handshakes P{prof}: {rate.per_s:,.0f}/s", flush=True)
            return {
                prof: sorted(rs, key=lambda r: r.per_s)[len(rs) // 2] for prof, rs in rounds.items()
            }

        hs = handshakes("ECDSA")
        msgs = {}
        for prof in PROFILES:
            msgs[prof] = measure_messages(
                run, kind, fleet.take(prof, args.connections), prof > 1, args, pin
            )
            print(f"  msg/s P{prof}: {msgs[prof].per_s:,.0f}", flush=True)
        node: dict[int, Rate] = {}
        if not args.no_node:
            for prof in PROFILES:
                node[prof] = measure_node(
                    run, kind, fleet.take(prof, args.node_connections), prof > 1, args, pin
                )
                print(f"  node msg/s P{prof}: {node[prof].per_s:,.0f}", flush=True)
        storms = {}
        for prof in (1, 3):
            storms[prof] = storm(run, kind, fleet.take(prof, args.storm), prof > 1, args, pin)
            print(f"  storm P{prof}: {storms[prof]}", flush=True)
        hs_rsa: dict[int, Rate] = {}
        if args.rsa:
            cert_pem, key_pem = rsa_server(pki)
            key.write_bytes(key_pem)
            cert.write_bytes(cert_pem)
            os.kill(run.proc.pid, signal.SIGHUP)
            deadline = time.monotonic() + 30
            while served_key_type(run.host, kind.tls_port, str(pki.server_ca)) != "rsa":
                if time.monotonic() > deadline:
                    raise RuntimeError("the RSA server certificate was not loaded on SIGHUP")
                time.sleep(0.2)
            hs_rsa = handshakes("RSA")
            hs_rsa[1] = hs[1]
        run.check_alive()
    finally:
        run.stop()
        kind.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    load_after = os.getloadavg()
    lines += [
        f"command: python bench/tls.py {' '.join(argv if argv is not None else sys.argv[1:])}",
        f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}, "
        f"after: {' '.join(f'{x:.2f}' for x in load_after)}",
        "",
        "| measurement | unit | profile 1 (ws, Basic) | profile 2 (wss, Basic) | "
        "profile 3 (wss, client cert) | notes |",
        "|---|---|---|---|---|---|",
    ]
    hs_unit = f"handshakes/s, {args.handshake_clients} clients"
    lines += _row("connect + upgrade + close, ECDSA P-256 server cert", hs_unit, hs)
    if hs_rsa:
        lines += _row("the same, RSA 2048 server cert", hs_unit, hs_rsa)
    lines += _row(
        "StatusNotification, Python load generator", f"msg/s, {args.connections} chargers", msgs
    )
    if node:
        lines += _row(
            "StatusNotification, Node ocpp-rpc client",
            f"msg/s, {args.node_connections} chargers",
            node,
            cpu=False,
        )
    for prof, s in storms.items():
        fail = f", failures {s.failures}" if s.failures else ""
        lines.append(
            f"| reconnect storm P{prof} | {s.accepted}/{args.storm} accepted | "
            f"{s.seconds:.1f} s to all accepted | server CPU {s.server_cpu_s:.1f} s | "
            f"RSS {s.rss_before_mib:.0f} → peak {s.peak_rss_mib:.0f} MiB | "
            f"{args.storm_concurrency} connects in flight{fail} |"
        )
    if storms.get(1) and storms.get(3) and storms[1].seconds:
        lines.append("")
        lines.append(
            f"storm P3/P1 time: {storms[3].seconds / storms[1].seconds:.2f}×, server CPU: "
            f"{storms[3].server_cpu_s / max(storms[1].server_cpu_s, 1e-9):.2f}×"
        )
    lines.append("")
    lines.append("(µs): evota's CPU time per handshake or message; ×: rate ÷ profile 1's")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
