"""Firmware updates on a simulated charger: OCPP 1.6 ``UpdateFirmware`` and the Security
Whitepaper's ``SignedUpdateFirmware``, with the faults of :class:`~evota.sim.fleet.FaultProfile`.
The same agent runs OCPP 2.0.1's ``UpdateFirmware`` (signed L01, unsigned L02; its handler is in
:mod:`evota.sim.v201`): the charger's wire spells the status notifications.

An update runs as a background task of the charger (it survives reconnects and the reboot it
causes): wait for the retrieve time, download the real image over HTTP (resuming with
``Range``/``If-Range``) or, for a charger whose ``download_protocols`` allow it, over FTP/FTPS
with the stdlib ``ftplib`` in a thread (resuming with ``REST``), verify the signature, wait
for sessions to end, install, reboot into the new version, report the result. Status
notifications that find the charger offline wait in an outbox and are sent after the next
accepted boot, the way real chargers queue them.

The new version comes from the image: an image that starts with the ASCII line
``EVOTA-SIM-FIRMWARE <version>\\n`` installs ``<version>``; any other image installs
``<old version>+<first 8 hex digits of its SHA-256>``. The image is hashed while it streams and
then discarded, so a thousand chargers updating at once hold no images in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ftplib
import hashlib
import ssl
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from evota.firmware.signing import (
    CertificateError,
    SignatureError,
    decode_signature,
    verify_certificate,
)
from evota.ocpp import rpc
from evota.ocpp.errors import ErrorKind, RpcError
from evota.sim.charger import (
    AFTER_BOOT,
    USER_AGENT,
    CallFailed,
    NotConnected,
    Reply,
    SimulatedCharger,
)
from evota.sim.fleet import FAULT_RATES, MAX_FIRMWARE

log = structlog.get_logger("evota.sim")

IMAGE_HEADER = b"EVOTA-SIM-FIRMWARE "
_HEADER_BYTES = len(IMAGE_HEADER) + MAX_FIRMWARE + 2  # enough to read the header line
OUTBOX_LIMIT = 100  # notifications kept while offline; the oldest are dropped beyond this
_SESSION_POLL = 0.05  # real s between checks whether sessions have ended
_SCHEDULE_SLACK = 1.0  # real s: a retrieve time this close counts as "now", not DownloadScheduled


@dataclass(frozen=True, slots=True)
class DrawnFaults:
    """The faults that hit one update, drawn from the charger's profile when it arrives."""

    download_fails: bool = False
    link_drop: bool = False
    power_loss: bool = False
    install_fails: bool = False
    invalid_signature: bool = False
    silent: bool = False
    reject: bool = False
    install_verification_fails: bool = False
    refuse_cancel: bool = False
    defer_download: bool = False


@dataclass(frozen=True, slots=True)
class Update:
    """One accepted update request: 1.6 plain (no ``request_id``), 1.6 signed, or 2.0.1
    (always a ``request_id``; ``signed`` unless it is an unsigned L02 update)."""

    location: str
    retrieve_at: dt.datetime
    retries: int
    retry_interval: float | None  # sim s; None: SimConfig.download_retry_interval
    faults: DrawnFaults
    request_id: int | None = None
    install_at: dt.datetime | None = None
    certificate: str = ""
    signature: str = ""
    signed: bool = False  # verify ``signature`` with ``certificate`` before installing

    @property
    def detailed(self) -> bool:
        """Reports the extended statuses (InstallScheduled, InstallRebooting, ...)."""
        return self.request_id is not None


@dataclass(frozen=True, slots=True)
class Download:
    """What a finished download left behind: its hash and size, never the bytes."""

    sha256: bytes
    size: int
    version: str | None  # from the image header, if it has one
    resumed: int  # Range requests answered 206
    restarts: int  # Range requests answered 200 (download started over)


class _DownloadError(Exception):
    pass


class _LinkDropped(Exception):
    pass


