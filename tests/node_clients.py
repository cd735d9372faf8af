"""The Node.js clients in ``tests/node`` (independent OCPP implementations in strict mode).

``npm ci`` installs their pinned dependencies into ``tests/node/node_modules`` the first time
(this needs the npm registry); the tests that run them share one xdist group, so two workers
never run ``npm ci`` into the same directory at once.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(__file__).parent / "node"

#: Every test that runs a Node client carries this mark (one worker runs them all).
same_worker = pytest.mark.xdist_group("node")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name!r} is not on PATH: this test needs Node.js >= 18 and npm")
    return path


async def _run(*argv: str, cwd: Path, timeout: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


async def ensure_node_modules() -> str:
    """The ``node`` executable, once the clients' dependencies are installed."""
    node = _tool("node")
    npm = _tool("npm")
    if not (NODE_DIR / "node_modules" / "ocpp-rpc" / "package.json").exists():
        rc, out = await _run(
            npm, "ci", "--no-audit", "--no-fund", "--loglevel=error", cwd=NODE_DIR, timeout=90
        )
        if rc != 0:
            pytest.fail(
                f"`npm ci` in {NODE_DIR} failed (exit {rc}; it needs the npm registry):\n{out}"
            )
    return node


async def run_client(
    script: str,
    *args: str,
    on_line: Callable[[str], Awaitable[None]] | None = None,
    timeout: float = 60.0,
) -> tuple[dict[str, Any], str]:
    """Run ``tests/node/<script>`` to the end: ``on_line`` hears each stdout line as it comes
    (a READY_... line is the test's turn); returns the JSON summary (the last line) and the
    stderr frame log."""
    node = await ensure_node_modules()
    proc = await asyncio.create_subprocess_exec(
        node,
        str(NODE_DIR / script),
        *args,
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=1 << 22,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr_task = asyncio.create_task(proc.stderr.read())
    lines: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            while line := (await proc.stdout.readline()).decode():
                lines.append(line.rstrip("\n"))
                if on_line is not None:
                    await on_line(lines[-1])
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = (await stderr_task).decode(errors="replace")
    if proc.returncode != 0 or not lines:
        pytest.fail(f"{script} exited {proc.returncode}:\n{log[-5000:]}")
    return json.loads(lines[-1]), log
