"""Expiring, per-charger download tokens for firmware URLs.

UpdateFirmware hands the charger a plain HTTP ``location`` (at most 512 characters in OCPP
2.0.1) and chargers cannot send extra headers, so the authorisation has to live in the URL.
A token is an HMAC-signed grant scoped to one job, one charger and one image (its SHA-256),
valid until ``expires_at``; it must outlive the charger's download retries. Tokens are
stateless: the HTTP layer only needs the key(s), and keys can be rotated by verifying against
a list (newest first) while old tokens are still in flight.

Format (version 1), Base64url without padding of::

    0x01 | expires_at u64 BE | sha256 (32 raw bytes) | len u8 | job_id | len u8 | charger_id
         | HMAC-SHA-256(key, DOMAIN || everything before)[:16]

Identities are UTF-8. For 36-character job ids and 48-character ASCII charger ids the
token is 191 characters. Pure functions: time is passed in, nothing is stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Final

__all__ = [
    "KEY_BYTES",
    "MAX_TOKEN_CHARS",
    "VERSION",
    "DownloadGrant",
    "TokenError",
    "TokenExpired",
    "TokenInvalid",
    "TokenWrongCharger",
    "TokenWrongImage",
    "issue",
    "new_key",
    "verify",
]

VERSION: Final = 1
KEY_BYTES: Final = 32
MIN_KEY_BYTES: Final = 16
TAG_BYTES: Final = 16  # 128-bit truncated HMAC: forgery odds 2**-128 per attempt.
MAX_ID_BYTES: Final = 255  # one length byte per identity
# Longest well-formed v1 token (two 255-byte identities); anything longer is refused unread.
MAX_TOKEN_CHARS: Final = 4 * -(-(1 + 8 + 32 + 2 + 2 * MAX_ID_BYTES + TAG_BYTES) // 3)

# Binds the MAC to this purpose, so a key reused elsewhere cannot mint download tokens.
_DOMAIN: Final = b"evota/firmware-download-token\x00"
_HEADER = struct.Struct(">BQ32s")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class DownloadGrant:
    """What a token authorises: ``charger_id`` may fetch the image with ``firmware_sha256``
    for ``job_id`` until ``expires_at`` (Unix seconds, exclusive)."""

    job_id: str
    charger_id: str
    firmware_sha256: str
    expires_at: int


class TokenError(Exception):
    """A download token was refused; ``reason`` is a short machine-readable code.

    ``http_status`` is the answer the file server should give (with no body bytes).
    """

    http_status: ClassVar[int] = 403

    def __init__(self, reason: str, grant: DownloadGrant | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        # Set only once the signature checked out, so it is safe to log who asked.
        self.grant = grant


class TokenInvalid(TokenError):
    """Malformed, unknown version, or bad signature: we learn nothing trustworthy from it."""


class TokenExpired(TokenError):
    """Genuine but past ``expires_at``; 410 tells the operator to re-issue, not investigate."""

    http_status: ClassVar[int] = 410


class TokenWrongCharger(TokenError):
    """Genuine but presented by (or for) a different charger: tokens must not be shared."""


class TokenWrongImage(TokenError):
    """Genuine but for a different firmware image than the one requested."""


def new_key() -> bytes:
    """A fresh random HMAC key (32 bytes, the SHA-256 block-safe size)."""
    return secrets.token_bytes(KEY_BYTES)


def _tag(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, _DOMAIN + body, hashlib.sha256).digest()[:TAG_BYTES]


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) < MIN_KEY_BYTES:
        raise ValueError(f"token key must be at least {MIN_KEY_BYTES} bytes")
    return bytes(key)


def _encode_id(name: str, value: str) -> bytes:
    raw = value.encode("utf-8")
    if not raw or len(raw) > MAX_ID_BYTES:
        raise ValueError(f"{name} must be 1..{MAX_ID_BYTES} UTF-8 bytes")
    return bytes([len(raw)]) + raw


def issue(grant: DownloadGrant, key: bytes) -> str:
    """Sign ``grant`` into a URL-safe token (``[A-Za-z0-9_-]``, no padding).

    Raises ``ValueError`` for a grant that cannot be encoded (non-hex digest, empty or
    over-long identity, ``expires_at`` outside u64) or a key shorter than 16 bytes.
    """
    key = _check_key(key)
    if not _HEX64.fullmatch(grant.firmware_sha256):
        raise ValueError("firmware_sha256 must be 64 hex characters")
    if not 0 <= grant.expires_at < 2**64:
        raise ValueError("expires_at must fit in an unsigned 64-bit integer")
    body = (
        _HEADER.pack(VERSION, grant.expires_at, bytes.fromhex(grant.firmware_sha256))
        + _encode_id("job_id", grant.job_id)
        + _encode_id("charger_id", grant.charger_id)
    )
    return base64.urlsafe_b64encode(body + _tag(key, body)).rstrip(b"=").decode("ascii")


def _decode(token: object) -> bytes:
    """Strict Base64url: only the canonical encoding is accepted, so no two strings map to
    the same bytes (otherwise an edited token could still verify)."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise TokenInvalid("malformed")
    if not _B64URL.fullmatch(token) or len(token) % 4 == 1:
        raise TokenInvalid("malformed")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise TokenInvalid("malformed") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != token.encode("ascii"):
        raise TokenInvalid("malformed")
    return raw


