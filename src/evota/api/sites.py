"""Sites: where chargers stand, with the timezone maintenance windows are expressed in."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Query
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from evota.api.deps import Principal, RuntimeDep, require
from evota.api.pages import fetch_page
from evota.api.problems import Problem
from evota.api.schemas import Page, SiteIn, SiteOut
from evota.store.models import Site

router = APIRouter(prefix="/api/v1/sites", tags=["sites"])


@router.post("", status_code=201, response_model=SiteOut)
async def create_site(
    body: SiteIn, rt: RuntimeDep, _who: Principal = require("charger.write")
) -> SiteOut:
    site_id = body.id or "site-" + secrets.token_hex(4)
    values = {**body.model_dump(), "id": site_id, "created_at": rt.clock.now()}
    try:
        async with rt.engine.begin() as conn:
            await conn.execute(insert(Site).values(**values))
    except IntegrityError:
        raise Problem(409, "Site exists", f"a site with id {site_id!r} exists", "id") from None
    return SiteOut(**values)


@router.get("", response_model=Page[SiteOut])
async def list_sites(
    rt: RuntimeDep,
    _who: Principal = require("fleet.read"),
    region: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> Page[SiteOut]:
    query = select(Site)
    if region:
        query = query.where(Site.region == region)
    total, rows = await fetch_page(rt.engine, query, Site.id, limit, offset)
    items = [SiteOut.model_validate(r._mapping) for r in rows]
    return Page(items=items, total=total, limit=limit, offset=offset)
