"""The cluster's Redis client: one connection pool per node, bounded timeouts.

Every Redis call in evota goes through a client made here, so a Redis that stops answering
costs a bounded wait (``socket_timeout``), never a hung request or runner.
"""

from __future__ import annotations

from redis.asyncio import Redis

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
