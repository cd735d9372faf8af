"""The FTP/FTPS download server over real loopback sockets, real files and the stdlib ftplib
client (the one the simulator's FTP-only charger uses), sharing caps and byte counts with a
real HTTP download server."""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import io
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import structlog.testing

from evota.firmware import ftp_delivery, tokens
from evota.firmware.delivery import DeliveryServer, ServedImage, download_path
from evota.firmware.ftp_delivery import FtpDelivery, FtpEndpoint, ftp_url, location
from evota.signed_tokens import new_key
from tests.firmware.vendor_site import make_tls

NOW = 1_900_000_000
SIZE = 1024 * 1024 + 77
BIG = 32 * 1024 * 1024  # sparse; more than loopback buffers hold, so a stalled reader blocks
DATA = os.urandom(SIZE)
DATA_SHA = hashlib.sha256(DATA).hexdigest()
BIG_SHA = hashlib.sha256(bytes(BIG)).hexdigest()
OTHER_SHA = "ab" * 32


@dataclass
class Env:
    http_server: DeliveryServer
    server: FtpDelivery
    port: int
    http_port: int
    key: bytes
    images: dict[str, ServedImage]
    clock: list[float]

    def token(
        self,
        charger: str = "CP-1",
        sha: str = DATA_SHA,
        job: str = "job-1",
        expires: int = NOW + 3600,
        key: bytes | None = None,
    ) -> str:
        return tokens.issue(tokens.DownloadGrant(job, charger, sha, expires), key or self.key)

    def client(self) -> ftplib.FTP:
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", self.port, timeout=5)
        return ftp

    def login(self, charger: str = "CP-1", **kw: object) -> ftplib.FTP:
        ftp = self.client()
        ftp.login(charger, self.token(charger, **kw))  # type: ignore[arg-type]
        return ftp


def _wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def _get(ftp: ftplib.FTP, rest: int | None = None) -> bytes:
    out = bytearray()
    ftp.retrbinary(f"RETR {ftp_delivery.FILE_NAME}", out.extend, rest=rest)
    return bytes(out)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    (tmp_path / "blob").write_bytes(DATA)
    with (tmp_path / "big").open("wb") as f:
        f.truncate(BIG)
    images = {
        DATA_SHA: ServedImage(tmp_path / "blob", SIZE),
        BIG_SHA: ServedImage(tmp_path / "big", BIG),
        OTHER_SHA: ServedImage(tmp_path / "blob", SIZE, revoked=True),
    }
    sites = {"CP-1": "berlin", "CP-2": "berlin", "CP-3": "paris"}
    clock = [float(NOW)]
    key = new_key()
    http_server = DeliveryServer(
        keys=[key],
        lookup=images.get,
        site_of=sites.get,
        now=lambda: clock[0],
        max_concurrent=2,
        max_per_site=1,
        timeout=5,
    )
    http_port = http_server.start("127.0.0.1", 0)
    server = FtpDelivery(http_server, timeout=5, auth_failed_delay=0, max_failures=5)
    port = server.start("127.0.0.1", 0)
    try:
        yield Env(http_server, server, port, http_port, key, images, clock)
    finally:
        server.stop()
        http_server.stop()


# -- URLs (pure) -------------------------------------------------------------------------------


def test_ftp_url_and_location_choice() -> None:
    token = "A" * 60
    endpoint = FtpEndpoint("ftp.example.net", 2121)
    assert ftp_url(endpoint, "CP 1/a:b@c", token) == (
        f"ftp://CP%201%2Fa%3Ab%40c:{token}@ftp.example.net:2121/firmware.bin"
    )
    assert ftp_url(FtpEndpoint("::1", 21, tls=True), "CP", token, tls=True).startswith(
        f"ftps://CP:{token}@[::1]:21/"
    )
    with pytest.raises(ValueError, match="512"):
        ftp_url(endpoint, "x" * 460, token)
    with pytest.raises(ValueError, match="token"):
        ftp_url(endpoint, "CP", "a@b")
    kw = {"charger_id": "CP", "sha256": DATA_SHA, "token": token, "http_base": "http://h:8001"}
    assert location("ftp", endpoint=endpoint, **kw).startswith("ftp://CP:")
    assert location("http", endpoint=endpoint, **kw).startswith("http://h:8001/firmware/CP/")
    # FTP off, or FTPS wanted without TLS configured: the HTTP server serves it
    assert location("ftp", endpoint=None, **kw).startswith("http://")
    assert location("ftps", endpoint=endpoint, **kw).startswith("http://")
    tls = FtpEndpoint("h", 21, tls=True)
    assert location("ftps", endpoint=tls, **kw).startswith("ftps://CP:")


# -- login -------------------------------------------------------------------------------------


