"""``evota firmware``: the firmware repository on a running server, and offline signing.

``add``, ``import``, ``list``, ``show``, ``release``, ``deprecate``, ``revoke``, ``vendor``
and ``trust`` talk to the REST API (``--url``/``--token`` or ``EVOTA_URL``/``EVOTA_TOKEN``);
``keygen``, ``sign`` and ``verify`` are a thin shell over ``evota.firmware.signing`` and work
offline. Every failure is one line on stderr and exit code 1, never a traceback, and private
keys only ever go to 0600 files, never to the terminal or the server.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer

from evota.cli_support import (
    JsonOpt,
    LimitOpt,
    OffsetOpt,
    TokenOpt,
    UrlOpt,
    api,
    client,
    fail,
    out,
    page_title,
    print_json,
    query,
    resolve_firmware,
    table,
)
from evota.firmware.lifecycle import UPLOAD_STATES, FirmwareState
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
    help="Firmware repository (add, list, show, lifecycle, vendor policy, trusted roots) "
    "and signing (keygen, sign, verify).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
trust_app = typer.Typer(help="Trusted root certificates per vendor.", no_args_is_help=True)
app.add_typer(trust_app, name="trust")
feed_app = typer.Typer(
    help="Vendors' release feeds: new versions are imported as drafts.", no_args_is_help=True
)
app.add_typer(feed_app, name="feed")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read {what} {path}: {exc.strerror or exc}") from None


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
        raise fail("--ca makes a root; it cannot be combined with --ca-key/--ca-cert")
    if (ca_key is None) != (ca_cert is None):
        raise fail("--ca-key and --ca-cert go together")
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
                raise fail(f"{p} exists (use --force to overwrite)")
        _write_private(key_path, key_pem, force=force)
        _write_public(cert_path, cert_pem, force=force)
        _write_public(pub_path, public_key_pem(cert_pem), force=force)
    except (FirmwareSigningError, ValueError) as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot write to {out_dir}: {exc.strerror or exc}") from None
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
        raise fail(exc.reason) from None
    except OSError as exc:
        raise fail(f"cannot read firmware {file}: {exc.strerror or exc}") from None
    if out is not None:
        try:
            if der:
                out.write_bytes(base64.b64decode(signature))
            else:
                out.write_text(signature + "\n", encoding="ascii")
        except OSError as exc:
            raise fail(f"cannot write {out}: {exc.strerror or exc}") from None
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
        raise fail(exc.reason) from None
    except OSError as exc:
        raise fail(f"cannot read firmware {file}: {exc.strerror or exc}") from None
    chain = " and chains to a trusted root" if roots else " (chain not checked: no --root)"
    typer.echo(f"OK: signature verified{chain}")


# --- the repository on a running server ------------------------------------------------------


def _summary(fw: dict[str, Any]) -> str:
    signed = "signed" if fw["signed"] else "unsigned"
    reason = f" ({fw['state_reason']})" if fw.get("state_reason") else ""
    return f"{fw['id']}  {fw['vendor']} {fw['version']}  {fw['state']}{reason}  {signed}"


def _fw_path(firmware_id: str, suffix: str = "") -> str:
    return f"/api/v1/firmware/{quote(firmware_id, safe='')}{suffix}"


# The image metadata options of `add` and `import` (one definition, one body builder).
VersionOpt = Annotated[str, typer.Option("--version", help="version the charger will report")]
VendorOpt = Annotated[str, typer.Option("--vendor", help="charger vendor (as in BootNotification)")]
ModelOpt = Annotated[list[str], typer.Option("--model", help="compatible model (repeatable)")]
HardwareOpt = Annotated[
    list[str] | None,
    typer.Option("--hardware-revision", help="compatible hardware revision (repeatable)"),
]
SignatureOpt = Annotated[
    str | None, typer.Option("--signature", help="Base64 signature, or a file (Base64 or DER)")
]
CertOpt = Annotated[Path | None, typer.Option("--cert", help="PEM signing certificate")]
NotesOpt = Annotated[str | None, typer.Option("--notes", help="release notes")]
StateOpt = Annotated[str, typer.Option("--state", help=" | ".join(UPLOAD_STATES))]
MinVersionOpt = Annotated[
    str | None, typer.Option("--min-current-version", help="must be installed first")
]
SupersedesOpt = Annotated[
    list[str] | None, typer.Option("--supersedes", help="version this replaces (repeatable)")
]


def _metadata(
    version: str,
    vendor: str,
    model: list[str],
    hardware_revision: list[str] | None,
    signature: str | None,
    cert: Path | None,
    notes: str | None,
    state: str,
    min_current_version: str | None,
    supersedes: list[str] | None,
) -> dict[str, Any]:
    """The API's image metadata from the options; files named by them are read here."""
    data: dict[str, Any] = {
        "vendor": vendor,
        "version": version,
        "models": model,
        "hardware_revisions": hardware_revision or [],
        "state": state,
        "supersedes": supersedes or [],
    }
    if signature is not None:
        data["signature"] = "".join(_signature_arg(signature).split())
    if cert is not None:
        data["signing_certificate"] = _read(cert, "certificate").decode("utf-8", "replace")
    if notes is not None:
        data["release_notes"] = notes
    if min_current_version is not None:
        data["min_current_version"] = min_current_version
    return data