def _parse_body(body: bytes) -> DownloadGrant:
    _, expires_at, digest = _HEADER.unpack_from(body)
    pos = _HEADER.size
    ids: list[str] = []
    for _ in range(2):
        n = body[pos]
        raw = body[pos + 1 : pos + 1 + n]
        if n == 0 or len(raw) != n:
            raise ValueError("truncated identity")
        ids.append(raw.decode("utf-8"))
        pos += 1 + n
    if pos != len(body):
        raise ValueError("trailing bytes")
    return DownloadGrant(
        job_id=ids[0], charger_id=ids[1], firmware_sha256=digest.hex(), expires_at=expires_at
    )


def verify(
    token: str,
    key: bytes | Sequence[bytes],
    *,
    now: int,
    charger_id: str | None = None,
    firmware_sha256: str | None = None,
) -> DownloadGrant:
    """Check ``token`` and return its grant, or raise a ``TokenError`` subclass.

    ``key`` may be a list of keys, newest first, so rotation does not strand tokens in
    flight; drop a key from the list to revoke everything it signed. Scope (charger, then
    image) is checked before expiry so a stranger holding an expired token gets 403, not a
    hint that it was once valid. The token is valid while ``now < expires_at``. Any token
    string yields a grant or a ``TokenError``; a bad ``key`` argument raises ``ValueError``.
    """
    keys = [key] if isinstance(key, bytes | bytearray) else list(key)
    if not keys:
        raise ValueError("at least one token key is required")
    keys = [_check_key(k) for k in keys]

    raw = _decode(token)
    if len(raw) < _HEADER.size + 2 + TAG_BYTES or raw[0] != VERSION:
        raise TokenInvalid("malformed" if raw[:1] == bytes([VERSION]) else "unknown version")
    body, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
    ok = False
    for k in keys:  # no early exit: timing does not reveal which key matched
        ok |= hmac.compare_digest(_tag(k, body), tag)
    if not ok:
        raise TokenInvalid("bad signature")
    try:
        grant = _parse_body(body)
    except (ValueError, IndexError, struct.error):  # UnicodeDecodeError is a ValueError
        # Only reachable if a key holder signed garbage; still refuse cleanly.
        raise TokenInvalid("malformed") from None

    if charger_id is not None and charger_id != grant.charger_id:
        raise TokenWrongCharger("wrong charger", grant)
    if firmware_sha256 is not None and firmware_sha256.lower() != grant.firmware_sha256:
        raise TokenWrongImage("wrong image", grant)
    if now >= grant.expires_at:
        raise TokenExpired("expired", grant)
    return grant
