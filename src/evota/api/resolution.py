"""Remote-resolution analytics: ``GET /api/v1/analytics/resolution`` (issue 13 §4).

Which remote commands bring faulted chargers back into service, by command, model, site,
vendor or the error code before the command (definitions: docs/analytics.md). Needs
``fleet.read`` (charger-level) and counts only the caller's chargers
(:func:`evota.api.deps.scope_filter`); ``format=csv`` exports the rows with
spreadsheet-safe cells.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from evota.api.deps import Principal, RuntimeDep, require, scope_filter
from evota.api.params import Instant
from evota.api.problems import AUTHENTICATED, Problem
from evota.api.schemas import CSV_OR_JSON, csv_response
from evota.evidence import resolution as rs
from evota.evidence import resolution_data as data

router = APIRouter(prefix="/api/v1/analytics", tags=["analytics"], responses=AUTHENTICATED)

_MIN_W = int(rs.MIN_WINDOW.total_seconds() // 60)
_MAX_W = int(rs.MAX_WINDOW.total_seconds() // 60)
_DEFAULT_W = int(rs.DEFAULT_WINDOW.total_seconds() // 60)


class ResolutionRowOut(BaseModel):
    key: str = Field(description="the group's value: a command, model, site, vendor or code")
    actions: int = Field(description="commands that reached a charger")
    no_fault_before: int = Field(description="to a charger with no Faulted connector: not rated")
    pending: int = Field(description="faulted before, window not over yet: not rated yet")
    faulted: int = Field(description="faulted before, decided: the resolution rate's base")
    resolved: int
    resolution_rate: float | None
    resolution_low: float = Field(description="95% Wilson interval, lower bound")
    resolution_high: float = Field(description="95% Wilson interval, upper bound")
    followed: int = Field(description="resolved ones whose 7-day follow-up is over")
    repeat_faults: int = Field(description="of those, Faulted again within 7 days")
    repeat_rate: float | None
    repeat_low: float
    repeat_high: float
    median_seconds: float | None = Field(description="time to resolution, median")
    p90_seconds: float | None = Field(description="time to resolution, 90th percentile")
    truck_rolls_avoided: int = Field(description="resolved faults: one site visit each")
    money_saved: float | None = Field(description="truck_rolls_avoided × truck_roll_cost")


class ResolutionOut(BaseModel):
    group_by: str
    since: datetime
    until: datetime
    window_minutes: int
    repeat_window_days: int
    truck_roll_cost: float | None
    generated_at: datetime
    rows: list[ResolutionRowOut]
    total: ResolutionRowOut


COLUMNS = tuple(ResolutionRowOut.model_fields)


def period(
    since: datetime | None, until: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """The range asked for (default: the last 30 days up to now), or a 422 naming the field."""
    end = until or now
    start = since or end - data.DEFAULT_RANGE
    if start >= end:
        raise Problem(422, "Invalid range", "since must be before until", "since")
    if end - start > data.MAX_RANGE:
        days = data.MAX_RANGE.days
        raise Problem(422, "Range too long", f"at most {days} days from since to until", "since")
    return start, end


@router.get("/resolution", response_model=ResolutionOut, responses=CSV_OR_JSON)
async def resolution(
    rt: RuntimeDep,
    who: Principal = require("fleet.read"),
    group_by: Annotated[rs.GroupBy, Query(description="what the rows are")] = rs.GroupBy.COMMAND,
    since: Annotated[
        Instant | None, Query(description="commands at or after (default: until - 30 days)")
    ] = None,
    until: Annotated[Instant | None, Query(description="commands before (default: now)")] = None,
    window_minutes: Annotated[
        int, Query(ge=_MIN_W, le=_MAX_W, description="how long a command has to resolve")
    ] = _DEFAULT_W,
    truck_roll_cost: Annotated[
        float | None, Query(ge=0, le=1e9, description="cost of one site visit, for money_saved")
    ] = None,
    format: Annotated[Literal["json", "csv"], Query(description="json or csv")] = "json",
) -> Any:
    """Resolution rate (Available and a session within the window), repeat faults within 7
    days, time to resolution and truck rolls avoided, per group, over the caller's chargers;
    rates carry 95% Wilson intervals. At most 366 days per request."""
    now = rt.clock.now()
    start, end = period(since, until, now)
    window = timedelta(minutes=window_minutes)
    inputs = await data.resolution_inputs(
        rt.engine, scope_filter(who), since=start, until=end, window=window, now=now
    )
    # In a thread: a large report takes a second of CPU, which must not stall the gateway.
    result = await asyncio.to_thread(
        rs.report,
        inputs.actions,
        inputs.reports,
        inputs.sessions,
        inputs.facts,
        now,
        group_by,
        window,
        truck_roll_cost,
    )
    if format == "csv":
        return _csv(result)
    return ResolutionOut(
        group_by=group_by.value,
        since=start,
        until=end,
        window_minutes=window_minutes,
        repeat_window_days=rs.REPEAT_WINDOW.days,
        truck_roll_cost=truck_roll_cost,
        generated_at=now.astimezone(UTC),
        rows=[ResolutionRowOut(**asdict(r)) for r in result.rows],
        total=ResolutionRowOut(**asdict(result.total)),
    )


def _csv(result: rs.Report) -> Response:
    rows = (asdict(row) for row in [*result.rows, result.total])
    return csv_response(
        (result.group_by.value, *COLUMNS[1:]),
        ([values[c] for c in COLUMNS] for values in rows),
        "evota-resolution.csv",
    )
