"""The firmware download server: plain HTTP/1.1 with Range, per-charger tokens and caps.

Chargers fetch images from the URL handed to them in UpdateFirmware; they cannot send extra
headers, so the authorisation is a token in the path (see :mod:`evota.firmware.tokens`).
Images are tens of MB to GBs and a rollout wave starts hundreds of downloads at once, so this
is a dedicated server on its own threads rather than part of the asyncio API: every body is
sent with blocking ``os.sendfile``, which copies page cache to socket inside the kernel and
releases the GIL, so the event loop running the OCPP gateway is not disturbed and
throughput is close to nginx's.

One thread per connection (connections are few and long; threads are cheap next to the
bytes they move). Sockets are blocking with kernel ``SO_RCVTIMEO``/``SO_SNDTIMEO``, so a
stalled client releases its thread after ``timeout`` seconds, and :meth:`DeliveryServer.stop`
wakes every blocked thread by shutting its socket down.

Connections without credentials cannot starve downloads: a request head must arrive
complete within ``head_timeout`` seconds in total (a byte every few seconds does not
extend it), and a connection counts as *pending* until it presents a valid token. Pending
connections have their own cap (``max_pending``); when it is full, a new connection evicts
the oldest pending one instead of being refused, so a charger with a valid token (whose
head arrives in milliseconds) is served while junk connections are held open. Only
connections serving a valid token count against ``max_connections``.

Request heads are parsed by h11 (bounded in size, line length and header count, and
every error answered with a problem body); response heads go through the same h11
connection, which frames them and tracks keep-alive, while body bytes bypass it for
``sendfile``. The token (a secret) is never logged, nor are h11's error messages, which
quote the request line.

URL: ``{prefix}{charger_id}/{sha256}/{token}/firmware.bin``; anything after the token is
ignored (some chargers want a file name). The file path only ever comes from
``lookup(sha256)`` with a validated 64-hex digest, never from the URL.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import socketserver
import stat
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final, Protocol, cast
from urllib.parse import quote, unquote

import h11
import structlog

from evota.firmware import tokens
from evota.firmware.storage import StoreUnavailable
from evota.signed_tokens import MIN_KEY_BYTES

__all__ = [
    "MAX_URL_CHARS",
    "DeliveryServer",
    "ServedImage",
    "download_path",
    "download_url",
]

log = structlog.get_logger("evota.firmware.delivery")

MAX_URL_CHARS: Final = 512  # OCPP 2.0.1 UpdateFirmware location (string[0..512])
MAX_LINE: Final = 8192  # request target or one header line; our URLs are < 1 KiB
MAX_HEAD: Final = 32 * 1024  # whole request head (h11's buffer while it is incomplete)
MAX_HEADERS: Final = 64
SEND_CHUNK: Final = 8 * 1024 * 1024  # per sendfile call: bounds how stale take_bytes gets
RETRY_AFTER: Final = 30  # seconds, on 503 over a cap
_ALLOW: Final = "GET, HEAD"

_SHA256 = re.compile(r"[0-9a-f]{64}")
_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{1,{tokens.MAX_TOKEN_CHARS}}}")
_RANGE_SPEC = re.compile(r"(\d*)-(\d*)", re.ASCII)
# A byte position with more digits than this is past the end of any file (2**63 has 19
# digits); it is never handed to int(), which refuses strings over 4300 digits.
_MAX_POS_DIGITS: Final = 18
_HUGE: Final = 10**_MAX_POS_DIGITS
_SEND_FALLBACK_ERRNOS = frozenset(
    {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EAFNOSUPPORT}
)


def token_status(exc: tokens.TokenError) -> int:
    """The answer to a refused download token (no body bytes): 410 for a genuine but expired
    one (the operator re-issues rather than investigates), 403 for anything else."""
    return 410 if isinstance(exc, tokens.TokenExpired) else 403


@dataclass(frozen=True, slots=True)
class ServedImage:
    """What ``lookup(sha256)`` returns: where the blob lives and whether it may be served."""

    path: Path
    size: int
    revoked: bool = False
    # Called once the request is answered: a cached copy of a remote blob (the S3 store,
    # evota.firmware.s3_storage) stays pinned against eviction until then.
    release: Callable[[], None] | None = None


def _check_prefix(path_prefix: str) -> str:
    if not path_prefix.startswith("/") or not path_prefix.endswith("/"):
        raise ValueError("path_prefix must start and end with '/'")
    return path_prefix


def download_path(charger_id: str, sha256: str, token: str, path_prefix: str = "/firmware/") -> str:
    """The path part of a download URL; the charger id is percent-encoded (it may hold '/')."""
    if not _SHA256.fullmatch(sha256):
        raise ValueError("sha256 must be 64 lowercase hex characters")
    if not _TOKEN.fullmatch(token):
        raise ValueError("token is not a download token")
    return f"{_check_prefix(path_prefix)}{quote(charger_id, safe='')}/{sha256}/{token}/firmware.bin"


def download_url(public_base_url: str, charger_id: str, sha256: str, token: str) -> str:
    """Full URL for UpdateFirmware; raises ``ValueError`` past OCPP's 512 characters."""
    url = public_base_url.rstrip("/") + download_path(charger_id, sha256, token)
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"download URL is {len(url)} characters, OCPP allows {MAX_URL_CHARS}")
    return url


