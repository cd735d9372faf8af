"""openssl interop (issue 16): certificates and CSRs made by ``openssl`` are accepted where
valid and refused where not, and the test certificates (tests/pki_fixtures.py) mean to
``openssl verify`` what they mean to evota."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography.x509.oid import NameOID

from tests.pki_fixtures import CHARGER_ID, KeyType, Pki, openssl, openssl_mint


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
