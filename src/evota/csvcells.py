"""Spreadsheet-safe CSV cells, for every CSV evota writes.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is run as a
formula by spreadsheet programs (CSV injection: a failed login as ``=HYPERLINK(...)``
becomes a link in the auditor's spreadsheet). Such a cell is prefixed with a single quote,
the OWASP recommendation; every other cell is written unchanged. Only text is touched:
numbers are written by the program itself and are never formulas.
"""

from __future__ import annotations

from typing import Any, Final

FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """``value`` as a CSV cell that no spreadsheet evaluates."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value