@app.command("add")
def add(
    file: Annotated[Path, typer.Argument(help="firmware image")],
    version: VersionOpt,
    vendor: VendorOpt,
    model: ModelOpt,
    hardware_revision: HardwareOpt = None,
    signature: SignatureOpt = None,
    cert: CertOpt = None,
    notes: NotesOpt = None,
    state: StateOpt = FirmwareState.DRAFT.value,
    min_current_version: MinVersionOpt = None,
    supersedes: SupersedesOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload an image with its metadata; the server checks the signature and hashes it."""
    data = _metadata(
        version, vendor, model, hardware_revision, signature, cert, notes, state,
        min_current_version, supersedes,
    )  # fmt: skip
    try:
        handle = file.open("rb")
    except OSError as exc:
        raise fail(f"cannot read firmware {file}: {exc.strerror or exc}") from None
    with handle:  # httpx streams the file part from the open handle
        fw = api(
            url,
            token,
            "POST",
            "/api/v1/firmware",
            data=data,
            files={"file": (file.name, handle, "application/octet-stream")},
        )
    if as_json:
        return print_json(fw)
    typer.echo(f"added {_summary(fw)}  sha256 {fw['sha256']}")


@app.command("import")
def import_(
    source: Annotated[str, typer.Argument(help="https URL of the image at the vendor")],
    version: VersionOpt,
    vendor: VendorOpt,
    model: ModelOpt,
    hardware_revision: HardwareOpt = None,
    signature: SignatureOpt = None,
    cert: CertOpt = None,
    sha256: Annotated[
        str | None, typer.Option("--sha256", help="expected SHA-256 (hex) of the image")
    ] = None,
    notes: NotesOpt = None,
    state: StateOpt = FirmwareState.DRAFT.value,
    min_current_version: MinVersionOpt = None,
    supersedes: SupersedesOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Have the server fetch an image from the vendor's https URL and add it like ``add``.

    The server refuses non-public addresses, checks the signature against the vendor's
    trusted roots and records where the image came from (see docs/firmware.md).
    """
    body = _metadata(
        version, vendor, model, hardware_revision, signature, cert, notes, state,
        min_current_version, supersedes,
    )  # fmt: skip
    body["url"] = source
    if sha256 is not None:
        body["sha256"] = sha256
    # The server bounds the fetch (EVOTA_FIRMWARE_IMPORT_DEADLINE): wait for its answer.
    fw = api(url, token, "POST", "/api/v1/firmware/import", json=body, timeout=_NO_READ_LIMIT)
    if as_json:
        return print_json(fw)
    source_info = fw.get("source") or {}
    typer.echo(
        f"imported {_summary(fw)}  sha256 {fw['sha256']}  from {source_info.get('url', source)}"
    )


_NO_READ_LIMIT = httpx.Timeout(60.0, read=None)


@feed_app.command("add")
def feed_add(
    feed_url: Annotated[str, typer.Argument(help="https URL of the vendor's JSON feed")],
    vendor: Annotated[str, typer.Option("--vendor", help="the vendor every release is for")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Watch a release feed (see docs/firmware.md for its format)."""
    feed = api(
        url, token, "POST", "/api/v1/firmware/feeds", json={"vendor": vendor, "url": feed_url}
    )
    if as_json:
        return print_json(feed)
    typer.echo(f"feed {feed['id']}  {feed['vendor']}  {feed['url']}")


@feed_app.command("list")
def feed_list(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """The feeds and each one's last check."""
    page = api(url, token, "GET", "/api/v1/firmware/feeds")
    if as_json:
        return print_json(page)
    out.print(
        table(
            f"Feeds ({page['total']})",
            ("id", "vendor", "url", "checked", "last check"),
            (
                (
                    f["id"],
                    f["vendor"],
                    f["url"],
                    f["checked_at"] or "never",
                    _check_line(f["last_result"]),
                )
                for f in page["items"]
            ),
        )
    )


@feed_app.command("remove")
def feed_remove(
    feed_id: Annotated[int, typer.Argument(help="feed id")],
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Stop watching a feed; the images it imported stay."""
    api(url, token, "DELETE", f"/api/v1/firmware/feeds/{feed_id}")
    typer.echo(f"removed feed {feed_id}")


@feed_app.command("check")
def feed_check(
    feed_id: Annotated[int, typer.Argument(help="feed id")],
    retry: Annotated[
        bool, typer.Option("--retry", help="try entries refused before again")
    ] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a feed now and import its new versions as drafts."""
    result = api(
        url,
        token,
        "POST",
        f"/api/v1/firmware/feeds/{feed_id}/check",
        params={"retry": "true"} if retry else None,
        timeout=_NO_READ_LIMIT,
    )
    if as_json:
        return print_json(result)
    typer.echo(_check_line(result))
    for kind in ("created", "refused", "failed"):
        for entry in result[kind]:
            why = entry.get("firmware_id") or f"{entry.get('field')}: {entry.get('detail')}"
            typer.echo(f"  {kind:8} {entry['version']}  {why}")


def _check_line(result: dict[str, Any] | None) -> str:
    if not result:
        return "not checked yet"
    if result.get("error"):
        return f"feed unreadable: {result['error'].get('field')}: {result['error'].get('detail')}"
    return (
        f"{result['releases']} releases: {len(result['created'])} imported, "
        f"{len(result['refused'])} refused, {len(result['failed'])} failed"
    )


@app.command("list")
def list_(
    vendor: Annotated[str | None, typer.Option("--vendor")] = None,
    state: Annotated[str | None, typer.Option("--state")] = None,
    model: Annotated[str | None, typer.Option("--model")] = None,
    version: Annotated[str | None, typer.Option("--version")] = None,
    limit: LimitOpt = 100,
    offset: OffsetOpt = 0,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List images, newest first."""
    params = query(
        vendor=vendor, state=state, model=model, version=version, limit=limit, offset=offset
    )
    page = api(url, token, "GET", "/api/v1/firmware", params=params)
    if as_json:
        return print_json(page)
    out.print(
        table(
            page_title("Firmware", page),
            ("id", "vendor", "version", "state", "models", "signed", "size", "created"),
            (
                (
                    fw["id"],
                    fw["vendor"],
                    fw["version"],
                    fw["state"],
                    ", ".join(fw["models"]) or "any",
                    "yes" if fw["signed"] else "no",
                    fw["size"],
                    fw["created_at"],
                )
                for fw in page["items"]
            ),
        )
    )


@app.command("chargers")
def chargers(
    firmware: Annotated[str, typer.Argument(help="firmware id or version")],
    vendor: Annotated[str | None, typer.Option("--vendor", help="for a version")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 1000,
    offset: OffsetOpt = 0,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The chargers that report running an image (e.g. the ones a revocation leaves)."""
    c = client(url, token)
    fw = resolve_firmware(c, firmware, vendor)
    page = api(
        url,
        token,
        "GET",
        _fw_path(fw["id"], "/chargers"),
        params={"limit": limit, "offset": offset},
    )
    if as_json:
        return print_json(page)
    for charger_id in page["items"]:
        typer.echo(charger_id)
    typer.echo(f"{page['total']} chargers run {fw['vendor']} {fw['version']}", err=True)


@app.command("scorecard")
def scorecard(
    firmware: Annotated[str, typer.Argument(help="firmware id or version")],
    vendor: Annotated[str | None, typer.Option("--vendor", help="for a version")] = None,
    days: Annotated[
        int, typer.Option(min=1, max=366, help="security events of the last N days")
    ] = 30,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Where a version runs, its incidents, the campaigns that shipped it, its predecessor
    (counted over the chargers your grants cover)."""
    c = client(url, token)
    ref = firmware if _UUID.fullmatch(firmware) else resolve_firmware(c, firmware, vendor)["id"]
    card = api(url, token, "GET", _fw_path(ref, "/scorecard"), params={"days": days})
    if as_json:
        return print_json(card)
    fw, running, incidents = card["firmware"], card["running"], card["incidents"]
    out.print(f"{fw['vendor']} {fw['version']} ({fw['state']}), id {fw['id']}", highlight=False)
    prev = card["predecessor"]
    out.print(
        "predecessor: "
        + (f"{prev['version']} ({prev['state']}), id {prev['id']}" if prev else "none"),
        highlight=False,
    )
    out.print(f"running on {running['total']} chargers", highlight=False)
    for key, label in (("by_model", "model"), ("by_site", "site_id"), ("by_region", "region")):
        if running[key]:
            rows = [(r[label], r["chargers"]) for r in running[key]]
            out.print(table(f"By {label.removesuffix('_id')}", (label, "chargers"), rows))
    jobs = ", ".join(f"{k} {n}" for k, n in incidents["update_jobs"].items()) or "none"
    out.print(f"update jobs: {jobs}", highlight=False)
    for r in incidents["failed_by_reason"]:
        out.print(f"  failed, {r['reason']}: {r['jobs']}", highlight=False)
    for key, label in (("rollbacks_to", "rollbacks to it"), ("rollbacks_away", "rollbacks away")):
        n = ", ".join(f"{k} {v}" for k, v in incidents[key].items()) or "none"
        out.print(f"{label}: {n}", highlight=False)
    events = ", ".join(f"{e['type']} {e['events']}" for e in incidents["security_events"])
    out.print(
        f"security events (last {incidents['security_days']} days): {events or 'none'}",
        highlight=False,
    )
    shipped = [
        (x["name"], x["state"], x["chargers"], ", ".join(f"{k} {n}" for k, n in x["jobs"].items()))
        for x in card["campaigns"]
    ]
    out.print(table("Campaigns", ("name", "state", "chargers", "jobs"), shipped))


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@app.command("show")
def show(
    firmware_id: Annotated[str, typer.Argument(help="firmware id")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One image with its metadata and how many chargers run it."""
    fw = api(url, token, "GET", _fw_path(firmware_id))
    if as_json:
        return print_json(fw)
    for key in (
        "id",
        "vendor",
        "version",
        "state",
        "state_reason",
        "models",
        "hardware_revisions",
        "sha256",
        "size",
        "filename",
        "signed",
        "min_current_version",
        "supersedes",
        "chargers_running",
        "created_at",
        "updated_at",
    ):
        value = fw[key]
        if isinstance(value, list):
            value = ", ".join(value) or ("" if key == "supersedes" else "any")
        typer.echo(f"{key + ':':21}{'' if value is None else value}")
    source = fw.get("source")
    if source:
        for key in ("url", "host", "address", "certificate_sha256", "fetched_at", "fetched_by"):
            label = f"source {key}:"
            typer.echo(f"{label:21}{source[key] or ''}")
    if fw["release_notes"]:
        typer.echo("release notes:\n" + fw["release_notes"])


def _transition(
    url: str | None,
    token: str | None,
    firmware_id: str,
    state: str,
    reason: str | None,
    as_json: bool,
) -> None:
    body: dict[str, Any] = {"state": state}
    if reason is not None:
        body["reason"] = reason
    fw = api(url, token, "POST", _fw_path(firmware_id, "/state"), json=body)
    if as_json:
        return print_json(fw)
    typer.echo(_summary(fw))


ReasonOpt = Annotated[str | None, typer.Option("--reason", help="why (kept with the image)")]


@app.command("release")
def release(
    firmware_id: str,
    reason: ReasonOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Mark an image released (from draft, pilot or deprecated)."""
    _transition(url, token, firmware_id, FirmwareState.RELEASED, reason, as_json)


@app.command("pilot")
def pilot(
    firmware_id: str,
    reason: ReasonOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Mark a draft image as in pilot."""
    _transition(url, token, firmware_id, FirmwareState.PILOT, reason, as_json)


@app.command("deprecate")
def deprecate(
    firmware_id: str,
    reason: ReasonOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deprecate a released image (no longer offered for new updates)."""
    _transition(url, token, firmware_id, FirmwareState.DEPRECATED, reason, as_json)


@app.command("revoke")
def revoke(
    firmware_id: str,
    reason: Annotated[str, typer.Option("--reason", help="why (required)")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke an image for good: downloads stop and pending update jobs are cancelled.

    Usually waits for a second operator's approval (``evota approval list``)."""
    fw = api(url, token, "POST", _fw_path(firmware_id, "/revoke"), json={"reason": reason})
    if as_json:
        return print_json(fw)
    if fw.get("state") == "awaiting_approval":
        typer.echo(
            f"{firmware_id}: revocation waits for a second operator "
            f"(approval {fw['approval_id']}; evota approval list)"
        )
        return
    typer.echo(_summary(fw))


@app.command("vendor")
def vendor_policy(
    vendor: Annotated[str, typer.Argument(help="vendor name")],
    allow_unsigned: Annotated[
        bool | None,
        typer.Option(
            "--allow-unsigned/--require-signed",
            help="accept unsigned images of this vendor, or require signatures again",
        ),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show or set a vendor's signing policy (unsigned images are refused by default)."""
    if allow_unsigned is None:
        page = api(url, token, "GET", "/api/v1/firmware/vendors")
        found = [p for p in page["items"] if p["vendor"].casefold() == vendor.casefold()]
        policy = found[0] if found else {"vendor": vendor, "allow_unsigned": False}
    else:
        path = f"/api/v1/firmware/vendors/{quote(vendor, safe='')}"
        policy = api(url, token, "PUT", path, json={"allow_unsigned": allow_unsigned})
    if as_json:
        return print_json(policy)
    rule = "accepts unsigned images" if policy["allow_unsigned"] else "requires signed images"
    typer.echo(f"{policy['vendor']}: {rule}")


@trust_app.command("add")
def trust_add(
    cert: Annotated[Path, typer.Argument(help="PEM CA certificate")],
    vendor: Annotated[str, typer.Option("--vendor", help="vendor whose images it vouches for")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Trust a root CA to issue a vendor's firmware signing certificates."""
    pem = _read(cert, "certificate").decode("utf-8", "replace")
    root = api(
        url,
        token,
        "POST",
        "/api/v1/firmware/trusted-roots",
        json={"vendor": vendor, "certificate": pem},
    )
    if as_json:
        return print_json(root)
    typer.echo(f"trusted root {root['id']} for {root['vendor']}: {root['subject']}")


@trust_app.command("list")
def trust_list(
    vendor: Annotated[str | None, typer.Option("--vendor")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List trusted roots."""
    params = {"vendor": vendor} if vendor else {}
    page = api(url, token, "GET", "/api/v1/firmware/trusted-roots", params=params)
    if as_json:
        return print_json(page)
    if not page["items"]:
        typer.echo("no trusted roots")
        return None
    out.print(
        table(
            f"Trusted roots ({page['total']})",
            ("id", "vendor", "subject", "until", "sha256"),
            (
                (r["id"], r["vendor"], r["subject"], r["not_after"], r["fingerprint"])
                for r in page["items"]
            ),
        )
    )


@trust_app.command("remove")
def trust_remove(
    root_id: Annotated[int, typer.Argument(help="trusted root id (see trust list)")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop trusting a root (images already accepted stay)."""
    api(url, token, "DELETE", f"/api/v1/firmware/trusted-roots/{root_id}")
    if as_json:
        return print_json({"id": root_id, "removed": True})
    typer.echo(f"removed trusted root {root_id}")
