"""A firmware version's scorecard and the fleet's firmware picture (issue 13 §3).

``GET /api/v1/firmware/{id}/scorecard``: where the image runs, its incidents, the campaigns
that shipped it and its predecessor. ``GET /api/v1/fleet/firmware``: how many chargers ran
which version on each day; ``…/behind``: who is not on the newest released version, and by
how many releases. All three need ``fleet.read`` (charger-level) and count only the
caller's chargers (:func:`evota.api.deps.scope_filter`); both fleet routes export CSV.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from evota.api.deps import Principal, RuntimeDep, require, scope_filter
from evota.api.params import Uuid, text
from evota.api.problems import AUTHENTICATED, Problem, problems
from evota.api.schemas import CSV_OR_JSON, csv_response
from evota.console import overview, queries
from evota.evidence import fleet_versions as fv
from evota.evidence import kpi_service
from evota.evidence import scorecard as sc
from evota.evidence.firmware_reads import history, scorecard_inputs

router = APIRouter(tags=["firmware"], responses=AUTHENTICATED)
KPI_DAYS = 30  # the scorecard's KPI span (docs/kpis.md; the KPI route takes 1..90)

Days = Annotated[int, Query(ge=1, le=fv.MAX_DAYS, description="days of history, ending today")]
Format = Annotated[Literal["json", "csv"], Query(description="json (default) or csv")]


class VersionCount(BaseModel):
    vendor: str | None
    version: str | None
    chargers: int


class FirmwareDay(BaseModel):
    day: str = Field(description="the UTC day (YYYY-MM-DD), counted at its end")
    chargers: int
    fragmentation: float = Field(description="chance two chargers ran different versions")
    versions: list[VersionCount]


class FleetFirmwareOut(BaseModel):
    days: int
    from_: str = Field(alias="from")
    to: str
    generated_at: str
    series: list[dict[str, str | None]] = Field(description="every (vendor, version) seen")
    items: list[FirmwareDay]


class BehindModel(BaseModel):
    vendor: str
    model: str
    chargers: int
    latest: str | None
    on_latest: int
    behind: int
    unknown: int
    fragmentation: float


class BehindRow(BaseModel):
    vendor: str
    model: str
    version: str
    chargers: int
    latest: str
    releases_behind: int | None
    chargers_url: str


class FleetBehindOut(BaseModel):
    generated_at: str
    behind: int
    models: list[BehindModel]
    items: list[BehindRow]


@router.get("/api/v1/firmware/{firmware_id}/scorecard", responses=problems(404))
async def firmware_scorecard(
    firmware_id: Uuid,
    rt: RuntimeDep,
    who: Principal = require("fleet.read"),
    days: Annotated[
        int, Query(ge=1, le=fv.MAX_DAYS, description="security events of the last N days")
    ] = 30,
) -> dict[str, Any]:
    """Where a version runs (by model, site, region), its incidents (failed jobs by reason,
    rollbacks to and away from it, security events of the chargers running it), the
    campaigns that shipped it and its predecessor (its previous release), and its KPIs over
    the last 30 complete days against the version its updated chargers ran before (``kpis``;
    other spans at ``kpis_url``); counted over the caller's chargers only."""
    inputs = await scorecard_inputs(
        rt.engine,
        firmware_id,
        scope_filter(who),
        now=rt.clock.now(),
        security_days=days,
        # A scoped operator sees the campaigns that touched its chargers, not all of them.
        all_campaigns=who.can("campaign.read"),
    )
    if inputs is None:
        raise Problem(404, "Unknown firmware", f"no firmware with id {firmware_id!r}", "id")
    card = sc.to_json(sc.build(inputs))
    # Its KPIs against the version its chargers ran before, over the same (scoped) chargers;
    # that version is the scorecard's predecessor too, so both name the same one.
    kpis = await kpi_service.firmware_kpis(
        rt.engine, firmware_id, scope_filter(who), rt.clock.now(), days=KPI_DAYS
    )
    card["kpis"] = kpis
    ran_before = kpis["predecessor"]
    if ran_before is not None and (card["predecessor"] or {}).get("version") != ran_before:
        image = next((i for i in inputs.siblings if i.version == ran_before), None)
        card["predecessor"] = {
            "id": image.id if image else None,
            "version": ran_before,
            "state": image.state if image else None,
            "scorecard_url": f"/api/v1/firmware/{image.id}/scorecard" if image else None,
        }
    return card


