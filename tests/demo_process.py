"""`evota demo` as a real process for tests: start it, read its banner, stop it with Ctrl-C.

The banner is the product's documentation of the demo; tests read what it printed (URLs, the
admin token, logins, the command blocks) instead of knowing it beforehand.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from evota.demo import DEMO_CAMPAIGN_DEFAULTS

from .support import until

#: The demo's own policy defaults (threshold, auto-stop) at test speed: gates after 3 s
#: instead of 20, so the suite stays short. Only the clock differs from what a newcomer runs.
FAST: dict[str, Any] = {
    **DEMO_CAMPAIGN_DEFAULTS,
    "soak_seconds": 3,
    "health_window_seconds": 3,
    "available_within_seconds": 3,
    "max_wait_seconds": 10,
}
#: Simulated installs at test speed too (the demo's default is the simulator's 5 s).
INSTALL_SECONDS = 1
FAST_ENV = {
    "EVOTA_CAMPAIGN_DEFAULTS": json.dumps(FAST),
    "EVOTA_JOB_VERIFY_SECONDS": "1",
    "EVOTA_CAMPAIGN_TICK_SECONDS": "0.2",
}


@dataclass
class Demo:
    proc: asyncio.subprocess.Process
    banner: str
    url: str
    token: str
    logins: dict[str, str]

    def block(self, label: str) -> list[str]:
        """The commands the banner prints under ``label`` (its first line carries the label,
        the following ones are indented under it), exactly as printed."""
        lines = self.banner.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith(f"  {label:<14} "))
        out = [lines[start][17:]]
        for line in lines[start + 1 :]:
            if not line.startswith(" " * 17) or not line.strip():
                break
            out.append(line[17:])
        return out


async def booted(demo: Demo, chargers: int) -> None:
    """Until every simulated charger is connected and its boot (vendor, model, version) is
    stored: a campaign targets chargers by what they reported."""
    async with httpx.AsyncClient(
        base_url=demo.url, headers={"Authorization": f"Bearer {demo.token}"}
    ) as api:

        async def ready() -> int:
            page = (await api.get("/api/v1/chargers", params={"limit": 1000})).json()
            return len([c for c in page["items"] if c["connected"] and c["model"]])

        await until(ready, lambda n: n == chargers, timeout=60, interval=0.2)


@asynccontextmanager
async def running_demo(
    data_dir: Path, chargers: int, env: dict[str, str] | None = None
) -> AsyncIterator[Demo]:
    """``evota demo`` until its banner is out; Ctrl-C afterwards, and it must exit cleanly.
    Its ports are the system's choice (port 0): the banner says which."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "evota",
        "demo",
        "--data-dir",
        str(data_dir),
        "--chargers",
        str(chargers),
        "--http-port",
        "0",
        "--ocpp-port",
        "0",
        "--install-seconds",
        str(INSTALL_SECONDS),
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )
    assert proc.stderr is not None
    seen: list[str] = []
    drain: asyncio.Task[bytes] | None = None
    try:
        async with asyncio.timeout(90):
            while not any("Press Ctrl-C" in line for line in seen):
                line = (await proc.stderr.readline()).decode()
                assert line, "demo exited early:\n" + "".join(seen)
                seen.append(line)
        banner = "".join(seen)
        token = next(w for w in banner.split() if w.startswith("evota_demo_"))
        logins = dict(re.findall(r"console login\s+(\w+) / (\S+)", banner))
        # keep reading what it writes, so a full pipe never stalls the demo
        drain = asyncio.create_task(proc.stderr.read())
        console = re.search(r"^  console\s+(http://127\.0\.0\.1:\d+)/$", banner, re.M)
        assert console, banner
        demo = Demo(proc, banner, console.group(1), token, logins)
        await booted(demo, chargers)
        yield demo
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(drain or proc.stderr.read(), 30)
        code = await proc.wait()
    assert code == 0, rest.decode()
    assert b"Traceback" not in rest, rest.decode()
