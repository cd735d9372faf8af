"""FTP and FTPS delivery of firmware images to legacy chargers (issue 17 §4).

Some OCPP 1.6 chargers only download over FTP. For them this server offers the same image
the HTTP download server (:mod:`evota.firmware.delivery`) does, under the same rules:

* **Credentials are the download token.** The user name is the charger id, the password is
  the signed, expiring, per-job token the HTTP URL carries; it is checked by
  :func:`evota.firmware.tokens.verify` with the HTTP server's keys and clock, and the image
  must be known and not revoked (the HTTP server's ``lookup``). Nothing is stored per login.
* **One read-only file.** After login the charger sees a root directory holding exactly one
  file, :data:`FILE_NAME` (its image); every other path is outside its root. The permissions
  are list and read only, so STOR, APPE, DELE, MKD, RMD, RNFR/RNTO, SITE CHMOD and MFMT are
  refused; SITE is not offered at all. Active mode (PORT/EPRT) may only connect back to the
  client's own address (no FXP or bounce), and a passive data connection is only accepted
  from the control connection's address.
* **The same caps and accounting.** A RETR takes a slot of the HTTP server's cap instance
  (global and per-site), so HTTP and FTP together respect one limit; the slot is held by the
  open image file and released when the transfer ends however it ends. Bytes sent are
  counted per job into the HTTP server's counter, which the job runner drains
  (``take_bytes``), so an FTP download is logged like an HTTP one.
* **Resume** with REST works (pyftpdlib seeks the file; sendfile is used for plain FTP).
* **Bounds:** connections in total and per address, a login deadline, idle and data-stall
  timeouts, a delay after each failed login, and a per-address cap on failed logins in a
  window (then the address is refused until the window passes).

The protocol is pyftpdlib's (one IO loop thread of its own); this module supplies the
virtual filesystem, the authorizer and the limits. The image lookup of a login or a RETR may
fetch the image from an object store into the local cache (S3, seconds for a large image),
so it runs in a worker thread: that session reads no further command until its reply is
sent, while every other session of the node goes on. The reply is delayed rather than a
``450`` sent at once, because a charger's FTP client takes a 4xx as a failed download (the
charger reports DownloadFailed and waits for the OCPP retry, minutes later), while a slow
reply only looks like a slow server; the wait is bounded by the session's idle timeout.
The token (the FTP password) is never logged: pyftpdlib's own logger is replaced by
evota's structured events, which name the charger and job but never the password.

:func:`location` is the pure choice of a job's download URL from the charger's download
protocol; the job runner gets it injected, so the rollout core stays protocol-neutral.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import ipaddress
import logging
import os
import socket
import stat
import threading
import time
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import structlog

with warnings.catch_warnings():  # pyftpdlib builds on asyncore/asynchat (deprecated in 3.11)
    warnings.simplefilter("ignore", DeprecationWarning)
    from pyftpdlib.authorizers import AuthenticationFailed
    from pyftpdlib.filesystems import AbstractedFS, FilesystemError
    from pyftpdlib.handlers import DTPHandler, FTPHandler
    from pyftpdlib.ioloop import IOLoop
    from pyftpdlib.servers import FTPServer

from evota.firmware import tokens
from evota.firmware.delivery import MAX_URL_CHARS, DeliveryServer, ServedImage, download_url
from evota.firmware.storage import StoreUnavailable

__all__ = [
    "FILE_NAME",
    "FtpDelivery",
    "FtpEndpoint",
    "effective_protocol",
    "ftp_url",
    "location",
]

log = structlog.get_logger("evota.firmware.ftp")

FILE_NAME: Final = "firmware.bin"
_FILE_PATH: Final = "/" + FILE_NAME
_PERMS: Final = "elr"  # change to "/", list it, read the one file: nothing that writes
# Commands a charger never needs; without them in the table pyftpdlib answers 500.
_REMOVED: Final = frozenset(
    {"SITE", "SITE CHMOD", "SITE HELP", "STOR", "STOU", "APPE", "DELE", "RMD", "XRMD", "MKD"}
    | {"XMKD", "RNFR", "RNTO", "MFMT", "REIN"}
)

# pyftpdlib logs through the stdlib logger "pyftpdlib" (and configures a stderr handler if
# nothing did). Our handlers replace its log calls; anything left (its internal errors) goes
# through evota's logging at WARNING and above, never a debug trace of the command lines.
logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
logging.getLogger("pyftpdlib").addHandler(logging.NullHandler())


# -- URLs (pure) -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FtpEndpoint:
    """Where chargers reach the FTP server: host (name or address) and port; ``tls`` when the
    server offers explicit FTPS (AUTH TLS)."""

    host: str
    port: int
    tls: bool = False


def ftp_url(endpoint: FtpEndpoint, charger_id: str, token: str, *, tls: bool = False) -> str:
    """``ftp://<charger id>:<token>@host:port/firmware.bin`` (``ftps://`` for explicit FTPS:
    the charger connects in plain and upgrades with AUTH TLS before the login).

    The charger id is percent-encoded (it may hold ':', '@' or '/'); raises ``ValueError``
    past OCPP's 512 characters or for a string that is not a download token.
    """
    if not token or any(not (c.isascii() and (c.isalnum() or c in "-_")) for c in token):
        raise ValueError("token is not a download token")
    host = endpoint.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    scheme = "ftps" if tls else "ftp"
    url = f"{scheme}://{quote(charger_id, safe='')}:{token}@{host}:{endpoint.port}{_FILE_PATH}"
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"download URL is {len(url)} characters, OCPP allows {MAX_URL_CHARS}")
    return url


def effective_protocol(wanted: str, endpoint: FtpEndpoint | None) -> str:
    """The protocol a download will use: the profile's ``wanted`` one if this server can serve
    it, else "http" (FTP not enabled, or FTPS wanted without TLS configured)."""
    if wanted == "ftp" and endpoint is not None:
        return "ftp"
    if wanted == "ftps" and endpoint is not None and endpoint.tls:
        return "ftps"
    return "https" if wanted == "https" else "http"


def location(
    wanted: str,
    *,
    charger_id: str,
    sha256: str,
    token: str,
    http_base: str,
    endpoint: FtpEndpoint | None,
) -> str:
    """The ``location`` of UpdateFirmware for a charger whose profile says ``wanted``.

    OCPP 1.6 and 2.0.1 both take any URI there, so the profile alone decides; "http" and
    "https" use the HTTP download server (its public URL decides the scheme).
    """
    protocol = effective_protocol(wanted, endpoint)
    if protocol in ("ftp", "ftps"):
        assert endpoint is not None
        return ftp_url(endpoint, charger_id, token, tls=protocol == "ftps")
    return download_url(http_base, charger_id, sha256, token)


# -- the server --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The server certificate (PEM, chain allowed) and its private key for explicit FTPS."""

    certificate: Path
    key: Path


