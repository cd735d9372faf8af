"""Taking an uploaded image into the repository: what is accepted, the trust policy, storing.

The API streams the file into the content-addressed store and validates the form fields;
here the image is judged: not empty, not a version the vendor already has, and either
signed by a certificate a trusted root of the vendor issued (the signature checked against
the stored file) or unsigned for a vendor whose policy allows it. Refusals are
:class:`IntakeError` (what went wrong, what to do, which field) and the repository's own
errors; the API maps them to problem responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.firmware import repository as repo
from evota.firmware import signing
from evota.firmware.lifecycle import FirmwareState
from evota.firmware.storage import FirmwareStore, LocalFirmwareStore, StoredBlob

__all__ = ["IntakeError", "Refusal", "Submission", "accept", "discard"]


class Refusal(enum.StrEnum):
    """Why an upload was refused (the API gives each its status and title)."""

    EMPTY_FILE = "empty_file"
    EXISTS = "exists"
    UNSIGNED = "unsigned"
    INCOMPLETE_SIGNATURE = "incomplete_signature"  # a signature without its certificate, or so
    INVALID_SIGNATURE = "invalid_signature"
    INVALID_CERTIFICATE = "invalid_certificate"
    UNTRUSTED_CERTIFICATE = "untrusted_certificate"
    RACED = "raced"  # the stored file vanished under a concurrent refused upload


class IntakeError(Exception):
    """An upload refused: ``refusal`` says why, ``detail`` what to do, ``field`` where."""

    def __init__(self, refusal: Refusal, detail: str, field: str) -> None:
        super().__init__(detail)
        self.refusal = refusal
        self.detail = detail
        self.field = field


@dataclass(frozen=True, slots=True)
class Submission:
    """An upload's metadata, validated by the API (blank signature fields are None)."""

    vendor: str
    version: str
    models: Sequence[str]
    hardware_revisions: Sequence[str] = ()
    signature: str | None = None
    signing_certificate: str | None = None
    release_notes: str = ""
    state: str = FirmwareState.DRAFT
    min_current_version: str | None = None
    supersedes: Sequence[str] = ()
    filename: str | None = None  # a label only (evota.files.safe_filename)
    source: repo.Source | None = None  # an import's origin (evota.firmware.importer)


_blob_locks: weakref.WeakKeyDictionary[FirmwareStore, asyncio.Lock] = weakref.WeakKeyDictionary()


def _blob_lock(store: FirmwareStore) -> asyncio.Lock:
    """Serialises "is this blob still referenced? then delete it" against new references."""
    lock = _blob_locks.get(store)
    if lock is None:
        lock = _blob_locks[store] = asyncio.Lock()
    return lock


#: The class of PostgreSQL advisory locks (two-int form: ``evfb``, then the digest's first
#: 32 bits) that serialize the decisions about one blob across the nodes of a cluster.
BLOB_LOCK_CLASS: Final = 0x65766662


def blob_lock_key(sha256: str) -> tuple[int, int]:
    """The advisory lock of a blob: (class, the digest's first 32 bits as a signed int4)."""
    return BLOB_LOCK_CLASS, int(sha256[:8], 16) - 2**31


@contextlib.asynccontextmanager
async def _blob_guard(
    engine: AsyncEngine, store: FirmwareStore, sha256: str
) -> AsyncIterator[None]:
    """Hold "is the blob referenced? then delete it" and "is the blob there? then add its
    image" apart. In one process a lock per store does; nodes sharing a bucket (S3) also take
    the blob's transaction advisory lock in PostgreSQL, held to the end of the block (a
    connection of its own; a lost connection releases it). Without it a node could delete
    the object another node's image row was just committed with. A local store belongs to
    one node, which needs no more than its own lock (no extra connection: the default
    single node costs what it did)."""
    async with _blob_lock(store):
        if engine.dialect.name != "postgresql" or isinstance(store, LocalFirmwareStore):
            yield
            return
        cls, key = blob_lock_key(sha256)
        async with engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:c, :k)"), {"c": cls, "k": key})
            try:
                yield
            finally:
                await conn.rollback()  # ends the transaction: the lock goes with it


async def discard(engine: AsyncEngine, store: FirmwareStore, blob: StoredBlob) -> None:
    """Remove a blob a refused upload created, unless an image references it by now."""
    if not blob.created:
        return
    async with _blob_guard(engine, store, blob.sha256):
        if not await repo.sha256_in_use(engine, blob.sha256):
            await store.delete(blob.sha256)


