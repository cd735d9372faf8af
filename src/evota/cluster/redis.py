"""The cluster's Redis client: one connection pool per node, bounded timeouts.

Every Redis call in evota goes through a client made here, so a Redis that stops answering
costs a bounded wait (``socket_timeout``), never a hung request or runner.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import structlog
from redis.asyncio import Redis

from evota.periodic import raise_if_cancelled

log = structlog.get_logger("evota.cluster")

__all__ = ["awaiting", "connect", "key", "raise_if_cancelled", "stop_tasks"]

PREFIX = "evota:"  # every key and channel evota uses starts with this


def connect(url: str, *, timeout: float = 2.0) -> Redis:
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=10,
        retry_on_timeout=False,
        decode_responses=False,
        max_connections=256,
    )


def key(*parts: str) -> str:
    """``evota:a:b`` — the one place key names are joined."""
    return PREFIX + ":".join(parts)


async def stop_tasks(
    tasks: Iterable[asyncio.Task[object]], what: str, timeout: float = 10.0
) -> None:
    """Cancel background tasks and wait for them, at most ``timeout`` seconds.

    A node's stop must end even if a client library holds on to a task: a task still running
    after ``timeout`` is logged with its stack (so the cause can be found) and left behind,
    instead of the stop hanging forever (seen twice in busy test runs while stopping a node).
    """
    tasks = [t for t in tasks if not t.done()]
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        log.error(
            "a task did not stop when cancelled",
            part=what,
            task=task.get_name(),
            awaiting=" > ".join(awaiting(task.get_coro())),
        )


def awaiting(coro: Any, limit: int = 40) -> list[str]:
    """Where a coroutine waits: its chain of awaits, outermost first (``Task.get_stack``
    shows only the outermost frame of a suspended task)."""
    chain: list[str] = []
    while coro is not None and len(chain) < limit:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        frame = frame or getattr(coro, "ag_frame", None)
        if frame is not None:
            chain.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        inner = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        coro = inner or getattr(coro, "ag_await", None)
        framed = any(hasattr(coro, a) for a in ("cr_frame", "gi_frame", "ag_frame"))
        if coro is not None and not framed:
            chain.append(f"awaits {coro!r}"[:300])
            break
    return chain