class _Stopped(Exception):
    """The update was cancelled: the FTP thread stops at its next chunk."""


FTP_SCHEMES = ("ftp", "ftps")
# What a failed HTTP or FTP attempt raises (ftplib: its replies, sockets, TLS, a cut reply).
_FETCH_ERRORS: tuple[type[BaseException], ...] = (httpx.HTTPError, *ftplib.all_errors)


class _Partial:
    """A download in progress: bytes hashed so far and what is needed to resume it."""

    def __init__(self) -> None:
        self.resumed = 0
        self.restarts = 0
        self.reset()

    def reset(self) -> None:
        self.hasher = hashlib.sha256()
        self.have = 0
        self.head = bytearray()
        self.total: int | None = None
        self.validator: str | None = None  # ETag (or Last-Modified) for If-Range

    def feed(self, chunk: bytes) -> None:
        self.hasher.update(chunk)
        self.have += len(chunk)
        if len(self.head) < _HEADER_BYTES:
            self.head += chunk[: _HEADER_BYTES - len(self.head)]

    def result(self) -> Download:
        return Download(
            self.hasher.digest(), self.have, image_version(bytes(self.head)), self.resumed,
            self.restarts,
        )  # fmt: skip


def image_version(head: bytes) -> str | None:
    """The version in an ``EVOTA-SIM-FIRMWARE <version>\\n`` header line, if the image has one."""
    if not head.startswith(IMAGE_HEADER):
        return None
    line, newline, _ = head[len(IMAGE_HEADER) :].partition(b"\n")
    if not newline:
        return None
    try:
        version = line.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    if not 1 <= len(version) <= MAX_FIRMWARE or any(not 32 < ord(c) < 127 for c in version):
        return None
    return version


def derived_version(old: str, sha256: bytes) -> str:
    """The version of an image without a header: ``<old>+<8 hex of its SHA-256>``."""
    return f"{old[: MAX_FIRMWARE - 9]}+{sha256.hex()[:8]}"


def signature_problem(sha256: bytes, signature_b64: str, certificate_pem: str) -> str | None:
    """Why ``signature_b64`` is not the certificate key's signature over the image digest.

    The same check as :func:`evota.firmware.signing.verify_file`, but over the digest computed
    while streaming, because the simulator keeps no copy of the image.
    """
    try:
        raw = decode_signature(signature_b64)
        public_key = x509.load_pem_x509_certificate(certificate_pem.encode()).public_key()
    except SignatureError as exc:
        return exc.reason
    except (ValueError, UnsupportedAlgorithm):
        return "signing certificate is unreadable"
    prehashed = Prehashed(hashes.SHA256())
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(raw, sha256, ec.ECDSA(prehashed))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(raw, sha256, padding.PKCS1v15(), prehashed)
        else:
            return f"unsupported key type {type(public_key).__name__}"
    except InvalidSignature:
        return "signature does not match the image"
    return None