@router.get(
    "/api/v1/fleet/firmware",
    tags=["fleet"],
    response_model=FleetFirmwareOut,
    responses=CSV_OR_JSON,
)
async def fleet_firmware_history(
    rt: RuntimeDep,
    who: Principal = require("fleet.read"),
    days: Days = 30,
    vendor: str | None = text("case-insensitive", 50),
    model: str | None = text("exact model", 50),
    format: Format = "json",
) -> Response:
    """How many of the caller's chargers ran each (vendor, version) at the end of each UTC
    day, rebuilt from boots, succeeded jobs and the chargers' current versions
    (docs/fleet-firmware.md); ``fragmentation`` is the chance that two chargers picked at
    random ran different versions that day."""
    now = rt.clock.now()
    result = await history(
        rt.engine, scope_filter(who), now=now, days=days, vendor=vendor, model=model
    )
    if format == "csv":
        return csv_response(
            ("day", "vendor", "version", "chargers"),
            ((d.day.isoformat(), v, ver, n) for d in result for (v, ver), n in d.counts),
            "evota-fleet-firmware.csv",
        )
    return JSONResponse(
        {
            "days": days,
            "from": result[0].day.isoformat(),
            "to": result[-1].day.isoformat(),
            "generated_at": now.astimezone(UTC).isoformat(),
            "series": [{"vendor": v, "version": ver} for v, ver in fv.series_keys(result)],
            "items": [
                {
                    "day": d.day.isoformat(),
                    "chargers": d.total,
                    "fragmentation": round(overview.fragmentation([n for _, n in d.counts]), 4),
                    "versions": [
                        {"vendor": v, "version": ver, "chargers": n} for (v, ver), n in d.counts
                    ],
                }
                for d in result
            ],
        }
    )


def behind_rows(
    models: Sequence[overview.ModelSummary], releases: Sequence[overview.Release]
) -> list[dict[str, Any]]:
    """One row per (vendor, model, version) behind the model's newest release."""
    rows = []
    for m in models:
        if m.latest is None:
            continue
        released = [
            r.version
            for r in releases
            if r.vendor.casefold() == m.vendor.casefold() and (not r.models or m.model in r.models)
        ]
        for version, n in m.versions:
            if overview.standing(m, version) != "behind":
                continue
            query = urlencode({"vendor": m.vendor, "model": m.model, "firmware_version": version})
            rows.append(
                {
                    "vendor": m.vendor,
                    "model": m.model,
                    "version": version,
                    "chargers": n,
                    "latest": m.latest,
                    "releases_behind": fv.releases_behind(version, released),
                    "chargers_url": f"/api/v1/chargers?{query}",
                }
            )
    return rows


@router.get(
    "/api/v1/fleet/firmware/behind",
    tags=["fleet"],
    response_model=FleetBehindOut,
    responses=CSV_OR_JSON,
)
async def fleet_firmware_behind(
    rt: RuntimeDep,
    who: Principal = require("fleet.read"),
    vendor: str | None = text("case-insensitive", 50),
    model: str | None = text("exact model", 50),
    format: Format = "json",
) -> Response:
    """Per vendor and model, the caller's chargers that are not on the newest ``released``
    version, by version, with how many released versions they are behind (the same numbers
    as the console overview)."""
    counts = [
        c
        for c in await queries.version_counts(rt, who)
        if (not vendor or (c.vendor or "").casefold() == vendor.casefold())
        and (not model or c.model == model)
    ]
    releases = await queries.releases(rt)
    models = overview.summarize(counts, releases)
    rows = behind_rows(models, releases)
    if format == "csv":
        keys = ("vendor", "model", "version", "chargers", "latest", "releases_behind")
        return csv_response(keys, ([r[k] for k in keys] for r in rows), "evota-fleet-behind.csv")
    return JSONResponse(
        {
            "generated_at": rt.clock.now().astimezone(UTC).isoformat(),
            "behind": sum(m.behind for m in models),
            "models": [
                {
                    "vendor": m.vendor,
                    "model": m.model,
                    "chargers": m.total,
                    "latest": m.latest,
                    "on_latest": m.on_latest,
                    "behind": m.behind,
                    "unknown": m.unknown,
                    "fragmentation": round(m.fragmentation, 4),
                }
                for m in models
            ],
            "items": rows,
        }
    )
