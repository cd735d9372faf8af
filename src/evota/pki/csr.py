"""What evota accepts in a charger's certificate signing request (pure).

A charger with a valid key controls every byte of its SignCertificate, so the CSR is checked
before anything signs it: a bounded PEM, a valid self-signature, a key evota's TLS would
accept (EC P-256/P-384, RSA 2048 to 8192 bits), a subject that names exactly this charger
(CN = the connection's charger id, O = the CPO name when one is configured) and no request
for a CA certificate. Every refusal is a :class:`CsrRefusal` with a named reason; arbitrary
input never raises anything else (tests/pki/test_csr.py draws garbage with hypothesis).

The certificate evota issues takes only the public key and the checked subject from the
CSR; every extension is evota's own (:mod:`evota.pki.ca`), so what else a CSR asks for is
ignored, except a CA:true request, which is refused as a sign of a confused or hostile client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

__all__ = ["MAX_CSR_CHARS", "CsrRefusal", "ValidCsr", "check_csr"]

#: SignCertificate's ``csr`` is at most 5500 characters in the 1.6 Security Whitepaper and in
#: 2.0.1; the schema check refuses longer ones first, this bound keeps the function safe alone.
MAX_CSR_CHARS: Final = 5500
PEM_HEADER: Final = "-----BEGIN CERTIFICATE REQUEST-----"
CURVES: Final = {"secp256r1": "P-256", "secp384r1": "P-384"}
MIN_RSA_BITS: Final = 2048
MAX_RSA_BITS: Final = 8192  # bigger keys only cost every handshake more; no charger needs them
SIGNATURE_HASHES: Final = frozenset({"sha256", "sha384", "sha512"})
#: Subject attributes a charging-station CSR may carry besides CN and O (read, not copied).
ALLOWED_ATTRIBUTES: Final = frozenset(
    {
        NameOID.COMMON_NAME,
        NameOID.ORGANIZATION_NAME,
        NameOID.ORGANIZATIONAL_UNIT_NAME,
        NameOID.COUNTRY_NAME,
        NameOID.STATE_OR_PROVINCE_NAME,
        NameOID.LOCALITY_NAME,
        NameOID.SERIAL_NUMBER,
        NameOID.DOMAIN_COMPONENT,
    }
)


@dataclass(frozen=True, slots=True)
class CsrRefusal:
    """Why a CSR is not signed: ``reason`` is a stable name (audited, documented),
    ``message`` a sentence for the operator."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class ValidCsr:
    """A CSR that passed every check; ``key`` names its key ("EC P-256", "RSA 2048")."""

    csr: x509.CertificateSigningRequest
    charger_id: str
    organization: str | None
    key: str


def _key_problem(csr: x509.CertificateSigningRequest) -> CsrRefusal | str:
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = CURVES.get(key.curve.name)
        if curve is None:
            return CsrRefusal("key_curve", f"EC curve {key.curve.name} is not P-256 or P-384")
        return f"EC {curve}"
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            return CsrRefusal("key_size", f"RSA key of {key.key_size} bits (at least 2048)")
        if key.key_size > MAX_RSA_BITS:
            return CsrRefusal("key_size", f"RSA key of {key.key_size} bits (at most 8192)")
        return f"RSA {key.key_size}"
    return CsrRefusal("key_type", f"{type(key).__name__.lstrip('_')} keys are not accepted")


def _values(subject: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in subject.get_attributes_for_oid(oid)]


def _subject_problem(
    subject: x509.Name, charger_id: str, cpo_name: str | None
) -> CsrRefusal | None:
    for attribute in subject:
        if attribute.oid not in ALLOWED_ATTRIBUTES:
            name = attribute.oid.dotted_string
            return CsrRefusal("subject_unexpected", f"subject attribute {name} is not accepted")
    cns = _values(subject, NameOID.COMMON_NAME)
    if len(cns) != 1:
        return CsrRefusal("subject_cn", f"subject has {len(cns)} CN, needs exactly one")
    if cns[0] != charger_id:
        return CsrRefusal(
            "subject_cn_mismatch", f"CN {cns[0][:64]!r} is not this charger's id {charger_id!r}"
        )
    orgs = _values(subject, NameOID.ORGANIZATION_NAME)
    if len(orgs) > 1:
        return CsrRefusal("subject_o", f"subject has {len(orgs)} O, at most one")
    if cpo_name and orgs != [cpo_name]:
        got = repr(orgs[0][:64]) if orgs else "none"
        return CsrRefusal("subject_o_mismatch", f"O is {got}, the CPO name is {cpo_name!r}")
    return None


def _asks_for_ca(csr: x509.CertificateSigningRequest) -> bool:
    try:
        constraints = csr.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def _check(pem: str, charger_id: str, cpo_name: str | None) -> ValidCsr | CsrRefusal:
    try:
        csr = x509.load_pem_x509_csr(pem.encode())
    except ValueError:
        return CsrRefusal("unreadable", "not a readable PEM certificate signing request")
    key = _key_problem(csr)
    if isinstance(key, CsrRefusal):
        return key
    algorithm = csr.signature_hash_algorithm
    if not isinstance(algorithm, hashes.HashAlgorithm) or algorithm.name not in SIGNATURE_HASHES:
        name = algorithm.name if algorithm is not None else "none"
        return CsrRefusal("weak_signature_hash", f"signed with {name}, needs SHA-256 or better")
    if not csr.is_signature_valid:
        return CsrRefusal("bad_signature", "the CSR's signature does not match its key")
    subject = _subject_problem(csr.subject, charger_id, cpo_name)
    if subject is not None:
        return subject
    if _asks_for_ca(csr):
        return CsrRefusal("ca_requested", "the CSR asks for a CA certificate (CA:true)")
    orgs = _values(csr.subject, NameOID.ORGANIZATION_NAME)
    return ValidCsr(csr, charger_id, orgs[0] if orgs else None, key)


def check_csr(pem: object, charger_id: str, cpo_name: str | None = None) -> ValidCsr | CsrRefusal:
    """``ValidCsr`` when evota may sign ``pem`` for ``charger_id``, else the refusal."""
    if not isinstance(pem, str):
        return CsrRefusal("not_pem", "the CSR is not text")
    if len(pem) > MAX_CSR_CHARS:
        return CsrRefusal("too_large", f"{len(pem)} characters (at most {MAX_CSR_CHARS})")
    if PEM_HEADER not in pem or not pem.isascii():
        return CsrRefusal("not_pem", f"not PEM: no {PEM_HEADER} line")
    try:
        return _check(pem, charger_id, cpo_name)
    except (
        ValueError,
        TypeError,
        UnsupportedAlgorithm,
        x509.InvalidVersion,
        x509.DuplicateExtension,
        x509.UnsupportedGeneralNameType,
    ):
        # a structure that parses but whose parts cryptography cannot read (a bad version,
        # odd names, extensions or algorithms): the charger's fault, never the server's
        return CsrRefusal("unreadable", "the CSR has parts evota cannot read")