class _Failures:
    """Failed logins per source address in a sliding window (IO loop thread only).

    Bounded: at most ``max_addresses`` addresses are remembered (the least recently failing
    is forgotten first) and at most ``limit`` times per address.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = 10_000,
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_addresses = max_addresses
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, address: str) -> deque[float] | None:
        times = self._seen.get(address)
        if times is None:
            return None
        horizon = self.clock() - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._seen[address]
            return None
        return times

    def blocked(self, address: str) -> bool:
        times = self._recent(address)
        return times is not None and len(times) >= self.limit

    def add(self, address: str) -> None:
        times = self._recent(address)
        if times is None:
            times = self._seen[address] = deque(maxlen=self.limit)
        times.append(self.clock())
        self._seen.move_to_end(address)
        while len(self._seen) > self.max_addresses:
            self._seen.popitem(last=False)


class _Slot:
    """One held download cap slot; released exactly once."""

    __slots__ = ("_caps", "_released", "site")

    def __init__(self, caps: Any, site: str | None) -> None:
        self._caps = caps
        self.site = site
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._caps.release(self.site)


class _ImageFile(io.FileIO):
    """The image opened read-only; closing it (end of transfer, abort, disconnect) frees the
    cap slot the RETR took."""

    slot: _Slot | None = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.slot is not None:
                self.slot.release()
                self.slot = None


def _dir_stat() -> os.stat_result:
    return os.stat_result((stat.S_IFDIR | 0o555, 0, 0, 2, 0, 0, 0, 0, 0, 0))


class _OneFileFS(AbstractedFS):  # type: ignore[misc]
    """A root directory with one read-only file, the grant's image. Paths are virtual: no
    client path ever reaches the real filesystem (the blob path comes from ``lookup``)."""

    def __init__(self, root: str, cmd_channel: Any) -> None:
        super().__init__("/", cmd_channel)
        self._image: Path = cmd_channel.image_path

    # paths: the virtual path is the real one; only "/" and the file exist
    def ftp2fs(self, ftppath: str) -> str:
        return str(self.ftpnorm(ftppath))

    def fs2ftp(self, fspath: str) -> str:
        return fspath

    def validpath(self, path: str) -> bool:
        return path in ("/", _FILE_PATH)

    def realpath(self, path: str) -> str:
        return path

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise FilesystemError("permission denied")

    mkstemp = mkdir = rmdir = remove = rename = chmod = utime = readlink = _refuse

    def open(self, filename: str, mode: str) -> _ImageFile:
        if filename != _FILE_PATH or mode != "rb":
            raise FilesystemError("permission denied")
        handle = _ImageFile(self._image, "rb")
        channel = self.cmd_channel
        handle.slot, channel.slot = channel.slot, None  # the file holds the cap slot now
        return handle

    def chdir(self, path: str) -> None:
        if path != "/":
            raise FilesystemError("not a directory")
        self.cwd = "/"

    def listdir(self, path: str) -> list[str]:
        if path != "/":
            raise FilesystemError("not a directory")
        return [FILE_NAME]

    listdirinfo = listdir

    def stat(self, path: str) -> os.stat_result:
        if path == "/":
            return _dir_stat()
        if path == _FILE_PATH:
            st = os.stat(self._image)
            return os.stat_result(
                (stat.S_IFREG | 0o444, 0, 0, 1, 0, 0, st.st_size, st.st_mtime, st.st_mtime, 0)
            )
        raise FilesystemError("no such file")

    lstat = stat

    def isfile(self, path: str) -> bool:
        return path == _FILE_PATH

    def isdir(self, path: str) -> bool:
        return path == "/"

    def islink(self, path: str) -> bool:
        return False

    def lexists(self, path: str) -> bool:
        return path in ("/", _FILE_PATH)

    def getsize(self, path: str) -> int:
        return int(self.stat(path).st_size)

    def getmtime(self, path: str) -> float:
        return float(self.stat(path).st_mtime)

    def get_user_by_uid(self, uid: int) -> str:
        return "evota"

    def get_group_by_gid(self, gid: int) -> str:
        return "evota"


class _Refused(Exception):
    """A token or image refused at login or at a RETR (``why`` is safe to show and log);
    ``transient`` when the object store is down or the cache full (try again later)."""

    def __init__(
        self, why: str, grant: tokens.DownloadGrant | None, *, transient: bool = False
    ) -> None:
        super().__init__(why)
        self.why = why
        self.grant = grant
        self.transient = transient

    def context(self, username: str) -> dict[str, Any]:
        who = self.grant
        return {
            "charger": who.charger_id if who else ascii(username[:64]),
            "job": who.job_id if who else None,
            "why": self.why,
        }


def _admit(http: DeliveryServer, charger_id: str, token: str) -> tuple[Any, ServedImage]:
    """The grant and image a charger's token opens, under the HTTP server's rules (keys,
    clock, scope, expiry, known and not revoked); checked at login and again at each RETR,
    as HTTP checks every request. Raises :class:`_Refused`."""
    try:
        grant = tokens.verify(token, http.keys, now=int(http.now()), charger_id=charger_id)
    except tokens.TokenError as exc:
        raise _Refused(f"download token {exc.reason}", exc.grant) from None
    try:
        image = http.lookup(grant.firmware_sha256)
    except StoreUnavailable as exc:  # its message is safe to show (no credential)
        raise _Refused(str(exc), grant, transient=True) from None
    except Exception:
        log.exception("firmware lookup failed", charger=grant.charger_id, job=grant.job_id)
        raise _Refused("lookup failed", grant) from None
    if image is not None and image.release is not None:
        # A cached copy of a remote blob (S3) is pinned only for this check: RETR opens it
        # right after its own check, and a copy evicted meanwhile is fetched again next time.
        image.release()
    if image is None or image.revoked:
        raise _Refused("unknown image" if image is None else "image revoked", grant)
    return grant, image


def _admit_retr(
    http: DeliveryServer, charger_id: str, token: str
) -> tuple[tokens.DownloadGrant, ServedImage, str | None, _Slot | str]:
    """What a RETR asks of the image store and of the download caps (Redis in a cluster),
    all in a worker thread: :func:`_admit`, then a cap slot for the charger's site (the
    slot, or the name of the cap that is full). Raises :class:`_Refused`."""
    grant, image = _admit(http, charger_id, token)
    try:
        site = http.site_of(grant.charger_id)
    except Exception:
        log.exception("firmware site lookup failed", charger=grant.charger_id)
        raise _Refused("site lookup failed", grant, transient=True) from None
    full = http._caps.acquire(site)
    return grant, image, site, _Slot(http._caps, site) if full is None else full


def _release_slot(future: concurrent.futures.Future[Any]) -> None:
    """A RETR whose session closed while its slot was taken: give the slot back."""
    with contextlib.suppress(Exception):
        slot = future.result()[3]
        if isinstance(slot, _Slot):
            slot.release()


class _Authorizer:
    """pyftpdlib's authorizer interface over download tokens (see the module docstring)."""

    def __init__(self, owner: FtpDelivery) -> None:
        self.owner = owner

    def validate_authentication(self, username: str, password: str, handler: Any) -> None:
        # The handler's PASS ran _admit in a worker thread (it may fetch the image) and
        # left its outcome here; without one (never expected) it is checked in place.
        admitted, handler.admitted = handler.admitted, None
        try:
            if admitted is None:
                admitted = _admit(self.owner.http, username, password)
            if isinstance(admitted, _Refused):
                raise admitted
        except _Refused as exc:
            log.warning("ftp login refused", peer=handler.peer, **exc.context(username))
            raise AuthenticationFailed(exc.why) from None
        grant, image = admitted
        handler.grant = grant
        handler.image_path = image.path

    def get_home_dir(self, username: str) -> str:
        return "/"

    def has_user(self, username: str) -> bool:
        return True

    def get_msg_login(self, username: str) -> str:
        return "Login successful."

    def get_msg_quit(self, username: str) -> str:
        return "Goodbye."

    def impersonate_user(self, username: str, password: str) -> None:
        pass

    def terminate_impersonation(self, username: str) -> None:
        pass

    def get_perms(self, username: str) -> str:
        return _PERMS

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        return perm in _PERMS


