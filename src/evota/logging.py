"""structlog set-up. Secrets never reach a log line: keys named like secrets are masked.

Log lines never carry control characters from outside either: a charger identity, a header or
a CALLERROR description containing ESC, CR, LF or NUL could otherwise forge log lines or
drive the operator's terminal. :func:`escape_controls` rewrites every string field of every
event, so no call site can forget it; the standard-library loggers get the same treatment.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_WORDS = ("password", "token", "secret", "auth_key", "authorization", "key_hash")
# C0 controls, DEL, C1 controls, and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Multi-line by design (a traceback); only its other control characters are escaped.
_MULTILINE_KEYS = frozenset({"exception", "stack"})


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str, keep_newlines: bool = False) -> str:
    """``text`` with control characters written as escapes (``\\x1b``, ``\\n``), so it stays
    on one line and shows, rather than performs, what was sent."""
    pattern = _CONTROL_BUT_NEWLINE if keep_newlines else _CONTROL
    return pattern.sub(_escaped, text) if pattern.search(text) else text


def escape_controls(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Escape control characters in every string field (other values are rendered with
    ``repr`` or as JSON, which escape them already)."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = escape(value, keep_newlines=key in _MULTILINE_KEYS)
    return event


class _EscapingFormatter(logging.Formatter):
    """For the standard-library loggers (uvicorn, websockets): the message line is escaped,
    a traceback after it keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape(super().formatMessage(record))


def _mask_secrets(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in event:
        if any(word in key.lower() for word in _SECRET_WORDS):
            event[key] = "***"
    return event


def configure(level: str = "info", json: bool = False) -> None:
    lvl = logging.getLevelName(level.upper())
    if not isinstance(lvl, int):
        lvl = logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_EscapingFormatter("%(message)s"))
    logging.basicConfig(level=lvl, handlers=[handler])
    for noisy in ("uvicorn.access", "websockets", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(max(lvl, logging.WARNING))
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _mask_secrets,
            structlog.processors.format_exc_info,
            escape_controls,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        cache_logger_on_first_use=True,
    )
