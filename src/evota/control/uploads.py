"""Files chargers upload to evota (GetDiagnostics, GetLog): upload tokens and storage.

A charger cannot send an Authorization header with its upload, so, as for firmware
downloads, the grant lives in the URL: an HMAC-signed token bound to one charger, one kind
(``diagnostics`` or ``log``) and, for GetLog, the request id, valid until it expires. Tokens
are stateless; the key sits next to the firmware download key in the data directory. Tokens
are sealed by :mod:`evota.signed_tokens` under their own :data:`DOMAIN`, so neither an upload
nor a download token can stand in for the other::

    0x02 | expires_at u64 BE | kind u8 | has_request_id u8 | request_id i64 BE
         | len u8 | charger_id | nonce (8 random bytes)
         | HMAC-SHA-256(key, DOMAIN || everything before)[:16]

A token stores one file: the file id is derived from the token's MAC (:func:`upload_id`),
so a retry of the same upload replaces that file instead of adding another, and a leaked
URL cannot be used to fill the disk with files during its lifetime. The nonce makes every
issued URL distinct, so two requests never share a file. (Version 1 tokens, without the
nonce, are still accepted until they expire, also as one file each.)

Files are streamed to ``data_dir/uploads/<file id>`` under a name evota chose (never the
charger's), counted against ``upload_max_bytes`` as they arrive, and only become visible (a
``ChargerFile`` row) once complete; a refused or broken upload leaves nothing behind (and
leaves an earlier upload with the same token as it was). Files are private (0600 in 0700).
With the S3 store (``EVOTA_FIRMWARE_STORE=s3://...``) they go to ``uploads/<file id>`` in the
bucket instead, streamed as a multipart upload, so every node can serve them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import struct
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from evota import signed_tokens
from evota.clock import Clock
from evota.files import FILE_MODE, private_dir
from evota.firmware.storage import StoreUnavailable, TooLarge
from evota.signed_tokens import TAG_BYTES, TokenExpired, TokenInvalid
from evota.store.models import ChargerFile

if TYPE_CHECKING:
    from evota.firmware.s3_storage import S3Files

__all__ = [
    "DOMAIN",
    "KEY_FILE",
    "KINDS",
    "ChargerUploads",
    "FileTooLarge",
    "UploadGrant",
    "issue",
    "upload_id",
    "verify",
]

VERSION: Final = 2
NONCE_BYTES: Final = 8
KINDS: Final = ("diagnostics", "log")
MAX_TOKEN_CHARS: Final = signed_tokens.max_chars(1 + 8 + 1 + 1 + 8 + 1 + 255 + NONCE_BYTES)
PREFIX: Final = "/api/v1/uploads"
KEY_FILE: Final = "upload-token.key"  # in the data directory (evota.files.load_key)

DOMAIN: Final = b"evota/charger-upload-token\x00"
_HEADER = struct.Struct(">BQBBq")


@dataclass(frozen=True, slots=True)
class UploadGrant:
    """``charger_id`` may upload one ``kind`` file (for ``request_id``) until ``expires_at``
    (Unix seconds, exclusive). ``upload_id`` is set by :func:`verify`: the id of the one
    file this token may store."""

    charger_id: str
    kind: str
    request_id: int | None
    expires_at: int
    upload_id: str | None = None


class FileTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the file exceeds the limit of {limit} bytes")
        self.limit = limit


# -- tokens (pure) ------------------------------------------------------------------------------


def upload_id(tag: bytes) -> str:
    """The file id a token stores to: a UUID derived from its MAC (unique per token)."""
    return str(uuid.UUID(bytes=hashlib.sha256(b"evota/upload-file\x00" + tag).digest()[:16]))


def issue(grant: UploadGrant, key: bytes, *, nonce: bytes | None = None) -> str:
    """Sign ``grant`` into a URL-safe token; ``ValueError`` for a grant it cannot encode.

    ``nonce`` (random by default) makes each token, and so the file it stores, distinct.
    """
    signed_tokens.check_keys(key)
    if grant.kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    charger = grant.charger_id.encode("utf-8")
    if not 1 <= len(charger) <= 255:
        raise ValueError("charger_id must be 1..255 UTF-8 bytes")
    if not 0 <= grant.expires_at < 2**64:
        raise ValueError("expires_at must fit in an unsigned 64-bit integer")
    request_id = grant.request_id
    if request_id is not None and not -(2**63) <= request_id < 2**63:
        raise ValueError("request_id must fit in a signed 64-bit integer")
    body = (
        _HEADER.pack(
            VERSION,
            grant.expires_at,
            KINDS.index(grant.kind),
            request_id is not None,
            request_id or 0,
        )
        + bytes([len(charger)])
        + charger
        + (os.urandom(NONCE_BYTES) if nonce is None else nonce)
    )
    if len(body) != _HEADER.size + 1 + len(charger) + NONCE_BYTES:
        raise ValueError(f"nonce must be {NONCE_BYTES} bytes")
    return signed_tokens.seal(body, key, DOMAIN)


def verify(token: str, key: bytes | Sequence[bytes], *, now: int) -> UploadGrant:
    """The grant in ``token``, or a :class:`~evota.signed_tokens.TokenError` (invalid,
    expired)."""
    keys = signed_tokens.check_keys(key)
    raw = signed_tokens.decode(token, MAX_TOKEN_CHARS)
    nonce_bytes = NONCE_BYTES if raw[:1] == bytes([VERSION]) else 0
    if len(raw) < _HEADER.size + 2 + nonce_bytes + TAG_BYTES or raw[0] not in (1, VERSION):
        raise TokenInvalid("malformed")
    body, tag = signed_tokens.open_sealed(raw, keys, DOMAIN)
    _, expires_at, kind, has_request, request_id = _HEADER.unpack_from(body)
    n = body[_HEADER.size]
    charger = body[_HEADER.size + 1 : len(body) - nonce_bytes]
    if kind >= len(KINDS) or len(charger) != n or n == 0:
        raise TokenInvalid("malformed")
    grant = UploadGrant(
        charger.decode("utf-8", errors="replace"),
        KINDS[kind],
        request_id if has_request else None,
        expires_at,
        upload_id(tag),
    )
    if now >= expires_at:
        raise TokenExpired("expired", None)
    return grant


def base_url(public_url: str | None, host: str, port: int) -> str:
    """Where chargers reach evota's HTTP API: EVOTA_UPLOAD_PUBLIC_URL, else this listener."""
    if public_url:
        return public_url.rstrip("/")
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{host}:{port}"