class _CountingDTP:
    """Data-channel mixin: bytes sent are counted per job as they go (not at the end), so a
    long download shows progress in the job's ``bytes_served``."""

    tot_bytes_sent: int
    cmd_channel: Any
    file_obj: Any
    _counted: int = 0

    def _account(self) -> None:
        if self.file_obj is None:  # a listing, not the image
            return
        delta = self.tot_bytes_sent - self._counted
        if delta > 0:
            self._counted = self.tot_bytes_sent
            grant = getattr(self.cmd_channel, "grant", None)
            if grant is not None:
                self.cmd_channel.owner.http._count(grant.job_id, delta)

    def send(self, data: bytes) -> int:
        sent: int = super().send(data)  # type: ignore[misc]
        self._account()
        return sent

    def initiate_sendfile(self) -> None:
        try:
            super().initiate_sendfile()  # type: ignore[misc]
        finally:
            self._account()


def _without_removed(table: dict[str, Any]) -> dict[str, Any]:
    return {name: spec for name, spec in table.items() if name not in _REMOVED}


class _Waker:
    """Runs functions queued by worker threads on the IO loop thread (pyftpdlib's scheduler
    is not thread-safe): a socket pair registered with the loop wakes it at once."""

    def __init__(self, ioloop: Any) -> None:
        self._recv, self._send = socket.socketpair()
        self._recv.setblocking(False)
        self._send.setblocking(False)
        self._fileno = self._recv.fileno()
        self._calls: deque[Callable[[], None]] = deque()
        ioloop.register(self._fileno, self, ioloop.READ)

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Any thread: run ``fn`` on the IO loop thread (dropped once the server stopped)."""
        self._calls.append(fn)
        with contextlib.suppress(OSError):  # full: a wake-up is pending anyway; closed: stopped
            self._send.send(b"\0")

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def handle_read_event(self) -> None:
        with contextlib.suppress(OSError):
            while self._recv.recv(4096):
                pass
        while self._calls:
            fn = self._calls.popleft()
            try:
                fn()
            except Exception:
                log.exception("ftp deferred reply failed")

    def handle_close(self) -> None:
        pass

    def handle_error(self) -> None:
        log.exception("ftp waker failed")

    def close(self) -> None:
        self._recv.close()
        self._send.close()


class _Handler(FTPHandler):  # type: ignore[misc]
    """The control connection; class attributes are set per server by :meth:`FtpDelivery.start`."""

    owner: FtpDelivery
    proto_cmds = _without_removed(FTPHandler.proto_cmds)
    abstracted_fs = _OneFileFS
    permit_foreign_addresses = False  # PORT/EPRT and passive connections: the client only
    permit_privileged_ports = False
    banner = "evota firmware delivery"

    def __init__(self, conn: Any, server: Any, ioloop: Any = None) -> None:
        self.grant: tokens.DownloadGrant | None = None
        self.image_path: Path | None = None
        self.slot: _Slot | None = None
        self.admitted: tuple[Any, ServedImage] | _Refused | None = None  # PASS's outcome
        self._login_timer: Any = None
        self._waiting = False  # a command's lookup runs in a worker thread
        self._held: deque[bytes] = deque()  # lines the client sent meanwhile (pipelined)
        try:
            address = conn.getpeername()
            self.peer = f"{address[0]}:{address[1]}"
        except OSError:
            self.peer = "?"
        super().__init__(conn, server, ioloop)

    # -- session ------------------------------------------------------------------------
    def handle(self) -> None:
        if self.owner.failures.blocked(self.remote_ip):
            self.respond("421 Too many failed logins from your address; try again later.")
            self.close_when_done()
            return
        super().handle()
        if not self._closed:
            self._login_timer = self.ioloop.call_later(
                self.owner.login_timeout, self._login_expired, _errback=self.handle_error
            )

    def _login_expired(self) -> None:
        if not self.authenticated and not self._closed:
            self.respond("421 Login timed out.")
            self.close_when_done()

    # -- commands whose lookup may fetch the image run it off the IO loop thread ---------
    def _defer(
        self,
        work: Callable[[], Any],
        then: Callable[[Any], object],
        abandon: Callable[[Any], object] | None = None,
    ) -> None:
        """Run ``work`` in a worker thread, then ``then(its future)`` on the IO loop thread
        (``abandon(its future)`` instead if the session closed meanwhile). This session reads
        no further command meanwhile (pyftpdlib's own pause after a failed login does the
        same), so its replies keep their order."""
        self._waiting = True
        self.del_channel()
        waker = self.owner._waker
        assert waker is not None

        def run() -> None:
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            try:
                future.set_result(work())
            except Exception as exc:
                future.set_exception(exc)
            waker.call_soon(partial(self._resume, future, then, abandon))

        # A daemon thread per waiting session (at most one each, so bounded by the
        # connection cap): a fill still running at shutdown does not hold the process.
        threading.Thread(target=run, name="evota-ftp-lookup", daemon=True).start()

    def _resume(
        self,
        future: concurrent.futures.Future[Any],
        then: Callable[[Any], object],
        abandon: Callable[[Any], object] | None,
    ) -> None:
        self._waiting = False
        if self._closed or self._closing:
            if abandon is not None:
                abandon(future)
            return
        self.add_channel()
        try:
            then(future)
        except Exception:
            self.handle_error()
            return
        while self._held and not self._waiting and not self._closed:
            line = self._held.popleft()
            self._in_buffer, self._in_buffer_len = [line], len(line)
            super().found_terminator()

    def found_terminator(self) -> None:
        if self._waiting:  # a line read along with the deferred command: after its reply
            self._held.append(b"".join(self._in_buffer))
            self._in_buffer, self._in_buffer_len = [], 0
            return
        super().found_terminator()

    @staticmethod
    def _outcome(future: concurrent.futures.Future[Any]) -> Any:
        """The work's result, or the :class:`_Refused` it raised."""
        try:
            result = future.result()
        except _Refused as exc:
            return exc
        except Exception:  # _admit catches the lookup's errors; anything else is a bug
            log.exception("ftp image check failed")
            return _Refused("lookup failed", None)
        return result

    def ftp_PASS(self, line: str) -> None:
        if self.owner.failures.blocked(self.remote_ip):
            self.respond("421 Too many failed logins from your address; try again later.")
            self.close_when_done()
            return
        if self.authenticated or not self.username:
            super().ftp_PASS(line)  # its 503 answers
            return
        self._defer(
            partial(_admit, self.owner.http, self.username, line), partial(self._pass_checked, line)
        )

    def _pass_checked(self, line: str, future: concurrent.futures.Future[Any]) -> None:
        outcome = self._outcome(future)
        if isinstance(outcome, _Refused) and outcome.transient:
            log.warning("ftp login deferred", peer=self.peer, **outcome.context(self.username))
            self.respond(f"421 {outcome.why}; try again later.")
            self.close_when_done()
            return
        self.admitted = outcome
        super().ftp_PASS(line)  # the authorizer takes self.admitted

    def on_login(self, username: str) -> None:
        if self._login_timer is not None and not self._login_timer.cancelled:
            self._login_timer.cancel()
        grant = self.grant
        assert grant is not None
        log.info("ftp login", peer=self.peer, charger=grant.charger_id, job=grant.job_id)

    def on_login_failed(self, username: str, password: str) -> None:
        self.owner.failures.add(self.remote_ip)

    def flush_account(self) -> None:
        self._drop_queued()
        super().flush_account()
        self.grant = None

    def close(self) -> None:
        if not getattr(self, "_closed", True):
            if self._login_timer is not None and not self._login_timer.cancelled:
                self._login_timer.cancel()
            self._drop_queued()
        super().close()
        if self.slot is not None:
            self.slot.release()
            self.slot = None

    def _drop_queued(self) -> None:
        """A RETR waiting for its data connection holds a cap slot through its file."""
        queued = getattr(self, "_out_dtp_queue", None)
        if queued is not None and queued[2] is not None:
            queued[2].close()
            self._out_dtp_queue = None

    # -- the download -------------------------------------------------------------------
    def ftp_RETR(self, file: str) -> None:
        assert self.grant is not None  # RETR needs a login
        if self.data_channel is not None and self.data_channel.transfer_in_progress():
            self.respond("425 A transfer is already in progress.")
            return
        self._drop_queued()
        # still valid? (it may have expired, or the image been revoked, since the login)
        self._defer(
            partial(_admit_retr, self.owner.http, self.username, self.password),
            partial(self._retr_checked, file),
            abandon=_release_slot,
        )

    def _retr_checked(self, file: str, future: concurrent.futures.Future[Any]) -> str | None:
        outcome = self._outcome(future)
        if isinstance(outcome, _Refused):
            log.warning("firmware download refused", protocol="ftp", peer=self.peer,
                        **outcome.context(self.username))  # fmt: skip
            if outcome.transient:
                self.respond(f"450 {outcome.why}; try again later.")
            else:
                self.respond(f"550 {outcome.why.capitalize()}.")
            return None
        grant, image, site, slot = outcome
        self.image_path = image.path
        if isinstance(slot, str):
            log.warning("firmware download deferred", protocol="ftp", cap=slot, site=site,
                        charger=grant.charger_id, job=grant.job_id)  # fmt: skip
            self.respond(f"450 Too many concurrent downloads ({slot}); try again later.")
            return None
        self.slot = slot
        try:
            result: str | None = super().ftp_RETR(file)
            return result
        finally:
            if self.slot is not None:  # the file was never opened: nothing holds the slot
                self.slot.release()
                self.slot = None

    def log_transfer(
        self, cmd: str, filename: str, receive: bool, completed: bool, elapsed: float, bytes: int
    ) -> None:
        grant = self.grant
        log.info(
            "firmware download" if completed else "firmware download interrupted",
            protocol="ftps" if getattr(self, "_ssl_established", False) else "ftp",
            peer=self.peer,
            charger=grant.charger_id if grant else None,
            job=grant.job_id if grant else None,
            bytes=bytes,
            seconds=elapsed,
        )

    # pyftpdlib's own lines would repeat user names and paths at INFO; evota logs the events
    # that matter above, and never a command line (PASS carries the token).
    def log(self, msg: str, logfun: Any = None) -> None:
        pass

    def logline(self, msg: str, logfun: Any = None) -> None:
        pass

    def log_cmd(self, cmd: str, arg: str, respcode: int, respstr: str) -> None:
        pass

    def logerror(self, msg: str) -> None:
        log.warning("ftp session error", peer=self.peer)

    def log_exception(self, instance: Any) -> None:
        log.exception("ftp handler failed", peer=self.peer)


