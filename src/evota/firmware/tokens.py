"""Expiring, per-charger download tokens for firmware URLs.

UpdateFirmware hands the charger a plain HTTP ``location`` (at most 512 characters in OCPP
2.0.1) and chargers cannot send extra headers, so the authorisation has to live in the URL.
A token is an HMAC-signed grant scoped to one job, one charger and one image (its SHA-256),
valid until ``expires_at``; it must outlive the charger's download retries. Tokens are
stateless: the HTTP layer only needs the key(s), and keys can be rotated by verifying against
a list (newest first) while old tokens are still in flight.

Format (version 1), sealed by :mod:`evota.signed_tokens` under :data:`DOMAIN`::

    0x01 | expires_at u64 BE | sha256 (32 raw bytes) | len u8 | job_id | len u8 | charger_id
         | HMAC-SHA-256(key, DOMAIN || everything before)[:16]

Identities are UTF-8. For 36-character job ids and 48-character ASCII charger ids the
token is 191 characters. Pure functions: time is passed in, nothing is stored.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from evota import signed_tokens
from evota.signed_tokens import TAG_BYTES, TokenError, TokenExpired, TokenInvalid

__all__ = [
    "DOMAIN",
    "KEY_FILE",
    "MAX_TOKEN_CHARS",
    "VERSION",
    "DownloadGrant",
    "TokenError",
    "TokenExpired",
    "TokenInvalid",
    "TokenWrongCharger",
    "TokenWrongImage",
    "issue",
    "verify",
]

VERSION: Final = 1
KEY_FILE: Final = "download-token.key"  # in the data directory (evota.files.load_key)
MAX_ID_BYTES: Final = 255  # one length byte per identity
# Longest well-formed v1 token (two 255-byte identities); anything longer is refused unread.
MAX_TOKEN_CHARS: Final = signed_tokens.max_chars(1 + 8 + 32 + 2 + 2 * MAX_ID_BYTES)

# Binds the MAC to this purpose, so no other kind of token (nor a key reused elsewhere) can
# stand in for a download token.
DOMAIN: Final = b"evota/firmware-download-token\x00"
_HEADER = struct.Struct(">BQ32s")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class DownloadGrant:
    """What a token authorises: ``charger_id`` may fetch the image with ``firmware_sha256``
    for ``job_id`` until ``expires_at`` (Unix seconds, exclusive)."""

    job_id: str
    charger_id: str
    firmware_sha256: str
    expires_at: int


class TokenWrongCharger(TokenError):
    """Genuine but presented by (or for) a different charger: tokens must not be shared."""


class TokenWrongImage(TokenError):
    """Genuine but for a different firmware image than the one requested."""


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
    signed_tokens.check_keys(key)
    if not _HEX64.fullmatch(grant.firmware_sha256):
        raise ValueError("firmware_sha256 must be 64 hex characters")
    if not 0 <= grant.expires_at < 2**64:
        raise ValueError("expires_at must fit in an unsigned 64-bit integer")
    body = (
        _HEADER.pack(VERSION, grant.expires_at, bytes.fromhex(grant.firmware_sha256))
        + _encode_id("job_id", grant.job_id)
        + _encode_id("charger_id", grant.charger_id)
    )
    return signed_tokens.seal(body, key, DOMAIN)


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
    keys = signed_tokens.check_keys(key)
    raw = signed_tokens.decode(token, MAX_TOKEN_CHARS)
    if len(raw) < _HEADER.size + 2 + TAG_BYTES or raw[0] != VERSION:
        raise TokenInvalid("malformed" if raw[:1] == bytes([VERSION]) else "unknown version")
    body, _ = signed_tokens.open_sealed(raw, keys, DOMAIN)
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
