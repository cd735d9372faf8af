"""Wall time of the demo's headline flow, as a newcomer runs it: ``./scripts/demo`` on a fresh
data directory (200 chargers unless told), then the campaign commands its banner prints, run
verbatim in bash from the checkout (``ID``/``APPROVAL`` taken from the output before, ben's
password typed on stdin), until ``campaign watch`` reports ``completed``.

    uv run python bench/demo_walltime.py [--chargers 200]

Prints the time to the banner, to the end of each command, and the total.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def block(banner: str, label: str) -> list[str]:
    lines = banner.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {label:<14} "))
    out = [lines[start][17:]]
    for line in lines[start + 1 :]:
        if not line.startswith(" " * 17) or not line.strip():
            break
        out.append(line[17:])
    return out


async def main(chargers: int) -> None:
    t0 = time.monotonic()
    data = Path(tempfile.mkdtemp(prefix="evota-demo-"))
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("EVOTA_CAMPAIGN_DEFAULTS", None)
    demo = await asyncio.create_subprocess_exec(
        str(ROOT / "scripts" / "demo"),
        *("--data-dir", str(data / "evota-demo"), "--chargers", str(chargers)),
        *("--http-port", str(free_port()), "--ocpp-port", str(free_port())),
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    assert demo.stderr is not None
    seen = ""
    while "Press Ctrl-C" not in seen:
        line = (await demo.stderr.readline()).decode()
        if not line:
            raise SystemExit("demo exited:\n" + seen)
        seen += line
    drain = asyncio.create_task(demo.stderr.read())
    print(f"{time.monotonic() - t0:6.1f} s  banner printed")
    ben = re.search(r"console login\s+ben / (\S+)", seen).group(1)  # type: ignore[union-attr]
    exports: list[str] = []
    found: dict[str, str] = {}
    try:
        for command in block(seen, "campaign"):
            if command.startswith("export "):
                exports.append(command)
                continue
            line = re.sub(r"\b(ID|APPROVAL)\b", lambda m: found[m.group(1)], command)
            proc = await asyncio.create_subprocess_exec(
                "bash",
                "-c",
                "set -euo pipefail\n" + "\n".join([*exports, line]),
                cwd=ROOT,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await proc.communicate((ben + "\n").encode())
            text = out.decode()
            if proc.returncode != 0:
                raise SystemExit(f"{command} failed:\n{text}")
            if m := re.search(r"campaign (\S+) \(draft\)", text):
                found["ID"] = m.group(1)
            if m := re.search(r"approval ([0-9a-f-]{36})", text):
                found["APPROVAL"] = m.group(1)
            print(f"{time.monotonic() - t0:6.1f} s  {command}")
        print(text.strip().splitlines()[-1])
        print(f"total: {time.monotonic() - t0:.1f} s wall, {chargers} chargers")
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        await drain
        await demo.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chargers", type=int, default=200)
    asyncio.run(main(parser.parse_args().chargers))
