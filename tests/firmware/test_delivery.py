"""The firmware download server over real loopback sockets, real files and httpx."""

from __future__ import annotations

import hashlib
import os
import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import structlog.testing

from evota.firmware import tokens
from evota.firmware.delivery import DeliveryServer, ServedImage, download_path, download_url
from evota.signed_tokens import new_key

NOW = 1_900_000_000
SIZE = 2 * 1024 * 1024 + 123  # odd size: ranges at the end are not chunk-aligned
BIG = 32 * 1024 * 1024  # sparse; more than the loopback socket buffers hold, so a download
# to a client that stops reading stays open
DATA = os.urandom(SIZE)
DATA_SHA = hashlib.sha256(DATA).hexdigest()
BIG_SHA = hashlib.sha256(bytes(BIG)).hexdigest()


@dataclass
class Env:
    server: DeliveryServer
    port: int
    key: bytes
    images: dict[str, ServedImage]
    sites: dict[str, str]
    clock: list[float]
    data: bytes
    sha: str
    big_sha: str
    tmp: Path
    http: httpx.Client

    def token(
        self,
        charger: str = "CP-1",
        sha: str | None = None,
        job: str = "job-1",
        expires: int = NOW + 3600,
        key: bytes | None = None,
    ) -> str:
        grant = tokens.DownloadGrant(job, charger, sha or self.sha, expires)
        return tokens.issue(grant, key or self.key)

    def path(self, charger: str = "CP-1", sha: str | None = None, **kw: object) -> str:
        sha = sha or self.sha
        return download_path(charger, sha, self.token(charger, sha, **kw))  # type: ignore[arg-type]

    def url(self, charger: str = "CP-1", sha: str | None = None, **kw: object) -> str:
        return f"http://127.0.0.1:{self.port}" + self.path(charger, sha, **kw)

    def raw(self, rcvbuf: int | None = None) -> socket.socket:
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", self.port))
        return sock


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """One client for the module: creating one per request costs ~20 ms (SSL context)."""
    with httpx.Client(timeout=5) as client:
        yield client


@pytest.fixture
def env(tmp_path: Path, http: httpx.Client) -> Iterator[Env]:
    data, sha, big_sha = DATA, DATA_SHA, BIG_SHA
    (tmp_path / "blob").write_bytes(data)
    big = tmp_path / "big"
    with big.open("wb") as f:
        f.truncate(BIG)
    images = {
        sha: ServedImage(tmp_path / "blob", SIZE),
        big_sha: ServedImage(big, BIG),
    }
    sites = {"CP-1": "berlin", "CP-2": "berlin", "CP-3": "paris"}
    clock = [float(NOW)]
    key = new_key()
    server = DeliveryServer(
        keys=[key],
        lookup=images.get,
        site_of=sites.get,
        now=lambda: clock[0],
        max_concurrent=2,
        max_per_site=1,
        timeout=5,
    )
    port = server.start("127.0.0.1", 0)
    try:
        yield Env(server, port, key, images, sites, clock, data, sha, big_sha, tmp_path, http)
    finally:
        server.stop()


