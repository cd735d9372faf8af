"""Files chargers upload to evota (GetDiagnostics, GetLog): upload tokens and storage.

A charger cannot send an Authorization header with its upload, so, as for firmware
downloads, the grant lives in the URL: an HMAC-signed token bound to one charger, one kind
(``diagnostics`` or ``log``) and, for GetLog, the request id, valid until it expires. Tokens
are stateless; the key sits next to the firmware download key in the data directory. The
format mirrors :mod:`evota.firmware.tokens` (and reuses its errors) with its own MAC domain,
so neither kind of token can stand in for the other::

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
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError

from evota.files import FILE_MODE, private_dir
from evota.firmware.tokens import (
    MIN_KEY_BYTES,
    TokenError,
    TokenExpired,
    TokenInvalid,
    TokenWrongCharger,
    new_key,
)
from evota.store.models import ChargerFile

if TYPE_CHECKING:
    from evota.runtime import Runtime

__all__ = [
    "KINDS",
    "FileTooLarge",
    "TokenError",
    "TokenExpired",
    "TokenInvalid",
    "TokenWrongCharger",
    "UploadGrant",
    "issue",
    "safe_filename",
    "store",
    "upload_id",
    "upload_url",
    "verify",
]

VERSION: Final = 2
NONCE_BYTES: Final = 8
TAG_BYTES: Final = 16
KINDS: Final = ("diagnostics", "log")
MAX_TOKEN_CHARS: Final = 4 * -(-(1 + 8 + 1 + 1 + 8 + 1 + 255 + NONCE_BYTES + TAG_BYTES) // 3)
PREFIX: Final = "/api/v1/uploads"

_DOMAIN: Final = b"evota/charger-upload-token\x00"
_HEADER = struct.Struct(">BQBBq")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._+-]")


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


def _tag(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, _DOMAIN + body, hashlib.sha256).digest()[:TAG_BYTES]


def upload_id(tag: bytes) -> str:
    """The file id a token stores to: a UUID derived from its MAC (unique per token)."""
    return str(uuid.UUID(bytes=hashlib.sha256(b"evota/upload-file\x00" + tag).digest()[:16]))


def issue(grant: UploadGrant, key: bytes, *, nonce: bytes | None = None) -> str:
    """Sign ``grant`` into a URL-safe token; ``ValueError`` for a grant it cannot encode.

    ``nonce`` (random by default) makes each token, and so the file it stores, distinct.
    """
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"token key must be at least {MIN_KEY_BYTES} bytes")
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
    return base64.urlsafe_b64encode(body + _tag(key, body)).rstrip(b"=").decode("ascii")


def _decode(token: str) -> bytes:
    if len(token) > MAX_TOKEN_CHARS or not _B64URL.fullmatch(token) or len(token) % 4 == 1:
        raise TokenInvalid("malformed")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise TokenInvalid("malformed") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != token.encode("ascii"):
        raise TokenInvalid("malformed")  # only the canonical spelling verifies
    return raw


def verify(token: str, key: bytes, *, now: int) -> UploadGrant:
    """The grant in ``token``, or a :class:`TokenError` (invalid, expired)."""
    raw = _decode(token)
    nonce_bytes = NONCE_BYTES if raw[:1] == bytes([VERSION]) else 0
    if len(raw) < _HEADER.size + 2 + nonce_bytes + TAG_BYTES or raw[0] not in (1, VERSION):
        raise TokenInvalid("malformed")
    body, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
    if not hmac.compare_digest(_tag(key, body), tag):
        raise TokenInvalid("bad signature")
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


def safe_filename(raw: str | None, fallback: str) -> str:
    """A harmless label for a file: basename only, a conservative alphabet, at most 100 chars.

    It is only ever shown and offered as the download name; storage paths never use it.
    """
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_CHARS.sub("_", name).strip("._")[:100]
    return name or fallback


# -- the shell: key, URL, storage ---------------------------------------------------------------

_KEYS: dict[Path, bytes] = {}


def token_key(data_dir: Path) -> bytes:
    """The upload-token HMAC key, created on first use and kept private to the server."""
    path = data_dir / "upload-token.key"
    key = _KEYS.get(path)
    if key is not None:
        return key
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) < MIN_KEY_BYTES:
            raise RuntimeError(f"{path} holds no usable key: delete it to make a new one") from None
    else:
        key = new_key()
        with os.fdopen(fd, "wb") as f:
            f.write(key)
    _KEYS[path] = key
    return key


def base_url(rt: Runtime) -> str:
    """Where chargers reach evota's HTTP API: EVOTA_UPLOAD_PUBLIC_URL, else this listener."""
    s = rt.settings
    if s.upload_public_url:
        return s.upload_public_url.rstrip("/")
    host = "127.0.0.1" if s.host in ("0.0.0.0", "::", "") else s.host
    return f"http://{host}:{rt.http_port or s.http_port}"


def upload_url(rt: Runtime, charger_id: str, kind: str, request_id: int | None = None) -> str:
    """The ``location`` for GetDiagnostics / GetLog: ``POST`` it multipart, or ``PUT`` to
    ``{location}/{filename}``."""
    expires = int(rt.clock.now().timestamp()) + rt.settings.upload_token_ttl
    token = issue(
        UploadGrant(charger_id, kind, request_id, expires), token_key(rt.settings.data_dir)
    )
    return f"{base_url(rt)}{PREFIX}/{token}"


def check(rt: Runtime, token: str) -> UploadGrant:
    return verify(token, token_key(rt.settings.data_dir), now=int(rt.clock.now().timestamp()))


def uploads_dir(rt: Runtime) -> Path:
    return rt.settings.data_dir / "uploads"


def path_of(rt: Runtime, file_id: str) -> Path:
    """Where a stored file lives; ``file_id`` comes from the database, never from a URL."""
    return uploads_dir(rt) / uuid.UUID(file_id).hex


async def store(
    rt: Runtime, grant: UploadGrant, filename: str, chunks: AsyncIterator[bytes]
) -> dict[str, Any]:
    """Stream ``chunks`` to disk (at most ``upload_max_bytes``), then record the file.

    The file id is the token's (``grant.upload_id``): uploading again with the same token
    replaces the file and its row. Raises :class:`FileTooLarge` (nothing is kept, an earlier
    upload stays) once the limit is passed.
    """
    limit = rt.settings.upload_max_bytes
    file_id = grant.upload_id or str(uuid.uuid4())
    final = path_of(rt, file_id)
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
    row = {
        "id": file_id,
        "charger_id": grant.charger_id,
        "kind": grant.kind,
        "request_id": grant.request_id,
        "filename": filename,
        "sha256": digest.hexdigest(),
        "size": size,
        "created_at": rt.clock.now(),
    }
    try:
        try:
            async with rt.engine.begin() as conn:
                await conn.execute(insert(ChargerFile).values(**row))
        except IntegrityError:  # a retry with the same token: the new file replaced the old
            async with rt.engine.begin() as conn:
                values = {k: v for k, v in row.items() if k != "id"}
                await conn.execute(
                    update(ChargerFile).where(ChargerFile.id == file_id).values(**values)
                )
            row["replaced"] = True
    except BaseException:
        final.unlink(missing_ok=True)
        raise
    return row
