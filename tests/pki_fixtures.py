"""Test certificates for the security profiles (issue 16), written as PEM files into a tmp dir.

One place makes every certificate the TLS, mutual-TLS, CA and simulator tests use, so they
all agree on what "valid" means:

- a CSMS root CA and a server certificate for ``127.0.0.1``, ``::1`` and ``localhost``;
- a charger CA (the CPO's "charging station" CA) and charger certificates with
  CN = charger id and O = the CPO name (:data:`CPO`);
- bad charger certificates for :data:`CHARGER_ID`: expired, not yet valid, signed by a
  forged CA with the real CA's name (wrong CA), self-signed, wrong CN, wrong O, revoked
  (listed in the charger CA's CRL);
- :meth:`Pki.mint` for a charger certificate of any id and shape (EC P-256 by default,
  RSA on request), :func:`make_csr` for a CSR, and ``openssl``-made variants
  (:func:`openssl_mint`, :func:`openssl_csr`, the Debian ``openssl`` binary) for the
  interop tests, so evota is not only ever checked against its own library's output.

Use the :func:`pki` fixture (``from tests.pki_fixtures import pki`` in a conftest, or call
:func:`make_pki` with a directory for a module-wide set).
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The CPO name the charger certificates carry as O (``EVOTA_CPO_NAME`` in the tests).
CPO = "evota-test-cpo"
#: The charger id the prebuilt good and bad charger certificates are for.
CHARGER_ID = "TLS-CP-1"

KeyType = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def new_key(key_type: KeyType = "ec", bits: int = 2048) -> PrivateKey:
    """EC P-256 (``bits`` ignored) or RSA of ``bits`` bits."""
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def subject(cn: str | None = None, o: str | None = None) -> x509.Name:
    attrs = []
    if o is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o))
    if cn is not None:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


@dataclass(frozen=True)
class Authority:
    """A CA: its certificate and key in memory and on disk."""

    name: x509.Name
    key: PrivateKey
    cert: x509.Certificate
    cert_path: Path
    key_path: Path


@dataclass(frozen=True)
class Credential:
    """A leaf certificate and its key on disk (``cert_path`` may hold the chain after it)."""

    cert_path: Path
    key_path: Path
    cert: x509.Certificate
    key: PrivateKey

    @property
    def serial(self) -> int:
        return self.cert.serial_number

    @property
    def not_after(self) -> datetime:
        return self.cert.not_valid_after_utc


def _ca(
    name: x509.Name,
    key: PrivateKey,
    now: datetime,
    *,
    issuer: tuple[x509.Name, PrivateKey] | None = None,
    path_length: int | None = None,
) -> x509.Certificate:
    issuer_name, issuer_key = issuer if issuer is not None else (name, key)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )


def _leaf(
    name: x509.Name,
    key: PrivateKey,
    issuer: Authority,
    not_before: datetime,
    not_after: datetime,
    *,
    usage: x509.ObjectIdentifier,
    san: list[x509.GeneralName] | None = None,
    serial: int | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.name)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer.key, hashes.SHA256())


@dataclass
class Pki:
    """Paths of every test certificate, and :meth:`mint` for more.

    ``server_ca`` is what a charger (the simulator, a Node client) trusts; ``charger_ca`` is
    what the CSMS trusts for client certificates (``EVOTA_OCPP_CHARGER_CA``); ``crl`` is the
    charger CA's CRL (``EVOTA_OCPP_CRL``), listing ``revoked``.
    """

    directory: Path
    now: datetime
    cpo: str
    csms_root: Authority
    server: Credential
    charger_root: Authority
    forged_root: Authority
    good: Credential
    expired: Credential
    not_yet_valid: Credential
    wrong_ca: Credential
    self_signed: Credential
    wrong_cn: Credential
    wrong_o: Credential
    revoked: Credential
    crl: Path
    _minted: int = field(default=0, repr=False)

    @property
    def server_ca(self) -> Path:
        """The CSMS root CA certificate (PEM): what a charger verifies the server with."""
        return self.csms_root.cert_path

    @property
    def charger_ca(self) -> Path:
        """The charger CA certificate (PEM): what the server verifies chargers with."""
        return self.charger_root.cert_path

    @property
    def charger_ca_key(self) -> Path:
        return self.charger_root.key_path

    def next_csms_root(self, stem: str = "csms-root-next") -> tuple[Authority, Credential]:
        """A second CSMS root and a server certificate under it (``<stem>.pem``/``.key``,
        ``<stem>-server.pem``/``.key``): what a root rotation moves to."""
        root = _authority(
            self.directory, stem, subject(f"evota test CSMS root {stem}", self.cpo), self.now
        )
        return root, _server(self.directory, f"{stem}-server", root, self.cpo, self.now)

    def mint(
        self,
        charger_id: str,
        *,
        cn: str | None = None,
        o: str | None = None,
        key_type: KeyType = "ec",
        bits: int = 2048,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        issuer: Authority | None = None,
        key: PrivateKey | None = None,
        name: str | None = None,
    ) -> Credential:
        """A charger certificate signed by the charger CA (or ``issuer``): CN = ``cn`` or
        the charger id, O = ``o`` or the CPO name (pass ``o=""`` for no O at all), valid
        from an hour ago for a year unless told otherwise; written as ``<name>.pem`` and
        ``<name>.key``."""
        self._minted += 1
        return _mint(
            self.directory,
            name or f"charger-{charger_id}-{self._minted}",
            issuer or self.charger_root,
            subject(cn if cn is not None else charger_id, (self.cpo if o is None else o) or None),
            key or new_key(key_type, bits),
            not_before or self.now - timedelta(hours=1),
            not_after or self.now + timedelta(days=365),
        )


def _mint(
    directory: Path,
    name: str,
    issuer: Authority,
    subject_name: x509.Name,
    key: PrivateKey,
    not_before: datetime,
    not_after: datetime,
) -> Credential:
    cert = _leaf(
        subject_name, key, issuer, not_before, not_after, usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    return _write(directory, name, cert, key)


def _write(directory: Path, name: str, cert: x509.Certificate, key: PrivateKey) -> Credential:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert_pem(cert))
    key_path.write_bytes(key_pem(key))
    key_path.chmod(0o600)
    return Credential(cert_path, key_path, cert, key)


def _authority(directory: Path, stem: str, name: x509.Name, now: datetime) -> Authority:
    key = new_key()
    cert = _ca(name, key, now)
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert_pem(cert))
    key_path.write_bytes(key_pem(key))
    key_path.chmod(0o600)
    return Authority(name, key, cert, cert_path, key_path)


def _server(directory: Path, name: str, root: Authority, cpo: str, now: datetime) -> Credential:
    """A server certificate under ``root`` for ``localhost``, ``127.0.0.1`` and ``::1``."""
    key = new_key()
    cert = _leaf(
        subject("localhost", cpo),
        key,
        root,
        now - timedelta(hours=1),
        now + timedelta(days=365),
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        san=[
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ],
    )
    return _write(directory, name, cert, key)


def make_crl(
    authority: Authority, serials: list[int], now: datetime
) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.name)
        .last_update(now - timedelta(hours=1))
        .next_update(now + timedelta(days=7))
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(now - timedelta(minutes=30))
            .build()
        )
    return builder.sign(authority.key, hashes.SHA256())


def make_pki(directory: Path, *, cpo: str = CPO, now: datetime | None = None) -> Pki:
    """Every test certificate under ``directory`` (created if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = now or datetime.now(UTC)
    csms_root = _authority(directory, "csms-root", subject("evota test CSMS root", cpo), now)
    server = _server(directory, "server", csms_root, cpo, now)
    charger_name = subject("evota test charger CA", cpo)
    charger_root = _authority(directory, "charger-ca", charger_name, now)
    # Same name as the real charger CA, another key: an attacker's look-alike.
    forged_root = _authority(directory, "forged-charger-ca", charger_name, now)
    hour, year = now - timedelta(hours=1), now + timedelta(days=365)
    cid, ok = CHARGER_ID, subject(CHARGER_ID, cpo)

    def charger(
        name: str,
        *,
        issuer: Authority = charger_root,
        subject_name: x509.Name = ok,
        not_before: datetime = hour,
        not_after: datetime = year,
    ) -> Credential:
        return _mint(directory, name, issuer, subject_name, new_key(), not_before, not_after)

    self_key = new_key()
    self_signed = _write(
        directory,
        "self-signed",
        _leaf(
            ok,
            self_key,
            Authority(ok, self_key, server.cert, Path(), Path()),
            hour,
            year,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        ),
        self_key,
    )
    revoked = charger("revoked")
    crl = directory / "charger-ca.crl.pem"
    crl.write_bytes(
        make_crl(charger_root, [revoked.serial], now).public_bytes(serialization.Encoding.PEM)
    )
    return Pki(
        directory=directory,
        now=now,
        cpo=cpo,
        csms_root=csms_root,
        server=server,
        charger_root=charger_root,
        forged_root=forged_root,
        good=charger("good"),
        expired=charger(
            "expired", not_before=now - timedelta(days=60), not_after=now - timedelta(days=30)
        ),
        not_yet_valid=charger(
            "not-yet-valid",
            not_before=now + timedelta(days=30),
            not_after=now + timedelta(days=60),
        ),
        wrong_ca=charger("wrong-ca", issuer=forged_root),
        self_signed=self_signed,
        wrong_cn=charger("wrong-cn", subject_name=subject(f"{cid}-OTHER", cpo)),
        wrong_o=charger("wrong-o", subject_name=subject(cid, "someone-else-cpo")),
        revoked=revoked,
        crl=crl,
    )


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A fresh set of test certificates in ``tmp_path / "pki"``."""
    return make_pki(tmp_path / "pki")


def make_csr(
    key: PrivateKey,
    cn: str | None,
    o: str | None = CPO,
    *,
    algorithm: hashes.HashAlgorithm | None = None,
) -> bytes:
    """A PEM CSR for ``key`` with the given subject (``None`` leaves an attribute out);
    ``algorithm`` may be a weak one (SHA-1) for refusal tests."""
    request = x509.CertificateSigningRequestBuilder().subject_name(subject(cn, o))
    signed = request.sign(key, algorithm or hashes.SHA256())  # type: ignore[arg-type]
    return signed.public_bytes(serialization.Encoding.PEM)


# --- openssl-made variants (interop) ---------------------------------------------------------


def openssl() -> str:
    """The ``openssl`` binary (Debian's package ``openssl``; ``scripts/test`` needs it)."""
    path = shutil.which("openssl")
    if path is None:
        pytest.fail("the openssl binary is not on PATH: install Debian's openssl package")
    return path


def _run(*argv: str, cwd: Path) -> None:
    done = subprocess.run(
        [openssl(), *argv], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {argv[0]} failed: {done.stderr.strip()}")


def _subj(cn: str | None, o: str | None) -> str:
    parts = []
    if o is not None:
        parts.append(f"/O={o}")
    if cn is not None:
        parts.append(f"/CN={cn}")
    return "".join(parts) or "/"


def _newkey_args(key_type: KeyType, bits: int) -> list[str]:
    if key_type == "rsa":
        return ["-newkey", f"rsa:{bits}"]
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]


def openssl_csr(
    directory: Path,
    name: str,
    cn: str | None,
    o: str | None = CPO,
    *,
    key_type: KeyType = "ec",
    bits: int = 2048,
    digest: str = "sha256",
    newkey: list[str] | None = None,
    addext: Sequence[str] = (),
) -> tuple[Path, Path]:
    """``openssl req -new``: a fresh key and a CSR for it; returns (csr path, key path).

    ``newkey`` replaces the key arguments (e.g. ``["-newkey", "ed25519"]``); each ``addext``
    is an extension for the request (``basicConstraints=critical,CA:TRUE``)."""
    directory.mkdir(parents=True, exist_ok=True)
    csr, key = directory / f"{name}.csr", directory / f"{name}.key"
    extensions = [arg for ext in addext for arg in ("-addext", ext)]
    digest_args = [f"-{digest}"] if digest else []
    _run(
        "req",
        "-new",
        *(newkey or _newkey_args(key_type, bits)),
        "-nodes",
        *digest_args,
        *extensions,
        "-subj",
        _subj(cn, o),
        "-keyout",
        str(key),
        "-out",
        str(csr),
        cwd=directory,
    )
    return csr, key


_CA_CONFIG = """\
[ ca ]
default_ca = test_ca
[ test_ca ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir
serial = $dir/serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
email_in_dn = no
x509_extensions = client_ext
[ anything ]
organizationName = optional
commonName = optional
[ client_ext ]
basicConstraints = critical, CA:FALSE
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
"""


def openssl_mint(
    pki: Pki,
    charger_id: str,
    *,
    cn: str | None = None,
    o: str | None = None,
    key_type: KeyType = "ec",
    bits: int = 2048,
    start: datetime | None = None,
    end: datetime | None = None,
    issuer: Authority | None = None,
    name: str | None = None,
) -> Credential:
    """A charger certificate made entirely by ``openssl`` (``req`` for key and CSR, ``ca``
    to sign with the charger CA or ``issuer``): CN/O as :meth:`Pki.mint` makes them."""
    pki._minted += 1
    name = name or f"openssl-{charger_id}-{pki._minted}"
    work = pki.directory / f"{name}.ca"
    work.mkdir()
    (work / "index.txt").write_text("")
    (work / "serial").write_text(f"{x509.random_serial_number():040X}\n")
    config = work / "ca.cnf"
    config.write_text(_CA_CONFIG.format(dir=work))
    org = pki.cpo if o is None else o
    csr, key_path = openssl_csr(
        work,
        "request",
        cn if cn is not None else charger_id,
        org or None,
        key_type=key_type,
        bits=bits,
    )
    authority = issuer or pki.charger_root
    start = start or pki.now - timedelta(hours=1)
    end = end or pki.now + timedelta(days=365)
    cert_path = pki.directory / f"{name}.pem"
    _run(
        "ca",
        "-batch",
        "-config",
        str(config),
        "-cert",
        str(authority.cert_path),
        "-keyfile",
        str(authority.key_path),
        "-in",
        str(csr),
        "-out",
        str(cert_path),
        "-notext",
        "-startdate",
        start.strftime("%Y%m%d%H%M%SZ"),
        "-enddate",
        end.strftime("%Y%m%d%H%M%SZ"),
        cwd=work,
    )
    final_key = pki.directory / f"{name}.key"
    final_key.write_bytes(key_path.read_bytes())
    final_key.chmod(0o600)
    key = serialization.load_pem_private_key(final_key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    return Credential(
        cert_path, final_key, x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    )


def openssl_crl(pki: Pki, revoked: Credential, *, der: bool = False) -> Path:
    """A CRL made by ``openssl ca -revoke`` / ``-gencrl`` listing ``revoked`` (made by
    :func:`openssl_mint`, whose CA database it uses), signed by the charger CA; PEM or DER."""
    work = pki.directory / f"{revoked.cert_path.stem}.ca"
    config = work / "ca.cnf"
    ca = ["-config", str(config), "-cert", str(pki.charger_ca), "-keyfile", str(pki.charger_ca_key)]
    _run("ca", *ca, "-revoke", str(revoked.cert_path), cwd=work)
    pem = work / "crl.pem"
    _run("ca", *ca, "-gencrl", "-crldays", "7", "-out", str(pem), cwd=work)
    if not der:
        return pem
    out = work / "crl.der"
    _run("crl", "-in", str(pem), "-outform", "DER", "-out", str(out), cwd=work)
    return out
