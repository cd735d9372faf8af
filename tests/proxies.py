"""Debian's nginx and haproxy run by tests in front of evota, with the configurations the
documentation and deploy/ give: the binary found (or the test failed with what to install),
a minimal nginx.conf around a block of the ``http {}`` context, and the process started,
waited for until it accepts and stopped. Used by tests/gateway/test_tls_proxy.py (TLS
termination) and tests/cluster/test_nginx.py (several nodes behind nginx)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import until


def binary(name: str) -> str:
    found = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if found is None:
        pytest.fail(f"{name} is not installed: install Debian's {name} package (scripts/test does)")
    return found


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def listening(port: int, proc: asyncio.subprocess.Process) -> bool:
    """Neither proxy reports readiness: its socket accepting is the sign (a crash fails)."""
    assert proc.returncode is None, f"the proxy exited with {proc.returncode}"
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


def nginx_command(work: Path, http: str, *, worker_connections: int = 64) -> list[str]:
    """nginx's command line: a minimal configuration in ``work`` (foreground, one process, its
    pid, logs and temporary files there) whose ``http {}`` context holds ``http``."""
    temp_paths = "\n".join(
        f"    {kind}_temp_path {work}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = work / "nginx.conf"
    conf.write_text(
        f"""{"user root;" if os.geteuid() == 0 else ""}
worker_processes 1;
daemon off;
master_process off;
pid {work}/nginx.pid;
error_log {work}/error.log info;
events {{ worker_connections {worker_connections}; }}
http {{
{temp_paths}
{http}
}}
"""
    )
    return [binary("nginx"), "-p", str(work), "-c", str(conf), "-e", str(work / "error.log")]


@contextlib.asynccontextmanager
async def running(
    argv: list[str], work: Path, port: int, name: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """The proxy started (its output in ``work/output.log``) and accepting on ``port``;
    terminated on exit. A proxy that does not come up fails with its output and error log."""
    output = work / "output.log"
    with output.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=sink, stderr=subprocess.STDOUT)
    try:
        await until(
            lambda: listening(port, proc),
            describe=lambda _: f"{name} is not listening: {read(output)}{read(work / 'error.log')}",
        )
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