def test_login_sees_one_read_only_file(env: Env) -> None:
    ftp = env.login()
    assert ftp.pwd() == "/"
    assert ftp.nlst() == [ftp_delivery.FILE_NAME]
    ftp.voidcmd("TYPE I")
    assert ftp.size(ftp_delivery.FILE_NAME) == SIZE
    assert _get(ftp) == DATA
    ftp.quit()
    assert env.http_server.take_bytes() == {"job-1": SIZE}


@pytest.mark.parametrize(
    ("user", "token_kw", "why"),
    [
        ("CP-2", {}, "wrong charger"),  # another charger's token
        ("CP-1", {"expires": NOW}, "expired"),
        ("CP-1", {"key": new_key()}, "bad signature"),  # signed with a key this server lacks
    ],
)
def test_refused_tokens(env: Env, user: str, token_kw: dict[str, object], why: str) -> None:
    ftp = env.client()
    with pytest.raises(ftplib.error_perm, match="530") as exc:
        ftp.login(user, env.token("CP-1", **token_kw))  # type: ignore[arg-type]
    assert why.split()[0] in str(exc.value)
    ftp.close()


def test_revoked_unknown_and_garbage_tokens(env: Env) -> None:
    for password in (
        env.token(sha=OTHER_SHA),  # revoked image
        env.token(sha="cd" * 32),  # unknown image
        env.token()[:-3],  # tampered
        "x" * 5000,  # too long to be a token (or a command line)
    ):
        ftp = env.client()
        with pytest.raises(ftplib.error_perm, match=r"5[03]0"):
            ftp.login("CP-1", password)
        ftp.close()


def test_each_retr_rechecks_the_token_and_the_image(env: Env) -> None:
    """As HTTP checks every request: a session that logged in earlier cannot download an image
    revoked since, nor keep downloading once its token has expired."""
    ftp = env.login()
    assert _get(ftp) == DATA
    image = env.images[DATA_SHA]
    env.images[DATA_SHA] = ServedImage(image.path, image.size, revoked=True)
    with pytest.raises(ftplib.error_perm, match="550 Image revoked"):
        _get(ftp)
    env.images[DATA_SHA] = image
    assert _get(ftp) == DATA
    env.clock[0] = NOW + 3600  # the token's expiry
    with pytest.raises(ftplib.error_perm, match="550 Download token expired"):
        _get(ftp)
    ftp.quit()
    assert env.http_server.active_downloads == 0


def test_nothing_outside_and_nothing_writable(env: Env) -> None:
    ftp = env.login()
    ftp.sendcmd("CWD ..")  # the root is its own parent
    for command in ("CWD /etc", "RETR ../../etc/passwd", "RETR /etc/passwd", "SIZE x"):
        with pytest.raises(ftplib.error_perm, match="550"):
            ftp.sendcmd(command)
    with pytest.raises(ftplib.error_perm, match="550"):
        ftp.nlst("/etc")
    assert ftp.pwd() == "/"
    for command in (
        "DELE firmware.bin",
        "MKD x",
        "RMD x",
        "RNFR firmware.bin",
        "SITE CHMOD 777 firmware.bin",
        "SITE EXEC id",
        "MFMT 20200101000000 firmware.bin",
    ):
        with pytest.raises(ftplib.error_perm, match="500"):
            ftp.sendcmd(command)
    with pytest.raises(ftplib.error_perm, match="500"):
        ftp.storbinary("STOR evil.bin", io.BytesIO(b"evil"))
    with pytest.raises(ftplib.error_perm, match="500"):
        ftp.storbinary("APPE firmware.bin", io.BytesIO(b"evil"))
    assert _get(ftp) == DATA  # the image is unchanged
    ftp.quit()


def test_port_to_a_foreign_address_is_refused(env: Env) -> None:
    ftp = env.login()
    with pytest.raises(ftplib.error_perm, match="501"):
        ftp.sendcmd("PORT 10,1,2,3,200,10")  # FXP / bounce to a third party
    with pytest.raises(ftplib.error_perm, match="501"):
        ftp.sendcmd("EPRT |1|192.0.2.7|40000|")
    # active mode back to the client itself works
    ftp.set_pasv(False)
    assert _get(ftp) == DATA
    ftp.quit()


def test_commands_before_login_are_refused(env: Env) -> None:
    ftp = env.client()
    for command in ("RETR firmware.bin", "LIST", "CWD /", "PASV"):
        with pytest.raises(ftplib.error_perm, match="530"):
            ftp.sendcmd(command)
    ftp.close()


