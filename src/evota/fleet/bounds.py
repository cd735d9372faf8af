"""Limits on free-form data a charger sends, applied before it is stored or shown.

Most of what a charger sends is bounded by its schema (enums, ``maxLength``), but some fields
are not: DataTransfer ``data`` (any JSON value in 2.0.1, a string of any length in 1.6) and,
within the schema's lengths, the characters of every string. Unbounded, a message nested
1000 deep made serialising the write-behind batch raise ``RecursionError`` and a 300-deep one
broke the charger's detail page. :func:`bound` makes any JSON value safe to store, serialise
and render: nesting, string length and total size are cut to :class:`Limits`, and characters
that PostgreSQL refuses in text (NUL, lone surrogates) are replaced by U+FFFD. Pure and
iterative where it matters: it never recurses deeper than ``limits.depth``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: Marks where something was cut ("…").
ELLIPSIS = "\u2026"
REPLACEMENT = "\ufffd"


@dataclass(frozen=True, slots=True)
class Limits:
    """``depth``: levels of nested objects/arrays kept (deeper ones become a marker string);
    ``chars``: characters kept per string; ``size``: about how many characters of JSON the
    whole value may take (later members are dropped, a marker says how many)."""

    depth: int
    chars: int
    size: int


#: One free-form field a charger sends (DataTransfer ``data``): depth 16, 4 Ki characters.
FREE_FORM = Limits(depth=16, chars=4096, size=4096)
#: Anything evota stores as JSON from a charger message (an event's ``data``), and what the
#: API serves from it: depth 16, strings up to 8 KiB (a CSR is up to 5500 characters), at
#: most 256 Ki characters in total (the default frame limit).
STORED = Limits(depth=16, chars=8192, size=256 * 1024)


def clean_text(value: str, chars: int | None = None) -> str:
    """``value`` without NUL or lone surrogates, cut to ``chars`` characters (with a marker)."""
    if chars is not None and len(value) > chars:
        value = value[: max(chars - 1, 0)] + ELLIPSIS
    if value.isascii():
        return value.replace("\x00", REPLACEMENT) if "\x00" in value else value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: orjson refuses them, other paths may not
        value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value.replace("\x00", REPLACEMENT) if "\x00" in value else value


def clean_optional(value: str | None, chars: int | None = None) -> str | None:
    return None if value is None else clean_text(value, chars)


def bound(value: Any, limits: Limits = STORED) -> Any:
    """A copy of JSON ``value`` within ``limits``; anything that is not JSON becomes its type
    name, non-finite numbers become null. Never raises for any input."""
    budget = [limits.size]
    return _bound(value, limits, 0, budget)


def _bound(value: Any, limits: Limits, depth: int, budget: list[int]) -> Any:
    if value is None or isinstance(value, bool):
        budget[0] -= 5
        return value
    if isinstance(value, int):
        budget[0] -= 20
        return value
    if isinstance(value, float):
        budget[0] -= 24
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        text = clean_text(value, min(limits.chars, max(budget[0], 1)))
        budget[0] -= len(text) + 2
        return text
    if isinstance(value, dict | list | tuple):
        if depth >= limits.depth:
            budget[0] -= 40
            return f"{ELLIPSIS}(nested deeper than {limits.depth} levels)"
        budget[0] -= 2
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for index, (key, member) in enumerate(value.items()):
                if budget[0] <= 0:
                    out[ELLIPSIS] = f"{len(value) - index} more members cut"
                    break
                name = clean_text(str(key), limits.chars)
                budget[0] -= len(name) + 4
                out[name] = _bound(member, limits, depth + 1, budget)
            return out
        items: list[Any] = []
        for index, member in enumerate(value):
            if budget[0] <= 0:
                items.append(f"{ELLIPSIS}{len(value) - index} more items cut")
                break
            budget[0] -= 1
            items.append(_bound(member, limits, depth + 1, budget))
        return items
    budget[0] -= 20
    return type(value).__name__


def safe_text(value: object, chars: int = 300) -> str:
    """A short description of ``value`` for a log line that cannot itself raise: ``repr`` of
    a deeply nested object raises ``RecursionError``, so only bounded copies are formatted."""
    try:
        if isinstance(value, BaseException):
            text = f"{type(value).__name__}: {value}"
        else:
            text = repr(bound(value, Limits(depth=4, chars=chars, size=chars)))
        return clean_text(text, chars)
    except Exception:  # pragma: no cover - the last resort of a last resort
        return f"<{type(value).__name__}>"
