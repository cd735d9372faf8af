"""Firmware delivery benchmark: evota's DeliveryServer against nginx serving the same file.

N concurrent clients each download the whole file once per round, from each server in
turn (interleaved, ``--repeat`` rounds, median reported). The file sits in a temp dir and is
in the page cache for both servers. evota runs in its own process (tokens checked on every
request, caps on); nginx runs as a non-daemon child with a generated config (sendfile on,
tcp_nopush on, worker_processes auto, access_log off, reuseport so both workers
get connections).

The client is the same for both: ``--client-procs`` worker processes, each with one thread
per connection doing blocking ``recv_into`` on a preallocated buffer with ``MSG_TRUNC``
(the kernel counts and drops the body instead of copying it out; ``--copy`` copies it),
so the client is as cheap as a TCP receiver can be. Run with ``--client-procs 1`` or ``4``
to check that the number of client processes does not change the figures.

    python bench/firmware_delivery.py --clients 100 --size-mb 50 --repeat 3
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

try:
    import psutil
except ImportError:  # dev dependency; only the server CPU column needs it
    psutil = None  # type: ignore[assignment]

NGINX = "/usr/sbin/nginx"
BUF = 1024 * 1024


# -- the client ----------------------------------------------------------------------------


def _download(host: str, port: int, path: str, start_at: float, flags: int, out: list[Any]) -> None:
    """One connection: GET ``path`` and count the body; appends (bytes, t_end, error).

    ``flags=MSG_TRUNC`` makes the kernel drop the body bytes instead of copying them out
    (tcp(7)): on loopback that copy is most of the whole transfer's CPU, and it would be
    charged to the client, not to the server being measured.
    """
    buf = bytearray(BUF)
    view = memoryview(buf)
    try:
        sock = socket.create_connection((host, port), timeout=120)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * BUF)
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        delay = start_at - time.time()
        if delay > 0:
            time.sleep(delay)
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            n = sock.recv_into(view)
            if not n:
                raise OSError("closed before the response head")
            head += bytes(view[:n])
        head, _, first = head.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].startswith("HTTP/1.1 200"):
            raise OSError(f"status {lines[0]!r}")
        length = next(
            int(line.split(":", 1)[1])
            for line in lines
            if line.lower().startswith("content-length:")
        )
        got = len(first)
        while got < length:
            n = sock.recv_into(view, BUF, flags)
            if not n:
                raise OSError(f"closed after {got} of {length} body bytes")
            got += n
        sock.close()
        out.append((got, time.time(), None))
    except Exception as exc:  # reported, never raised: one bad connection must not hang a round
        out.append((0, time.time(), f"{type(exc).__name__}: {exc}"))


def _worker(conn: Connection) -> None:
    """A client process: on each ("run", host, port, paths, start_at) download all paths."""
    while True:
        msg = conn.recv()
        if msg is None:
            return
        _, host, port, paths, start_at, flags = msg
        results: list[Any] = []
        before = resource.getrusage(resource.RUSAGE_SELF)
        threads = [
            threading.Thread(target=_download, args=(host, port, p, start_at, flags, results))
            for p in paths
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        conn.send((results, cpu))


@dataclass
class Round:
    server: str
    mb_s: float
    seconds: float
    bytes: int
    errors: list[str]
    client_cpu: float  # CPU seconds of all client processes
    server_cpu: float | None  # CPU seconds of the server processes


class Clients:
    """Long-lived client processes, so process start-up is not in the measurement."""

    def __init__(self, procs: int, flags: int) -> None:
        self.flags = flags
        ctx = mp.get_context("fork")
        self.pipes: list[Connection] = []
        self.procs = []
        for _ in range(procs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child,), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    def run(
        self, name: str, port: int, paths: list[str], server_pids: list[int], size: int
    ) -> Round:
        start_at = time.time() + 0.5  # every connection open before the clock starts
        for i, pipe in enumerate(self.pipes):
            pipe.send(("run", "127.0.0.1", port, paths[i :: len(self.pipes)], start_at, self.flags))
        cpu0 = _cpu_of(server_pids)
        replies = [pipe.recv() for pipe in self.pipes]
        cpu1 = _cpu_of(server_pids)
        results = [r for reply in replies for r in reply[0]]
        total = sum(r[0] for r in results)
        end = max(r[1] for r in results)
        errors = [r[2] for r in results if r[2]]
        errors += [f"short body: {r[0]} of {size}" for r in results if not r[2] and r[0] != size]
        seconds = end - start_at
        return Round(
            name,
            total / seconds / 1e6,
            seconds,
            total,
            errors,
            sum(reply[1] for reply in replies),
            None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
        )

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send(None)
        for proc in self.procs:
            proc.join(timeout=5)


def _cpu_of(pids: list[int]) -> float | None:
    """CPU seconds (user + system) of the processes and their children, None without psutil."""
    if psutil is None:
        return None
    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


# -- the servers ---------------------------------------------------------------------------


def _run_evota(blob: str, size: int, sha: str, key: bytes, clients: int, conn: Connection) -> None:
    """Child process: serve ``blob`` with evota's DeliveryServer until told to stop."""
    import logging

    import structlog

    from evota.firmware.delivery import DeliveryServer, ServedImage

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    image = ServedImage(Path(blob), size)
    server = DeliveryServer(
        keys=[key],
        lookup=lambda digest: image if digest == sha else None,
        max_concurrent=clients,
        max_per_site=clients,
    )
    conn.send(server.start("127.0.0.1", 0))
    conn.recv()
    server.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"nginx exited with {proc.returncode}: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("nginx did not start listening")