def _read_response(f: object, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
    assert hasattr(f, "readline") and hasattr(f, "read")
    status_line = f.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if not head_only and status != 304:
        body = f.read(int(headers["content-length"]))
    return status, headers, body


def _wait_for(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def _hold_download(env: Env, charger: str, job: str) -> socket.socket:
    """Start downloading the big image and stop reading, so the server blocks mid-body."""
    sock = env.raw(rcvbuf=4096)
    path = env.path(charger, env.big_sha, job=job)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
    return sock


# -- URLs ------------------------------------------------------------------------------


def test_download_path_and_url() -> None:
    sha = "a" * 64
    assert (
        download_path("CP/1 ü", sha, "tok_-")
        == f"/firmware/CP%2F1%20%C3%BC/{sha}/tok_-/firmware.bin"
    )
    assert download_path("CP", sha, "t", "/dl/") == f"/dl/CP/{sha}/t/firmware.bin"
    assert (
        download_url("http://h:8080/", "CP", sha, "t")
        == f"http://h:8080/firmware/CP/{sha}/t/firmware.bin"
    )
    with pytest.raises(ValueError):
        download_url("http://h", "CP", sha, "t" * 500)
    with pytest.raises(ValueError):
        download_path("CP", "A" * 64, "t")
    with pytest.raises(ValueError):
        download_path("CP", sha, "bad/token")


# -- happy paths -----------------------------------------------------------------------


def test_full_get(env: Env) -> None:
    r = env.http.get(env.url())
    assert r.status_code == 200
    assert r.content == env.data
    assert hashlib.sha256(r.content).hexdigest() == env.sha
    assert r.headers["etag"] == f'"{env.sha}"'
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-length"] == str(SIZE)
    assert r.headers["cache-control"] == "private, no-store"
    assert "last-modified" in r.headers


def test_charger_id_needing_quotes_and_key_rotation(env: Env) -> None:
    old = env.key
    env.server.keys = (new_key(), old)
    charger = "CP/01 ü"
    r = env.http.get(env.url(charger, key=old))
    assert r.status_code == 200 and r.content == env.data


def test_head(env: Env) -> None:
    with env.raw() as sock, sock.makefile("rb") as f:
        sock.sendall(f"HEAD {env.path()} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, headers, _ = _read_response(f, head_only=True)
        assert status == 200
        assert headers["content-length"] == str(SIZE)
        assert headers["etag"] == f'"{env.sha}"'
        # Keep-alive, and no body bytes in between: the next response starts right away.
        sock.sendall(f"GET {env.path()} HTTP/1.1\r\nHost: x\r\nRange: bytes=-10\r\n\r\n".encode())
        status, headers, body = _read_response(f)
        assert status == 206 and body == env.data[-10:]


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("bytes=0-99", 0, 100),
        ("bytes=1000-1999", 1000, 2000),
        ("bytes=2000000-", 2000000, SIZE),
        ("bytes=-500", SIZE - 500, SIZE),
        ("bytes=-99999999", 0, SIZE),
        ("bytes=10-99999999", 10, SIZE),
    ],
)
def test_range(env: Env, spec: str, start: int, end: int) -> None:
    r = env.http.get(env.url(), headers={"Range": spec})
    assert r.status_code == 206
    assert r.content == env.data[start:end]
    assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{SIZE}"
    assert r.headers["content-length"] == str(end - start)


@pytest.mark.parametrize("spec", [f"bytes={SIZE}-", f"bytes={SIZE + 5}-{SIZE + 10}", "bytes=-0"])
def test_range_not_satisfiable(env: Env, spec: str) -> None:
    r = env.http.get(env.url(), headers={"Range": spec})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{SIZE}"
    assert r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("spec", ["bytes=0-1,5-6", "items=0-5", "bytes=5-1", "bytes=x-"])
def test_ignored_range_serves_whole_file(env: Env, spec: str) -> None:
    r = env.http.get(env.url(), headers={"Range": spec})
    assert r.status_code == 200 and r.content == env.data


def test_if_range(env: Env) -> None:
    match = env.http.get(env.url(), headers={"Range": "bytes=5-9", "If-Range": f'"{env.sha}"'})
    assert match.status_code == 206 and match.content == env.data[5:10]
    for other in ['"' + "0" * 64 + '"', f'W/"{env.sha}"', "Wed, 21 Oct 2015 07:28:00 GMT"]:
        r = env.http.get(env.url(), headers={"Range": "bytes=5-9", "If-Range": other})
        assert r.status_code == 200 and r.content == env.data


def test_if_none_match(env: Env) -> None:
    r = env.http.get(env.url(), headers={"If-None-Match": f'W/"{env.sha}"'})
    assert r.status_code == 304 and r.content == b""
    assert env.http.get(env.url(), headers={"If-None-Match": '"x"'}).status_code == 200


def test_resume_interrupted_download(env: Env) -> None:
    got = bytearray()
    with env.raw() as sock, sock.makefile("rb") as f:
        sock.sendall(f"GET {env.path()} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert f.readline().startswith(b"HTTP/1.1 200")
        while f.readline() != b"\r\n":
            pass
        got += f.read(300_000)
    r = env.http.get(env.url(), headers={"Range": f"bytes={len(got)}-", "If-Range": f'"{env.sha}"'})
    assert r.status_code == 206
    got += r.content
    assert hashlib.sha256(got).hexdigest() == env.sha


# -- refusals --------------------------------------------------------------------------


def _assert_problem(r: httpx.Response, status: int) -> None:
    assert r.status_code == status
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["status"] == status and problem["title"] and "detail" in problem
    assert len(r.content) < 300  # a problem body, never file bytes


def test_token_for_another_charger(env: Env) -> None:
    path = download_path("CP-2", env.sha, env.token("CP-1"))
    _assert_problem(env.http.get(f"http://127.0.0.1:{env.port}{path}"), 403)


def test_tampered_token(env: Env) -> None:
    token = env.token()
    bad = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
    path = download_path("CP-1", env.sha, bad)
    r = env.http.get(f"http://127.0.0.1:{env.port}{path}")
    _assert_problem(r, 403)
    assert token not in r.text and bad not in r.text


def test_expired_token(env: Env) -> None:
    url = env.url(expires=NOW + 10)
    env.clock[0] = NOW + 10
    _assert_problem(env.http.get(url), 410)
    env.clock[0] = NOW + 9
    assert env.http.get(url).status_code == 200


def test_wrong_image_in_path(env: Env) -> None:
    path = download_path("CP-1", env.big_sha, env.token("CP-1", env.sha))
    _assert_problem(env.http.get(f"http://127.0.0.1:{env.port}{path}"), 403)


def test_revoked_unknown_and_missing_images(env: Env) -> None:
    env.images[env.sha] = ServedImage(env.tmp / "blob", SIZE, revoked=True)
    _assert_problem(env.http.get(env.url()), 410)
    unknown = "1" * 64
    _assert_problem(env.http.get(env.url(sha=unknown)), 404)
    env.images[unknown] = ServedImage(env.tmp / "gone", 5)
    _assert_problem(env.http.get(env.url(sha=unknown)), 404)


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/firmware/",
        "/firmware/CP-1",
        "/other/CP-1/{sha}/{token}",
        "/firmware/CP-1/{upper}/{token}",
        "/firmware/CP-1/{sha}/bad.token",
        "/firmware//{sha}/{token}",
        "/firmware/CP-1/../../etc/passwd",
        "/firmware/%FF/{sha}/{token}",
    ],
)
def test_unknown_paths(env: Env, path: str) -> None:
    token = env.token()
    target = path.format(sha=env.sha, upper=env.sha.upper(), token=token)
    _assert_problem(env.http.get(f"http://127.0.0.1:{env.port}{target}"), 404)


