"""A vendor's download site for import tests: a real HTTPS server on loopback.

Its certificate is issued by a CA made here (trusted by evota through
``EVOTA_FIRMWARE_IMPORT_CA_FILE``) for the name ``fw.vendor.test`` and the address
127.0.0.1. Each path answers with one behaviour (a file, a redirect, an endless stream, a
stall, a trickle), and the site records every request it gets, so a test can show that a
refused import never reached it, or which ``Host`` it was sent.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NAME = "fw.vendor.test"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_tls(directory: Path) -> tuple[Path, Path, Path, bytes]:
    """A CA and a server certificate for NAME and 127.0.0.1: (ca, cert, key, cert DER)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Vendor Test CA"))
        .issuer_name(_name("Vendor Test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(NAME))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "srv.pem", directory / "k.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path, cert.public_bytes(serialization.Encoding.DER)


@dataclass
class Seen:
    path: str
    host: str | None


@dataclass
class Site:
    """Routes by path (without query): each a tuple ``(kind, value)``."""

    directory: Path
    plain: bool = False
    routes: dict[str, tuple[str, Any]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)  # body bytes written per path
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.ca, cert, key, self.cert_der = make_tls(self.directory)
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                site.seen.append(Seen(self.path, self.headers.get("Host")))
                kind, value = site.routes.get(path, ("status", 404))
                getattr(self, f"_{kind}")(path, value)

            def _status(self, path: str, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _file(self, path: str, data: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                site.sent[path] = len(data)

            def _declared(self, path: str, length: int) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(b"x" * 1024)

            def _gzip(self, path: str, data: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _redirect(self, path: str, location: str) -> None:
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _endless(self, path: str, chunk: int) -> None:
                """No Content-Length: bytes until the client hangs up."""
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                block = b"\xab" * chunk
                site.sent[path] = 0
                try:
                    while not site.release.is_set():
                        self.wfile.write(block)
                        site.sent[path] += chunk
                except OSError:
                    return

            def _stall(self, path: str, _: Any) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                self.wfile.write(b"x")
                self.wfile.flush()
                site.release.wait(30)
                self.close_connection = True  # the client sees the body cut short

            def _trickle(self, path: str, interval: float) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                try:
                    while not site.release.is_set():
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(interval)
                except OSError:
                    return

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if not self.plain:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self.server.socket = context.wrap_socket(
                self.server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{'http' if self.plain else 'https'}://{host}:{self.port}{path}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
