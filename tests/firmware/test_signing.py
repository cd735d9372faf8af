"""Firmware signing: round trips, every rejection reason, and interop with the openssl binary.

Chargers verify with ``openssl dgst -sha256 -verify``, so openssl is the referee here.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from evota.firmware import signing
from evota.firmware.cli import app
from evota.firmware.signing import (
    CHUNK_SIZE,
    MAX_CERTIFICATE_PEM_CHARS,
    MAX_SIGNATURE_B64_CHARS,
    CertificateError,
    SignatureError,
    generate_ca,
    generate_signing_key,
    public_key_pem,
    sign_file,
    verify_certificate,
    verify_file,
)

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(autouse=True)
def _now() -> None:
    """``NOW`` is each test's own start, not the module's import: under xdist a module is
    imported at collection and may run many minutes later, after certificates its fixtures
    made (notBefore = their creation - 5 min) — verifying "at NOW" then found them not yet
    valid (a 19-minute suite on a busy machine failed 8 tests here)."""
    global NOW
    NOW = dt.datetime.now(dt.UTC)


OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl binary not installed")


@pytest.fixture(scope="module")
def root() -> tuple[bytes, bytes]:
    return generate_ca("Acme Firmware Root", "Acme Chargers", days=3650)


@pytest.fixture(scope="module")
def issued(root: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    ca_key, ca_cert = root
    return generate_signing_key("Acme FW Signer", "Acme Chargers", ca_key=ca_key, ca_cert=ca_cert)


@pytest.fixture(scope="module")
def self_signed() -> tuple[bytes, bytes]:
    return generate_signing_key("Solo Signer", "Solo Ltd", days=30)


@pytest.fixture
def firmware(tmp_path: Path) -> Path:
    path = tmp_path / "firmware.bin"
    path.write_bytes(os.urandom(10_000) + b"evota firmware v1.2.3")
    return path


def _openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return subprocess.run(
        [OPENSSL, *map(str, args)], capture_output=True, text=True, timeout=30, check=False
    )


def _ext(cert_pem: bytes, kind: type) -> object:
    return x509.load_pem_x509_certificate(cert_pem).extensions.get_extension_for_class(kind).value


# --- round trips and certificate contents ---------------------------------------------------


def test_self_signed_round_trip(self_signed: tuple[bytes, bytes], firmware: Path) -> None:
    key_pem, cert_pem = self_signed
    sig = sign_file(firmware, key_pem)
    assert len(sig) <= MAX_SIGNATURE_B64_CHARS
    verify_file(firmware, sig, cert_pem)
    verify_certificate(cert_pem, [cert_pem], NOW)  # pinned: its own trust anchor
    usage = _ext(cert_pem, x509.KeyUsage)
    assert isinstance(usage, x509.KeyUsage)
    assert usage.digital_signature and not usage.key_cert_sign
    bc = _ext(cert_pem, x509.BasicConstraints)
    assert isinstance(bc, x509.BasicConstraints) and not bc.ca  # a signer is never a CA


def test_ca_issued_round_trip(
    root: tuple[bytes, bytes], issued: tuple[bytes, bytes], firmware: Path
) -> None:
    key_pem, cert_pem = issued
    verify_file(firmware, sign_file(firmware, key_pem), cert_pem, at=NOW)
    verify_certificate(cert_pem, [root[1]], NOW)
    assert len(cert_pem) <= MAX_CERTIFICATE_PEM_CHARS
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    usage = _ext(cert_pem, x509.KeyUsage)
    assert isinstance(usage, x509.KeyUsage)
    assert usage.digital_signature and not usage.key_cert_sign
    bc = _ext(cert_pem, x509.BasicConstraints)
    assert isinstance(bc, x509.BasicConstraints) and not bc.ca
    assert cert.not_valid_after_utc <= x509.load_pem_x509_certificate(root[1]).not_valid_after_utc


def test_key_is_unencrypted_pkcs8_p256(issued: tuple[bytes, bytes]) -> None:
    key = serialization.load_pem_private_key(issued[0], password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert issued[0].startswith(b"-----BEGIN PRIVATE KEY-----")


def test_large_file_spanning_chunks_matches_openssl(
    issued: tuple[bytes, bytes], tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        for _ in range(3):
            f.write(os.urandom(CHUNK_SIZE))
        f.write(b"tail")
    sig = sign_file(big, issued[0])
    verify_file(big, sig, issued[1])
    if OPENSSL:
        (tmp_path / "pub.pem").write_bytes(public_key_pem(issued[1]))
        (tmp_path / "sig.bin").write_bytes(base64.b64decode(sig))
        res = _openssl(
            "dgst", "-sha256", "-verify", tmp_path / "pub.pem", "-signature", tmp_path / "sig.bin",
            big,
        )  # fmt: skip
        assert "Verified OK" in res.stdout, res.stderr


# --- rejections -----------------------------------------------------------------------------


def test_tampered_file_rejected(issued: tuple[bytes, bytes], firmware: Path) -> None:
    sig = sign_file(firmware, issued[0])
    with firmware.open("ab") as f:
        f.write(b"\x00")
    with pytest.raises(SignatureError, match="does not match"):
        verify_file(firmware, sig, issued[1])


def test_tampered_signature_rejected(issued: tuple[bytes, bytes], firmware: Path) -> None:
    raw = bytearray(base64.b64decode(sign_file(firmware, issued[0])))
    raw[-1] ^= 0x01
    with pytest.raises(SignatureError, match="does not match"):
        verify_file(firmware, base64.b64encode(bytes(raw)).decode(), issued[1])


def test_different_key_rejected(
    issued: tuple[bytes, bytes], self_signed: tuple[bytes, bytes], firmware: Path
) -> None:
    sig = sign_file(firmware, self_signed[0])
    with pytest.raises(SignatureError, match="does not match"):
        verify_file(firmware, sig, issued[1])


@pytest.mark.parametrize(
    ("sig", "reason"),
    [
        ("not base64 at all!", "not valid Base64"),
        ("QUJ", "not valid Base64"),
        ("", "empty"),
        ("A" * (MAX_SIGNATURE_B64_CHARS + 4), "OCPP limit"),
    ],
)
def test_garbage_signature_rejected(
    issued: tuple[bytes, bytes], firmware: Path, sig: str, reason: str
) -> None:
    with pytest.raises(SignatureError, match=reason):
        verify_file(firmware, sig, issued[1])


def test_base64_with_line_breaks_accepted(issued: tuple[bytes, bytes], firmware: Path) -> None:
    sig = sign_file(firmware, issued[0])
    verify_file(firmware, sig[:20] + "\n" + sig[20:] + "\n", issued[1])


def test_expired_and_not_yet_valid(
    root: tuple[bytes, bytes], issued: tuple[bytes, bytes], firmware: Path
) -> None:
    sig = sign_file(firmware, issued[0])
    later = NOW + dt.timedelta(days=3651)
    earlier = NOW - dt.timedelta(days=1)
    with pytest.raises(SignatureError, match="expired"):
        verify_file(firmware, sig, issued[1], at=later)
    with pytest.raises(SignatureError, match="not yet valid"):
        verify_file(firmware, sig, issued[1], at=earlier)
    with pytest.raises(CertificateError, match="expired"):
        verify_certificate(issued[1], [root[1]], later)
    with pytest.raises(CertificateError, match="not yet valid"):
        verify_certificate(issued[1], [root[1]], earlier)


def test_untrusted_root_rejected(issued: tuple[bytes, bytes]) -> None:
    other_root = generate_ca("Evil Root", "Evil Corp", days=3650)[1]
    with pytest.raises(CertificateError, match="not a trusted root"):
        verify_certificate(issued[1], [other_root], NOW)
    with pytest.raises(CertificateError, match="no trusted roots"):
        verify_certificate(issued[1], [], NOW)


def test_same_name_impostor_root_rejected(issued: tuple[bytes, bytes]) -> None:
    impostor = generate_ca("Acme Firmware Root", "Acme Chargers", days=3650)[1]
    with pytest.raises(CertificateError, match="does not verify"):
        verify_certificate(issued[1], [impostor], NOW)


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    *extensions: x509.ExtensionType,
    issuer: tuple[bytes, bytes] | tuple[str, ec.EllipticCurvePrivateKey] | None = None,
) -> bytes:
    """A certificate with exactly ``extensions``: self-signed unless ``issuer`` is given, as
    (CN, key) or as a (key PEM, certificate PEM) pair from ``generate_ca``."""
    own = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = own, key
    if issuer is not None and isinstance(issuer[0], bytes):
        loaded = serialization.load_pem_private_key(issuer[0], None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey) and isinstance(issuer[1], bytes)
        issuer_name, issuer_key = x509.load_pem_x509_certificate(issuer[1]).subject, loaded
    elif issuer is not None:
        assert isinstance(issuer[0], str) and isinstance(issuer[1], ec.EllipticCurvePrivateKey)
        issuer_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])])
        issuer_key = issuer[1]
    builder = (
        x509.CertificateBuilder()
        .subject_name(own)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=10))
    )
    for ext in extensions:
        builder = builder.add_extension(ext, critical=isinstance(ext, x509.BasicConstraints))
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


_LEAF = x509.BasicConstraints(ca=False, path_length=None)


def test_non_ca_root_rejected() -> None:
    """A leaf that 'issues' another cert must not be accepted as a root."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = _cert("Not A CA", key, _LEAF)
    child = _cert("Child", ec.generate_private_key(ec.SECP256R1()), _LEAF, issuer=("Not A CA", key))
    with pytest.raises(CertificateError, match="not a CA"):
        verify_certificate(child, [pem], NOW)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(CertificateError, match="CA=true"):
        generate_signing_key("x", "y", ca_key=key_pem, ca_cert=pem)