class _BadRequest(Exception):
    """The request head cannot be parsed; answer ``status`` and close the connection."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _Closed(Exception):
    """The peer closed, timed out or the server is stopping: drop the connection quietly."""


@dataclass(slots=True)
class _Request:
    method: str
    target: str
    headers: dict[str, str]
    keep: bool  # no request body (which we do not read): the connection may stay open

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def _request(event: h11.Request, has_body: bool) -> _Request:
    """The parts of a request head we use, after the limits h11 does not enforce."""
    if not event.http_version.startswith(b"1."):
        raise _BadRequest(505, "only HTTP/1.x is supported")
    if len(event.headers) > MAX_HEADERS:
        raise _BadRequest(431, "too many header lines")
    if len(event.target) > MAX_LINE or any(
        len(name) + len(value) > MAX_LINE for name, value in event.headers
    ):
        raise _BadRequest(431, "request line or header line too long")
    headers: dict[str, str] = {}
    for name, value in event.headers:  # names come lowercased, values stripped
        key, val = name.decode("ascii"), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {val}" if key in headers else val
    method, target = event.method.decode("ascii"), event.target.decode("ascii")
    return _Request(method, target, headers, keep=not has_body)


def _refusal(exc: h11.RemoteProtocolError) -> _BadRequest:
    """Our answer to a head h11 refused. Its message is never passed on: it may quote the
    request line, token included."""
    status = exc.error_status_hint
    if status == 431:
        return _BadRequest(431, "request head too large")
    if str(exc).startswith(("Missing mandatory Host", "Found multiple Host")):
        return _BadRequest(400, "an HTTP/1.1 request needs exactly one Host header")
    if status == 501:
        return _BadRequest(501, "only chunked transfer coding is supported")
    return _BadRequest(400, "malformed request head")


class _Unread:
    """Stands for body bytes sent by ``sendfile``: h11 only needs their count (its
    documented ``send_with_data_passthrough`` use)."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


def _parse_range(value: str, size: int) -> tuple[int, int] | bool | None:
    """One ``bytes=`` range as ``(start, end_exclusive)``; None = ignore the header (serve
    the whole file: unknown unit, bad syntax, several ranges); False = unsatisfiable."""
    unit, sep, spec = value.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    specs = [s.strip() for s in spec.split(",") if s.strip()]
    if len(specs) != 1:
        return None  # several ranges: a 200 with the whole file is allowed (RFC 9110 §14.2)
    match = _RANGE_SPEC.fullmatch(specs[0])
    if match is None or not (match[1] or match[2]):
        return None
    if not match[1]:  # suffix: the last n bytes
        n = _position(match[2])
        if n == 0 or size == 0:
            return False
        return max(0, size - n), size
    first = _position(match[1])
    if match[2] and _position(match[2]) < first:
        return None  # invalid range-spec: ignored like any invalid Range
    if first >= size:
        return False
    last = _position(match[2]) if match[2] else size - 1
    return first, min(last, size - 1) + 1