# -- the shell: URL, storage ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChargerUploads:
    """Upload URLs for remote commands, their tokens checked, the files stored.

    Holds what it uses and nothing more; the runtime builds it once at start with the key
    from :func:`evota.files.load_key`.
    """

    engine: AsyncEngine
    clock: Clock
    key: bytes
    directory: Path  # data_dir/uploads
    base_url: Callable[[], str]  # :func:`base_url` of the running listener
    max_bytes: int
    token_ttl: int
    remote: S3Files | None = None  # the S3 store's bucket (uploads/<file id>), if configured

    def url(self, charger_id: str, kind: str, request_id: int | None = None) -> str:
        """The ``location`` for GetDiagnostics / GetLog: ``POST`` it multipart, or ``PUT`` to
        ``{location}/{filename}``."""
        expires = int(self.clock.now().timestamp()) + self.token_ttl
        token = issue(UploadGrant(charger_id, kind, request_id, expires), self.key)
        return f"{self.base_url()}{PREFIX}/{token}"

    def check(self, token: str) -> UploadGrant:
        """The grant of ``token`` now, or a :class:`~evota.signed_tokens.TokenError`."""
        return verify(token, self.key, now=int(self.clock.now().timestamp()))

    def path_of(self, file_id: str) -> Path:
        """Where a stored file lives; ``file_id`` comes from the database, never from a URL."""
        return self.directory / uuid.UUID(file_id).hex

    async def store(
        self, grant: UploadGrant, filename: str, chunks: AsyncIterator[bytes]
    ) -> dict[str, Any]:
        """Stream ``chunks`` to disk (at most ``max_bytes``), then record the file.

        The file id is the token's (``grant.upload_id``): uploading again with the same token
        replaces the file and its row. Raises :class:`FileTooLarge` (nothing is kept, an
        earlier upload stays) once the limit is passed.
        """
        limit = self.max_bytes
        file_id = grant.upload_id or str(uuid.uuid4())
        if self.remote is not None:
            return await self._store_remote(self.remote, grant, file_id, filename, chunks)
        final = self.path_of(file_id)
        private_dir(final.parent)
        part = final.with_name(f"{final.name}.{uuid.uuid4().hex}.part")  # concurrent retries
        digest = hashlib.sha256()
        size = 0
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            with os.fdopen(fd, "wb") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise FileTooLarge(limit)
                    digest.update(chunk)
                    f.write(chunk)
            part.rename(final)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        try:
            return await self._record(grant, file_id, filename, digest.hexdigest(), size)
        except BaseException:
            final.unlink(missing_ok=True)
            raise

    async def _store_remote(
        self,
        remote: S3Files,
        grant: UploadGrant,
        file_id: str,
        filename: str,
        chunks: AsyncIterator[bytes],
    ) -> dict[str, Any]:
        """:meth:`store` into the bucket: a multipart upload to the file's key, which keeps
        an earlier upload until it completes (and stays untouched when it fails)."""
        key = remote.location.key("uploads", uuid.UUID(file_id).hex)
        try:
            sha256, size = await remote.upload(key, chunks, max_bytes=self.max_bytes)
        except TooLarge:
            raise FileTooLarge(self.max_bytes) from None
        try:
            return await self._record(grant, file_id, filename, sha256, size)
        except BaseException:
            await _blocking_delete(remote, key)
            raise

    async def open_remote(self, file_id: str) -> AsyncIterator[bytes] | None:
        """A stored file's bytes from the bucket (None: gone); S3 store only."""
        assert self.remote is not None
        return await self.remote.stream(self.remote.location.key("uploads", uuid.UUID(file_id).hex))

    async def _record(
        self, grant: UploadGrant, file_id: str, filename: str, sha256: str, size: int
    ) -> dict[str, Any]:
        """The file's row: inserted, or updated for a retry with the same token."""
        row = {
            "id": file_id,
            "charger_id": grant.charger_id,
            "kind": grant.kind,
            "request_id": grant.request_id,
            "filename": filename,
            "sha256": sha256,
            "size": size,
            "created_at": self.clock.now(),
        }
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(ChargerFile).values(**row))
        except IntegrityError:  # a retry with the same token: the new file replaced the old
            async with self.engine.begin() as conn:
                values = {k: v for k, v in row.items() if k != "id"}
                await conn.execute(
                    update(ChargerFile).where(ChargerFile.id == file_id).values(**values)
                )
            row["replaced"] = True
        return row


async def _blocking_delete(remote: S3Files, key: str) -> None:
    """Remove an object whose row could not be written (best effort: it is unreachable)."""
    with contextlib.suppress(StoreUnavailable):
        await asyncio.to_thread(remote.delete, key)
