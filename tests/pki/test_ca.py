"""The built-in charger CA (evota.pki.ca): made once in the data directory with private
permissions, what it issues chains to it (its signature, and openssl's verify for a TLS client)
and carries a charging-station certificate's extensions and nothing from the CSR but the key
and the checked subject."""

from __future__ import annotations

import asyncio
import base64
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from evota.pki.ca import CA_DIR, CERT_FILE, KEY_FILE, BuiltinCA, CAError
from evota.pki.csr import ValidCsr, check_csr
from tests.pki_fixtures import CPO, KeyType, make_csr, new_key, openssl

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
YEAR = timedelta(days=365)


def _valid(charger: str, key_type: KeyType = "ec") -> ValidCsr:
    result = check_csr(make_csr(new_key(key_type), charger).decode(), charger, CPO)
    assert isinstance(result, ValidCsr)
    return result


def test_made_once_private_and_reloaded(tmp_path: Path) -> None:
    ca = BuiltinCA.in_data_dir(tmp_path, NOW, CPO, YEAR)
    home = tmp_path / CA_DIR
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for name in (CERT_FILE, KEY_FILE):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600
    again = BuiltinCA.in_data_dir(tmp_path, NOW + YEAR, CPO, YEAR)
    assert again.certificate == ca.certificate
    assert [p.name for p in tmp_path.iterdir()] == [CA_DIR]  # no temporary directory left
    constraints = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.value.ca and constraints.critical


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_issued_certificate_chains_and_has_the_station_extensions(
    tmp_path: Path, key_type: KeyType
) -> None:
    ca = BuiltinCA.in_data_dir(tmp_path, NOW, CPO, YEAR)
    issued = asyncio.run(ca.sign(_valid("CP-CA-1", key_type), NOW))
    leaf = x509.load_pem_x509_certificate(issued.certificate_pem.encode())
    assert issued.chain_pem.count("BEGIN CERTIFICATE") == 2
    assert issued.subject == f"O={CPO},CN=CP-CA-1"
    assert issued.not_after == NOW + YEAR and issued.not_before < NOW
    assert int(issued.serial, 16) == leaf.serial_number and leaf.serial_number.bit_length() == 128
    ext = leaf.extensions
    assert not ext.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = ext.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert usage.key_agreement is (key_type == "ec") and usage.key_encipherment is (
        key_type == "rsa"
    )
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    leaf.verify_directly_issued_by(ca.certificates()[0])
    (tmp_path / "leaf.pem").write_text(issued.certificate_pem)
    done = subprocess.run(
        [
            openssl(), "verify", "-purpose", "sslclient", "-attime", str(int(NOW.timestamp())),
            "-CAfile", str(tmp_path / CA_DIR / CERT_FILE), str(tmp_path / "leaf.pem"),
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_serials_differ_and_validity_never_outlives_the_ca(tmp_path: Path) -> None:
    ca = BuiltinCA.in_data_dir(tmp_path, NOW, None, timedelta(days=36500))
    first = asyncio.run(ca.sign(_valid("CP-CA-2"), NOW))
    second = asyncio.run(ca.sign(_valid("CP-CA-2"), NOW))
    assert first.serial != second.serial
    assert first.not_after == ca.certificate.not_valid_after_utc


def test_operator_files_load_and_a_foreign_key_is_refused(tmp_path: Path) -> None:
    BuiltinCA.in_data_dir(tmp_path, NOW, CPO, YEAR)
    home = tmp_path / CA_DIR
    loaded = BuiltinCA.from_files(home / CERT_FILE, home / KEY_FILE, YEAR)
    assert loaded.certificate.subject.rfc4514_string() == f"O={CPO},CN=evota charger CA"
    other = tmp_path / "other"
    BuiltinCA.in_data_dir(other, NOW, CPO, YEAR)
    with pytest.raises(CAError, match="does not belong"):
        BuiltinCA.from_files(home / CERT_FILE, other / CA_DIR / KEY_FILE, YEAR)
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(CAError, match="cannot read"):
        BuiltinCA.from_files(tmp_path / "junk.pem", home / KEY_FILE, YEAR)


def test_a_ca_certificate_of_an_unknown_version_is_a_clear_error(tmp_path: Path) -> None:
    """cryptography raises InvalidVersion (no ValueError) for it: still one CAError line."""
    BuiltinCA.in_data_dir(tmp_path, NOW, CPO, YEAR)
    home = tmp_path / CA_DIR
    der = bytearray(
        x509.load_pem_x509_certificate((home / CERT_FILE).read_bytes()).public_bytes(
            serialization.Encoding.DER
        )
    )
    at = der.find(bytes([0xA0, 0x03, 0x02, 0x01, 0x02]))  # version v3
    der[at + 4] = 0x05
    odd = tmp_path / "odd.pem"
    odd.write_text(
        "-----BEGIN CERTIFICATE-----\n"
        + base64.encodebytes(bytes(der)).decode()
        + "-----END CERTIFICATE-----\n"
    )
    with pytest.raises(CAError, match="cannot read"):
        BuiltinCA.from_files(odd, home / KEY_FILE, YEAR)