def test_ca_certificate_refused_as_signer(root: tuple[bytes, bytes], firmware: Path) -> None:
    """A root (or any CA) key signing images directly is refused, even when it is trusted."""
    ca_key, ca_cert = root
    verify_file(firmware, sign_file(firmware, ca_key), ca_cert)  # the signature itself is fine
    with pytest.raises(CertificateError, match="is a CA certificate"):
        verify_certificate(ca_cert, [ca_cert], NOW)
    # an intermediate-style CA issued by the trusted root is refused as well
    sub_ca = _cert(
        "Sub CA",
        ec.generate_private_key(ec.SECP256R1()),
        x509.BasicConstraints(ca=True, path_length=0),
        issuer=root,
    )
    with pytest.raises(CertificateError, match="is a CA certificate"):
        verify_certificate(sub_ca, [ca_cert], NOW)


@pytest.mark.parametrize(
    ("usages", "accepted"),
    [
        (None, True),  # no EKU extension: keyUsage alone decides
        ([x509.ExtendedKeyUsageOID.CODE_SIGNING], True),
        ([x509.ExtendedKeyUsageOID.SERVER_AUTH, x509.ExtendedKeyUsageOID.CODE_SIGNING], True),
        ([x509.ExtendedKeyUsageOID.SERVER_AUTH], False),
        ([x509.ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE], False),
    ],
)
def test_extended_key_usage_must_allow_code_signing(
    root: tuple[bytes, bytes], usages: list[x509.ObjectIdentifier] | None, accepted: bool
) -> None:
    exts: list[x509.ExtensionType] = [_LEAF]
    if usages is not None:
        exts.append(x509.ExtendedKeyUsage(usages))
    cert = _cert("Signer", ec.generate_private_key(ec.SECP256R1()), *exts, issuer=root)
    ca_cert = root[1]
    if accepted:
        verify_certificate(cert, [ca_cert], NOW)
    else:
        with pytest.raises(CertificateError, match="lacks codeSigning"):
            verify_certificate(cert, [ca_cert], NOW)


