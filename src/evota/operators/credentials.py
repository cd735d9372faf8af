"""Operator credentials: password policy and hashing, TOTP, recovery codes. Pure helpers.

Passwords are hashed with Argon2id (argon2-cffi's defaults, RFC 9106's second recommended
profile); ``needs_rehash`` lets login upgrade old hashes when the parameters change. TOTP is
RFC 6238 (30 s steps, 6 digits, SHA-1, as every authenticator app expects) with one step of
clock skew either way, and a code is accepted at most once: callers store the last accepted
step. Recovery codes are shown once and stored as SHA-256 digests (they are 80-bit random,
so a fast hash is enough); each works once. Users, sessions and the API arrive with the
operators issue.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from datetime import datetime

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_PASSWORD = 12
MAX_PASSWORD = 256  # Argon2 cost is per byte; longer inputs are a denial-of-service lever
# The most common passwords that pass the length rule; a real deployment adds its own list.
_COMMON = frozenset(
    {
        "password1234",
        "123456789012",
        "qwertyuiopas",
        "passwordpassword",
        "letmeinletmein",
        "administrator",
        "iloveyou1234",
        "changemechangeme",
        "welcome12345",
    }
)
_hasher = PasswordHasher()
TOTP_STEP = 30
TOTP_SKEW_STEPS = 1
RECOVERY_CODES = 10


def password_problem(password: str, username: str) -> str | None:
    """Why ``password`` is not acceptable for ``username`` (None when it is)."""
    if len(password) < MIN_PASSWORD:
        return f"must be at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"must be at most {MAX_PASSWORD} characters"
    lowered = password.casefold()
    if username and username.casefold() in lowered:
        return "must not contain the username"
    if lowered in _COMMON or len(set(password)) < 5:
        return "is too easy to guess"
    return None


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    """Constant-time check; a malformed stored hash is a failed login, never a crash."""
    if len(password) > MAX_PASSWORD:
        return False
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    try:
        return _hasher.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True


def new_totp_secret() -> str:
    return pyotp.random_base32()


def otpauth_uri(secret: str, username: str, issuer: str = "evota") -> str:
    """The enrolment URI an authenticator app reads (usually from a QR code)."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=issuer)


def qr_svg(uri: str) -> str:
    """The enrolment URI as an inline SVG QR code (error correction M, scales in CSS)."""
    import io

    import segno

    buf = io.BytesIO()
    segno.make(uri, error="m").save(buf, kind="svg", xmldecl=False, svgns=True, scale=4, border=2)
    return buf.getvalue().decode()


def verify_totp(secret: str, code: str, now: datetime, last_step: int | None) -> int | None:
    """The time step ``code`` belongs to if it is valid and newer than ``last_step``.

    Store the returned step and pass it next time: a code seen once (by a shoulder-surfer or
    a replayed request) is refused afterwards.
    """
    code = code.strip().replace(" ", "")
    if len(code) != 6 or not (code.isascii() and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // TOTP_STEP
    for step in range(current - TOTP_SKEW_STEPS, current + TOTP_SKEW_STEPS + 1):
        if last_step is not None and step <= last_step:
            continue
        if hmac.compare_digest(totp.at(step * TOTP_STEP), code):
            return step
    return None


def new_recovery_codes(count: int = RECOVERY_CODES) -> list[str]:
    """Codes like ``k7m2-9qxd-4tpa-wn3h`` (80 bits each) to show the user exactly once."""
    alphabet = "23456789abcdefghjkmnpqrstuvwxyz"
    return [
        "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(4))
        for _ in range(count)
    ]


def token_hash(token: str) -> str:
    """How API tokens and session tokens are stored: they are 256-bit random strings, so a
    plain SHA-256 is a sound way to keep them (no slow KDF needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def recovery_digest(code: str) -> str:
    return hashlib.sha256(code.strip().lower().encode()).hexdigest()


def use_recovery_code(stored: Sequence[str], code: str) -> list[str] | None:
    """The remaining digests after using ``code``, or None if it is not one of them."""
    digest = recovery_digest(code)
    remaining = list(stored)
    for i, candidate in enumerate(remaining):
        if hmac.compare_digest(candidate, digest):
            del remaining[i]
            return remaining
    return None
