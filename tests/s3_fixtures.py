"""A real S3-compatible server on loopback: moto's standalone server (``moto[server]``).

It speaks the S3 HTTP API over a real socket (a separate process, not an in-process mock),
so boto3 in evota goes through its whole stack. ``s3_server`` is one server per test
worker; ``s3`` gives each test its own empty bucket and the settings that point evota at it.
"""

from __future__ import annotations

import http.client
import http.server
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.support import free_port

MOTO = Path(sys.executable).parent / "moto_server"
ACCESS_KEY = "evota-test-key"
SECRET_KEY = "evota-test-secret-never-logged"


class S3Server:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(MOTO), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:  # ready when it answers an HTTP request
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/moto-api/")
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )


class Bucket:
    """A test's bucket: evota's settings for it and a client to look inside."""

    def __init__(self, server: S3Server, name: str, prefix: str = "evota") -> None:
        self.server = server
        self.name = name
        self.prefix = prefix
        self.client = server.client()

    def settings(self, **extra: Any) -> dict[str, Any]:
        return {
            "firmware_store": f"s3://{self.name}/{self.prefix}",
            "s3_endpoint_url": self.server.url,
            "s3_region": "us-east-1",
            "s3_access_key_id": ACCESS_KEY,
            "s3_secret_access_key": SECRET_KEY,
            **extra,
        }

    def keys(self) -> list[str]:
        answer = self.client.list_objects_v2(Bucket=self.name)
        return sorted(o["Key"] for o in answer.get("Contents", []))

    def unfinished_uploads(self) -> list[str]:
        answer = self.client.list_multipart_uploads(Bucket=self.name)
        return [u["Key"] for u in answer.get("Uploads", [])]

    def get(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.name, Key=key)["Body"].read())


@dataclass
class Gate:
    """One request a :class:`GatedS3` proxy holds: ``arrived`` is set when it is held,
    and it goes on when the test sets ``release``. ``after_answer``: the request has
    reached the store and its answer is held (the caller acts on a stale answer)."""

    method: str
    key_part: str
    after_answer: bool = False
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


class GatedS3:
    """A real HTTP reverse proxy on loopback in front of the moto server, which holds a
    chosen request until the test releases it: a slow fetch or an interleaving of two
    nodes' calls made deterministic, with evota's S3 client unchanged (it only gets this
    proxy as its endpoint)."""

    def __init__(self, bucket: Bucket) -> None:
        self.bucket = bucket
        self._gates: list[Gate] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                gate = proxy._take(self.command, self.path)
                if gate is not None and not gate.after_answer:
                    gate.arrived.set()
                    gate.release.wait(30)
                upstream = http.client.HTTPConnection("127.0.0.1", bucket.server.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                upstream.close()
                if gate is not None and gate.after_answer:
                    gate.arrived.set()
                    gate.release.wait(30)
                self.send_response(answer.status)
                for k, v in answer.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                length_out = answer.getheader("Content-Length")
                if self.command == "HEAD" and length_out is not None:
                    self.send_header("Content-Length", length_out)
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def hold(self, method: str, key_part: str, *, after_answer: bool = False) -> Gate:
        """Hold the next ``method`` request whose path contains ``key_part``."""
        gate = Gate(method, key_part, after_answer)
        with self._lock:
            self._gates.append(gate)
        return gate

    def _take(self, method: str, path: str) -> Gate | None:
        with self._lock:
            for gate in self._gates:
                if gate.method == method and gate.key_part in path:
                    self._gates.remove(gate)
                    return gate
        return None

    def settings(self, **extra: Any) -> dict[str, Any]:
        """evota's settings for the bucket, through this proxy."""
        return self.bucket.settings(s3_endpoint_url=self.url, **extra)

    def close(self) -> None:
        with self._lock:
            for gate in self._gates:
                gate.release.set()
        self.server.shutdown()
        self.server.server_close()


def damage(path: Path, offset: int, data: bytes, *, keep_mtime: bool = False) -> None:
    """Overwrite bytes of a file in place (a damaged cached copy); optionally as bit rot
    would, with its mtime kept."""
    before = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server: S3Server) -> Bucket:
    """An empty bucket of its own for this test."""
    bucket = Bucket(s3_server, "evota-" + uuid.uuid4().hex[:16])
    bucket.client.create_bucket(Bucket=bucket.name)
    return bucket


@pytest.fixture
def gated_s3(s3: Bucket) -> Iterator[GatedS3]:
    """The test's bucket behind a :class:`GatedS3` proxy."""
    proxy = GatedS3(s3)
    yield proxy
    proxy.close()
