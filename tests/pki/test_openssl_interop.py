"""openssl interop (issue 16): certificates and CSRs made by ``openssl`` are accepted where
valid and refused where not, and the test certificates (tests/pki_fixtures.py) mean to
``openssl verify`` what they mean to evota."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.x509.oid import NameOID

from tests.pki_fixtures import (
    CHARGER_ID,
    CPO,
    KeyType,
    Pki,
    cert_pem,
    openssl,
    openssl_crl,
    openssl_csr,
    openssl_mint,
)


def _verify(pki: Pki, cert: Path, *, crl: bool = True) -> bool:
    argv = [openssl(), "verify", "-CAfile", str(pki.charger_ca)]
    if crl:
        argv += ["-crl_check", "-CRLfile", str(pki.crl)]
    return subprocess.run([*argv, str(cert)], capture_output=True, check=False).returncode == 0


def test_fixture_chains_mean_to_openssl_what_they_say(pki: Pki) -> None:
    # The bad certificates are bad for the reason their name gives, not by accident: the
    # chain ones fail openssl's chain check, the subject ones pass it (evota must refuse them
    # on their subject alone).
    assert _verify(pki, pki.good.cert_path)
    for chain_bad in (pki.expired, pki.not_yet_valid, pki.wrong_ca, pki.self_signed, pki.revoked):
        assert not _verify(pki, chain_bad.cert_path), chain_bad.cert_path.name
    assert not _verify(pki, pki.revoked.cert_path) and _verify(
        pki, pki.revoked.cert_path, crl=False
    )
    for subject_bad in (pki.wrong_cn, pki.wrong_o):
        assert _verify(pki, subject_bad.cert_path), subject_bad.cert_path.name
    server = subprocess.run(
        [
            openssl(),
            "verify",
            "-CAfile",
            str(pki.server_ca),
            "-verify_ip",
            "127.0.0.1",
            "-purpose",
            "sslserver",
            str(pki.server.cert_path),
        ],
        capture_output=True,
        check=False,
    )
    assert server.returncode == 0, server.stderr


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_openssl_made_charger_certificate_chains(pki: Pki, key_type: KeyType) -> None:
    made = openssl_mint(pki, CHARGER_ID, key_type=key_type)
    assert _verify(pki, made.cert_path)
    subject = made.cert.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CHARGER_ID
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == pki.cpo


# -- CSRs made by openssl against evota's CSR rules (evota.pki.csr) and its CA (evota.pki.ca) --

CSR_CASES = {
    # name: (openssl_csr keyword arguments, expected refusal reason or None: accepted)
    "EC P-256": ({}, None),
    "EC P-384": ({"newkey": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"]}, None),
    "RSA 2048": ({"key_type": "rsa", "bits": 2048}, None),
    "RSA 3072 SHA-384": ({"key_type": "rsa", "bits": 3072, "digest": "sha384"}, None),
    "RSA 1024": ({"key_type": "rsa", "bits": 1024}, "key_size"),
    "secp256k1": (
        {"newkey": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"]},
        "key_curve",
    ),
    "Ed25519": ({"newkey": ["-newkey", "ed25519"], "digest": ""}, "key_type"),
    "SHA-1": ({"digest": "sha1"}, "weak_signature_hash"),
    "wrong CN": ({"cn": f"{CHARGER_ID}-OTHER"}, "subject_cn_mismatch"),
    "wrong O": ({"o": "someone-else-cpo"}, "subject_o_mismatch"),
    "no O": ({"o": None}, "subject_o_mismatch"),
    "asks for a CA": ({"addext": ["basicConstraints=critical,CA:TRUE"]}, "ca_requested"),
}


@pytest.mark.parametrize("case", list(CSR_CASES))
def test_openssl_csrs_are_accepted_where_valid_and_refused_where_not(pki: Pki, case: str) -> None:
    from evota.pki.csr import CsrRefusal, ValidCsr, check_csr

    options, refusal = CSR_CASES[case]
    subject = {"cn": options.pop("cn", CHARGER_ID), "o": options.pop("o", CPO)}
    csr, _ = openssl_csr(pki.directory, case.replace(" ", "_"), **subject, **options)
    result = check_csr(csr.read_text(), CHARGER_ID, CPO)
    if refusal is None:
        assert isinstance(result, ValidCsr), result
    else:
        assert isinstance(result, CsrRefusal) and result.reason == refusal, result


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
async def test_evota_signs_an_openssl_csr_into_a_certificate_openssl_verifies(
    pki: Pki, key_type: KeyType, tmp_path: Path
) -> None:
    from evota.pki.ca import BuiltinCA
    from evota.pki.csr import ValidCsr, check_csr

    csr, key = openssl_csr(pki.directory, f"sign-{key_type}", CHARGER_ID, key_type=key_type)
    valid = check_csr(csr.read_text(), CHARGER_ID, CPO)
    assert isinstance(valid, ValidCsr)
    ca = BuiltinCA.in_data_dir(tmp_path, pki.now, CPO, timedelta(days=30))
    issued = await ca.sign(valid, pki.now)
    (tmp_path / "ca.pem").write_bytes(cert_pem(ca.certificates()[0]))
    issued_path = tmp_path / "issued.pem"
    issued_path.write_text(issued.certificate_pem)
    rc, out = _openssl("verify", "-CAfile", str(tmp_path / "ca.pem"), "-purpose", "sslclient",
                       str(issued_path))  # fmt: skip
    assert rc == 0, out
    # The certificate is for openssl's key, and says who the charger is.
    assert _openssl("x509", "-in", str(issued_path), "-noout", "-pubkey") == _openssl(
        "pkey", "-in", str(key), "-pubout"
    )
    subject = _openssl("x509", "-in", str(issued_path), "-noout", "-subject", "-nameopt", "RFC2253")
    assert subject == (0, f"subject=O={CPO},CN={CHARGER_ID}\n")


def _openssl(*argv: str) -> tuple[int, str]:
    done = subprocess.run([openssl(), *argv], capture_output=True, text=True, check=False)
    return done.returncode, done.stdout + done.stderr


# -- certificates made by openssl against evota's client-certificate rules (evota.pki.identity) --


def _trust(pki: Pki, crl: Path | None = None) -> Any:
    from evota.pki import identity

    authorities = identity.load_authorities(pki.charger_ca.read_bytes())
    revoked = identity.load_revoked(crl.read_bytes(), authorities) if crl else frozenset()
    return identity.Trust(authorities, revoked, CPO)


IDENTITY_CASES: dict[str, tuple[dict[str, Any], str | None]] = {
    # name: (openssl_mint keyword arguments, expected start of the refusal, None: accepted)
    "EC P-256": ({}, None),
    "RSA 2048": ({"key_type": "rsa"}, None),
    "expired": ({"start": -60, "end": -30}, "expired"),
    "not yet valid": ({"start": 30, "end": 60}, "not valid before"),
    "wrong CA": ({"issuer": "forged"}, "not signed by a trusted charger CA"),
    "wrong CN": ({"cn": f"{CHARGER_ID}-OTHER"}, "subject CN"),
    "wrong O": ({"o": "someone-else-cpo"}, "subject O"),
    "no O": ({"o": ""}, "subject O"),
}


@pytest.mark.parametrize("case", list(IDENTITY_CASES))
def test_openssl_client_certificates_are_accepted_where_valid_and_refused_where_not(
    pki: Pki, case: str
) -> None:
    from evota.pki import identity

    options, refusal = IDENTITY_CASES[case]
    for name in ("start", "end"):
        if name in options:
            options[name] = pki.now + timedelta(days=options[name])
    if options.get("issuer") == "forged":
        options["issuer"] = pki.forged_root
    made = openssl_mint(pki, CHARGER_ID, **options)
    reason = identity.problem(made.cert, CHARGER_ID, _trust(pki), pki.now)
    if refusal is None:
        assert reason is None
    else:
        assert reason is not None and reason.startswith(refusal), reason


@pytest.mark.parametrize("der", [False, True], ids=["PEM CRL", "DER CRL"])
def test_an_openssl_crl_revokes_exactly_the_certificate_it_lists(pki: Pki, der: bool) -> None:
    from evota.pki import identity

    revoked = openssl_mint(pki, CHARGER_ID, name="to-revoke")
    kept = openssl_mint(pki, CHARGER_ID, name="kept")
    trust = _trust(pki, openssl_crl(pki, revoked, der=der))
    reason = identity.problem(revoked.cert, CHARGER_ID, trust, pki.now)
    assert reason is not None and reason.startswith("revoked"), reason
    assert identity.problem(kept.cert, CHARGER_ID, trust, pki.now) is None
