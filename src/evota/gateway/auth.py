"""Charger authentication on the socket: the HTTP Basic header of the WebSocket upgrade.

Only the header is parsed here; the key rules and the salted hash a key is checked against
are the fleet's (:mod:`evota.fleet.credentials`), so the fleet never imports the socket layer.
"""

from __future__ import annotations

import base64
import binascii


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
