"""Sign and verify firmware images the way OCPP signed firmware update expects.

OCPP 1.6 Security (SignedUpdateFirmware) and 2.0.1 (UpdateFirmware, use case L01) carry a
Base64 ``signature`` over the SHA-256 of the whole firmware file plus the PEM
``signingCertificate``. Chargers check it like
``openssl dgst -sha256 -verify pubkey.pem -signature sig.bin firmware.bin``, so we produce
exactly that: ECDSA P-256 with SHA-256 (DER-encoded signature), or RSA PKCS#1 v1.5 with
SHA-256 when the key is RSA. All crypto comes from ``cryptography``; these are pure functions
over bytes and paths (no database, no HTTP, and time is passed in where it matters).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from pathlib import Path
from typing import Final, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CHUNK_SIZE",
    "MAX_CERTIFICATE_PEM_CHARS",
    "MAX_SIGNATURE_B64_CHARS",
    "CertificateError",
    "FirmwareSigningError",
    "SignatureError",
    "decode_signature",
    "file_sha256",
    "generate_ca",
    "generate_signing_key",
    "public_key_pem",
    "sign_file",
    "verify_certificate",
    "verify_digest",
    "verify_file",
]

MAX_SIGNATURE_B64_CHARS: Final = 800
"""OCPP ``Firmware.signature`` is a string of at most 800 characters."""
MAX_CERTIFICATE_PEM_CHARS: Final = 5500
"""OCPP ``Firmware.signingCertificate`` is a string of at most 5500 characters."""
CHUNK_SIZE: Final = 1 << 20
"""Firmware images can be hundreds of MB: hash them 1 MiB at a time."""

_CLOCK_SKEW = dt.timedelta(minutes=5)  # backdate notBefore so slightly slow clocks accept it

_E = TypeVar("_E", bound=x509.ExtensionType)
_SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_VerifyingKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class FirmwareSigningError(Exception):
    """Base class: ``reason`` is a one-line, human-readable explanation (no key material)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SignatureError(FirmwareSigningError):
    """The firmware signature cannot be made or does not verify (maps to InvalidSignature)."""


class CertificateError(FirmwareSigningError):
    """The signing certificate is not acceptable (maps to InvalidCertificate)."""


# --- key and certificate generation -------------------------------------------------------


