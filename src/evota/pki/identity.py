"""What a charger's client certificate must say (security profile 3), pure.

The 1.6 Security Whitepaper and OCPP 2.0.1 (A00) ask the CSMS to check that the charging
station certificate chains to a trusted CA, is valid, and identifies the station: its
subject's commonName is the charge point identity (the id in the connection URL) and its
organizationName the CPO's name. evota also refuses a certificate the CA has revoked (a CRL
file), one that is itself a CA and one whose extended key usage excludes client
authentication. Every refusal names its reason; the time is passed in.

Everything here works on ``cryptography`` x509 objects, so the TLS listener (the peer
certificate OpenSSL already verified) and a trusted TLS-terminating proxy (a PEM header)
are checked by the same rules.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# A PEM header from a proxy: a certificate chain is a few KiB; anything far larger is refused
# before parsing.
MAX_PEM = 64 * 1024
# What cryptography raises for input it cannot read: an X.509 version it does not know is an
# InvalidVersion and an unknown key type an UnsupportedAlgorithm, neither a ValueError.
UNREADABLE = (ValueError, x509.InvalidVersion, UnsupportedAlgorithm)


class IdentityError(ValueError):
    """Why a certificate (or a CA/CRL file) is refused, in one sentence."""


@dataclass(frozen=True, slots=True)
class Trust:
    """What client certificates are checked against: the charger CA certificates, the
    revoked serials per issuing CA (from CRLs whose signature checked out), the CPO name."""

    authorities: tuple[x509.Certificate, ...]
    revoked: frozenset[tuple[bytes, int]] = frozenset()  # (issuer name DER, serial)
    cpo_name: str | None = None


def load_certificates(pem: bytes, what: str = "certificate file") -> tuple[x509.Certificate, ...]:
    """Every certificate in a PEM file; IdentityError when there is none or one is garbled."""
    try:
        certs = tuple(x509.load_pem_x509_certificates(pem))
    except UNREADABLE:
        raise IdentityError(f"{what} is not a PEM certificate list") from None
    if not certs:
        raise IdentityError(f"{what} holds no certificate")
    return certs


def load_authorities(pem: bytes) -> tuple[x509.Certificate, ...]:
    """The charger CA file: certificates that may sign client certificates (CA:TRUE)."""
    certs = load_certificates(pem, "charger CA file")
    for cert in certs:
        if not _is_ca(cert):
            raise IdentityError(
                f"charger CA file: {cert.subject.rfc4514_string()} is not a CA certificate"
            )
    return certs


def load_revoked(
    pem_or_der: bytes, authorities: Sequence[x509.Certificate]
) -> frozenset[tuple[bytes, int]]:
    """The revoked serials of a CRL file (PEM, one or more CRLs, or one DER CRL). A CRL must be
    signed by one of ``authorities``: a forged list must neither revoke nor un-revoke."""
    crls: list[x509.CertificateRevocationList] = []
    try:
        if b"-----BEGIN" in pem_or_der:
            marker = b"-----BEGIN X509 CRL-----"
            for part in pem_or_der.split(marker)[1:]:
                crls.append(x509.load_pem_x509_crl(marker + part))
        else:
            crls.append(x509.load_der_x509_crl(pem_or_der))
    except UNREADABLE:
        raise IdentityError("CRL file is not a PEM or DER certificate revocation list") from None
    if not crls:
        raise IdentityError("CRL file holds no CRL")
    revoked: set[tuple[bytes, int]] = set()
    for crl in crls:
        issuer = _issuer_of_crl(crl, authorities)
        if issuer is None:
            raise IdentityError(
                f"CRL of {crl.issuer.rfc4514_string()} is not signed by a configured charger CA"
            )
        key = crl.issuer.public_bytes()
        revoked.update((key, entry.serial_number) for entry in crl)
    return frozenset(revoked)


def _issuer_of_crl(
    crl: x509.CertificateRevocationList, authorities: Iterable[x509.Certificate]
) -> x509.Certificate | None:
    for ca in authorities:
        if ca.subject == crl.issuer:
            try:
                if crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
                    return ca
            except (TypeError, *UNREADABLE):  # a key type CRLs cannot be signed with
                continue
    return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def from_header(value: str) -> x509.Certificate:
    """The client certificate a trusted proxy forwards: URL-encoded PEM (nginx's
    ``$ssl_client_escaped_cert``, HAProxy's ``ssl_c_der,base64`` wrapped by the docs' config)
    or plain PEM/base64 DER. IdentityError if it is none of these."""
    if len(value) > MAX_PEM:
        raise IdentityError("forwarded client certificate is too large")
    text = unquote(value.strip()) if "%" in value else value.strip()
    try:
        if "-----BEGIN" in text:
            return x509.load_pem_x509_certificate(text.encode("ascii"))
        return x509.load_der_x509_certificate(base64.b64decode(text, validate=True))
    except (*UNREADABLE, UnicodeEncodeError):
        raise IdentityError(
            "forwarded client certificate is not a PEM or base64 DER certificate"
        ) from None


def _one(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    if len(values) != 1:
        return None
    value = values[0].value
    return value if isinstance(value, str) else None


def problem(cert: x509.Certificate, charger_id: str, trust: Trust, now: datetime) -> str | None:
    """Why ``cert`` does not authenticate ``charger_id`` now, or None if it does (a part
    cryptography cannot read, such as a malformed extension, is a refusal too)."""
    try:
        return _problem(cert, charger_id, trust, now)
    except UNREADABLE:
        return "unreadable certificate (an extension, key or version cryptography cannot read)"


def _problem(cert: x509.Certificate, charger_id: str, trust: Trust, now: datetime) -> str | None:
    issuer = _issuer(cert, trust.authorities, now)
    if issuer is None:
        return "not signed by a trusted charger CA"
    if now < cert.not_valid_before_utc:
        return f"not valid before {cert.not_valid_before_utc.isoformat()}"
    if now > cert.not_valid_after_utc:
        return f"expired on {cert.not_valid_after_utc.isoformat()}"
    if _is_ca(cert):
        return "a CA certificate, not a charging station certificate"
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
        return "extended key usage does not allow client authentication"
    if (issuer.subject.public_bytes(), cert.serial_number) in trust.revoked:
        return f"revoked (serial {cert.serial_number:x})"
    cn = _one(cert.subject, NameOID.COMMON_NAME)
    if cn != charger_id:
        return f"subject CN {cn!r} is not the charger id {charger_id!r}"
    if trust.cpo_name:
        org = _one(cert.subject, NameOID.ORGANIZATION_NAME)
        if org != trust.cpo_name:
            return f"subject O {org!r} is not the CPO name {trust.cpo_name!r}"
    return None


def _issuer(
    cert: x509.Certificate, authorities: Iterable[x509.Certificate], now: datetime
) -> x509.Certificate | None:
    """The configured CA that signed ``cert`` and is valid now (a look-alike CA with the same
    name but another key does not count)."""
    for ca in authorities:
        if ca.subject != cert.issuer:
            continue
        if not ca.not_valid_before_utc <= now <= ca.not_valid_after_utc:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except (TypeError, InvalidSignature, *UNREADABLE):
            continue
        return ca
    return None


def check(cert: x509.Certificate, charger_id: str, trust: Trust, now: datetime) -> None:
    """:func:`problem` as an exception, for callers that prefer one."""
    reason = problem(cert, charger_id, trust, now)
    if reason is not None:
        raise IdentityError(reason)


def expiry(pem: bytes) -> datetime:
    """When the first certificate of a PEM file expires (the server certificate's, for the
    certificate watcher)."""
    return load_certificates(pem)[0].not_valid_after_utc
