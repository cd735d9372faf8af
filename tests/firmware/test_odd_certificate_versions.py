"""A certificate whose X.509 version cryptography does not know raises InvalidVersion, which
is no ValueError: the firmware trust checks refuse it like any unreadable certificate
instead of letting it escape as a 500 (same defect as install-certificate, issue 16)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization

from evota.firmware import signing
from evota.firmware.repository import InvalidInput, inspect_root_certificate
from tests.pki_fixtures import Pki


def _odd_version(pki: Pki) -> str:
    der = bytearray(pki.csms_root.cert.public_bytes(serialization.Encoding.DER))
    at = der.find(bytes([0xA0, 0x03, 0x02, 0x01, 0x02]))  # [0] EXPLICIT INTEGER 2 (v3)
    der[at + 4] = 0x05
    body = base64.encodebytes(bytes(der)).decode()
    return f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n"


def test_a_trusted_root_of_an_unknown_version_is_invalid_input(pki: Pki) -> None:
    with pytest.raises(InvalidInput, match=r"not a PEM X\.509 certificate"):
        inspect_root_certificate(_odd_version(pki), datetime.now(UTC))


def test_a_signing_certificate_of_an_unknown_version_is_a_certificate_error(pki: Pki) -> None:
    good_root = pki.csms_root.cert.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(signing.CertificateError, match=r"not a PEM X\.509 certificate"):
        signing.verify_certificate(_odd_version(pki).encode(), [good_root], datetime.now(UTC))
