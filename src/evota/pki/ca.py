"""The charger CA: what signs charging-station certificates (1.6 SWP, 2.0.1 A02/A03).

:class:`ChargerCA` is the interface the SignCertificate flow uses, so an HSM or an external
CA can replace the built-in one later: it names the CA certificate(s) chargers' certificates
chain to (what mutual TLS trusts) and signs a CSR :mod:`evota.pki.csr` has checked.

:class:`BuiltinCA` keeps an EC P-256 key and a self-signed CA certificate in the data
directory (``charger-ca/``, 0700, files 0600: :mod:`evota.files`), made on first use, or
loads the operator's own from ``EVOTA_CA_CERT``/``EVOTA_CA_KEY``. :func:`issue` is the pure
part: the certificate a charger gets, with the extensions a charging-station certificate
needs and nothing taken from the CSR but its key and checked subject.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final, Protocol

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from evota.files import FILE_MODE, private_dir
from evota.pki.csr import ValidCsr

__all__ = [
    "CA_DIR",
    "BuiltinCA",
    "CAError",
    "ChargerCA",
    "IssuedCertificate",
    "fingerprint",
    "issue",
]

CA_DIR: Final = "charger-ca"
CERT_FILE: Final = "ca.pem"
KEY_FILE: Final = "ca-key.pem"
CA_VALIDITY: Final = timedelta(days=3650)
#: Issued certificates start a little in the past: a charger whose clock runs behind would
#: otherwise refuse a certificate that is "not yet valid".
BACKDATE: Final = timedelta(minutes=5)

CAKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class CAError(Exception):
    """The CA cannot be used (unreadable files, a key that does not match the certificate)."""


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """What evota signed: the PEM chain sent in CertificateSigned and what is stored of it."""

    certificate_pem: str
    chain_pem: str  # the certificate followed by the CA certificate
    serial: str  # hex, lower case
    sha256: str  # fingerprint of the DER, hex
    subject: str  # RFC 4514
    not_before: datetime
    not_after: datetime


class ChargerCA(Protocol):
    """A CA evota asks to sign charging-station certificates."""

    def certificates(self) -> list[x509.Certificate]:
        """The CA certificate(s) issued certificates chain to (mutual TLS trusts them)."""
        ...

    async def sign(self, request: ValidCsr, now: datetime) -> IssuedCertificate:
        """Sign a checked CSR; raises :class:`CAError` when it cannot."""
        ...


def fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def random_serial() -> int:
    """A random positive 128-bit serial (RFC 5280: at most 20 octets, unpredictable)."""
    return secrets.randbits(128) | 1 << 127


def issue(
    ca_certificate: x509.Certificate,
    ca_key: CAKey,
    request: ValidCsr,
    now: datetime,
    validity: timedelta,
    serial: int,
) -> IssuedCertificate:
    """The charging-station certificate for ``request`` (pure but for the signature)."""
    names = [x509.NameAttribute(NameOID.COMMON_NAME, request.charger_id)]
    if request.organization:
        names.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, request.organization))
    key = request.csr.public_key()
    is_rsa = isinstance(key, rsa.RSAPublicKey)
    not_after = min(now + validity, ca_certificate.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(names))
        .issuer_name(ca_certificate.subject)
        .public_key(key)  # EC or RSA: checked by evota.pki.csr
        .serial_number(serial)
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=is_rsa,
                data_encipherment=False,
                key_agreement=not is_rsa,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    certificate = builder.sign(ca_key, hashes.SHA256())
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    ca_pem = ca_certificate.public_bytes(serialization.Encoding.PEM).decode()
    return IssuedCertificate(
        certificate_pem=pem,
        chain_pem=pem + ca_pem,
        serial=format(serial, "x"),
        sha256=fingerprint(certificate),
        subject=certificate.subject.rfc4514_string(),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
    )


def new_ca(now: datetime, organization: str | None) -> tuple[x509.Certificate, CAKey]:
    """A fresh EC P-256 key and its self-signed CA certificate (ten years)."""
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.NameAttribute(NameOID.COMMON_NAME, "evota charger CA")]
    if organization:
        names.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    name = x509.Name(names)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(random_serial())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


class BuiltinCA:
    """The CA evota runs itself: one key, one self-signed certificate."""

    def __init__(self, certificate: x509.Certificate, key: CAKey, validity: timedelta) -> None:
        if certificate.public_key() != key.public_key():
            raise CAError("the CA key does not belong to the CA certificate")
        self.certificate = certificate
        self._key = key
        self.validity = validity

    def certificates(self) -> list[x509.Certificate]:
        return [self.certificate]

    async def sign(self, request: ValidCsr, now: datetime) -> IssuedCertificate:
        return issue(self.certificate, self._key, request, now, self.validity, random_serial())

    @classmethod
    def from_files(cls, cert_path: Path, key_path: Path, validity: timedelta) -> BuiltinCA:
        """The operator's own CA (``EVOTA_CA_CERT``, ``EVOTA_CA_KEY``; key PEM, unencrypted)."""
        try:
            certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion) as exc:
            raise CAError(f"cannot read the charger CA: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise CAError("the charger CA key must be EC or RSA")
        return cls(certificate, key, validity)

    @classmethod
    def in_data_dir(
        cls, data_dir: Path, now: datetime, organization: str | None, validity: timedelta
    ) -> BuiltinCA:
        """The CA in ``data_dir/charger-ca``, made on first use.

        A new CA is written whole into a private temporary directory that is then renamed
        into place, so two processes starting together end up with one CA and never read a
        half-written key.
        """
        home = data_dir / CA_DIR
        if not home.exists():
            certificate, key = new_ca(now, organization)
            tmp = private_dir(data_dir / f".{CA_DIR}.{secrets.token_hex(8)}")
            try:
                _write(
                    tmp / KEY_FILE,
                    key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    ),
                )
                _write(tmp / CERT_FILE, certificate.public_bytes(serialization.Encoding.PEM))
                with contextlib.suppress(OSError):  # another process made it meanwhile
                    os.rename(tmp, home)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        private_dir(home)
        return cls.from_files(home / CERT_FILE, home / KEY_FILE, validity)
