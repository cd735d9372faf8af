"""A real Redis (Debian's redis-server) on loopback for the cluster tests.

``redis_server`` is one server per test worker; ``redis_url`` hands each test that server
with an empty database. A test that restarts Redis (failure behaviour) makes its own
``RedisServer`` and calls ``stop``/``start``: the port stays the same, like a restarted
service behind a fixed address.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import support

REDIS = shutil.which("redis-server")


# Ports come from the worker's own block below the kernel's ephemeral range (tests.support):
# a port numbered by bind(0) is in that range, where any outgoing connection can take it
# between the pick and the server's bind (HAProxy failed to start once that way, with two
# suites on the machine).
free_port = support.free_port


class RedisServer:
    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                REDIS,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--protected-mode", "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:  # ready when it accepts a connection and answers PING
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


def _require() -> None:
    if REDIS is None:
        if os.environ.get("EVOTA_REQUIRE_REDIS") == "1":
            raise RuntimeError("EVOTA_REQUIRE_REDIS=1 but redis-server is not installed")
        pytest.skip("redis-server not installed (scripts/test installs it as root)")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    _require()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The worker's Redis, emptied for this test."""
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=5) as sock:
        sock.sendall(b"FLUSHALL\r\n")
        assert sock.recv(16).startswith(b"+OK")
    return redis_server.url