class FirmwareAgent:
    """One charger's firmware machinery: the running update, the outbox, the boot signal."""

    def __init__(self, charger: SimulatedCharger) -> None:
        self.charger = charger
        self.task: asyncio.Task[None] | None = None
        self.installing = False  # past the point where an update can be cancelled
        self.outbox: deque[tuple[str, dict[str, Any]]] = deque(maxlen=OUTBOX_LIMIT)
        self.booted = asyncio.Event()  # set after each accepted boot, once the outbox is sent
        self.last_download: Download | None = None
        self.last_update: Update | None = None  # the last request started (for tests)
        self._holding = False

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    def cancel(self) -> None:
        """Stop the running update; it reports nothing more."""
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def start(self, update: Update) -> None:
        self.cancel()
        self.last_update = update
        self.task = self.charger.spawn_background(self._run(update))

    async def later(self, action: str, payload: dict[str, Any]) -> None:
        """Send a notification from a task of its own (so a CALL's reply is never held up)."""
        self.charger.spawn_background(self.notify(action, payload))

    # -- notifications --------------------------------------------------------------------------
    async def notify(self, action: str, payload: dict[str, Any]) -> None:
        """Send now if the charger is accepted and nothing is queued; queue it otherwise."""
        c = self.charger
        c.schemas.validate_request(action, payload, "-")  # our bug if this raises
        if self.outbox or not c.accepted:
            self.outbox.append((action, payload))
            return
        try:
            await c.call(action, payload)
        except NotConnected:
            self.outbox.append((action, payload))
        except CallFailed as exc:  # refused or unanswered: a charger does not resend these
            log.info("firmware notification lost", charger_id=c.identity, error=str(exc))

    async def flush(self) -> None:
        """Send what was queued while offline, in order (after an accepted boot)."""
        c = self.charger
        while self.outbox and c.accepted:
            action, payload = self.outbox[0]
            try:
                await c.call(action, payload)
            except NotConnected:
                return
            except CallFailed as exc:
                log.info("firmware notification lost", charger_id=c.identity, error=str(exc))
            if self.outbox and self.outbox[0][1] is payload:
                self.outbox.popleft()

    async def report(self, update: Update, status: str) -> None:
        c = self.charger
        c.firmware_state = status
        c.firmware_history.append(status)
        c.firmware_request_id = update.request_id
        await self.notify(*c.wire.firmware_status(status, update.request_id))

    async def security_event(self, kind: str, tech_info: str) -> None:
        message = self.charger.wire.security_event(self.charger, kind, tech_info)
        if message is not None:  # None: a plain 1.6 charger has no security extension
            await self.notify(*message)

    # -- the update -----------------------------------------------------------------------------
    async def _run(self, u: Update) -> None:
        c = self.charger
        try:
            later = (u.retrieve_at - c.clock.now()).total_seconds()
            scheduled = c.wire.detailed_firmware and later > _SCHEDULE_SLACK
            if scheduled:
                await self.report(u, "DownloadScheduled")
            await _sleep_until(c, u.retrieve_at)
            if u.faults.defer_download and c.in_session:  # keep the link for the sessions
                if u.detailed and not scheduled:
                    await self.report(u, "DownloadScheduled")
                await _sessions_ended(c)
            await self.report(u, "Downloading")
            try:
                download = await self._download(u)
            except _DownloadError as exc:
                log.info("firmware download failed", charger_id=c.identity, error=str(exc))
                await self.report(u, "DownloadFailed")
                return
            self.last_download = download
            await self.report(u, "Downloaded")
            if u.signed:
                problem = (
                    "signature check failed (fault profile)"
                    if u.faults.invalid_signature
                    else signature_problem(download.sha256, u.signature, u.certificate)
                )
                if problem is not None:
                    await self.report(u, "InvalidSignature")
                    await self.security_event("InvalidFirmwareSignature", problem)
                    return
                await self.report(u, "SignatureVerified")
            if u.faults.install_verification_fails:  # e.g. a checksum inside the image is wrong
                failed = "InstallVerificationFailed" if u.detailed else "InstallationFailed"
                await self.report(u, failed)
                return
            await self._wait_for_install(u)
            self.installing = True
            c.hold_idle_connectors = True  # no new sessions while installing
            await self.report(u, "Installing")
            duration = c.config.install_duration
            if u.faults.power_loss:  # the power fails part-way: back on the old image
                await c._sleep(c.rng.uniform(0.0, duration))
                self._release(report=False)
                await self._restart(hard=True, wait=False, reason="PowerUp")
                return
            await c._sleep(duration)
            if u.faults.install_fails:  # a clean failure: the old image keeps running
                await self.report(u, "InstallationFailed")
                return
            if u.detailed:
                await self.report(u, "InstallRebooting")
            old = c.firmware_version
            c.firmware_version = download.version or derived_version(old, download.sha256)
            self._release(report=False)
            await self._restart(hard=False, wait=True, reason="FirmwareUpdate")
            await self.report(u, "Installed")
            await self.security_event("FirmwareUpdated", f"{old} -> {c.firmware_version}")
        finally:
            self.installing = False
            self._release(report=True)

    async def _wait_for_install(self, u: Update) -> None:
        """Honour installDateTime and let running sessions finish (connectors Unavailable)."""
        c = self.charger
        scheduled = False
        if u.install_at is not None and u.install_at > c.clock.now():
            await self.report(u, "InstallScheduled")
            scheduled = True
            await _sleep_until(c, u.install_at)
        if c.in_session:
            if u.detailed and not scheduled:
                await self.report(u, "InstallScheduled")
            await self._hold()
            await _sessions_ended(c)

    async def _hold(self) -> None:
        c = self.charger
        if c.wire.allow_sessions_pending_update(c):  # 2.0.1 AllowNewSessionsPendingFirmwareUpdate
            return
        self._holding = c.hold_idle_connectors = True
        for connector, status in list(c.connector_status.items()):
            if connector > 0 and status == "Available" and connector not in c.transactions:
                with contextlib.suppress(CallFailed):
                    await c.send_status(connector, "Unavailable")

    def _release(self, *, report: bool) -> None:
        """Let sessions start again; ``report`` says so for connectors we made Unavailable."""
        c = self.charger
        c.hold_idle_connectors = False
        if not self._holding:
            return
        self._holding = False
        if report and not c._stopping:
            c.spawn_background(_report_idle(c))

    async def _restart(self, *, hard: bool, wait: bool, reason: str) -> None:
        """Reboot (offline: the next connection is the reboot) and wait for the next boot."""
        c = self.charger
        self.booted.clear()
        c.power_cycle(reason)
        if c.connected:
            await c.reboot(hard=hard, reason=reason)
        if wait:
            await self.booted.wait()

    # -- download ------------------------------------------------------------------------------
    async def _download(self, u: Update) -> Download:
        c = self.charger
        attempts = 1 + max(0, u.retries)
        interval = (
            c.config.download_retry_interval if u.retry_interval is None else u.retry_interval
        )
        partial = _Partial()
        drop = u.faults.link_drop
        error = "no attempt made"
        scheme = urllib.parse.urlsplit(u.location).scheme.lower()
        if scheme not in c.spec.download_protocols:  # e.g. an FTP-only charger given http://
            speaks = ", ".join(c.spec.download_protocols)
            raise _DownloadError(f"cannot download over {scheme or '?'} (speaks {speaks})")
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        async with contextlib.AsyncExitStack() as stack:
            fetch: Callable[[_Partial, bool], Awaitable[None]]
            if scheme in FTP_SCHEMES:
                fetch = lambda p, d: self._fetch_ftp(u.location, p, drop=d)  # noqa: E731
            else:
                client = await stack.enter_async_context(
                    httpx.AsyncClient(
                        timeout=c.config.download_timeout, follow_redirects=True, headers=headers
                    )
                )
                fetch = lambda p, d: self._fetch(client, u.location, p, drop=d)  # noqa: E731
            attempt = 0
            while attempt < attempts:
                if attempt > 0:
                    await c._sleep(interval)
                attempt += 1
                if u.faults.download_fails:
                    error = "download failed (fault profile)"
                    continue
                try:
                    await fetch(partial, drop)
                except _LinkDropped:
                    drop = False
                    await self._lose_link()
                    attempt -= 1  # resuming is part of the same attempt
                    continue
                except _DownloadError as exc:
                    error = str(exc)
                    continue
                except _FETCH_ERRORS as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    continue
                return partial.result()
        raise _DownloadError(f"{attempts} attempt(s): {error}")

    async def _lose_link(self) -> None:
        """The uplink fails: the OCPP connection drops too; resume once it is back (booted)."""
        c = self.charger
        self.booted.clear()
        c.drop_connection()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(c.config.backoff_max + c.config.open_timeout):
                await self.booted.wait()

    async def _fetch(
        self, client: httpx.AsyncClient, url: str, partial: _Partial, *, drop: bool
    ) -> None:
        c = self.charger
        headers: dict[str, str] = {}
        if partial.have and partial.validator is not None:
            headers["Range"] = f"bytes={partial.have}-"
            headers["If-Range"] = partial.validator
        elif partial.have:
            partial.reset()  # nothing to prove the file is unchanged: start over
        async with client.stream("GET", url, headers=headers) as response:
            status = response.status_code
            if status == 206 and "Range" in headers:
                start, total = _content_range(response.headers.get("Content-Range", ""))
                if start != partial.have:
                    partial.reset()
                    raise _DownloadError(f"resumed at byte {start}, not {partial.have}")
                partial.resumed += 1
                partial.total = total
            elif status == 200:
                if partial.have:
                    partial.restarts += 1  # the image changed or Range is not supported
                partial.reset()
                partial.validator = response.headers.get("ETag") or response.headers.get(
                    "Last-Modified"
                )
                length = response.headers.get("Content-Length", "")
                partial.total = int(length) if length.isdigit() else None
            else:
                host = urllib.parse.urlsplit(url).netloc
                raise _DownloadError(f"HTTP {status} from {host}")
            drop_at: int | None = None
            if drop and partial.total is not None and partial.total - partial.have > 1:
                drop_at = c.rng.randrange(partial.have + 1, partial.total)
            bps = c.spec.faults.slow_link_bps
            chunk_size = None if bps is None else min(65536, max(1024, bps // 80))
            started, received = time.monotonic(), 0
            async for chunk in response.aiter_bytes(chunk_size):
                if drop_at is not None and partial.have + len(chunk) >= drop_at:
                    partial.feed(chunk[: drop_at - partial.have])
                    raise _LinkDropped
                partial.feed(chunk)
                if bps is not None:
                    received += len(chunk)
                    ahead = received * 8 / bps - (time.monotonic() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        if partial.total is not None and partial.have != partial.total:
            raise _DownloadError(f"incomplete: {partial.have} of {partial.total} bytes")

    async def _fetch_ftp(self, url: str, partial: _Partial, *, drop: bool) -> None:
        """One FTP(S) attempt in a thread (ftplib blocks); a cancelled update stops it."""
        c = self.charger
        drop_fraction = c.rng.random() if drop else None  # drawn here: the rng is not shared
        stop = threading.Event()
        try:
            await asyncio.to_thread(
                _ftp_retrieve,
                url,
                partial,
                drop_fraction=drop_fraction,
                bps=c.spec.faults.slow_link_bps,
                timeout=c.config.download_timeout,
                ca=c.spec.download_ca,
                stop=stop,
            )
        finally:
            stop.set()


def _ftp_retrieve(
    url: str,
    partial: _Partial,
    *,
    drop_fraction: float | None,
    bps: int | None,
    timeout: float,
    ca: str | None,
    stop: threading.Event,
) -> None:
    """Fetch the URL's file into ``partial`` (REST from what it has); blocking.

    ``ftps://`` is explicit FTPS: AUTH TLS before the login, PROT P for the data, and the server
    certificate checked against ``ca`` (else the system's CAs) and the URL's host. The user
    and password come from the URL (percent-decoded).
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    ftp: ftplib.FTP
    if parts.scheme.lower() == "ftps":
        context = ssl.create_default_context(cadata=ca) if ca else ssl.create_default_context()
        ftp = ftplib.FTP_TLS(context=context, timeout=timeout)
    else:
        ftp = ftplib.FTP(timeout=timeout)
    try:
        ftp.connect(host, parts.port or 21)
        if isinstance(ftp, ftplib.FTP_TLS):
            ftp.auth()
        user = urllib.parse.unquote(parts.username or "anonymous")
        ftp.login(user, urllib.parse.unquote(parts.password or ""))
        if isinstance(ftp, ftplib.FTP_TLS):
            ftp.prot_p()
        ftp.voidcmd("TYPE I")
        path = urllib.parse.unquote(parts.path)
        total = ftp.size(path)
        if total is None:
            raise _DownloadError("the server did not tell the file size")
        if partial.have and (partial.total != total or partial.have > total):
            partial.restarts += 1  # the file changed: start over
            partial.reset()
        elif partial.have:
            partial.resumed += 1
        partial.total = total
        drop_at: int | None = None
        if drop_fraction is not None and total - partial.have > 1:
            drop_at = partial.have + 1 + int(drop_fraction * (total - partial.have - 1))
        started, received = time.monotonic(), 0

        def take(chunk: bytes) -> None:
            nonlocal received
            if stop.is_set():
                raise _Stopped
            if drop_at is not None and partial.have + len(chunk) >= drop_at:
                partial.feed(chunk[: drop_at - partial.have])
                raise _LinkDropped
            partial.feed(chunk)
            if bps is not None:
                received += len(chunk)
                ahead = received * 8 / bps - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)  # this thread only

        block = 65536 if bps is None else min(65536, max(1024, bps // 80))
        ftp.retrbinary(f"RETR {path}", take, blocksize=block, rest=partial.have or None)
    finally:
        ftp.close()  # no QUIT: after a dropped link there is nobody to say goodbye to
    if partial.have != partial.total:
        raise _DownloadError(f"incomplete: {partial.have} of {partial.total} bytes")


def _content_range(value: str) -> tuple[int, int | None]:
    """``bytes START-END/TOTAL`` -> (START, TOTAL or None)."""
    unit, _, spec = value.partition(" ")
    span, _, total = spec.partition("/")
    first, _, _ = span.partition("-")
    if unit != "bytes" or not first.isdigit():
        raise _DownloadError(f"unusable Content-Range {value!r}")
    return int(first), int(total) if total.isdigit() else None


async def _sleep_until(charger: SimulatedCharger, when: dt.datetime) -> None:
    """Absolute times from the CSMS are real time: they are not scaled by the speed."""
    delay = (when - charger.clock.now()).total_seconds()
    if delay > 0:
        await asyncio.sleep(delay)


async def _sessions_ended(charger: SimulatedCharger) -> None:
    # Polling: a session ends by its task, a reset, or a stop reported after a reconnect.
    while charger.in_session:  # noqa: ASYNC110
        await asyncio.sleep(_SESSION_POLL)


async def _report_idle(charger: SimulatedCharger) -> None:
    for connector, status in list(charger.connector_status.items()):
        if status == "Unavailable" and connector not in charger.transactions:
            with contextlib.suppress(CallFailed):
                await charger.send_status(connector, *charger.idle_status(connector))


def _parse_time(text: str, charger: SimulatedCharger) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return charger.clock.now()
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when


def _draw(charger: SimulatedCharger) -> DrawnFaults:
    """Draw this update's faults; rates of zero draw nothing, so they leave the rng alone."""
    faults = charger.spec.faults
    hit: dict[str, bool] = {}
    for name in FAULT_RATES:
        rate: float = getattr(faults, name)
        hit[name] = rate > 0 and charger.rng.random() < rate
    return DrawnFaults(**hit)


def agent(charger: SimulatedCharger) -> FirmwareAgent:
    """The charger's firmware agent, created on first use."""
    if charger.firmware_agent is None:
        charger.firmware_agent = FirmwareAgent(charger)
    return charger.firmware_agent


# -- OCPP 1.6 handlers (routed by evota.sim.v16.HANDLERS) --------------------------------------


async def on_update_firmware(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    """Plain 1.6: the answer has no status, so refusals (reject, busy installing) are silent."""
    if charger.spec.firmware_update == "signed":
        raise RpcError(ErrorKind.NOT_SUPPORTED, "this charger takes SignedUpdateFirmware only")
    a = agent(charger)
    faults = _draw(charger)
    if faults.reject or a.installing:
        return Reply({})
    p = call.payload
    update = Update(
        location=p["location"],
        retrieve_at=_parse_time(p["retrieveDate"], charger),
        retries=p.get("retries", 0),
        retry_interval=p.get("retryInterval"),
        faults=faults,
    )
    a.cancel()
    if faults.silent:
        return Reply({})
    return Reply({}, then=lambda: a.start(update))


def certificate_refusal(charger: SimulatedCharger, certificate: str) -> tuple[str, str] | None:
    """(status, reason) when the signing certificate is not trusted, else None.

    The ``certificate_status`` fault makes the charger find it invalid or revoked (as if its
    root were missing or a CRL listed it) whatever the certificate is.
    """
    forced = charger.spec.faults.certificate_status
    if forced == "revoked":
        return "RevokedCertificate", "signing certificate revoked (fault profile)"
    if forced == "invalid":
        return "InvalidCertificate", "signing certificate rejected (fault profile)"
    roots = [root.encode() for root in charger.spec.firmware_roots]
    try:
        verify_certificate(certificate.encode(), roots, charger.clock.now())
    except CertificateError as exc:
        return "InvalidCertificate", exc.reason
    return None


def refuse_certificate(charger: SimulatedCharger, status: str, reason: str) -> Reply:
    """Answer a bad signing certificate, then report it as a security event."""
    a = agent(charger)
    event = charger.wire.security_event(charger, "InvalidFirmwareSigningCertificate", reason)
    if event is None:
        return Reply({"status": status})
    return Reply({"status": status}, then=lambda: a.later(*event))


def replace_answer(a: FirmwareAgent, faults: DrawnFaults) -> str:
    """How a request that arrives while an update may be running is answered: ``Accepted``,
    ``AcceptedCanceled`` (the running one is cancelled) or ``Rejected`` (it cannot be:
    installing already, or the ``refuse_cancel`` fault)."""
    if not a.busy:
        return "Accepted"
    if a.installing or faults.refuse_cancel:
        return "Rejected"
    return "AcceptedCanceled"


def signed_update(p: dict[str, Any], charger: SimulatedCharger, faults: DrawnFaults) -> Update:
    """An :class:`Update` from a 1.6 SignedUpdateFirmware / 2.0.1 UpdateFirmware payload."""
    firmware = p["firmware"]
    return Update(
        location=firmware["location"],
        retrieve_at=_parse_time(firmware["retrieveDateTime"], charger),
        retries=p.get("retries", 0),
        retry_interval=p.get("retryInterval"),
        faults=faults,
        request_id=p["requestId"],
        install_at=(
            _parse_time(firmware["installDateTime"], charger)
            if "installDateTime" in firmware
            else None
        ),
        certificate=firmware.get("signingCertificate", ""),
        signature=firmware.get("signature", ""),
        signed="signature" in firmware,
    )


def begin(a: FirmwareAgent, update: Update, status: str) -> Reply:
    """Answer ``status`` (Accepted or AcceptedCanceled) and run ``update`` after the answer."""
    a.cancel()
    if update.faults.silent:
        return Reply({"status": status})
    return Reply({"status": status}, then=lambda: a.start(update))


async def on_signed_update_firmware(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    if charger.spec.firmware_update == "plain":
        raise RpcError(ErrorKind.NOT_IMPLEMENTED, "unknown action 'SignedUpdateFirmware'")
    a = agent(charger)
    faults = _draw(charger)
    if faults.reject or a.installing:
        return Reply({"status": "Rejected"})
    p = call.payload
    refusal = certificate_refusal(charger, p["firmware"]["signingCertificate"])
    if refusal is not None:
        return refuse_certificate(charger, *refusal)
    status = replace_answer(a, faults)
    if status == "Rejected":
        return Reply({"status": status})
    return begin(a, signed_update(p, charger, faults), status)


async def _after_boot(charger: SimulatedCharger) -> None:
    a = charger.firmware_agent
    if a is None:
        return
    await a.flush()
    a.booted.set()


AFTER_BOOT.append(_after_boot)