def test_other_methods(env: Env) -> None:
    r = env.http.post(env.url(), content=b"x")
    _assert_problem(r, 405)
    assert r.headers["allow"] == "GET, HEAD"
    _assert_problem(env.http.request("DELETE", env.url()), 405)


# -- caps, accounting, robustness ------------------------------------------------------


def test_global_cap(env: Env) -> None:
    a = _hold_download(env, "CP-1", "job-a")
    b = _hold_download(env, "CP-3", "job-b")
    _wait_for(lambda: env.server.active_downloads == 2)
    r = env.http.get(env.url("CP-4"))
    _assert_problem(r, 503)
    assert r.headers["retry-after"] == "30"
    assert env.http.head(env.url("CP-4")).status_code == 200  # HEAD sends no body: no slot
    a.close()
    _wait_for(lambda: env.server.active_downloads == 1)
    assert env.http.get(env.url("CP-4")).content == env.data
    b.close()
    _wait_for(lambda: env.server.active_downloads == 0)


def test_per_site_cap(env: Env) -> None:
    held = _hold_download(env, "CP-1", "job-a")
    _wait_for(lambda: env.server.active_downloads == 1)
    _assert_problem(env.http.get(env.url("CP-2")), 503)  # same site (berlin)
    assert env.http.get(env.url("CP-3")).status_code == 200  # another site
    assert env.http.get(env.url("CP-9")).status_code == 200  # no site: global cap only
    held.close()
    _wait_for(lambda: env.server.active_downloads == 0)
    assert env.http.get(env.url("CP-2")).content == env.data