async def check_trust(
    engine: AsyncEngine,
    store: FirmwareStore,
    submission: Submission,
    blob: StoredBlob,
    now: dt.datetime,
) -> None:
    """The trust policy: a vendor's images are signed by a certificate one of its trusted
    roots issued, over these very bytes, unless the vendor allows unsigned images."""
    vendor = submission.vendor
    signature, certificate = submission.signature, submission.signing_certificate
    if signature is None and certificate is None:
        if not await repo.allows_unsigned(engine, vendor):
            raise IntakeError(
                Refusal.UNSIGNED,
                f"unsigned firmware is refused for vendor {vendor}: send signature and "
                "signing_certificate, or allow unsigned images with "
                f"PUT /api/v1/firmware/vendors/{vendor}",
                "signature",
            )
        return
    if signature is None:
        raise IntakeError(
            Refusal.INCOMPLETE_SIGNATURE, "signature is required with a certificate", "signature"
        )
    if certificate is None:
        raise IntakeError(
            Refusal.INCOMPLETE_SIGNATURE,
            "signing_certificate is required with a signature",
            "signing_certificate",
        )
    cert_pem = certificate.encode("utf-8")
    try:
        signing.decode_signature(signature)
    except signing.SignatureError as exc:
        raise IntakeError(Refusal.INVALID_SIGNATURE, exc.reason, "signature") from None
    try:
        signing.public_key_pem(cert_pem)
    except signing.CertificateError as exc:
        raise IntakeError(Refusal.INVALID_CERTIFICATE, exc.reason, "signing_certificate") from None
    roots = await repo.trusted_root_pems(engine, vendor)
    if not roots:
        raise IntakeError(
            Refusal.UNTRUSTED_CERTIFICATE,
            f"no trusted roots are configured for vendor {vendor}: add one with "
            "POST /api/v1/firmware/trusted-roots",
            "signing_certificate",
        )
    try:
        await asyncio.to_thread(signing.verify_certificate, cert_pem, roots, now)
    except signing.CertificateError as exc:
        raise IntakeError(
            Refusal.UNTRUSTED_CERTIFICATE,
            f"certificate is not issued by a trusted root for vendor {vendor}: {exc.reason}",
            "signing_certificate",
        ) from None
    if not await store.exists(blob.sha256):
        raise IntakeError(Refusal.RACED, "the stored file vanished; upload again", "file")
    # The store hashed the bytes while taking them in (the blob's key): the signature is
    # checked over that digest, with no second read of the file (it may be in S3).
    digest = bytes.fromhex(blob.sha256)
    try:
        await asyncio.to_thread(signing.verify_digest, digest, signature, cert_pem, at=now)
    except signing.SignatureError as exc:
        raise IntakeError(
            Refusal.INVALID_SIGNATURE,
            f"signature does not match the file: {exc.reason}",
            "signature",
        ) from None


async def accept(
    engine: AsyncEngine,
    store: FirmwareStore,
    submission: Submission,
    blob: StoredBlob,
    now: dt.datetime,
) -> repo.FirmwareRecord:
    """Judge a stored upload and add it to the repository; :class:`IntakeError` or a
    :class:`~evota.firmware.repository.RepositoryError` when refused (the caller then
    :func:`discard`\\ s the blob)."""
    if blob.size == 0:
        raise IntakeError(Refusal.EMPTY_FILE, "the firmware file is empty", "file")
    if await repo.version_exists(engine, submission.vendor, submission.version):
        raise IntakeError(
            Refusal.EXISTS,
            f"{submission.vendor} firmware {submission.version} exists",
            "version",
        )
    await check_trust(engine, store, submission, blob, now)
    signature = submission.signature
    new = repo.NewFirmware(
        vendor=submission.vendor,
        version=submission.version,
        sha256=blob.sha256,
        size=blob.size,
        models=submission.models,
        hardware_revisions=submission.hardware_revisions,
        filename=submission.filename,
        state=submission.state,
        signature="".join(signature.split()) if signature else None,
        signing_certificate=submission.signing_certificate,
        release_notes=submission.release_notes,
        min_current_version=submission.min_current_version,
        supersedes=submission.supersedes,
        source=submission.source,
    )
    async with _blob_guard(engine, store, blob.sha256):
        # A concurrent refused upload of the same bytes (here or on another node) may have
        # deleted the blob after our put found it already stored; never insert an image
        # without its file.
        if not await store.exists(blob.sha256):
            raise IntakeError(Refusal.RACED, "the stored file vanished; upload again", "file")
        return await repo.add_firmware(engine, new, now)