def test_failed_logins_per_address_are_capped(env: Env) -> None:
    good = env.token()
    for _ in range(5):
        ftp = env.client()
        with pytest.raises(ftplib.error_perm, match="530"):
            ftp.login("CP-1", "nope")
        ftp.close()
    # the address is refused now, even with a valid token
    with pytest.raises((ftplib.error_temp, EOFError, ConnectionError)):
        ftp = env.client()
        ftp.login("CP-1", good)


def test_login_has_a_deadline(tmp_path: Path, env: Env) -> None:
    quick = FtpDelivery(env.http_server, login_timeout=0.3)
    port = quick.start("127.0.0.1", 0)
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        f = sock.makefile("rb")
        assert f.readline().startswith(b"220")
        assert f.readline().startswith(b"421")  # nothing sent: cut off at the deadline
        assert f.readline() == b""
        sock.close()
    finally:
        quick.stop()


# -- resume, caps, accounting ----------------------------------------------------------------


def test_rest_resumes_with_the_right_bytes(env: Env) -> None:
    ftp = env.login()
    assert _get(ftp, rest=SIZE - 1000) == DATA[-1000:]
    assert _get(ftp, rest=12345) == DATA[12345:]
    assert _get(ftp, rest=SIZE) == b""
    with pytest.raises(ftplib.error_perm, match="554"):
        _get(ftp, rest=SIZE + 1)
    ftp.quit()
    assert env.http_server.take_bytes() == {"job-1": 1000 + SIZE - 12345}


def _hold_ftp(env: Env, charger: str, job: str) -> tuple[ftplib.FTP, socket.socket]:
    """Start the big image over FTP and stop reading, so the transfer holds its slot."""
    ftp = env.login(charger, sha=BIG_SHA, job=job)
    ftp.voidcmd("TYPE I")
    data = ftp.transfercmd(f"RETR {ftp_delivery.FILE_NAME}")
    data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    assert data.recv(100)
    return ftp, data


