"""Who this node is and what it runs.

A node's *name* is stable (``EVOTA_NODE_ID`` or the host name) and is what operators see; its
*key* adds a random incarnation, so a node restarted under the same name never inherits the
leases, inflight commands or leadership of its previous life.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import IO

COMPONENTS = ("ocpp", "http", "download", "runners")


def parse_components(text: str) -> frozenset[str]:
    """``ocpp,http,download,runners`` (any non-empty subset); ValueError names the stranger."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError(f"must name at least one of {', '.join(COMPONENTS)}")
    for name in names:
        if name not in COMPONENTS:
            raise ValueError(f"unknown component {name!r}: use {', '.join(COMPONENTS)}")
    return frozenset(names)


@dataclass(frozen=True)
class Node:
    name: str
    incarnation: str

    @property
    def key(self) -> str:
        """Unique per process start: what leases and inflight commands are keyed by."""
        return f"{self.name}:{self.incarnation}"

    @classmethod
    def start(cls, name: str | None) -> Node:
        return cls(name or socket.gethostname() or "evota", secrets.token_hex(4))


class AlreadyRunning(OSError):
    """Another node holds this SQLite database: several nodes need PostgreSQL and Redis."""


def single_node_lock(database_file: Path) -> IO[bytes]:
    """Hold an exclusive lock beside a SQLite database for the life of the process.

    A second ``evota serve`` on the same file would double every runner and split the
    connections; the lock refuses it with one clear line. The lock is released by the kernel
    when the process ends, however it ends.
    """
    path = database_file.with_name(database_file.name + ".node-lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # in the private data directory
    os.fchmod(fd, 0o600)
    handle = os.fdopen(fd, "r+b")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise AlreadyRunning(
            f"another evota node is running on {database_file}: several nodes need "
            "PostgreSQL and Redis (EVOTA_DATABASE_URL, EVOTA_REDIS_URL; docs/cluster.md)"
        ) from None
    os.set_inheritable(handle.fileno(), False)
    return handle