def test_take_bytes_counts_partial_downloads(env: Env) -> None:
    held = _hold_download(env, "CP-1", "job-partial")
    _wait_for(lambda: env.server.active_downloads == 1)
    held.close()
    _wait_for(lambda: env.server.active_downloads == 0)
    env.http.get(env.url("CP-3", job="job-full"))
    env.http.get(env.url("CP-3", job="job-full"), headers={"Range": "bytes=-100"})
    env.http.head(env.url("CP-3", job="job-head"))
    taken = env.server.take_bytes()
    assert taken["job-full"] == SIZE + 100
    assert 0 < taken["job-partial"] < BIG
    assert "job-head" not in taken
    assert env.server.take_bytes() == {}


def test_stop_is_prompt_with_connections_open(env: Env) -> None:
    idle = env.raw()
    held = _hold_download(env, "CP-1", "job-a")
    _wait_for(lambda: env.server.active_downloads == 1)
    started = time.monotonic()
    env.server.stop()
    assert time.monotonic() - started < 1.0
    assert env.server.active_downloads == 0
    assert idle.recv(10) == b""
    env.server.stop()  # idempotent
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", env.port), timeout=1).recv(1)
    idle.close()
    held.close()


@pytest.mark.parametrize(
    ("garbage", "status"),
    [
        (b"\x00\xff\xfe garbage\r\n\r\n", 400),
        (b"GET /firmware/ HTTP/9.9\r\n\r\n", 505),
        (b"GET /firmware/\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n folded: x\r\n\r\n", 400),
        (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"b" * 9000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 100 + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 5000 + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host (RFC 9112 §3.2)
        (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"HEAD / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ],
)
def test_malformed_requests_do_not_hurt_the_server(env: Env, garbage: bytes, status: int) -> None:
    with env.raw() as sock, sock.makefile("rb") as f:
        sock.sendall(garbage)
        got, headers, _ = _read_response(f, head_only=garbage.startswith(b"HEAD "))
        assert got == status
        assert headers["connection"] == "close"
        assert headers["content-type"] == "application/problem+json"
        assert f.read() == b""  # and the connection is closed (no body after a HEAD answer)
    with env.raw() as sock:
        sock.sendall(b"\x00" * 100)
        sock.shutdown(socket.SHUT_WR)  # half a line, then EOF
        sock.recv(1000)
    assert env.http.get(env.url()).content == env.data


def test_keep_alive_pipelining_http10_and_empty_lines_before_the_head(env: Env) -> None:
    """Request heads come from h11: pipelined heads are answered in order on one connection,
    an HTTP/1.0 client (no Host needed) gets its answer and a close, and empty lines before
    a request line are ignored (RFC 9112 §2.2)."""
    path = env.path()
    with env.raw() as sock, sock.makefile("rb") as f:
        sock.sendall(
            f"\r\nGET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-4\r\n\r\n"
            f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n"
            f"GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=-3\r\n\r\n".encode()
        )
        assert _read_response(f)[::2] == (206, env.data[:5])
        assert _read_response(f, head_only=True)[0] == 200
        status, headers, body = _read_response(f)
        assert (status, body) == (206, env.data[-3:]) and "connection" not in headers
        sock.sendall(
            f"\r\n\r\nGET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        status, headers, body = _read_response(f)
        assert (status, headers["connection"], body) == (200, "close", env.data)
        assert f.read() == b""
    with env.raw() as sock, sock.makefile("rb") as f:
        sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        status, headers, body = _read_response(f)
        assert (status, headers["connection"], body) == (200, "close", env.data)
        assert f.read() == b""


def test_tokens_never_logged_when_the_head_is_refused(env: Env) -> None:
    """h11's error messages quote the request line: they must not reach the log."""
    token = env.token()
    path = download_path("CP-1", env.sha, token)
    with structlog.testing.capture_logs() as logs:
        for garbage in (
            f"GET {path} HTTP/1.1 extra\r\nHost: x\r\n\r\n",
            f"GET {path} HTTP/1.1\r\nHost: x\r\nBad header\r\n\r\n",
            f"GET {path}\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        ):
            with env.raw() as sock, sock.makefile("rb") as f:
                sock.sendall(garbage.encode())
                status, _, body = _read_response(f)
                assert status == 400 and token.encode() not in body
    assert [e["status"] for e in logs if e["event"] == "bad firmware request"] == [400] * 3
    assert token[:40] not in repr(logs)


def test_tokens_never_logged(env: Env) -> None:
    good, other = env.token(), env.token("CP-2")
    with structlog.testing.capture_logs() as logs:
        env.http.get(f"http://127.0.0.1:{env.port}" + download_path("CP-1", env.sha, good))
        env.http.get(f"http://127.0.0.1:{env.port}" + download_path("CP-1", env.sha, other))
        env.http.get(f"http://127.0.0.1:{env.port}" + download_path("CP-1", env.sha, good[:-2]))
    text = repr(logs)
    assert good[:40] not in text and other[:40] not in text
    refused = [e for e in logs if e["event"] == "firmware download refused"]
    assert [(e["charger"], e["job"], e["status"]) for e in refused] == [
        ("CP-2", "job-1", 403),
        ("CP-1", None, 403),
    ]
    assert any(e["event"] == "firmware download" and e["job"] == "job-1" for e in logs)


@pytest.mark.parametrize(
    ("spec", "status", "start"),
    [
        ("bytes=" + "9" * 5000 + "-", 416, None),  # past the end of any file
        ("bytes=" + "1" * 4000 + "-" + "2" * 4000, 416, None),
        ("bytes=0-" + "9" * 5000, 206, 0),  # last position past the end: clamped
        ("bytes=-" + "9" * 5000, 206, 0),  # suffix longer than the file: all of it
        ("bytes=" + "0" * 5000 + "7-9", 206, 7),  # leading zeros are just zeros
    ],
)
def test_huge_range_numbers_are_answered(
    env: Env, spec: str, status: int, start: int | None
) -> None:
    """A 5,000-digit position once raised in int() (and logged a traceback)."""
    with structlog.testing.capture_logs() as logs:
        r = env.http.get(env.url(), headers={"Range": spec})
    assert r.status_code == status
    if status == 416:
        assert r.headers["content-range"] == f"bytes */{SIZE}"
    else:
        assert r.content == env.data[start : 10 if start == 7 else SIZE]
    assert not [e for e in logs if e.get("log_level") in ("error", "critical")]


def test_junk_connections_cannot_starve_a_valid_download(env: Env) -> None:
    """300 sockets that sent half a request line once made a valid download get 503."""
    junk = []
    try:
        for _ in range(300):
            sock = env.raw()
            sock.sendall(b"GET /firmware/")
            junk.append(sock)
        _wait_for(lambda: env.server.pending_connections == env.server.max_pending)
        r = env.http.get(env.url())
        assert r.status_code == 200 and r.content == env.data
        # the oldest junk was evicted to make room, the newest are still held open
        assert junk[0].recv(10) == b""
        assert env.server.pending_connections <= env.server.max_pending
    finally:
        for sock in junk:
            sock.close()


def test_request_head_has_a_total_deadline(env: Env) -> None:
    """A head dripping one byte at a time is cut off after head_timeout, not kept forever."""
    server = DeliveryServer(keys=[env.key], lookup=env.images.get, timeout=30, head_timeout=1.0)
    port = server.start("127.0.0.1", 0)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /firmware/")
            closed = False
            while not closed and time.monotonic() - started < 10:
                try:
                    sock.sendall(b"x")  # well within any idle timeout
                except OSError:
                    closed = True
                    break
                ready, _, _ = select.select([sock], [], [], 0.2)
                if ready:
                    closed = sock.recv(100) == b""
            elapsed = time.monotonic() - started
        assert closed and elapsed < 4, elapsed
        _wait_for(lambda: server.pending_connections == 0)
    finally:
        server.stop()