def test_ca_key_must_match_ca_cert(root: tuple[bytes, bytes]) -> None:
    other_key = generate_ca("Other", "Other")[0]
    with pytest.raises(CertificateError, match="does not match"):
        generate_signing_key("x", "y", ca_key=other_key, ca_cert=root[1])
    with pytest.raises(ValueError, match="together"):
        generate_signing_key("x", "y", ca_key=root[0])


def test_bad_certificates_rejected(issued: tuple[bytes, bytes], firmware: Path) -> None:
    sig = sign_file(firmware, issued[0])
    with pytest.raises(SignatureError, match="not a PEM"):
        verify_file(firmware, sig, b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----")
    with pytest.raises(CertificateError, match="OCPP limit"):
        verify_certificate(b"x" * (MAX_CERTIFICATE_PEM_CHARS + 1), [issued[1]], NOW)


def test_unsupported_key_types_rejected(firmware: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(SignatureError, match="unsupported key type"):
        sign_file(firmware, key_pem)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ed")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .sign(key, None)
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(SignatureError, match="unsupported key type"):
        verify_file(firmware, base64.b64encode(b"x" * 64).decode(), cert_pem)
    with pytest.raises(SignatureError, match="not a readable PEM key"):
        sign_file(firmware, b"garbage")


def test_oversized_signature_refused(
    issued: tuple[bytes, bytes], firmware: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """E.g. RSA-8192 gives 1368 Base64 chars, too long for OCPP: refuse to make such a thing.

    (Shrinking the limit stands in for an 8192-bit key, which takes seconds to generate.)
    """
    monkeypatch.setattr(signing, "MAX_SIGNATURE_B64_CHARS", 40)
    with pytest.raises(SignatureError, match="OCPP limit"):
        sign_file(firmware, issued[0])


# --- openssl interop ------------------------------------------------------------------------


@needs_openssl
def test_openssl_verifies_our_ecdsa_signature(
    issued: tuple[bytes, bytes], firmware: Path, tmp_path: Path
) -> None:
    (tmp_path / "pub.pem").write_bytes(public_key_pem(issued[1]))
    (tmp_path / "sig.bin").write_bytes(base64.b64decode(sign_file(firmware, issued[0])))
    res = _openssl(
        "dgst", "-sha256", "-verify", tmp_path / "pub.pem", "-signature", tmp_path / "sig.bin",
        firmware,
    )  # fmt: skip
    assert res.returncode == 0 and "Verified OK" in res.stdout, res.stderr
    with firmware.open("ab") as f:
        f.write(b"!")
    res = _openssl(
        "dgst", "-sha256", "-verify", tmp_path / "pub.pem", "-signature", tmp_path / "sig.bin",
        firmware,
    )  # fmt: skip
    assert res.returncode != 0 and "Verification failure" in res.stdout


@needs_openssl
def test_openssl_signature_passes_verify_file(
    issued: tuple[bytes, bytes], firmware: Path, tmp_path: Path
) -> None:
    (tmp_path / "key.pem").write_bytes(issued[0])
    res = _openssl(
        "dgst", "-sha256", "-sign", tmp_path / "key.pem", "-out", tmp_path / "sig.bin", firmware
    )
    assert res.returncode == 0, res.stderr
    sig = base64.b64encode((tmp_path / "sig.bin").read_bytes()).decode()
    verify_file(firmware, sig, issued[1])


@needs_openssl
def test_openssl_rsa_key_and_cert_interop(firmware: Path, tmp_path: Path) -> None:
    """An RSA key and self-signed cert made by openssl: signatures flow both ways."""
    key, cert = tmp_path / "rsa.key", tmp_path / "rsa.crt"
    res = _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
        "-days", "2", "-subj", "/CN=RSA Signer/O=Legacy Chargers",
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "keyUsage=critical,digitalSignature",
        "-addext", "extendedKeyUsage=codeSigning",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    ours = sign_file(firmware, key.read_bytes())
    verify_file(firmware, ours, cert.read_bytes())
    (tmp_path / "pub.pem").write_bytes(public_key_pem(cert.read_bytes()))
    (tmp_path / "ours.bin").write_bytes(base64.b64decode(ours))
    res = _openssl(
        "dgst", "-sha256", "-verify", tmp_path / "pub.pem", "-signature", tmp_path / "ours.bin",
        firmware,
    )  # fmt: skip
    assert "Verified OK" in res.stdout, res.stderr
    res = _openssl("dgst", "-sha256", "-sign", key, "-out", tmp_path / "theirs.bin", firmware)
    assert res.returncode == 0, res.stderr
    theirs = (tmp_path / "theirs.bin").read_bytes()
    assert base64.b64encode(theirs).decode() == ours  # PKCS#1 v1.5 is deterministic
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)  # openssl's notBefore is "now"
    verify_certificate(cert.read_bytes(), [cert.read_bytes()], now)
    # openssl's default self-signed certificate is a CA: refused as a signer
    res = _openssl(
        "req", "-x509", "-key", key, "-out", tmp_path / "ca.crt", "-days", "2", "-subj", "/CN=CA",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    ca_pem = (tmp_path / "ca.crt").read_bytes()
    with pytest.raises(CertificateError, match="is a CA certificate"):
        verify_certificate(ca_pem, [ca_pem], now)


# --- property -------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=st.binary(max_size=5000))
def test_any_content_round_trips(issued: tuple[bytes, bytes], content: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fw.bin"
        path.write_bytes(content)
        sig = sign_file(path, issued[0])
        verify_file(path, sig, issued[1])
        path.write_bytes(content + b"\x00")
        with pytest.raises(SignatureError):
            verify_file(path, sig, issued[1])


# --- CLI ------------------------------------------------------------------------------------


def test_cli_keygen_sign_verify(tmp_path: Path, firmware: Path) -> None:
    runner = CliRunner()
    ca_dir, signer_dir = tmp_path / "ca", tmp_path / "signer"
    res = runner.invoke(
        app, ["keygen", "--ca", "--cn", "Root", "--org", "Acme", "--out-dir", str(ca_dir)]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "keygen", "--cn", "Signer", "--org", "Acme", "--out-dir", str(signer_dir),
            "--ca-key", str(ca_dir / "ca.key.pem"), "--ca-cert", str(ca_dir / "ca.cert.pem"),
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    key_path = signer_dir / "signing.key.pem"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((ca_dir / "ca.key.pem").stat().st_mode) == 0o600
    assert "PRIVATE KEY" not in res.output

    res = runner.invoke(
        app, ["sign", str(firmware), "--key", str(key_path), "--out", str(tmp_path / "fw.sig")]
    )
    assert res.exit_code == 0, res.output
    assert "PRIVATE KEY" not in res.output
    sig = res.stdout.strip()
    assert (tmp_path / "fw.sig").read_text().strip() == sig

    cert = str(signer_dir / "signing.cert.pem")
    for sig_arg in (sig, str(tmp_path / "fw.sig")):
        res = runner.invoke(
            app,
            ["verify", str(firmware), "--signature", sig_arg, "--cert", cert,
             "--root", str(ca_dir / "ca.cert.pem")],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        assert "OK" in res.stdout

    # DER signature file (what openssl writes) is accepted too
    res = runner.invoke(
        app,
        ["sign", str(firmware), "--key", str(key_path), "--out", str(tmp_path / "fw.der"), "--der"],
    )
    assert res.exit_code == 0
    res = runner.invoke(
        app, ["verify", str(firmware), "--signature", str(tmp_path / "fw.der"), "--cert", cert]
    )
    assert res.exit_code == 0, res.output

    # refuses to overwrite an existing key
    res = runner.invoke(app, ["keygen", "--cn", "S", "--org", "A", "--out-dir", str(signer_dir)])
    assert res.exit_code == 1 and "exists" in res.stderr


def test_cli_failures_are_one_line(tmp_path: Path, firmware: Path) -> None:
    runner = CliRunner()
    runner.invoke(app, ["keygen", "--cn", "S", "--org", "A", "--out-dir", str(tmp_path)])
    cert = str(tmp_path / "signing.cert.pem")
    sig = runner.invoke(
        app, ["sign", str(firmware), "--key", str(tmp_path / "signing.key.pem")]
    ).stdout.strip()
    firmware.write_bytes(b"tampered")
    res = runner.invoke(app, ["verify", str(firmware), "--signature", sig, "--cert", cert])
    assert res.exit_code == 1
    assert res.stderr.startswith("error: signature does not match")
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output

    other_root = tmp_path / "other.pem"
    other_root.write_bytes(generate_ca("Other", "Other")[1])
    res = runner.invoke(
        app,
        ["verify", str(firmware), "--signature", sig, "--cert", cert, "--root", str(other_root)],
    )
    assert res.exit_code == 1 and "not a trusted root" in res.stderr

    res = runner.invoke(app, ["sign", str(tmp_path / "missing.bin"), "--key", cert])
    assert res.exit_code == 1 and res.stderr.startswith("error: private key is not")
    res = runner.invoke(
        app, ["sign", str(tmp_path / "missing.bin"), "--key", str(tmp_path / "signing.key.pem")]
    )
    assert res.exit_code == 1 and "cannot read firmware" in res.stderr
    res = runner.invoke(app, ["verify", str(firmware), "--signature", "@@@", "--cert", cert])
    assert res.exit_code == 1 and "not valid Base64" in res.stderr
