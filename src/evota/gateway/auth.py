"""Charger authentication for security profile 1 (HTTP Basic on the WebSocket upgrade).

AuthorizationKeys are high-entropy secrets, so a salted HMAC-SHA-256 is enough and costs
microseconds: a reconnect storm of 20,000 chargers must not burn minutes of CPU on a slow KDF.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

MIN_KEY_LENGTH = 16
MAX_KEY_LENGTH = 40


def hash_key(key: str, salt: str | None = None) -> tuple[str, str]:
    """Return ``(salt, hash)`` as hex strings."""
    salt = salt or secrets.token_hex(16)
    digest = hmac.new(bytes.fromhex(salt), key.encode(), hashlib.sha256).hexdigest()
    return salt, digest


def verify_key(key: str, salt: str, expected: str) -> bool:
    return hmac.compare_digest(hash_key(key, salt)[1], expected)


def key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid AuthorizationKey, or None."""
    if not MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH:
        return f"must be {MIN_KEY_LENGTH}-{MAX_KEY_LENGTH} characters"
    if not all(33 <= ord(c) < 127 for c in key):
        return "must be printable ASCII without spaces"
    return None


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """``(user, password)`` from an ``Authorization: Basic`` header, or None if absent/garbled."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    return user, password