def _hold_http(env: Env, charger: str, job: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", env.http_port), timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    token = env.token(charger, sha=BIG_SHA, job=job)
    sock.sendall(
        f"GET {download_path(charger, BIG_SHA, token)} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    )
    assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
    return sock


def test_caps_are_shared_with_http(env: Env) -> None:
    ftp, data = _hold_ftp(env, "CP-1", "job-a")  # site berlin
    _wait_for(lambda: env.http_server.active_downloads == 1)
    # the same site over HTTP is over its cap (1 per site) ...
    r = httpx.get(
        f"http://127.0.0.1:{env.http_port}" + download_path("CP-2", DATA_SHA, env.token("CP-2"))
    )
    assert r.status_code == 503
    # ... and over FTP too
    other = env.login("CP-2")
    with pytest.raises(ftplib.error_temp, match=r"450.*site"):
        _get(other)
    held = _hold_http(env, "CP-3", "job-b")  # paris: the second of two global slots
    _wait_for(lambda: env.http_server.active_downloads == 2)
    late = env.login("CP-9")
    with pytest.raises(ftplib.error_temp, match=r"450.*global"):
        _get(late)
    held.close()
    data.close()
    ftp.close()
    _wait_for(lambda: env.http_server.active_downloads == 0)
    assert _get(late) == DATA  # slots come back however a transfer ends
    assert _get(other) == DATA
    late.quit()
    other.quit()
    taken = env.http_server.take_bytes()
    assert taken["job-1"] == 2 * SIZE
    assert 0 < taken["job-a"] < BIG


def test_a_queued_retr_without_data_connection_frees_its_slot(env: Env) -> None:
    ftp = env.login()
    ftp.sendcmd("TYPE I")
    ftp.sendcmd("PASV")
    ftp.putcmd(f"RETR {ftp_delivery.FILE_NAME}")  # never opens the data connection
    assert ftp.getresp().startswith("150")
    _wait_for(lambda: env.http_server.active_downloads == 1)
    ftp.close()
    _wait_for(lambda: env.http_server.active_downloads == 0)


def test_stop_closes_sessions_and_frees_slots(env: Env) -> None:
    ftp, data = _hold_ftp(env, "CP-1", "job-a")
    _wait_for(lambda: env.http_server.active_downloads == 1)
    started = time.monotonic()
    env.server.stop()
    assert time.monotonic() - started < 2
    assert env.http_server.active_downloads == 0
    data.close()
    ftp.close()


def test_token_never_logged(env: Env) -> None:
    good, other = env.token(), env.token("CP-2")
    with structlog.testing.capture_logs() as logs:
        ftp = env.login()
        _get(ftp)
        ftp.quit()
        ftp = env.client()
        with pytest.raises(ftplib.error_perm):
            ftp.login("CP-1", other)
        ftp.close()
    text = repr(logs)
    assert good[:40] not in text and other[:40] not in text
    events = [(e["event"], e.get("job")) for e in logs]
    assert ("ftp login", "job-1") in events
    assert ("firmware download", "job-1") in events
    assert ("ftp login refused", "job-1") in events


# -- FTPS --------------------------------------------------------------------------------------


def test_ftps_with_a_ca_made_here(env: Env, tmp_path: Path) -> None:
    ca, cert, key, _ = make_tls(tmp_path / "tls")  # a CA and a certificate for 127.0.0.1
    tls = FtpDelivery(env.http_server, tls=ftp_delivery.TlsFiles(cert, key), auth_failed_delay=0)
    port = tls.start("127.0.0.1", 0)
    try:
        context = ssl.create_default_context(cafile=str(ca))
        ftp = ftplib.FTP_TLS(context=context)
        ftp.connect("127.0.0.1", port, timeout=5)
        ftp.auth()
        ftp.login("CP-1", env.token())
        ftp.prot_p()
        assert _get(ftp) == DATA
        assert _get(ftp, rest=SIZE - 10) == DATA[-10:]
        ftp.quit()
        # a client that does not trust the server's CA refuses it
        stranger = ftplib.FTP_TLS(context=ssl.create_default_context())
        stranger.connect("127.0.0.1", port, timeout=5)
        with pytest.raises(ssl.SSLError):
            stranger.auth()
        stranger.close()
    finally:
        tls.stop()


def test_pasv_answers_the_public_address_and_a_port_in_the_range(env: Env) -> None:
    with socket.socket() as probe:  # a free block of ports on this machine
        probe.bind(("127.0.0.1", 0))
        first = probe.getsockname()[1]
    ports = range(first, first + 3)
    nat = FtpDelivery(env.http_server, passive_ports=ports, masquerade_address="192.0.2.10")
    port = nat.start("127.0.0.1", 0)
    try:
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", port, timeout=5)
        ftp.login("CP-1", env.token())
        host, data_port = ftplib.parse227(ftp.sendcmd("PASV"))
        assert host == "192.0.2.10" and data_port in ports
        ftp.close()
    finally:
        nat.stop()
    with pytest.raises(ValueError):
        FtpDelivery(env.http_server, masquerade_address="ftp.example.net")  # PASV needs IPv4


def test_a_bad_certificate_fails_start_not_a_login(env: Env, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    server = FtpDelivery(env.http_server, tls=ftp_delivery.TlsFiles(junk, junk))
    with pytest.raises(Exception, match=r"(?i)PEM|SSL|certificate"):
        server.start("127.0.0.1", 0)
    server.stop()


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff\xfe\x00USER \x00\xc3\r\n",  # not UTF-8, NULs
        b"A" * 200_000 + b"\r\n",  # a line far past any command
        b"USER " + "é".encode() * 300 + b"\r\nPASS " + b"x" * 3000 + b"\r\n",
        b"\r\n\r\n\r\nSITE\r\nSTAT /\r\nPASV\r\nRETR ../../x\r\n",
        b"PORT 127,0,0,1,0,0\r\nEPRT |9|x|y|\r\nREST -5\r\nREST 99999999999999999999999\r\n",
    ],
)
def test_garbage_on_the_control_connection_is_answered(env: Env, garbage: bytes) -> None:
    sock = socket.create_connection(("127.0.0.1", env.port), timeout=5)
    f = sock.makefile("rb")
    assert f.readline().startswith(b"220")
    with contextlib.suppress(OSError):
        sock.sendall(garbage)
        sock.shutdown(socket.SHUT_WR)
    replies = f.read()
    sock.close()
    assert replies == b"" or replies[:1] in b"2345"
    assert _get(env.login()) == DATA  # the server is unharmed


def test_commands_sent_with_a_login_are_answered_after_it(env: Env) -> None:
    """The login's image check runs in a worker thread; commands the client pipelined
    behind PASS wait for its reply and are answered in order, as logged in."""
    sock = socket.create_connection(("127.0.0.1", env.port), timeout=5)
    f = sock.makefile("rb")
    assert f.readline().startswith(b"220")
    sock.sendall(f"USER CP-1\r\nPASS {env.token()}\r\nPWD\r\nNOOP\r\n".encode())
    replies = [f.readline()[:3] for _ in range(4)]
    sock.close()
    assert replies == [b"331", b"230", b"257", b"200"]


def test_failed_login_memory_is_bounded() -> None:
    now = [0.0]
    failures = ftp_delivery._Failures(limit=2, window=10, clock=lambda: now[0], max_addresses=3)
    for address in ("a", "b", "c", "d"):
        failures.add(address)
    assert failures.blocked("a") is False and len(failures._seen) == 3  # "a" forgotten
    failures.add("d")
    assert failures.blocked("d") is True
    now[0] = 10.0
    assert failures.blocked("d") is False and "d" not in failures._seen  # the window passed
