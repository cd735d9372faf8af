"""The OCPP listener's TLS (security profiles 2 and 3): the server context, reloaded in place.

OCPP 1.6 Security Whitepaper and 2.0.1 A00: TLS 1.2 or newer, and for TLS 1.2 only the four
ECDHE AES-GCM suites (ECDSA and RSA keys); TLS 1.3 keeps OpenSSL's AEAD suites. Compression
and renegotiation are off. When a charger CA file is configured the listener asks for a
client certificate (optional at the TLS layer, so profile-2 chargers still connect; OpenSSL
refuses one that does not chain to the CA or is out of date) and the gateway then applies
:mod:`evota.pki.identity` to it.

Reload without a restart: :meth:`TlsConfig.reload` (SIGHUP, and a file-mtime check on the
gateway's sweep) builds a whole new context from the files; if any file is bad, the old
context stays in use and the error is returned to the caller to log and alert. The listener
keeps one front context whose SNI callback (OpenSSL calls it for every ClientHello, with or
without a server name) hands each new connection the current context; connections already
open keep theirs.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from evota.pki import identity

#: TLS 1.2 suites the 1.6 Security Whitepaper and 2.0.1 A00.FR.318 require; nothing weaker.
CIPHERS_TLS12 = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path | None  # PEM: the server certificate, then its intermediates (None: no
    key: Path | None  # TLS listener, only a trusted proxy's forwarded client certificates)
    charger_ca: Path | None = None  # PEM: the CA certificates client certificates chain to
    crl: Path | None = None  # PEM or DER CRL(s) of those CAs
    cpo_name: str | None = None  # the O every client certificate must carry
    # PEM: CAs trusted besides charger_ca: evota's own signing CA, so a certificate it issued
    # through SignCertificate is accepted on profile 3 without a settings change
    extra_ca: tuple[Path, ...] = ()

    def paths(self) -> tuple[Path, ...]:
        files = (self.cert, self.key, self.charger_ca, self.crl, *self.extra_ca)
        return tuple(p for p in files if p)

    def ca_files(self) -> tuple[Path, ...]:
        """Every file of CA certificates client certificates may chain to."""
        named = (self.charger_ca,) if self.charger_ca is not None else ()
        return tuple(dict.fromkeys((*named, *self.extra_ca)))


@dataclass(frozen=True, slots=True)
class Loaded:
    """One consistent set: the context, what client certificates are checked against, and
    the server certificate's expiry."""

    context: ssl.SSLContext | None
    trust: identity.Trust | None
    server_not_after: datetime | None


def build(files: TlsFiles) -> Loaded:
    """A server context and trust from the files; raises ValueError/OSError/ssl.SSLError
    naming what is wrong."""
    trust = None
    ca_files = files.ca_files()
    if ca_files:
        authorities = identity.load_authorities(b"\n".join(f.read_bytes() for f in ca_files))
        revoked = (
            identity.load_revoked(files.crl.read_bytes(), authorities) if files.crl else frozenset()
        )
        trust = identity.Trust(authorities, revoked, files.cpo_name or None)
    if files.cert is None or files.key is None:
        return Loaded(None, trust, None)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(":".join(CIPHERS_TLS12))
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        ctx.load_cert_chain(files.cert, files.key)
    except ssl.SSLError as exc:
        raise ValueError(f"server certificate/key ({files.cert}, {files.key}): {exc}") from None
    not_after = identity.expiry(files.cert.read_bytes())
    for ca_file in ca_files:
        ctx.load_verify_locations(cafile=str(ca_file))
    if ca_files:
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return Loaded(ctx, trust, not_after)


class TlsConfig:
    """The listener's TLS state: :attr:`context` for ``create_server``, :attr:`trust` for
    client certificates, :attr:`server_not_after` for the certificate watcher."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self.current = build(files)  # raises: a bad configuration must stop the start
        self._stamp = self._stamps()
        self._failed_stamp: tuple[tuple[str, float, int], ...] | None = None
        # The front context the listener was created with: it only picks the current one.
        self.context = self.current.context
        if self.context is not None:
            self.context.sni_callback = self._pick

    @property
    def trust(self) -> identity.Trust | None:
        return self.current.trust

    @property
    def server_not_after(self) -> datetime | None:
        """When the server certificate in use expires (None: no TLS listener)."""
        return self.current.server_not_after

    def _pick(self, sslobj: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: object) -> None:
        current = self.current.context
        if current is not None and sslobj.context is not current:
            sslobj.context = current
        return None

    def _stamps(self) -> tuple[tuple[str, float, int], ...]:
        out = []
        for path in self.files.paths():
            try:
                st = path.stat()
            except OSError:
                out.append((str(path), -1.0, -1))
            else:
                out.append((str(path), st.st_mtime, st.st_size))
        return tuple(out)

    def changed(self) -> bool:
        """A file's mtime or size differs from the set in use (and from the last bad set)."""
        stamp = self._stamps()
        return stamp != self._stamp and stamp != self._failed_stamp

    def reload(self) -> str | None:
        """Load the files again; None when the new set is in use, else why the old one
        stays (the same bad set is reported once, not on every check)."""
        stamp = self._stamps()
        try:
            loaded = build(self.files)
        except (OSError, ValueError, ssl.SSLError) as exc:
            self._failed_stamp = stamp
            return str(exc) or type(exc).__name__
        self.current = loaded
        # New connections copy the verify mode from the front context before the SNI
        # callback switches them over: keep it in step (a CA added or removed by a reload).
        if self.context is not None and loaded.context is not None:
            self.context.verify_mode = loaded.context.verify_mode
        self._stamp, self._failed_stamp = stamp, None
        return None
