"""Which certificates a charger holds, which expire soon and which to renew (pure).

OCPP names an installed certificate by hash data (issuer name hash, issuer key hash, serial;
1.6 SWP and 2.0.1 ``CertificateHashDataType``), not by the certificate, so a charger's
inventory says when a certificate expires only where evota knows the certificate itself:
the ones its charger CA signed, the CA's own and the server's TLS chain.
:func:`known_index` maps their hash data to them. :func:`expiring` and :func:`renewals`
are the watcher's decisions: what to alert on and which chargers to ask for a new CSR.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = [
    "BUSY_STATUSES",
    "Expiry",
    "HashData",
    "Known",
    "Seen",
    "SignedView",
    "expiring",
    "hash_data",
    "install_record",
    "known_index",
    "normal_serial",
    "renewals",
    "seen_from_record",
]

_HASHES: Final = {"SHA256": hashlib.sha256, "SHA384": hashlib.sha384, "SHA512": hashlib.sha512}
#: Connector statuses (1.6 and 2.0.1) that mean a session may be running: no renewal then.
BUSY_STATUSES: Final = frozenset(
    {"Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing", "Occupied"}
)


def normal_serial(serial: str) -> str:
    """OCPP's serial: hex, no leading zeroes; compared case-insensitively."""
    return serial.strip().lower().lstrip("0") or "0"


@dataclass(frozen=True, slots=True)
class HashData:
    hash_algorithm: str
    issuer_name_hash: str
    issuer_key_hash: str
    serial: str

    def key(self) -> tuple[str, str, str, str]:
        return (
            self.hash_algorithm.upper(),
            self.issuer_name_hash.lower(),
            self.issuer_key_hash.lower(),
            normal_serial(self.serial),
        )


def _key_bits(certificate: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING's contents, which issuerKeyHash hashes."""
    key = certificate.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    if isinstance(key, rsa.RSAPublicKey):
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def hash_data(
    certificate: x509.Certificate, issuer: x509.Certificate, algorithm: str = "SHA256"
) -> HashData:
    """How a charger names ``certificate`` (``issuer`` is itself for a root)."""
    digest = _HASHES[algorithm]
    return HashData(
        algorithm,
        digest(certificate.issuer.public_bytes()).hexdigest(),
        digest(_key_bits(issuer)).hexdigest(),
        format(certificate.serial_number, "x"),
    )


@dataclass(frozen=True, slots=True)
class Known:
    """A certificate evota knows, by what it is to evota (``charger-ca``, ``server``,
    ``signed``)."""

    label: str
    certificate: x509.Certificate


@dataclass(frozen=True, slots=True)
class Seen:
    """What evota can say about a certificate a charger reports by its hash data."""

    label: str  # charger-ca, server, signed, installed
    subject: str
    not_after: datetime


Key = tuple[str, str, str, str]


def known_index(known: Iterable[Known]) -> dict[Key, Seen]:
    """Hash data (every algorithm OCPP allows) → the known certificate; a certificate's
    issuer is looked up among the others by subject, else taken to be itself."""
    items = list(known)
    by_subject = {k.certificate.subject.public_bytes(): k.certificate for k in items}
    index: dict[Key, Seen] = {}
    for item in items:
        cert = item.certificate
        issuer = by_subject.get(cert.issuer.public_bytes(), cert)
        seen = Seen(item.label, cert.subject.rfc4514_string(), cert.not_valid_after_utc)
        for algorithm in _HASHES:
            try:
                index[hash_data(cert, issuer, algorithm).key()] = seen
            except (ValueError, TypeError, UnsupportedAlgorithm):  # a key OCPP cannot name
                break
    return index


def install_record(certificate: x509.Certificate) -> dict[str, str]:
    """What the audit entry of an InstallCertificate keeps, so that a later inventory can
    name the root and its expiry: its SHA-256 hash data as a charger reports it (a root is
    its own issuer; for anything else the issuer's key is unknown here: nothing kept)."""
    if certificate.issuer != certificate.subject:
        return {}
    try:
        data = hash_data(certificate, certificate)
    except (ValueError, TypeError, UnsupportedAlgorithm):  # a key OCPP hash data cannot name
        return {}
    return {
        "serial": data.serial,
        "not_after": certificate.not_valid_after_utc.isoformat(),
        "issuer_name_hash": data.issuer_name_hash,
        "issuer_key_hash": data.issuer_key_hash,
    }


def seen_from_record(record: Mapping[str, Any]) -> tuple[Key, Seen] | None:
    """:func:`install_record` read back from an audit entry's parameters (None: not one)."""
    try:
        key = HashData(
            "SHA256",
            str(record["issuer_name_hash"]),
            str(record["issuer_key_hash"]),
            str(record["serial"]),
        ).key()
        not_after = datetime.fromisoformat(str(record["not_after"]))
    except (KeyError, ValueError):
        return None
    return key, Seen("installed", str(record.get("subject", ""))[:300], not_after)


@dataclass(frozen=True, slots=True)
class Expiry:
    """One certificate's end of validity, for the alert (``subject`` names it in it)."""

    subject: str  # stable: the alert's dedup key ("server", "CP-1/serial …")
    charger_id: str | None
    not_after: datetime


def expiring(items: Iterable[Expiry], now: datetime, days: int) -> list[Expiry]:
    """Those ending within ``days`` (already expired ones too), soonest first; 0 days: none."""
    if days <= 0:
        return []
    limit = now + timedelta(days=days)
    return sorted((i for i in items if i.not_after <= limit), key=lambda i: i.not_after)


@dataclass(frozen=True, slots=True)
class SignedView:
    """A charger's newest certificate evota signed and the charger accepted."""

    charger_id: str
    serial: str
    not_after: datetime


def renewals(
    signed: Iterable[SignedView],
    now: datetime,
    days: int,
    *,
    connected: Set[str],
    busy: Set[str],
    asked: Mapping[str, datetime],
    retry_after: timedelta,
    budget: int,
) -> list[SignedView]:
    """Chargers to ask for a new CSR: their certificate ends within ``days``, they are
    connected and not in a session, not asked within ``retry_after``; soonest first, at most
    ``budget`` (the fleet-wide rate)."""
    if days <= 0 or budget <= 0:
        return []
    limit = now + timedelta(days=days)
    due = sorted(
        (
            s
            for s in signed
            if s.not_after <= limit
            and s.charger_id in connected
            and s.charger_id not in busy
            and (s.charger_id not in asked or now - asked[s.charger_id] >= retry_after)
        ),
        key=lambda s: s.not_after,
    )
    return due[:budget]
