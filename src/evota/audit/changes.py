"""What an audit entry says changed: before/after of the fields that differ, secrets redacted.

Pure. The one place that decides which field names are secret (``SECRET_FIELDS``, matched
case-insensitively; ``SECRET_SUFFIXES`` also at the end of a longer name), so no route can forget to
redact a charger key, password, TOTP secret or token: their values never reach the log,
only the fact that they changed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any, Final

REDACTED: Final = "[redacted]"
SECRET_FIELDS: Final = frozenset(
    {
        "auth_key",
        "authorization_key",
        "password",
        "current_password",
        "password_hash",
        "secret",
        "totp_secret",
        "otp",
        "token",
        "token_hash",
        "recovery_codes",
        "private_key",
        "webhook_secret",
    }
)


SECRET_SUFFIXES: Final = ("password", "secret", "auth_key", "private_key")
"""Also secret as the end of a longer name (``new_password``, ``client_secret``)."""


def is_secret(name: str, secret_fields: Collection[str] = SECRET_FIELDS) -> bool:
    lowered = name.lower()
    return lowered in secret_fields or lowered.endswith(SECRET_SUFFIXES)


def _plain(value: Any) -> Any:
    """JSON-friendly, so the entry hashes the same after a round trip."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_plain(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    return value


def diff(
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    secret_fields: Collection[str] = SECRET_FIELDS,
) -> dict[str, dict[str, Any]]:
    """``{field: {"before": old, "after": new}}`` for every field whose value differs.

    ``before`` None: a creation (every field of ``after``, before None); ``after`` None: a
    deletion. A secret field that changed appears with both values ``[redacted]``."""
    old = before or {}
    new = after or {}
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(old) | set(new), key=str):
        a, b = _plain(old.get(name)), _plain(new.get(name))
        if a == b:
            continue
        if is_secret(str(name), secret_fields):
            a = None if a is None else REDACTED
            b = None if b is None else REDACTED
        out[str(name)] = {"before": a, "after": b}
    return out


def redact(
    values: Mapping[str, Any], secret_fields: Collection[str] = SECRET_FIELDS
) -> dict[str, Any]:
    """``values`` with every secret field's value replaced by ``[redacted]``."""
    return {
        str(k): (REDACTED if is_secret(str(k), secret_fields) and v is not None else _plain(v))
        for k, v in values.items()
    }
