"""One way to page a list: the total of the filtered query, then one ordered slice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, Select, func, select
from sqlalchemy.ext.asyncio import AsyncEngine


async def fetch_page(
    engine: AsyncEngine,
    query: Select[*tuple[Any, ...]],
    order_by: Any,
    limit: int,
    offset: int,
) -> tuple[int, Sequence[Row[Any]]]:
    """``order_by``: one column expression or a tuple of them (ties need a unique last key
    for stable pages)."""
    order = order_by if isinstance(order_by, tuple) else (order_by,)
    async with engine.connect() as conn:
        total = (await conn.execute(select(func.count()).select_from(query.subquery()))).scalar()
        rows = (await conn.execute(query.order_by(*order).limit(limit).offset(offset))).all()
    return int(total or 0), rows
