"""Charger password changes (1.6 SWP AuthorizationKey, 2.0.1 A01 BasicAuthPassword), pure.

A new key is only ever *added* until the charger proves it holds it: evota keeps the stored
key and accepts the new one beside it while the change is pending (sent, or answered
Accepted) and its grace deadline has not passed. The first connection with the new key makes
it the charger's key (the old one is refused from then on). A Rejected answer, an error or
the deadline passing without such a connection leave the old key alone, so a change can never
lock a charger out.
"""

from __future__ import annotations

import secrets
from datetime import datetime

#: States in which the new key is accepted beside the old one (``sending``: evota wrote the
#: change before sending it; after a restart it cannot know whether the charger took it).
PENDING = ("sending", "accepted")
#: Final states: ``active`` (the charger connected with the new key, now its only key),
#: ``rejected`` (the charger said no), ``failed`` (no answer: offline, timeout, CALLERROR),
#: ``expired`` (Accepted, but no connection with the new key before the deadline).
FINAL = ("active", "rejected", "failed", "expired")
KEY_BYTES = 20  # 1.6 SWP: 16-20 random bytes; sent hex-encoded, 40 characters


def new_key() -> str:
    """A fresh key: 20 random bytes as 40 hex characters (within the 16-40 character rule)."""
    return secrets.token_hex(KEY_BYTES)


def usable(state: str, until: datetime, now: datetime) -> bool:
    """Whether a change's new key admits a charger now."""
    return state in PENDING and now < until


def after_answer(status: str) -> str:
    """The change's state after the charger's answer to ChangeConfiguration/SetVariables."""
    return "accepted" if status == "Accepted" else "rejected"
