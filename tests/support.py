"""Helpers shared by test modules (fixtures live in ``conftest.py``).

``until`` is the suite's one way to wait for what happens behind an answer (a row the writer
stores, a campaign's state, a charger's boot): it polls a condition instead of sleeping a
guessed time, and a timeout names the last value it saw. ``free_port`` is for a server started
as another process that must be told its port before it runs.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import random
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx

__all__ = ["free_port", "serving", "until"]


async def until(
    check: Callable[[], Any],
    done: Callable[[Any], object] = bool,
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    describe: Callable[[Any], str] = repr,
) -> Any:
    """Call ``check`` (plain or async) until ``done(value)`` holds and return that value.

    After ``timeout`` seconds fail with ``describe(value)`` of the last value, so a stuck wait
    says where it stuck."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if done(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s; last value: {describe(value)}")
        await asyncio.sleep(interval)


async def serving(url: str, timeout: float = 30.0) -> None:
    """Until the evota at ``url``, a process just started, answers ``/healthz``."""
    async with httpx.AsyncClient() as http:

        async def up() -> bool:
            try:
                return (await http.get(f"{url}/healthz")).status_code == 200
            except httpx.HTTPError:
                return False

        await until(up, timeout=timeout, interval=0.1)


#: Each xdist worker (``gw0``, ``gw1``, ...) picks ports from its own block below the kernel's
#: ephemeral range (32768 and up on Linux, where every ``bind(0)`` lands): two workers never pick
#: the same port, and no socket the kernel numbers meanwhile can take one between pick and use.
_FIRST, _BLOCK, _BLOCKS = 20_000, 1_000, 12


def _ports() -> Iterator[int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker.removeprefix("gw") or 0) % _BLOCKS
    first = _FIRST + index * _BLOCK
    # a random start, so a second test run on the same machine rarely walks the same ports
    start = random.randrange(_BLOCK)
    return (first + (start + i) % _BLOCK for i in itertools.count())


_next_ports = _ports()


def free_port() -> int:
    """A free loopback port from this worker's own block (checked by binding it once)."""
    for _ in range(_BLOCK):
        port = next(_next_ports)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in this worker's block of {_BLOCK}")