def generate_ca(common_name: str, organization: str, days: int = 3650) -> tuple[bytes, bytes]:
    """Make a manufacturer root (ECDSA P-256) that issues firmware signing certificates.

    Returns ``(key_pem, cert_pem)``; the key is unencrypted PKCS#8, so store it carefully.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name, organization)
    builder = _base_builder(name, name, key.public_key(), days)
    builder = (
        builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), False)
    )
    cert = builder.sign(key, hashes.SHA256())
    return _key_to_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def generate_signing_key(
    common_name: str,
    organization: str,
    *,
    ca_key: bytes | None = None,
    ca_cert: bytes | None = None,
    days: int = 3650,
) -> tuple[bytes, bytes]:
    """Make a firmware signing key (ECDSA P-256) and its certificate.

    Always an end-entity certificate (basicConstraints CA false, keyUsage digitalSignature,
    extended key usage codeSigning): a CA certificate is refused as a signer. Without
    ``ca_key``/``ca_cert`` it is self-signed and trusted only where that very certificate is
    pinned as a trusted root. With them, it is issued by that CA and never outlives the CA
    certificate.
    Returns ``(key_pem, cert_pem)``.
    """
    if (ca_key is None) != (ca_cert is None):
        raise ValueError("ca_key and ca_cert must be given together")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(common_name, organization)
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING])
    if ca_key is None or ca_cert is None:
        builder = (
            _base_builder(subject, subject, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(eku, critical=False)
        )
        cert = builder.sign(key, hashes.SHA256())
        return _key_to_pem(key), cert.public_bytes(serialization.Encoding.PEM)

    issuer_key = _load_private_key(ca_key)
    issuer = _load_cert(ca_cert, CertificateError, "CA certificate")
    if issuer.public_key() != issuer_key.public_key():
        raise CertificateError("CA key does not match CA certificate")
    if not _is_ca(issuer):
        raise CertificateError("CA certificate lacks basicConstraints CA=true")
    not_after = min(_not_after(days), issuer.not_valid_after_utc)
    builder = _base_builder(issuer.subject, subject, key.public_key(), days, not_after)
    builder = (
        builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(eku, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    )
    cert = builder.sign(issuer_key, hashes.SHA256())
    return _key_to_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def public_key_pem(cert_pem: bytes) -> bytes:
    """Extract the SubjectPublicKeyInfo PEM that ``openssl dgst -verify`` wants."""
    cert = _load_cert(cert_pem, CertificateError, "certificate")
    return cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --- signing and verification ---------------------------------------------------------------


def file_sha256(path: str | Path) -> bytes:
    """SHA-256 of a file, read in ``CHUNK_SIZE`` pieces so large images never sit in memory."""
    digest = hashes.Hash(hashes.SHA256())
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.finalize()


def sign_file(path: str | Path, key_pem: bytes, *, password: bytes | None = None) -> str:
    """Sign the SHA-256 of the whole file; return the Base64 that OCPP ``signature`` carries.

    ECDSA keys give a DER ECDSA-SHA256 signature, RSA keys PKCS#1 v1.5 SHA-256: both are what
    ``openssl dgst -sha256 -verify`` accepts. Raises ``SignatureError`` for unusable keys or
    a result longer than ``MAX_SIGNATURE_B64_CHARS``; ``OSError`` if the file is unreadable.
    """
    key = _load_private_key(key_pem, password)
    digest = file_sha256(path)
    prehashed = Prehashed(hashes.SHA256())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        raw = key.sign(digest, ec.ECDSA(prehashed))
    else:
        raw = key.sign(digest, padding.PKCS1v15(), prehashed)
    b64 = base64.b64encode(raw).decode("ascii")
    if len(b64) > MAX_SIGNATURE_B64_CHARS:
        raise SignatureError(
            f"signature is {len(b64)} Base64 chars, over the OCPP limit of "
            f"{MAX_SIGNATURE_B64_CHARS} (use ECDSA P-256 or RSA <= 4096 bits)"
        )
    return b64


def verify_file(
    path: str | Path,
    signature_b64: str,
    cert_pem: bytes,
    *,
    at: dt.datetime | None = None,
) -> None:
    """Check that ``signature_b64`` is the certificate key's signature over the file's SHA-256.

    The certificate must be valid at ``at`` (default: now). This does not check who issued the
    certificate: call ``verify_certificate`` for that. Raises ``SignatureError``.
    """
    verify_digest(file_sha256(path), signature_b64, cert_pem, at=at)


def verify_digest(
    digest: bytes,
    signature_b64: str,
    cert_pem: bytes,
    *,
    at: dt.datetime | None = None,
) -> None:
    """:func:`verify_file` for a file whose SHA-256 is already known (a content-addressed
    blob's key, computed while it was stored, possibly in a remote store)."""
    raw = decode_signature(signature_b64)
    cert = _load_cert(cert_pem, SignatureError, "signing certificate")
    when = _utc(at) if at is not None else dt.datetime.now(dt.UTC)
    problem = _validity_problem(cert, when, "signing certificate")
    if problem:
        raise SignatureError(problem)
    pub = _verifying_key(cert, SignatureError)
    prehashed = Prehashed(hashes.SHA256())
    try:
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(raw, digest, ec.ECDSA(prehashed))
        else:
            pub.verify(raw, digest, padding.PKCS1v15(), prehashed)
    except InvalidSignature:
        raise SignatureError(
            "signature does not match the file and certificate (tampered file or signature, "
            "or a different key)"
        ) from None


def decode_signature(signature_b64: str) -> bytes:
    """Strictly decode an OCPP Base64 signature (line breaks tolerated, anything else not)."""
    text = "".join(signature_b64.split())
    if not text:
        raise SignatureError("signature is empty")
    if len(text) > MAX_SIGNATURE_B64_CHARS:
        raise SignatureError(
            f"signature is {len(text)} chars, over the OCPP limit of {MAX_SIGNATURE_B64_CHARS}"
        )
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("signature is not valid Base64") from None


def verify_certificate(cert_pem: bytes, trusted_roots_pem: list[bytes], at: dt.datetime) -> None:
    """Check that the signing certificate is usable at ``at`` and issued by a trusted root.

    Direct issuance only (root -> signing certificate), which is how manufacturers sign
    firmware certificates; a self-signed signing certificate passes if that very certificate
    is listed as a root (pinned). The signer must be an end-entity: a CA certificate
    (basicConstraints CA=true) is refused, so a root key kept for issuing cannot sign
    images, and an extended key usage extension, where present, must include codeSigning.
    The root must be a CA (basicConstraints), may not forbid certificate signing (keyUsage),
    and must be valid at ``at`` too. Raises ``CertificateError``.
    """
    when = _utc(at)
    cert = _load_cert(cert_pem, CertificateError, "signing certificate")
    problem = _validity_problem(cert, when, "signing certificate")
    if problem:
        raise CertificateError(problem)
    _verifying_key(cert, CertificateError)
    usage = _extension(cert, x509.KeyUsage)
    if usage is not None and not usage.digital_signature:
        raise CertificateError("signing certificate keyUsage lacks digitalSignature")
    problem = _signer_problem(cert)
    if problem:
        raise CertificateError(problem)
    if not trusted_roots_pem:
        raise CertificateError("no trusted roots configured")

    reasons: list[str] = []
    for i, root_pem in enumerate(trusted_roots_pem):
        root = _load_cert(root_pem, CertificateError, f"trusted root #{i + 1}")
        if root.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            reasons.append(f"signature by {_cn(root)} does not verify")
            continue
        if root == cert:  # pinned self-signed signer: trusted as itself, issues nothing
            return
        if not _is_ca(root):
            reasons.append(f"root {_cn(root)} is not a CA (basicConstraints)")
            continue
        root_usage = _extension(root, x509.KeyUsage)
        if root_usage is not None and not root_usage.key_cert_sign:
            reasons.append(f"root {_cn(root)} keyUsage lacks keyCertSign")
            continue
        problem = _validity_problem(root, when, f"root {_cn(root)}")
        if problem:
            reasons.append(problem)
            continue
        return
    if reasons:
        raise CertificateError("; ".join(reasons))
    raise CertificateError(f"issuer {_cn_of(cert.issuer)} is not a trusted root")


# --- helpers -------------------------------------------------------------------------------


def _not_after(days: int) -> dt.datetime:
    if days <= 0:
        raise ValueError("days must be positive")
    return dt.datetime.now(dt.UTC) + dt.timedelta(days=days)


def _base_builder(
    issuer: x509.Name,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    days: int,
    not_after: dt.datetime | None = None,
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after or _not_after(days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _name(common_name: str, organization: str) -> x509.Name:
    if not common_name.strip() or not organization.strip():
        raise ValueError("common name and organization must not be empty")
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        ]
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_private_key(key_pem: bytes, password: bytes | None = None) -> _SigningKey:
    try:
        key = serialization.load_pem_private_key(key_pem, password=password)
    except TypeError:
        raise SignatureError("private key is encrypted: a password is needed") from None
    except (ValueError, UnsupportedAlgorithm):
        # Never echo the input: it is (or looks like) key material.
        raise SignatureError("private key is not a readable PEM key (or wrong password)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise SignatureError(f"unsupported key type {type(key).__name__}: use ECDSA or RSA")
    return key


def _load_cert(cert_pem: bytes, error: type[FirmwareSigningError], what: str) -> x509.Certificate:
    if len(cert_pem) > MAX_CERTIFICATE_PEM_CHARS:
        raise error(
            f"{what} is {len(cert_pem)} chars, over the OCPP limit of {MAX_CERTIFICATE_PEM_CHARS}"
        )
    try:
        return x509.load_pem_x509_certificate(cert_pem)
    except (ValueError, x509.InvalidVersion):  # InvalidVersion is no ValueError
        raise error(f"{what} is not a PEM X.509 certificate") from None


def _verifying_key(cert: x509.Certificate, error: type[FirmwareSigningError]) -> _VerifyingKey:
    try:
        pub = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise error("signing certificate has an unreadable public key") from None
    if not isinstance(pub, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise error(f"unsupported key type {type(pub).__name__}: use ECDSA or RSA")
    return pub


def _validity_problem(cert: x509.Certificate, when: dt.datetime, what: str) -> str | None:
    if when < cert.not_valid_before_utc:
        return f"{what} is not yet valid (notBefore {cert.not_valid_before_utc.isoformat()})"
    if when > cert.not_valid_after_utc:
        return f"{what} has expired (notAfter {cert.not_valid_after_utc.isoformat()})"
    return None


def _extension(cert: x509.Certificate, kind: type[_E]) -> _E | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    except ValueError:  # extensions are parsed lazily: a malformed one surfaces here
        raise CertificateError(f"certificate {_cn(cert)} has malformed extensions") from None


def _signer_problem(cert: x509.Certificate) -> str | None:
    """Why ``cert`` may not sign firmware (a CA, or an EKU without codeSigning), or None."""
    if _is_ca(cert):
        return (
            "signing certificate is a CA certificate (basicConstraints CA=true); "
            "sign with an end-entity certificate issued by it"
        )
    eku = _extension(cert, x509.ExtendedKeyUsage)
    if eku is not None and ExtendedKeyUsageOID.CODE_SIGNING not in eku:
        return "signing certificate extendedKeyUsage lacks codeSigning"
    return None


def _is_ca(cert: x509.Certificate) -> bool:
    bc = _extension(cert, x509.BasicConstraints)
    return bc is not None and bc.ca


def _utc(at: dt.datetime) -> dt.datetime:
    """Naive datetimes are taken as UTC (as X.509 times are)."""
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)


def _cn(cert: x509.Certificate) -> str:
    return _cn_of(cert.subject)


def _cn_of(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return repr(str(attrs[0].value)) if attrs else name.rfc4514_string()
