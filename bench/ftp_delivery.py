"""FTP delivery benchmark: evota's FTP listener against its HTTP download server, same run.

One server process runs both (``DeliveryServer`` and ``FtpDelivery`` sharing keys and caps,
as ``evota serve`` does); N concurrent clients each download the whole image once per round,
over HTTP and over FTP in turn (interleaved, ``--repeat`` rounds, median reported), and the
ratio FTP/HTTP is the figure to watch. The HTTP client is bench/firmware_delivery.py's
(blocking ``recv_into`` with ``MSG_TRUNC``); the FTP client logs in with ftplib (the charger
id and its token), enters passive binary mode and drains the data connection the same way,
so both clients cost the same per byte and the servers are what is compared.

    python bench/ftp_delivery.py --clients 100 --size-mb 50 --repeat 3
"""

from __future__ import annotations

import argparse
import ftplib
import multiprocessing as mp
import os
import platform
import resource
import socket
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from firmware_delivery import BUF, Round, _cpu_of, _download


def _ftp_download(port: int, user: str, password: str, start_at: float, out: list[Any]) -> None:
    """One FTP session: log in, PASV + RETR, count the data bytes; appends (bytes, t, error)."""
    buf = bytearray(BUF)
    view = memoryview(buf)
    try:
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", port, timeout=120)
        ftp.login(user, password)
        ftp.voidcmd("TYPE I")
        delay = start_at - time.time()
        if delay > 0:
            time.sleep(delay)
        data = ftp.transfercmd("RETR firmware.bin")
        data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * BUF)
        got = 0
        while n := data.recv_into(view, BUF, socket.MSG_TRUNC):
            got += n
        data.close()
        ftp.voidresp()
        ftp.close()
        out.append((got, time.time(), None))
    except Exception as exc:  # reported, never raised
        out.append((0, time.time(), f"{type(exc).__name__}: {exc}"))


def _worker(conn: Connection) -> None:
    while True:
        msg = conn.recv()
        if msg is None:
            return
        kind, port, jobs, start_at = msg
        results: list[Any] = []
        before = resource.getrusage(resource.RUSAGE_SELF)
        threads = [
            threading.Thread(
                target=_download, args=("127.0.0.1", port, job, start_at, socket.MSG_TRUNC, results)
            )
            if kind == "http"
            else threading.Thread(target=_ftp_download, args=(port, *job, start_at, results))
            for job in jobs
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = resource.getrusage(resource.RUSAGE_SELF)
        conn.send((results, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime))


def _serve(blob: str, size: int, sha: str, key: bytes, clients: int, conn: Connection) -> None:
    """Child process: both listeners over one image until told to stop."""
    import logging

    import structlog

    from evota.firmware.delivery import DeliveryServer, ServedImage
    from evota.firmware.ftp_delivery import FtpDelivery

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    image = ServedImage(Path(blob), size)
    http = DeliveryServer(
        keys=[key],
        lookup=lambda digest: image if digest == sha else None,
        max_concurrent=clients,
        max_per_site=clients,
    )
    ftp = FtpDelivery(http, max_connections=4 * clients + 16, max_per_address=4 * clients)
    conn.send((http.start("127.0.0.1", 0), ftp.start("127.0.0.1", 0)))
    conn.recv()
    ftp.stop()
    http.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100, help="concurrent downloads")
    parser.add_argument("--size-mb", type=int, default=50, help="file size in MB (10^6 bytes)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per protocol (median)")
    parser.add_argument("--client-procs", type=int, default=2, help="client processes")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    import hashlib

    from evota.firmware import tokens
    from evota.firmware.delivery import download_path
    from evota.signed_tokens import new_key

    size = args.size_mb * 1_000_000
    ctx = mp.get_context("fork")
    with tempfile.TemporaryDirectory(prefix="evota-bench-") as tmp:
        blob = Path(tmp) / "image.bin"
        chunk = os.urandom(1_000_000)
        with blob.open("wb") as f:
            for _ in range(args.size_mb):
                f.write(chunk)
        sha = hashlib.sha256(blob.read_bytes()).hexdigest()
        key = new_key()
        parent, child = ctx.Pipe()
        server = ctx.Process(
            target=_serve, args=(str(blob), size, sha, key, args.clients, child), daemon=True
        )
        server.start()
        http_port, ftp_port = parent.recv()
        expires = int(time.time()) + 3600
        ids = [f"BENCH-{i:04d}" for i in range(args.clients)]
        grants = [tokens.DownloadGrant(f"job-{i}", c, sha, expires) for i, c in enumerate(ids)]
        toks = [tokens.issue(g, key) for g in grants]
        http_jobs = [download_path(c, sha, t) for c, t in zip(ids, toks, strict=True)]
        ftp_jobs = list(zip(ids, toks, strict=True))

        pipes, procs = [], []
        for _ in range(args.client_procs):
            a, b = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(b,), daemon=True)
            p.start()
            pipes.append(a)
            procs.append(p)

        def run(kind: str, port: int, jobs: list[Any]) -> Round:
            start_at = time.time() + 0.5
            for i, pipe in enumerate(pipes):
                pipe.send((kind, port, jobs[i :: len(pipes)], start_at))
            cpu0 = _cpu_of([server.pid or 0])
            replies = [pipe.recv() for pipe in pipes]
            cpu1 = _cpu_of([server.pid or 0])
            results = [r for reply in replies for r in reply[0]]
            total = sum(r[0] for r in results)
            seconds = max(r[1] for r in results) - start_at
            errors = [r[2] for r in results if r[2]]
            errors += [f"short: {r[0]} of {size}" for r in results if not r[2] and r[0] != size]
            return Round(
                kind, total / seconds / 1e6, seconds, total, errors,
                sum(reply[1] for reply in replies),
                None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
            )  # fmt: skip

        rounds: dict[str, list[Round]] = {"http": [], "ftp": []}
        for _ in range(args.repeat):
            rounds["http"].append(run("http", http_port, http_jobs))
            rounds["ftp"].append(run("ftp", ftp_port, ftp_jobs))
        for pipe in pipes:
            pipe.send(None)
        parent.send("stop")
        server.join(timeout=10)

    cpus = os.cpu_count()
    print(
        f"{args.clients} clients × {args.size_mb} MB, {args.repeat} rounds (median), "
        f"{args.client_procs} client processes (MSG_TRUNC); {cpus} CPUs, "
        f"Python {platform.python_version()}"
    )
    print()
    print("| server | MB/s (median) | rounds MB/s | vs HTTP | server CPU % | errors |")
    print("|---|---|---|---|---|---|")
    base = statistics.median(r.mb_s for r in rounds["http"])
    for kind, rs in rounds.items():
        med = statistics.median(r.mb_s for r in rs)
        cpu = [r.server_cpu / r.seconds * 100 for r in rs if r.server_cpu is not None]
        errors = sum(len(r.errors) for r in rs)
        print(
            f"| {kind} | {med:.0f} | {' / '.join(f'{r.mb_s:.0f}' for r in rs)} | "
            f"{med / base:.2f} | {statistics.median(cpu):.0f} | {errors} |"
            if cpu
            else f"| {kind} | {med:.0f} | - | {med / base:.2f} | - | {errors} |"
        )
        for r in rs:
            for e in r.errors[:3]:
                print(f"  {kind} error: {e}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
