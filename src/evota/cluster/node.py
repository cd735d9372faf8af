"""Who this node is and what it runs.

A node's *name* is stable (``EVOTA_NODE_ID`` or the host name) and is what operators see; its
*key* adds a random incarnation, so a node restarted under the same name never inherits the
leases, inflight commands or leadership of its previous life.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from evota.audit.log import HEAD_KEY_FILE
from evota.cluster import envelope
from evota.control import uploads
from evota.firmware import tokens
from evota.pki import ca

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


#: The data directory's files every node of a cluster must hold the same copy of: the audit
#: head key (else a node's entries fail verification), the download and upload token keys
#: (else a link one node handed out fails on another) and the charger CA (else a certificate
#: one node signed is unknown to the others), and the cluster key that seals messages between
#: nodes (evota.cluster.envelope). docs/cluster.md, "Topology".
SHARED_FILES: tuple[str, ...] = (
    envelope.KEY_FILE,
    HEAD_KEY_FILE,
    tokens.KEY_FILE,
    uploads.KEY_FILE,
    f"{ca.CA_DIR}/{ca.CERT_FILE}",
    f"{ca.CA_DIR}/{ca.KEY_FILE}",
)


def copy_shared_files(source: Path, target: Path) -> list[str]:
    """Copy the shared files a first node created into another node's data directory
    (private: 0700 directories, 0600 files); the names copied (a missing one is skipped)."""
    copied = []
    for name in SHARED_FILES:
        src = source / name
        if not src.exists():
            continue
        dst = target / name
        dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(target, 0o700)
        os.chmod(dst.parent, 0o700)
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o600)
        copied.append(name)
    return copied