def _start_nginx(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    conf = tmp / "nginx.conf"
    temp_paths = "\n".join(
        f"    {kind}_temp_path {tmp}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf.write_text(
        f"""{"user root;" if os.geteuid() == 0 else ""}
worker_processes auto;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
{temp_paths}
    server {{
        listen 127.0.0.1:{port} reuseport;
        root {tmp}/www;
    }}
}}
"""
    )
    log = tmp / "nginx-error.log"
    proc = subprocess.Popen(
        [NGINX, "-p", str(tmp), "-c", str(conf), "-e", str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    _wait_port(port, proc, log)
    return proc, port


# -- main ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100, help="concurrent downloads")
    parser.add_argument("--size-mb", type=int, default=50, help="file size in MB (10^6 bytes)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per server (median)")
    parser.add_argument("--client-procs", type=int, default=2, help="client processes")
    parser.add_argument(
        "--copy",
        action="store_true",
        help="clients copy the body to user space (recv_into) instead of MSG_TRUNC",
    )
    args = parser.parse_args()

    if not Path(NGINX).exists():
        print(f"{NGINX} not found: install it with `apt-get install -y nginx`", file=sys.stderr)
        return 2

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from evota.firmware import tokens
    from evota.firmware.delivery import download_path
    from evota.signed_tokens import new_key

    size = args.size_mb * 1_000_000
    with tempfile.TemporaryDirectory(prefix="evota-bench-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "www").mkdir()
        blob = tmp / "www" / "firmware.bin"
        data = os.urandom(size)
        blob.write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        del data

        key = new_key()
        expires = int(time.time()) + 3600
        evota_paths = []
        for i in range(args.clients):
            grant = tokens.DownloadGrant(f"job-{i:04d}", f"BENCH-{i:04d}", sha, expires)
            token = tokens.issue(grant, key)
            evota_paths.append(download_path(grant.charger_id, sha, token))
        nginx_paths = ["/firmware.bin"] * args.clients

        clients = Clients(
            args.client_procs, 0 if args.copy else socket.MSG_TRUNC
        )  # fork before any server thread exists
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        evota = ctx.Process(
            target=_run_evota, args=(str(blob), size, sha, key, args.clients, child), daemon=True
        )
        evota.start()
        evota_port = parent.recv()
        nginx, nginx_port = _start_nginx(tmp)
        nginx_pids = [nginx.pid]
        assert evota.pid is not None
        try:
            for name, port, path in (
                ("evota", evota_port, evota_paths[0]),
                ("nginx", nginx_port, nginx_paths[0]),
            ):
                body = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=60).content
                if hashlib.sha256(body).hexdigest() != sha:
                    raise SystemExit(f"{name} served the wrong bytes")
            rounds: list[Round] = []
            for i in range(args.repeat):
                for name, port, paths, pids in (
                    ("evota", evota_port, evota_paths, [evota.pid]),
                    ("nginx", nginx_port, nginx_paths, nginx_pids),
                ):
                    r = clients.run(name, port, paths, pids, size)
                    rounds.append(r)
                    print(
                        f"round {i + 1} {name}: {r.mb_s:,.0f} MB/s in {r.seconds:.2f}s,"
                        f" {len(r.errors)} errors",
                        file=sys.stderr,
                    )
        finally:
            clients.close()
            parent.send("stop")
            evota.join(timeout=10)
            nginx.terminate()
            nginx.wait(timeout=10)

    _report(args, rounds, size)
    medians = {
        s: statistics.median(r.mb_s for r in rounds if r.server == s) for s in ("evota", "nginx")
    }
    return 0 if not any(r.errors for r in rounds) and medians["nginx"] > 0 else 1


def _report(args: argparse.Namespace, rounds: list[Round], size: int) -> None:
    print(
        f"\n{args.clients} clients × {args.size_mb} MB, {args.repeat} rounds (median),"
        f" {args.client_procs} client processes"
        f" ({'recv_into copy' if args.copy else 'MSG_TRUNC'}); {os.cpu_count()} CPUs,"
        f" Python {platform.python_version()}, {_nginx_version()}\n"
    )
    print(
        "| server | MB/s (median) | rounds MB/s | vs nginx | server CPU % | client CPU % | errors |"
    )
    print("|---|---|---|---|---|---|---|")
    med: dict[str, Round] = {}
    for name in ("evota", "nginx"):
        mine = sorted((r for r in rounds if r.server == name), key=lambda r: r.mb_s)
        med[name] = mine[len(mine) // 2]
    for name in ("evota", "nginx"):
        m = med[name]
        each = ", ".join(f"{r.mb_s:,.0f}" for r in rounds if r.server == name)
        ratio = m.mb_s / med["nginx"].mb_s
        server_cpu = "n/a" if m.server_cpu is None else f"{100 * m.server_cpu / m.seconds:.0f}"
        errors = sum(len(r.errors) for r in rounds if r.server == name)
        print(
            f"| {name} | {m.mb_s:,.0f} | {each} | {ratio:.2f}× | {server_cpu}"
            f" | {100 * m.client_cpu / m.seconds:.0f} | {errors} |"
        )
    for r in rounds:
        for e in r.errors[:3]:
            print(f"- {r.server}: {e}")
    ratio = med["evota"].mb_s / med["nginx"].mb_s
    verdict = "met" if ratio >= 0.5 else "NOT met"
    print(f"\nevota / nginx = {ratio:.2f}× (target ≥ 0.5×): {verdict}")
    print("CPU % is CPU time over the round's wall time; 100 = one core.")


def _nginx_version() -> str:
    out = subprocess.run([NGINX, "-v"], capture_output=True, text=True, check=False)
    return out.stderr.strip().replace("nginx version: ", "")


if __name__ == "__main__":
    if shutil.which(NGINX) is None and not Path(NGINX).exists():
        print(f"{NGINX} not found: install it with `apt-get install -y nginx`", file=sys.stderr)
        sys.exit(2)
    sys.exit(main())
