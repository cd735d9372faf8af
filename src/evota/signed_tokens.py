"""Signed, stateless URL tokens: one envelope for every kind evota issues.

Chargers cannot send credentials with a firmware download or a diagnostics upload, so the
grant travels in the URL. Every kind (:mod:`evota.firmware.tokens`,
:mod:`evota.control.uploads`) lays out its own body and seals it the same way::

    base64url-without-padding( body | HMAC-SHA-256(key, domain || body)[:16] )

``domain`` names the kind and is part of what is signed, so a token of one kind never
verifies as another, even under the same key. Only the canonical Base64url spelling
decodes (no two strings map to the same bytes), and a list of keys (newest first) lets keys
rotate while tokens are in flight. Pure functions: keys are passed in (they are kept by
:func:`evota.files.load_key`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from typing import Any, Final

__all__ = [
    "KEY_BYTES",
    "MIN_KEY_BYTES",
    "TAG_BYTES",
    "TokenError",
    "TokenExpired",
    "TokenInvalid",
    "check_keys",
    "decode",
    "max_chars",
    "new_key",
    "open_sealed",
    "seal",
]

KEY_BYTES: Final = 32
MIN_KEY_BYTES: Final = 16
TAG_BYTES: Final = 16  # 128-bit truncated HMAC: forgery odds 2**-128 per attempt.

_B64URL = re.compile(r"[A-Za-z0-9_-]+")


class TokenError(Exception):
    """A token was refused; ``reason`` is a short machine-readable code.

    ``grant`` is set only once the signature checked out, so it is safe to log who asked.
    """

    def __init__(self, reason: str, grant: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.grant = grant


class TokenInvalid(TokenError):
    """Malformed, unknown version, or bad signature: we learn nothing trustworthy from it."""


class TokenExpired(TokenError):
    """Genuine but past its expiry: the holder needs a new one."""


def new_key() -> bytes:
    """A fresh random HMAC key (32 bytes, the SHA-256 block-safe size)."""
    return secrets.token_bytes(KEY_BYTES)


def max_chars(body_bytes: int) -> int:
    """The length of the token sealing a body of ``body_bytes`` (its longest spelling)."""
    return 4 * -(-(body_bytes + TAG_BYTES) // 3)


def check_keys(key: bytes | Sequence[bytes]) -> list[bytes]:
    """One key or a list (newest first) as a list; ``ValueError`` if any is too short."""
    keys = [key] if isinstance(key, bytes | bytearray) else list(key)
    if not keys:
        raise ValueError("at least one token key is required")
    for k in keys:
        if not isinstance(k, bytes | bytearray) or len(k) < MIN_KEY_BYTES:
            raise ValueError(f"token key must be at least {MIN_KEY_BYTES} bytes")
    return [bytes(k) for k in keys]


def _tag(key: bytes, domain: bytes, body: bytes) -> bytes:
    return hmac.new(key, domain + body, hashlib.sha256).digest()[:TAG_BYTES]


def seal(body: bytes, key: bytes, domain: bytes) -> str:
    """``body`` with its MAC for ``domain``, as a URL-safe token (``[A-Za-z0-9_-]``)."""
    (key,) = check_keys(key)
    return base64.urlsafe_b64encode(body + _tag(key, domain, body)).rstrip(b"=").decode("ascii")


def decode(token: object, longest: int) -> bytes:
    """The raw bytes of ``token`` (body and tag), or ``TokenInvalid("malformed")``.

    Strict Base64url: only the canonical encoding is accepted, so an edited spelling of a
    genuine token cannot verify. Anything longer than ``longest`` is refused unread.
    """
    if not isinstance(token, str) or len(token) > longest:
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


def open_sealed(raw: bytes, keys: Sequence[bytes], domain: bytes) -> tuple[bytes, bytes]:
    """``(body, tag)`` of decoded token bytes whose MAC for ``domain`` matches one of
    ``keys``, else ``TokenInvalid("bad signature")``. The caller checks the length first."""
    body, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
    ok = False
    for k in keys:  # no early exit: timing does not reveal which key matched
        ok |= hmac.compare_digest(_tag(k, domain, body), tag)
    if not ok:
        raise TokenInvalid("bad signature")
    return body, tag
