"""What evota accepts in a charger's CSR (evota.pki.csr): each refusal by name, garbage never
raises, and CSRs made by openssl are judged as those made by cryptography."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from evota.pki.csr import MAX_CSR_CHARS, CsrRefusal, ValidCsr, check_csr
from tests.pki_fixtures import CPO, KeyType, make_csr, new_key, openssl_csr

CP = "CP-CSR-1"


def _reason(result: ValidCsr | CsrRefusal) -> str:
    assert isinstance(result, CsrRefusal), result
    return result.reason


def test_a_good_ec_csr_is_accepted_with_its_key_named() -> None:
    result = check_csr(make_csr(new_key(), CP).decode(), CP, CPO)
    assert isinstance(result, ValidCsr)
    assert (result.charger_id, result.organization, result.key) == (CP, CPO, "EC P-256")


def test_rsa_2048_and_p384_are_accepted_without_a_cpo_name() -> None:
    rsa_ok = check_csr(make_csr(new_key("rsa", 2048), CP, None).decode(), CP)
    p384 = make_csr(ec.generate_private_key(ec.SECP384R1()), CP, "Any").decode()
    assert isinstance(rsa_ok, ValidCsr) and rsa_ok.key == "RSA 2048"
    result = check_csr(p384, CP)
    assert isinstance(result, ValidCsr) and result.organization == "Any"


@pytest.mark.parametrize(
    ("pem", "charger", "cpo", "reason"),
    [
        pytest.param(lambda: make_csr(new_key(), "OTHER"), CP, CPO, "subject_cn_mismatch", id="cn"),
        pytest.param(lambda: make_csr(new_key(), None), CP, CPO, "subject_cn", id="no-cn"),
        pytest.param(
            lambda: make_csr(new_key(), CP, "Evil"), CP, CPO, "subject_o_mismatch", id="o"
        ),
        pytest.param(
            lambda: make_csr(new_key(), CP, None), CP, CPO, "subject_o_mismatch", id="no-o"
        ),
        pytest.param(
            lambda: make_csr(new_key("rsa", 1024), CP), CP, CPO, "key_size", id="rsa-1024"
        ),
        pytest.param(
            lambda: make_csr(ec.generate_private_key(ec.SECP256K1()), CP),
            CP,
            CPO,
            "key_curve",
            id="secp256k1",
        ),
    ],
)
def test_refusals_are_named(pem: Callable[[], bytes], charger: str, cpo: str, reason: str) -> None:
    assert _reason(check_csr(pem().decode(), charger, cpo)) == reason


def _build(
    builder: x509.CertificateSigningRequestBuilder,
    key: CertificateIssuerPrivateKeyTypes | None = None,
) -> str:
    key = key or new_key()
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM).decode()


def _name(*attrs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attrs])


def test_a_ca_request_two_cns_an_odd_attribute_and_an_ed25519_key_are_refused() -> None:
    good = _name((NameOID.COMMON_NAME, CP), (NameOID.ORGANIZATION_NAME, CPO))
    ca = x509.CertificateSigningRequestBuilder().subject_name(good)
    ca = ca.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    assert _reason(check_csr(_build(ca), CP, CPO)) == "ca_requested"
    two = _name((NameOID.COMMON_NAME, CP), (NameOID.COMMON_NAME, "X"))
    assert (
        _reason(check_csr(_build(x509.CertificateSigningRequestBuilder().subject_name(two)), CP))
        == "subject_cn"
    )
    odd = _name((NameOID.COMMON_NAME, CP), (NameOID.EMAIL_ADDRESS, "a@b.c"))
    builder = x509.CertificateSigningRequestBuilder().subject_name(odd)
    assert _reason(check_csr(_build(builder), CP)) == "subject_unexpected"
    plain = x509.CertificateSigningRequestBuilder().subject_name(good)
    assert _reason(check_csr(_build(plain, ed25519.Ed25519PrivateKey.generate()), CP)) == "key_type"


def test_a_tampered_signature_is_refused() -> None:
    """The subject changed after signing (DER edited in place): bad_signature, not accepted."""
    pem = make_csr(new_key(), "CP-CSR-A", CPO)
    der = x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)
    forged = der.replace(b"CP-CSR-A", b"CP-CSR-B")
    forged_pem = x509.load_der_x509_csr(forged).public_bytes(serialization.Encoding.PEM).decode()
    assert _reason(check_csr(forged_pem, "CP-CSR-B", CPO)) == "bad_signature"


def test_size_text_and_pem_bounds() -> None:
    assert _reason(check_csr("A" * (MAX_CSR_CHARS + 1), CP)) == "too_large"
    assert _reason(check_csr(b"bytes", CP)) == "not_pem"
    assert _reason(check_csr("MIIB...", CP)) == "not_pem"
    assert _reason(check_csr("-----BEGIN CERTIFICATE REQUEST-----\nxx\n", CP)) == "unreadable"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=600), st.binary(max_size=600))
def test_garbage_is_only_ever_refused(text: str, blob: bytes) -> None:
    for pem in (
        text,
        f"-----BEGIN CERTIFICATE REQUEST-----\n{text}\n-----END CERTIFICATE REQUEST-----\n",
        "-----BEGIN CERTIFICATE REQUEST-----\n"
        + base64.encodebytes(blob).decode()
        + "-----END CERTIFICATE REQUEST-----\n",
    ):
        assert isinstance(check_csr(pem, CP, CPO), CsrRefusal)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_real_csr_with_flipped_bytes_never_raises(data: st.DataObject) -> None:
    """Mutations of a real DER (structure mostly intact) reach the deeper parsers."""
    der = bytearray(_DER)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(der) - 1))
        der[i] = data.draw(st.integers(0, 255))
    body = base64.encodebytes(bytes(der)).decode()
    pem = f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"
    result = check_csr(pem, CP, CPO)
    assert isinstance(result, ValidCsr | CsrRefusal)


_DER = x509.load_pem_x509_csr(make_csr(new_key(), CP)).public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    ("cn", "o", "key_type", "bits", "digest", "ok"),
    [
        (CP, CPO, "ec", 0, "sha256", True),
        (CP, CPO, "rsa", 2048, "sha256", True),
        ("OTHER", CPO, "ec", 0, "sha256", False),
        (CP, CPO, "rsa", 1024, "sha256", False),
        (CP, "Evil", "ec", 0, "sha256", False),
        (CP, CPO, "rsa", 2048, "sha1", False),  # cryptography will not even make one
    ],
)
def test_openssl_made_csrs(
    tmp_path: Path, cn: str, o: str, key_type: KeyType, bits: int, digest: str, ok: bool
) -> None:
    csr, _key = openssl_csr(
        tmp_path, "c", cn, o, key_type=key_type, bits=bits or 2048, digest=digest
    )
    result = check_csr(csr.read_text(), CP, CPO)
    assert isinstance(result, ValidCsr) is ok
    if digest == "sha1":
        assert _reason(result) == "weak_signature_hash"
