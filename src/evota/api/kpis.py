"""Post-rollout KPIs (issue 13 §2; definitions and maths: docs/kpis.md).

``GET /api/v1/campaigns/{id}/kpis``: the campaign's updated chargers before vs after their
update, and updated vs not-yet-updated chargers of the same models on the same days.
``GET /api/v1/firmware/{id}/kpis``: a version against its predecessor. Both read the
pre-aggregated ``charger_days`` (a few indexed sums per request) and count only the caller's
chargers (``scope_filter``); ``POST /api/v1/kpis/rollup`` rolls the history up now instead of
waiting for the next periodic run.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from evota.api import leader_calls
from evota.api.auditing import note
from evota.api.deps import Principal, RuntimeDep, require, scope_filter
from evota.api.params import Uuid
from evota.api.problems import AUTHENTICATED, Problem, problems
from evota.evidence import kpi_service

router = APIRouter(tags=["kpis"], responses=AUTHENTICATED)

CampaignDays = Annotated[
    int,
    Query(ge=1, le=kpi_service.MAX_DAYS, description="days before and after each update day"),
]
FirmwareDays = Annotated[
    int,
    Query(ge=1, le=kpi_service.MAX_DAYS, description="the last N complete days"),
]


class ControlOut(BaseModel):
    models: list[str]
    days: list[str] = Field(description="first and last day compared (ISO dates)")
    updated: dict[str, Any]
    not_updated: dict[str, Any]
    comparison: dict[str, Any] = Field(description="updated - not_updated, per KPI")


class CampaignKpisOut(BaseModel):
    campaign_id: str
    name: str
    firmware_id: str
    target_version: str
    days: int
    updated_chargers: int
    update_days: list[str]
    last_complete_day: str
    before: dict[str, Any]
    after: dict[str, Any]
    before_after: dict[str, Any] = Field(
        description="per KPI: before, after, difference (after - before), ci95, n, verdict"
    )
    control: ControlOut


class FirmwareKpisOut(BaseModel):
    firmware_id: str
    vendor: str
    version: str
    predecessor: str | None
    days: int
    from_: str = Field(alias="from")
    to: str
    kpis: dict[str, Any]
    predecessor_kpis: dict[str, Any] | None
    comparison: dict[str, Any] | None = Field(
        description="per KPI: predecessor, version, difference (version - predecessor), ci95"
    )
    regressions: list[dict[str, Any]]


class RollupOut(BaseModel):
    chargers: int
    rows: int
    seconds: float


@router.get(
    "/api/v1/campaigns/{campaign_id}/kpis",
    response_model=CampaignKpisOut,
    responses=problems(404, 422),
)
async def campaign_kpis(
    campaign_id: Uuid,
    rt: RuntimeDep,
    who: Principal = require("campaign.read"),
    days: CampaignDays = 7,
) -> dict[str, Any]:
    """KPIs of the campaign's updated chargers ``days`` before vs after their update (the
    update day itself left out), and against not-yet-updated chargers of the same models."""
    try:
        return await kpi_service.campaign_kpis(
            rt.engine, campaign_id, scope_filter(who), rt.clock.now(), days
        )
    except kpi_service.NotFound:
        raise Problem(
            404, "Unknown campaign", f"no campaign {campaign_id!r}", "campaign_id"
        ) from None


@router.get(
    "/api/v1/firmware/{firmware_id}/kpis",
    response_model=FirmwareKpisOut,
    response_model_by_alias=True,
    responses=problems(404, 422),
)
async def firmware_kpis(
    firmware_id: Uuid,
    rt: RuntimeDep,
    who: Principal = require("firmware.read"),
    days: FirmwareDays = 30,
) -> dict[str, Any]:
    """The version's KPIs over the last ``days`` complete days against its predecessor's."""
    try:
        return await kpi_service.firmware_kpis(
            rt.engine, firmware_id, scope_filter(who), rt.clock.now(), days
        )
    except kpi_service.NotFound:
        raise Problem(
            404, "Unknown firmware", f"no firmware {firmware_id!r}", "firmware_id"
        ) from None


@router.post("/api/v1/kpis/rollup", response_model=RollupOut)
async def rollup_now(
    request: Request, rt: RuntimeDep, _who: Principal = require("campaign.write")
) -> RollupOut:
    """Roll the stored history up into ``charger_days`` now (and run the regression check)."""
    note(request, "kpi_rollup", "charger_days")
    done = await leader_calls.call(rt, "kpi_rollup.run")
    return RollupOut(**done)