def _position(digits: str) -> int:
    """A byte position from ASCII digits; any huge value saturates (past every file's end)."""
    stripped = digits.lstrip("0") or "0"
    return _HUGE if len(stripped) > _MAX_POS_DIGITS else int(stripped)


def _etag_matches(header: str, etag: str, *, weak: bool) -> bool:
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            return True
        if weak and candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate == etag:
            return True
    return False


class Caps(Protocol):
    """The download caps: in process here (one node), leases in Redis in a cluster
    (:class:`evota.cluster.limits.SharedDownloadCaps`). Called from the server threads."""

    @property
    def active(self) -> int: ...

    def acquire(self, site: str | None) -> str | None:
        """None if a slot was taken, else the name of the cap that is full."""
        ...

    def release(self, site: str | None) -> None: ...


class _Caps:
    """Counting semaphores for the global and per-site download caps (non-blocking)."""

    def __init__(self, max_concurrent: int, max_per_site: int) -> None:
        self._lock = threading.Lock()
        self._max = max_concurrent
        self._max_site = max_per_site
        self.active = 0
        self._sites: dict[str, int] = {}

    def acquire(self, site: str | None) -> str | None:
        """None if a slot was taken, else which cap is full ("global" or "site")."""
        with self._lock:
            if self.active >= self._max:
                return "global"
            if site is not None:
                held = self._sites.get(site, 0)
                if held >= self._max_site:
                    return "site"
                self._sites[site] = held + 1
            self.active += 1
            return None

    def release(self, site: str | None) -> None:
        with self._lock:
            self.active -= 1
            if site is not None:
                held = self._sites[site] - 1
                if held:
                    self._sites[site] = held
                else:
                    del self._sites[site]


class _TCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 1024  # a wave starts hundreds of downloads at the same instant

    def __init__(self, address: tuple[str, int], owner: DeliveryServer) -> None:
        self.owner = owner
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Never the default traceback dump: it could include the request line (the token).
        log.exception("firmware delivery handler failed", peer=_peer(client_address))


def _printable(text: str) -> str:
    """An untrusted string made safe for a log line (no control characters)."""
    return text if text.isprintable() else ascii(text)


def _peer(address: Any) -> str:
    try:
        return f"{address[0]}:{address[1]}"
    except (TypeError, IndexError):
        return str(address)


