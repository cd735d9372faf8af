"""``evota firmware``: make signing keys, sign firmware images, verify them like a charger would.

A thin shell over ``evota.firmware.signing``: every failure is one line on stderr and exit
code 1, never a traceback, and private keys only ever go to 0600 files, never to the terminal.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
from pathlib import Path
from typing import Annotated

import typer

from evota.firmware.signing import (
    FirmwareSigningError,
    generate_ca,
    generate_signing_key,
    public_key_pem,
    sign_file,
    verify_certificate,
    verify_file,
)

app = typer.Typer(
    help="Signed firmware: keygen, sign, verify (OCPP SignedUpdateFirmware / UpdateFirmware).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _fail(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _write_private(path: Path, data: bytes, *, force: bool) -> None:
    """Create the key file 0600 from the start, so it is never briefly world-readable."""
    if force:
        path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_public(path: Path, data: bytes, *, force: bool) -> None:
    if path.exists() and not force:
        raise FileExistsError(path)
    path.write_bytes(data)


@app.command()
def keygen(
    cn: Annotated[str, typer.Option("--cn", help="certificate common name")],
    org: Annotated[str, typer.Option("--org", help="certificate organization")],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="directory for the PEM files")],
    ca: Annotated[bool, typer.Option("--ca", help="make a manufacturer root CA instead")] = False,
    ca_key: Annotated[
        Path | None, typer.Option("--ca-key", help="issue the certificate with this CA key")
    ] = None,
    ca_cert: Annotated[
        Path | None, typer.Option("--ca-cert", help="certificate of --ca-key")
    ] = None,
    days: Annotated[int, typer.Option("--days", min=1, help="certificate lifetime")] = 3650,
    force: Annotated[bool, typer.Option("--force", help="overwrite existing files")] = False,
) -> None:
    """Make an ECDSA P-256 key and certificate: self-signed, CA-issued, or a root (--ca).

    Writes NAME.key.pem (mode 0600), NAME.cert.pem and NAME.pub.pem (for openssl dgst), with
    NAME "ca" for --ca and "signing" otherwise.
    """
    if ca and (ca_key or ca_cert):
        raise _fail("--ca makes a root; it cannot be combined with --ca-key/--ca-cert")
    if (ca_key is None) != (ca_cert is None):
        raise _fail("--ca-key and --ca-cert go together")
    try:
        if ca:
            key_pem, cert_pem = generate_ca(cn, org, days)
        elif ca_key is not None and ca_cert is not None:
            key_pem, cert_pem = generate_signing_key(
                cn,
                org,
                ca_key=_read(ca_key, "CA key"),
                ca_cert=_read(ca_cert, "CA certificate"),
                days=days,
            )
        else:
            key_pem, cert_pem = generate_signing_key(cn, org, days=days)
        name = "ca" if ca else "signing"
        out_dir.mkdir(parents=True, exist_ok=True)
        key_path = out_dir / f"{name}.key.pem"
        cert_path = out_dir / f"{name}.cert.pem"
        pub_path = out_dir / f"{name}.pub.pem"
        for p in (key_path, cert_path, pub_path):
            if p.exists() and not force:
                raise _fail(f"{p} exists (use --force to overwrite)")
        _write_private(key_path, key_pem, force=force)
        _write_public(cert_path, cert_pem, force=force)
        _write_public(pub_path, public_key_pem(cert_pem), force=force)
    except (FirmwareSigningError, ValueError) as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot write to {out_dir}: {exc.strerror or exc}") from None
    typer.echo(f"key:         {key_path} (0600, keep it secret)")
    typer.echo(f"certificate: {cert_path}")
    typer.echo(f"public key:  {pub_path}")


@app.command()
def sign(
    file: Annotated[Path, typer.Argument(help="firmware image")],
    key: Annotated[Path, typer.Option("--key", help="PEM private key (ECDSA or RSA)")],
    out: Annotated[Path | None, typer.Option("--out", help="also write the signature here")] = None,
    der: Annotated[
        bool, typer.Option("--der", help="write --out as raw DER (for openssl) not Base64")
    ] = False,
) -> None:
    """Print the Base64 signature (OCPP ``signature``) over the file's SHA-256."""
    key_pem = _read(key, "key")
    try:
        signature = sign_file(file, key_pem)
    except FirmwareSigningError as exc:
        raise _fail(exc.reason) from None
    except OSError as exc:
        raise _fail(f"cannot read firmware {file}: {exc.strerror or exc}") from None
    if out is not None:
        try:
            if der:
                out.write_bytes(base64.b64decode(signature))
            else:
                out.write_text(signature + "\n", encoding="ascii")
        except OSError as exc:
            raise _fail(f"cannot write {out}: {exc.strerror or exc}") from None
    typer.echo(signature)


def _signature_arg(value: str) -> str:
    """A signature given as Base64 text, or as a file holding Base64 text or raw DER."""
    path = Path(value)
    try:
        is_file = path.is_file()
    except OSError:  # e.g. a Base64 string too long to be a file name
        is_file = False
    if not is_file:
        return value
    data = _read(path, "signature file")
    try:
        text = data.decode("ascii")
        base64.b64decode("".join(text.split()), validate=True)
        return text
    except ValueError:  # not ASCII Base64: treat the file as the raw (DER) signature
        return base64.b64encode(data).decode("ascii")


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(help="firmware image")],
    signature: Annotated[
        str, typer.Option("--signature", help="Base64 signature, or a file (Base64 or DER)")
    ],
    cert: Annotated[Path, typer.Option("--cert", help="PEM signing certificate")],
    root: Annotated[
        list[Path] | None,
        typer.Option("--root", help="trusted root PEM (repeatable); checks the chain"),
    ] = None,
) -> None:
    """Verify like a charger: signature over the file, and (with --root) the certificate chain."""
    cert_pem = _read(cert, "certificate")
    signature_b64 = _signature_arg(signature)
    roots = [_read(r, "root certificate") for r in root or []]
    now = dt.datetime.now(dt.UTC)
    try:
        if roots:
            verify_certificate(cert_pem, roots, now)
        verify_file(file, signature_b64, cert_pem, at=now)
    except FirmwareSigningError as exc:
        raise _fail(exc.reason) from None
    except OSError as exc:
        raise _fail(f"cannot read firmware {file}: {exc.strerror or exc}") from None
    chain = " and chains to a trusted root" if roots else " (chain not checked: no --root)"
    typer.echo(f"OK: signature verified{chain}")
