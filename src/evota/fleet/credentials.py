"""Charger credentials, pure: the AuthorizationKey rules and how a key is stored and checked.

Security profile 1 chargers present an AuthorizationKey (HTTP Basic on the WebSocket
upgrade). Keys are high-entropy secrets, so a salted HMAC-SHA-256 is enough and costs
microseconds: a reconnect storm of 20,000 chargers must not burn minutes of CPU on a slow
KDF. The socket layer (:mod:`evota.gateway.auth`) only parses the header; the fleet service
checks the key against the charger's row, and the API stores new keys with these.
"""

from __future__ import annotations

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