class DeliveryServer:
    """Serves firmware blobs to chargers from background threads; see the module docstring.

    ``lookup`` and ``site_of`` are called from server threads (concurrently), so they must
    be thread-safe and quick (an in-memory dict read, not a database query on the event
    loop). ``keys`` are the token keys, newest first.
    """

    def __init__(
        self,
        *,
        keys: Sequence[bytes],
        lookup: Callable[[str], ServedImage | None],
        site_of: Callable[[str], str | None] = lambda charger_id: None,
        now: Callable[[], float] = time.time,
        max_concurrent: int = 200,
        max_per_site: int = 20,
        path_prefix: str = "/firmware/",
        timeout: float = 60.0,
        max_connections: int | None = None,
        head_timeout: float = 10.0,
        max_pending: int = 256,
        caps: Caps | None = None,
    ) -> None:
        if not keys or any(len(k) < MIN_KEY_BYTES for k in keys):
            raise ValueError(f"at least one token key of >= {MIN_KEY_BYTES} bytes is required")
        if min(max_concurrent, max_per_site, max_pending) < 1 or min(timeout, head_timeout) <= 0:
            raise ValueError(
                "max_concurrent, max_per_site, max_pending and the timeouts must be positive"
            )
        self.keys = tuple(bytes(k) for k in keys)
        self.lookup = lookup
        self.site_of = site_of
        self.now = now
        self.path_prefix = _check_prefix(path_prefix)
        self.timeout = timeout
        self.head_timeout = head_timeout
        # Connections serving a valid token; beyond this many, answer 503.
        self.max_connections = max_connections or max(4 * max_concurrent, 256)
        # Connections waiting for (or sending) a request head; the oldest is evicted.
        self.max_pending = max_pending
        # Shared in a cluster (``caps``); this process's counters otherwise.
        self._caps: Caps = caps or _Caps(max_concurrent, max_per_site)
        self._bytes_lock = threading.Lock()
        self._bytes: dict[str, int] = {}
        self._conns_lock = threading.Lock()
        self._conns: set[socket.socket] = set()  # every open connection
        self._pending: dict[socket.socket, None] = {}  # no valid token yet, oldest first
        self._admitted: set[socket.socket] = set()  # serving a request with a valid token
        self._conns_idle = threading.Condition(self._conns_lock)
        self._server: _TCPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, host: str, port: int) -> int:
        """Bind and serve in a background daemon thread; return the bound port."""
        if self._server is not None:
            raise RuntimeError("DeliveryServer already started")
        self._stopping = False
        server = _TCPServer((host, port), self)
        self._server = server
        self._thread = threading.Thread(
            target=self._accept_loop, args=(server,), name="evota-firmware-delivery", daemon=True
        )
        self._thread.start()
        bound = int(server.server_address[1])
        log.info("firmware delivery listening", host=host, port=bound)
        return bound

    def _accept_loop(self, server: _TCPServer) -> None:
        """Blocking accept (no poll interval), so stop() is immediate and idle costs nothing."""
        while not self._stopping:
            try:
                sock, address = server.socket.accept()
            except OSError as exc:
                if self._stopping:
                    return
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("firmware delivery cannot accept", error=exc.strerror)
                    time.sleep(0.1)  # out of descriptors: back off instead of spinning
                continue
            if self._stopping:
                sock.close()
                return
            if not self._admit(sock):
                sock.close()
                continue
            try:
                server.process_request(sock, address)  # starts the connection's thread
            except Exception:
                log.exception("firmware delivery cannot start a connection thread")
                self._forget(sock)

    def stop(self) -> None:
        """Close the listener and every open connection (waking blocked threads); idempotent."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        self._stopping = True
        with contextlib.suppress(OSError):
            server.socket.shutdown(socket.SHUT_RDWR)  # Linux: wakes the blocked accept()
        if thread is not None:
            thread.join(timeout=0.5)
            if thread.is_alive():  # elsewhere: wake accept() with a connection
                with contextlib.suppress(OSError):
                    host, port = str(server.server_address[0]), int(server.server_address[1])
                    socket.create_connection((host, port), timeout=0.5).close()
                thread.join(timeout=2)
        server.server_close()
        with self._conns_lock:
            for sock in self._conns:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            # Handler threads notice at once; give them a moment to count their bytes.
            self._conns_idle.wait_for(lambda: not self._conns, timeout=2.0)

    # -- metrics -----------------------------------------------------------------------

    def take_bytes(self) -> dict[str, int]:
        """Body bytes sent per job id since the last call (then reset)."""
        with self._bytes_lock:
            taken, self._bytes = self._bytes, {}
        return taken

    @property
    def active_downloads(self) -> int:
        """Requests currently sending a body (holding a cap slot)."""
        return self._caps.active

    @property
    def pending_connections(self) -> int:
        """Connections that have not (yet) presented a valid token."""
        with self._conns_lock:
            return len(self._pending)

    def _count(self, job_id: str, n: int) -> None:
        with self._bytes_lock:
            self._bytes[job_id] = self._bytes.get(job_id, 0) + n

    # -- connections -------------------------------------------------------------------

    def _admit(self, sock: socket.socket) -> bool:
        """Register a new (pending) connection on the accept thread, never blocking."""
        with self._conns_lock:
            if self._stopping:
                return False
            self._conns.add(sock)
            self._add_pending(sock)
            return True

    def _add_pending(self, sock: socket.socket) -> None:
        """Count ``sock`` as pending (newest); over the cap, evict the oldest pending one.

        Called with ``_conns_lock`` held. The evicted socket is shut down, which wakes its
        thread; the thread closes it (``_forget``).
        """
        self._pending[sock] = None
        while len(self._pending) > self.max_pending:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            with contextlib.suppress(OSError):
                oldest.shutdown(socket.SHUT_RDWR)

    def _promote(self, sock: socket.socket) -> str | None:
        """The connection presented a valid token: None if it may be served, else why not."""
        with self._conns_lock:
            if sock not in self._pending:
                return "evicted"
            if len(self._admitted) >= self.max_connections:
                return "full"
            del self._pending[sock]
            self._admitted.add(sock)
            return None

    def _evicted(self, sock: socket.socket) -> bool:
        with self._conns_lock:
            return sock not in self._pending and sock not in self._admitted

    def _demote(self, sock: socket.socket) -> None:
        """A request was answered; the connection waits for its next head as pending."""
        with self._conns_lock:
            if sock in self._admitted:
                self._admitted.discard(sock)
                self._add_pending(sock)

    def _forget(self, sock: socket.socket) -> None:
        with self._conns_lock:
            self._conns.discard(sock)
            self._pending.pop(sock, None)
            self._admitted.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()
            if not self._conns:
                self._conns_idle.notify_all()


def _problem_body(status: int, title: str, detail: str) -> bytes:
    problem = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return json.dumps(problem, separators=(",", ":")).encode()


def _head(
    status: int, headers: list[tuple[str, str]], length: int, *, close: bool
) -> list[tuple[str, str]]:
    out = [("Date", formatdate(usegmt=True)), ("Server", "evota"), *headers]
    if status != 304:
        out.append(("Content-Length", str(length)))
    if close:
        out.append(("Connection", "close"))
    return out


def _set_timeout(sock: socket.socket, option: int, seconds: float) -> None:
    seconds = max(seconds, 0.001)  # a zero timeval would mean "no timeout"
    tv = struct.pack("@ll", int(seconds), int((seconds % 1) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, option, tv)


def _set_timeouts(sock: socket.socket, seconds: float) -> None:
    _set_timeout(sock, socket.SO_RCVTIMEO, seconds)
    _set_timeout(sock, socket.SO_SNDTIMEO, seconds)


class _Handler(socketserver.BaseRequestHandler):
    """One connection: heads parsed and framed by h11, bodies sent with ``os.sendfile``."""

    server: _TCPServer
    request: socket.socket

    def setup(self) -> None:
        # Nothing that can raise here: finish() (which unregisters the socket) only runs
        # if setup() returned.
        self.owner = self.server.owner
        self.peer = _peer(self.client_address)
        self.http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.method = b""  # of the request being answered; a HEAD answer has no body

    def finish(self) -> None:
        self.owner._forget(self.request)

    def handle(self) -> None:
        sock = self.request
        try:
            sock.settimeout(None)  # blocking: sendfile blocks instead of spinning on EAGAIN
            _set_timeouts(sock, self.owner.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            return
        while not self.owner._stopping:
            try:
                request = self._next_request()
            except _Closed:
                return
            except _BadRequest as exc:
                if self.owner._evicted(sock):
                    return  # its half-sent head was cut off by the eviction, not malformed
                log.info("bad firmware request", peer=self.peer, status=exc.status, why=exc.detail)
                with contextlib.suppress(_Closed):
                    head_only = self.method == b"HEAD"
                    self._problem(exc.status, exc.detail, close=True, head_only=head_only)
                    self._lingering_close()
                return
            try:
                keep = self._serve(request)
            except _Closed:
                return
            self.owner._demote(sock)
            http = self.http
            if not (keep and http.our_state is h11.DONE and http.their_state is h11.DONE):
                self._lingering_close()
                return
            http.start_next_cycle()

    def _next_request(self) -> _Request:
        """The next request head, which must arrive complete within ``head_timeout`` in
        total, however slowly it drips."""
        http, sock = self.http, self.request
        deadline = time.monotonic() + self.owner.head_timeout
        self.method = b""
        # RFC 9112 §2.2: ignore empty lines before the request line (h11 refuses them).
        skip_empty = not http.trailing_data[0]
        try:
            while True:
                event = http.next_event()
                if isinstance(event, h11.Request):
                    self.method = event.method
                    has_body = not isinstance(http.next_event(), h11.EndOfMessage)
                    return _request(event, has_body)
                if event is not h11.NEED_DATA:  # ConnectionClosed: no byte of a new head
                    raise _Closed("peer closed")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _Closed("request head too slow")
                try:
                    _set_timeout(sock, socket.SO_RCVTIMEO, remaining)
                    chunk = sock.recv(16384)
                except OSError as exc:  # EAGAIN = SO_RCVTIMEO expired; EBADF etc. = stopping
                    raise _Closed(str(exc)) from None
                if skip_empty and chunk:
                    chunk = chunk.lstrip(b"\r\n")
                    skip_empty = not chunk
                    if not chunk:
                        continue
                http.receive_data(chunk)
        except h11.RemoteProtocolError as exc:
            raise _refusal(exc) from None

    def _response_head(
        self, status: int, headers: list[tuple[str, str]], length: int, *, close: bool
    ) -> bytes:
        """The status line and headers, through h11 (which now knows the body's length)."""
        response = h11.Response(
            status_code=status,
            headers=_head(status, headers, length, close=close),
            reason=HTTPStatus(status).phrase,
        )
        return self.http.send(response) or b""

    def _lingering_close(self) -> None:
        """Half-close and drain what the client still sends, briefly, before closing.

        Closing a socket with unread input makes the kernel send a reset, which can destroy
        our error response before the client has read it (RFC 9112 §9.6).
        """
        sock = self.request
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
            _set_timeouts(sock, 0.5)
            deadline = time.monotonic() + 1.0
            left = 256 * 1024
            while left > 0 and time.monotonic() < deadline:
                chunk = sock.recv(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)

    # -- responses ---------------------------------------------------------------------

    def _send(self, data: bytes, flags: int = 0) -> None:
        try:
            self.request.sendall(data, flags)
        except OSError as exc:
            raise _Closed(str(exc)) from None

    def _problem(
        self,
        status: int,
        detail: str,
        *,
        close: bool,
        head_only: bool,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        body = _problem_body(status, HTTPStatus(status).phrase, detail)
        headers = [("Content-Type", "application/problem+json"), *(extra or [])]
        data = self._response_head(status, headers, len(body), close=close)
        if not head_only:
            data += self.http.send(h11.Data(data=body)) or b""
        self.http.send(h11.EndOfMessage())
        self._send(data)

    def _serve(self, req: _Request) -> bool:
        """Answer one request; return whether the connection may be kept open."""
        keep = req.keep  # h11 adds "Connection: close" when the client asked for it
        head_only = req.method == "HEAD"
        if req.method not in ("GET", "HEAD"):
            self._problem(
                405, "only GET and HEAD", close=not keep, head_only=False, extra=[("Allow", _ALLOW)]
            )
            return keep

        parsed = self._parse_target(req.target)
        if parsed is None:
            self._problem(404, "no such download", close=not keep, head_only=head_only)
            return keep
        charger_id, sha256, token = parsed
        try:
            grant = tokens.verify(
                token,
                self.owner.keys,
                now=int(self.owner.now()),
                charger_id=charger_id,
                firmware_sha256=sha256,
            )
        except tokens.TokenError as exc:
            who = exc.grant
            log.warning(
                "firmware download refused",
                peer=self.peer,
                charger=who.charger_id if who else _printable(charger_id[:64]),
                job=who.job_id if who else None,
                status=token_status(exc),
                why=exc.reason,
            )
            self._problem(token_status(exc), exc.reason, close=not keep, head_only=head_only)
            return keep
        refused = self.owner._promote(self.request)
        if refused == "evicted":
            raise _Closed("evicted while pending")
        if refused is not None:
            log.warning("firmware download deferred", status=503, cap="connections")
            self._problem(
                503,
                "too many connections; retry later",
                close=True,
                head_only=head_only,
                extra=[("Retry-After", str(RETRY_AFTER))],
            )
            return False

        ctx: dict[str, Any] = {"peer": self.peer, "charger": grant.charger_id, "job": grant.job_id}
        try:
            image = self.owner.lookup(sha256)
        except StoreUnavailable as exc:  # the object store is down, the cache full: retry
            log.warning("firmware store unavailable", status=503, why=str(exc), **ctx)
            self._problem(
                503,
                f"{exc}; retry later",
                close=not keep,
                head_only=head_only,
                extra=[("Retry-After", str(RETRY_AFTER))],
            )
            return keep
        except Exception:
            log.exception("firmware lookup failed", **ctx)
            self._problem(500, "lookup failed", close=True, head_only=head_only)
            return False
        try:
            return self._serve_image(req, sha256, image, keep, head_only, grant, ctx)
        finally:
            if image is not None and image.release is not None:
                image.release()

    def _serve_image(
        self,
        req: _Request,
        sha256: str,
        image: ServedImage | None,
        keep: bool,
        head_only: bool,
        grant: tokens.DownloadGrant,
        ctx: dict[str, Any],
    ) -> bool:
        if image is None or image.revoked:
            status = 404 if image is None else 410
            log.info("firmware download refused", status=status, **ctx)
            detail = "unknown image" if image is None else "image revoked"
            self._problem(status, detail, close=not keep, head_only=head_only)
            return keep
        try:
            fd = os.open(image.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            log.warning("firmware blob missing", status=404, **ctx)
            self._problem(404, "image not stored", close=not keep, head_only=head_only)
            return keep
        try:
            return self._serve_file(req, fd, sha256, image, keep, head_only, grant, ctx)
        finally:
            os.close(fd)

    def _parse_target(self, target: str) -> tuple[str, str, str] | None:
        if target.startswith(("http://", "https://")):  # absolute-form (RFC 9112 §3.2.2)
            slash = target.find("/", target.find("//") + 2)
            target = target[slash:] if slash >= 0 else "/"
        path = target.partition("?")[0]
        prefix = self.owner.path_prefix
        if not path.startswith(prefix):
            return None
        parts = path[len(prefix) :].split("/", 3)
        if len(parts) < 3:
            return None
        quoted_id, sha256, token = parts[:3]
        if not quoted_id or not _SHA256.fullmatch(sha256) or not _TOKEN.fullmatch(token):
            return None
        try:
            charger_id = unquote(quoted_id, errors="strict")
        except UnicodeDecodeError:
            return None
        return charger_id, sha256, token

    def _serve_file(
        self,
        req: _Request,
        fd: int,
        sha256: str,
        image: ServedImage,
        keep: bool,
        head_only: bool,
        grant: tokens.DownloadGrant,
        ctx: dict[str, Any],
    ) -> bool:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            self._problem(404, "image not stored", close=not keep, head_only=head_only)
            return keep
        size = st.st_size
        if size != image.size:
            log.error("firmware blob size mismatch", stored=size, expected=image.size, **ctx)
            self._problem(500, "stored image is damaged", close=True, head_only=head_only)
            return False
        etag = f'"{sha256}"'
        common = [
            ("ETag", etag),
            ("Last-Modified", formatdate(st.st_mtime, usegmt=True)),
            ("Cache-Control", "private, no-store"),
            ("Accept-Ranges", "bytes"),
        ]
        inm = req.header("if-none-match")
        if inm is not None and _etag_matches(inm, etag, weak=True):
            self._send(self._response_head(304, common, 0, close=not keep))
            self.http.send(h11.EndOfMessage())
            return keep

        status, start, end = 200, 0, size
        range_header = req.header("range")
        if_range = req.header("if-range")
        if range_header is not None and (if_range is None or if_range.strip() == etag):
            parsed = _parse_range(range_header, size)
            if parsed is False:
                log.info("firmware range not satisfiable", status=416, size=size, **ctx)
                self._problem(
                    416,
                    "range not satisfiable",
                    close=not keep,
                    head_only=head_only,
                    extra=[("Content-Range", f"bytes */{size}"), *common],
                )
                return keep
            if isinstance(parsed, tuple):
                status, (start, end) = 206, parsed

        headers = [("Content-Type", "application/octet-stream"), *common]
        if status == 206:
            headers.append(("Content-Range", f"bytes {start}-{end - 1}/{size}"))
        if head_only:
            self._send(self._response_head(status, headers, end - start, close=not keep))
            self.http.send(h11.EndOfMessage())
            return keep

        try:
            site = self.owner.site_of(grant.charger_id)
        except Exception:
            log.exception("firmware site lookup failed", **ctx)
            self._problem(500, "site lookup failed", close=True, head_only=False)
            return False
        full = self.owner._caps.acquire(site)
        if full is not None:
            log.warning("firmware download deferred", status=503, cap=full, site=site, **ctx)
            self._problem(
                503,
                f"too many concurrent downloads ({full}); retry later",
                close=not keep,
                head_only=False,
                extra=[("Retry-After", str(RETRY_AFTER))],
            )
            return keep
        started = time.monotonic()
        sent = 0
        ok = False
        try:
            head = self._response_head(status, headers, end - start, close=not keep)
            self._send(head, getattr(socket, "MSG_MORE", 0))
            sent, ok = self._send_body(fd, start, end, grant.job_id)
            if ok:  # tell h11 the body is complete, so the connection may serve the next
                self.http.send_with_data_passthrough(h11.Data(data=cast(bytes, _Unread(sent))))
                self.http.send(h11.EndOfMessage())
        finally:
            self.owner._caps.release(site)
            log.info(
                "firmware download" if ok else "firmware download interrupted",
                status=status,
                offset=start,
                bytes=sent,
                of=end - start,
                seconds=round(time.monotonic() - started, 3),
                **ctx,
            )
        if not ok:
            raise _Closed("body not completed")
        return keep

    def _send_body(self, fd: int, start: int, end: int, job_id: str) -> tuple[int, bool]:
        """Send ``[start, end)`` of ``fd``; return (bytes sent, completed)."""
        out = self.request.fileno()
        offset = start
        use_sendfile = True
        try:
            while offset < end:
                want = min(SEND_CHUNK, end - offset)
                if use_sendfile:
                    try:
                        n = os.sendfile(out, fd, offset, want)
                    except OSError as exc:
                        if exc.errno in _SEND_FALLBACK_ERRNOS and offset == start:
                            use_sendfile = False  # e.g. a filesystem without sendfile
                            continue
                        return offset - start, False  # peer gone, timed out or stopping
                else:
                    data = os.pread(fd, min(want, 1024 * 1024), offset)
                    if not data:
                        return offset - start, False
                    try:
                        self.request.sendall(data)
                    except OSError:
                        return offset - start, False
                    n = len(data)
                if n == 0:  # file shrank under us: cannot happen for an immutable blob
                    return offset - start, False
                offset += n
                self.owner._count(job_id, n)
            return offset - start, True
        except Exception:
            log.exception("firmware body send failed", job=job_id)
            return offset - start, False