def _tls_handlers() -> tuple[Any, Any]:
    from pyftpdlib.handlers import TLS_DTPHandler, TLS_FTPHandler

    return TLS_FTPHandler, TLS_DTPHandler


class FtpDelivery:
    """The FTP(S) listener, sharing keys, clock, image lookup, caps and byte counts with
    ``http`` (the HTTP :class:`~evota.firmware.delivery.DeliveryServer`)."""

    def __init__(
        self,
        http: DeliveryServer,
        *,
        passive_ports: Sequence[int] | None = None,
        masquerade_address: str | None = None,
        tls: TlsFiles | None = None,
        timeout: float = 60.0,
        login_timeout: float = 30.0,
        max_connections: int = 512,
        max_per_address: int = 16,
        max_failures: int = 10,
        failure_window: float = 300.0,
        auth_failed_delay: float = 1.0,
    ) -> None:
        if min(timeout, login_timeout, failure_window) <= 0 or auth_failed_delay < 0:
            raise ValueError("the timeouts and the failure window must be positive")
        if min(max_connections, max_per_address, max_failures) < 1:
            raise ValueError("the connection and failure limits must be positive")
        if masquerade_address is not None:
            ipaddress.IPv4Address(masquerade_address)  # PASV answers carry an IPv4 address
        self.http = http
        self.passive_ports = list(passive_ports) if passive_ports else None
        self.masquerade_address = masquerade_address
        self.tls = tls
        self.timeout = timeout
        self.login_timeout = login_timeout
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.auth_failed_delay = auth_failed_delay
        self.failures = _Failures(max_failures, failure_window)
        self._waker: _Waker | None = None
        self._server: FTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def _handler_class(self) -> type:
        base: type = _Handler
        dtp_base: type = DTPHandler
        attrs: dict[str, Any] = {
            "owner": self,
            "authorizer": _Authorizer(self),
            "timeout": self.timeout,
            "max_login_attempts": 3,
            "auth_failed_timeout": self.auth_failed_delay,
            "passive_ports": self.passive_ports,
            "masquerade_address": self.masquerade_address,
        }
        if self.tls is not None:
            from OpenSSL import SSL

            tls_handler, dtp_base = _tls_handlers()
            base = type("_TlsHandler", (_Handler, tls_handler), {})
            attrs |= {
                # AUTH, PBSZ and PROT come with the TLS handler's table
                "proto_cmds": _without_removed(tls_handler.proto_cmds),
                "certfile": str(self.tls.certificate),
                "keyfile": str(self.tls.key),
                "ssl_context": None,  # built from the files above on first use
                "ssl_options": tls_handler.ssl_options | SSL.OP_NO_TLSv1 | SSL.OP_NO_TLSv1_1,
            }
        dtp = type("_Dtp", (_CountingDTP, dtp_base), {"timeout": self.timeout})
        attrs["dtp_handler"] = dtp
        handler: Any = type("_ServerHandler", (base,), attrs)
        if self.tls is not None:
            handler.get_ssl_context()  # a bad certificate or key fails start(), not a login
        return handler

    def start(self, host: str, port: int) -> int:
        """Bind and serve from a background daemon thread; return the bound port."""
        if self._server is not None:
            raise RuntimeError("FtpDelivery already started")
        self._stopping.clear()
        handler = self._handler_class()
        server = FTPServer((host, port), handler, ioloop=IOLoop())
        server.max_cons = self.max_connections
        server.max_cons_per_ip = self.max_per_address
        self._waker = _Waker(server.ioloop)
        self._server = server
        self._thread = threading.Thread(
            target=self._loop, args=(server,), name="evota-firmware-ftp", daemon=True
        )
        self._thread.start()
        bound = int(server.socket.getsockname()[1])
        log.info("firmware ftp listening", host=host, port=bound, tls=self.tls is not None)
        return bound

    def _loop(self, server: FTPServer) -> None:
        ioloop = server.ioloop
        try:
            while not self._stopping.is_set():
                try:
                    ioloop.loop(timeout=0.1, blocking=False)
                except Exception:  # one bad connection must not stop the server
                    log.exception("ftp io loop failed")
        finally:
            server.close_all()

    def stop(self) -> None:
        """Close the listener and every session (releasing their cap slots); idempotent."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        self._stopping.set()
        if thread is not None:
            thread.join(timeout=5)
        # a lookup still filling the cache finishes in its thread; its reply is dropped

    @property
    def port(self) -> int | None:
        server = self._server
        return None if server is None else int(server.socket.getsockname()[1])


def resolve_ipv4(host: str) -> str:
    """The IPv4 address PASV answers carry for ``host`` (a literal, or a name resolved once)."""
    with contextlib.suppress(ValueError):
        return str(ipaddress.IPv4Address(host))
    return socket.gethostbyname(host)
