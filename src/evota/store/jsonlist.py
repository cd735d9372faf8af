"""Exact membership in a JSON list-of-strings column, on SQLite and PostgreSQL.

Tags, sites and regions are stored as JSON lists. Matching them with ``LIKE`` on the
serialized text is wrong twice over: ``_`` and ``%`` are wildcards, and a quote or backslash
inside one element can make another element's text appear. ``json_list_has(column, value)``
compiles to the dialect's own membership test (``json_each`` on SQLite, ``@>`` on
PostgreSQL), so it is true exactly when ``value`` is an element.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, bindparam
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


class json_list_has(FunctionElement[bool]):
    """``value`` is an element of the JSON list in ``column`` (compared as text, exactly)."""

    type = Boolean()
    inherit_cache = True
    name = "json_list_has"

    def __init__(self, column: Any, value: str) -> None:
        super().__init__(column, bindparam(None, value, unique=True))


def _parts(element: json_list_has, compiler: Any, **kw: Any) -> tuple[str, str]:
    column, value = list(element.clauses)
    return compiler.process(column, **kw), compiler.process(value, **kw)


@compiles(json_list_has)
def _sqlite(element: json_list_has, compiler: Any, **kw: Any) -> str:
    column, value = _parts(element, compiler, **kw)
    return (
        f"EXISTS (SELECT 1 FROM json_each({column}) AS jl "
        f"WHERE jl.type = 'text' AND jl.value = {value})"
    )


@compiles(json_list_has, "postgresql")
def _postgresql(element: json_list_has, compiler: Any, **kw: Any) -> str:
    column, value = _parts(element, compiler, **kw)
    return f"(CAST({column} AS JSONB) @> jsonb_build_array(CAST({value} AS TEXT)))"
