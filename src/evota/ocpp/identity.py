"""The charger identity rule, one for the gateway's handshake and the API. Pure.

An identity is the last segment of the OCPP-J URL and the HTTP Basic user name, and it is the
charger's id in the API, the console, the CLI and the logs. OCPP 2.0.1 makes it an
``identifierString`` (Part 2: ``a-z A-Z 0-9 * - _ = : + | @ .``, case-insensitive) of at
most 48 characters, and Part 4 forbids ``:`` because it separates user and password in Basic
auth. evota applies that rule to 1.6 chargers too (1.6 sets no charset): anything else, such as
spaces, ``/``, ``%``, NUL, escape sequences or non-ASCII letters, could be admitted by open
registration but never addressed again through a URL or typed into a shell.
"""

from __future__ import annotations

import re
from typing import Final

MAX_LENGTH: Final = 48
CHARSET: Final = "A-Za-z0-9*\\-_=+|@."
"""identifierString without ``:``, as a regular-expression character class body."""
PATTERN: Final = f"^[{CHARSET}]+$"
"""For OpenAPI (``pattern=``): the charset; the length is checked separately (1-48)."""
_VALID = re.compile(f"[{CHARSET}]{{1,{MAX_LENGTH}}}")


def is_valid(identity: str) -> bool:
    return _VALID.fullmatch(identity) is not None


def problem(identity: str) -> str | None:
    """Why ``identity`` is not a valid charger identity, or None."""
    if not 1 <= len(identity) <= MAX_LENGTH:
        return f"must be 1-{MAX_LENGTH} characters"
    if not is_valid(identity):
        return "may contain only A-Z a-z 0-9 and * - _ = + | @ ."
    return None
