"""The simulated charger's side of the OCPP security profiles (1.6 Security Whitepaper, 2.0.1
part A): what it trusts, which certificate it presents, and its certificate requests.

- Profile 1: HTTP Basic over ``ws://``; profile 2: Basic over ``wss://``, the server checked
  against the CSMS roots the charger holds; profile 3: ``wss://`` with a client certificate
  and no Basic auth.
- :class:`TlsIdentity` holds the charger's client certificate and key (given, or minted from
  a CA for large fleets), the key of a certificate request in flight, and the TLS context
  built from them (rebuilt only when they or the trusted roots change).
- The decisions are pure functions: :func:`signed_certificate_problem` (is what
  CertificateSigned brought installable?) and :func:`profile_change_answer` (may the
  configured security profile be raised?).

Written with ``cryptography`` directly, never with evota's server PKI code, so a test where
both sides agree proves the two implementations agree (the ``sim-independent`` contract).
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

PROFILES = (1, 2, 3)
#: Certificate uses (InstallCertificate's certificateType) the charger trusts the CSMS with:
#: 1.6 Security Whitepaper and 2.0.1 spell the same thing differently.
CSMS_ROOT_USES = ("CentralSystemRootCertificate", "CSMSRootCertificate")
#: How long a minted client certificate lasts, and how long ago an ``expired`` one ended.
MINTED_DAYS = 365
_PEM_CERT = b"-----BEGIN CERTIFICATE-----"


def new_key() -> PrivateKey:
    """The charger's key pair: EC P-256, as the security profiles allow (next to RSA 2048)."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _subject(common_name: str, organization: str) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def make_csr(key: PrivateKey, common_name: str, organization: str) -> str:
    """The PEM request SignCertificate carries: CN = the charger id, O = the CPO's name."""
    request = x509.CertificateSigningRequestBuilder().subject_name(
        _subject(common_name, organization)
    )
    return request.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def mint(
    common_name: str,
    organization: str,
    ca_cert_pem: str,
    ca_key_pem: str,
    now: datetime,
    *,
    expired: bool = False,
) -> tuple[str, str]:
    """A client certificate for ``common_name`` signed by the given CA, as (chain PEM with the
    leaf first, key PEM); ``expired`` makes one that ended a day ago (a fault profile)."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("the client CA key must be an EC or RSA key")
    key = new_key()
    if expired:
        start, end = now - timedelta(days=MINTED_DAYS + 1), now - timedelta(days=1)
    else:
        start, end = now - timedelta(hours=1), now + timedelta(days=MINTED_DAYS)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_subject(common_name, organization))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem(key)


def load_chain(pem: str) -> list[x509.Certificate]:
    """The certificates of a PEM chain, leaf first; ValueError if there is none or junk."""
    if _PEM_CERT not in pem.encode("ascii", "replace"):
        raise ValueError("no PEM certificate in it")
    return x509.load_pem_x509_certificates(pem.encode("ascii", "replace"))


def load_key(pem: str) -> PrivateKey:
    key = serialization.load_pem_private_key(pem.encode("ascii", "replace"), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("the key must be an EC or RSA private key")
    return key


def same_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    def spki(public: object) -> bytes:
        return public.public_bytes(  # type: ignore[attr-defined, no-any-return]
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    return spki(cert.public_key()) == spki(key.public_key())


def pair_problem(chain_pem: str, key_pem_text: str) -> str | None:
    """Why a client certificate (chain) and key cannot be used together (None if they can)."""
    try:
        chain = load_chain(chain_pem)
    except ValueError:
        return "the client certificate is not a PEM X.509 certificate"
    try:
        key = load_key(key_pem_text)
    except (ValueError, TypeError):
        return "the client key is not an unencrypted PEM EC or RSA private key"
    if not same_key(chain[0], key):
        return "the client key does not belong to the client certificate"
    return None


def signed_certificate_problem(
    chain_pem: str, key: PrivateKey | None, identity: str, now: datetime
) -> str | None:
    """Why the chain CertificateSigned brought is not installed (None: install it).

    What a careful charger checks: a request of ours is in flight (its key), the text is an
    X.509 chain, the leaf certifies that key, is valid now, and names
    this charger as its CN."""
    if key is None:
        return "no certificate request of ours is waiting"
    try:
        chain = load_chain(chain_pem)
        leaf = chain[0]
        ours = same_key(leaf, key)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # the CSMS controls every byte: what cryptography cannot read is refused, not a crash
        return "not a PEM X.509 certificate chain the charger can read"
    if not ours:
        return "the certificate is not for the key of our request"
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        return "the certificate is not valid now"
    names = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if [n.value for n in names] != [identity]:
        return "the certificate's CN is not this charger's id"
    return None


def profile_change_answer(
    current: int, wanted: int, *, has_root: bool, has_certificate: bool, can_tls: bool
) -> str:
    """ChangeConfiguration SecurityProfile's status (1.6 SWP): never lower; 2 and 3 need a
    CSMS root to check the server with and somewhere to connect over TLS; 3 needs a client
    certificate. Anything else would lock the charger out."""
    if wanted not in PROFILES or wanted < current:
        return "Rejected"
    if wanted == current:
        return "Accepted"
    if not (has_root and can_tls) or (wanted == 3 and not has_certificate):
        return "Rejected"
    return "Accepted"


@dataclass(slots=True)
class TlsIdentity:
    """One charger's TLS state: its client certificate chain and key (PEM), the key of its
    pending certificate request, and the cached client context."""

    cert: str | None = field(default=None, repr=False)
    key: str | None = field(default=None, repr=False)
    pending_key: PrivateKey | None = field(default=None, repr=False)
    _context: ssl.SSLContext | None = field(default=None, repr=False)
    _context_for: tuple[tuple[str, ...], str | None, str | None] | None = field(
        default=None, repr=False
    )

    def install(self, chain_pem: str, key: PrivateKey) -> None:
        self.cert, self.key, self.pending_key = chain_pem, key_pem(key), None

    def context(self, roots: Sequence[str], *, present: bool = True) -> ssl.SSLContext:
        """The client TLS context for these trusted roots (system CAs if none), presenting the
        certificate if ``present`` (profile 3); rebuilt only when one of them changed."""
        cert, key = (self.cert, self.key) if present else (None, None)
        wanted = (tuple(roots), cert, key)
        if self._context is None or self._context_for != wanted:
            self._context = client_context(roots, cert, key)
            self._context_for = wanted
        return self._context


def client_context(
    roots: Sequence[str], cert: str | None = None, key: str | None = None
) -> ssl.SSLContext:
    """TLS 1.2 or newer, the server's certificate and host name checked against ``roots``
    (PEM texts; the system's CAs when empty), presenting ``cert``/``key`` if given."""
    context = (
        ssl.create_default_context(cadata="\n".join(roots))
        if roots
        else (ssl.create_default_context())
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None and key is not None:
        _load_cert_chain(context, cert, key)
    return context


def _load_cert_chain(context: ssl.SSLContext, cert: str, key: str) -> None:
    """``ssl`` reads a certificate and key only from files. On Linux they are anonymous
    in-memory files (the key never touches a disk; about 1.4 ms instead of 3.7 ms with a
    temporary directory, which counts for a fleet of thousands); elsewhere a private temporary
    directory for the moment it takes."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fds: list[int] = []
        try:
            for text in (cert, key):
                fds.append(os.memfd_create("evota-sim-tls"))
                data = memoryview(text.encode())
                while data:
                    data = data[os.write(fds[-1], data) :]
            context.load_cert_chain(*(f"/proc/self/fd/{fd}" for fd in fds))
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="evota-sim-") as directory:
        cert_path = os.path.join(directory, "cert.pem")
        key_path = os.path.join(directory, "key.pem")
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key)
        with open(cert_path, "w") as f:
            f.write(cert)
        context.load_cert_chain(cert_path, key_path)
