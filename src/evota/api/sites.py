"""Sites: where chargers stand, with the timezone maintenance windows are expressed in."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from evota.api.auditing import note
from evota.api.deps import (
    Principal,
    RuntimeDep,
    authorize_site,
    check_site,
    require,
    site_filter,
)
from evota.api.leader_calls import tell
from evota.api.pages import fetch_page
from evota.api.params import Limit, Offset, SitePath, text
from evota.api.problems import AUTHENTICATED, Problem, problems
from evota.api.schemas import Page, SiteIn, SiteOut, SitePatch
from evota.operators import permissions as perms
from evota.rollout.charger_facts import SITE_FACTS
from evota.runtime import Runtime
from evota.store.jsonlist import json_list_has
from evota.store.models import Charger, Site

router = APIRouter(prefix="/api/v1/sites", tags=["sites"], responses=AUTHENTICATED)


@router.post("", status_code=201, response_model=SiteOut, responses=problems(409))
async def create_site(
    body: SiteIn, request: Request, rt: RuntimeDep, who: Principal = require("charger.write")
) -> SiteOut:
    """Create a site; without ``id`` evota makes one up (``site-`` and 8 hex digits).

    A scoped caller may create sites only inside its scope (its sites or regions): 403."""
    site_id = body.id or "site-" + secrets.token_hex(4)
    check_site(who, "charger.write", perms.site_place(site_id, body.region))
    values = {**body.model_dump(), "id": site_id, "created_at": rt.clock.now()}
    note(request, "site", site_id)
    try:
        async with rt.engine.begin() as conn:
            await conn.execute(insert(Site).values(**values))
    except IntegrityError:
        raise Problem(409, "Site exists", f"a site with id {site_id!r} exists", "id") from None
    note(request, "site", site_id, None, {**body.model_dump(), "id": site_id})
    return SiteOut(**values)


@router.get("", response_model=Page[SiteOut])
async def list_sites(
    rt: RuntimeDep,
    who: Principal = require("fleet.read"),
    region: str | None = text("exact region"),
    tag: str | None = text("sites with this tag", 64),
    q: str | None = text("id or name contains (case-insensitive)", 100),
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[SiteOut]:
    """The sites the caller can see (its sites and regions), by id."""
    query = select(Site).where(site_filter(who))
    if region:
        query = query.where(Site.region == region)
    if tag:
        query = query.where(json_list_has(Site.tags, tag))
    if q:
        needle = q.lower()
        query = query.where(
            func.lower(Site.id).contains(needle, autoescape=True)
            | func.lower(Site.name).contains(needle, autoescape=True)
        )
    total, rows = await fetch_page(rt.engine, query, Site.id, limit, offset)
    items = [SiteOut.model_validate(r._mapping) for r in rows]
    return Page(items=items, total=total, limit=limit, offset=offset)


async def _load(rt: Runtime, site_id: str) -> SiteOut:
    async with rt.engine.connect() as conn:
        row = (await conn.execute(select(Site).where(Site.id == site_id))).first()
    if row is None:
        raise Problem(404, "Unknown site", f"no site with id {site_id!r}", "site_id")
    return SiteOut.model_validate(row._mapping)


@router.get("/{site_id}", response_model=SiteOut, responses=problems(404))
async def get_site(
    site_id: SitePath, rt: RuntimeDep, who: Principal = require("fleet.read")
) -> SiteOut:
    """One site; outside the caller's scope it reads as unknown (404)."""
    await authorize_site(rt, who, "fleet.read", site_id)
    return await _load(rt, site_id)


@router.patch("/{site_id}", response_model=SiteOut, responses=problems(404))
async def update_site(
    site_id: SitePath,
    body: SitePatch,
    request: Request,
    rt: RuntimeDep,
    who: Principal = require("charger.write"),
) -> SiteOut:
    """Rename a site, change its timezone (maintenance windows follow it), region or tags.

    Needs ``charger.write`` on the site; moving it to another region needs it there too."""
    before = await authorize_site(rt, who, "charger.write", site_id)
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    if "region" in changes:
        after = perms.site_place(site_id, changes["region"])
        if not perms.site_change_allowed(
            who.grants, "charger.write", before, after, who.site_limit
        ):
            check_site(who, "charger.write", after)
    old = await _load(rt, site_id)
    if changes:
        async with rt.engine.begin() as conn:
            await conn.execute(update(Site).where(Site.id == site_id).values(**changes))
        if SITE_FACTS.intersection(changes):  # running campaigns read its chargers again
            await tell(rt, "campaigns.facts", site_id=site_id)
    new = await _load(rt, site_id)
    note(request, "site", site_id, old.model_dump(), new.model_dump())
    return new


@router.delete("/{site_id}", status_code=204, response_class=Response, responses=problems(404, 409))
async def delete_site(
    site_id: SitePath, request: Request, rt: RuntimeDep, who: Principal = require("charger.write")
) -> Response:
    """Delete a site no charger stands at (409 names how many still do)."""
    await authorize_site(rt, who, "charger.write", site_id)
    note(request, "site", site_id)
    old = await _load(rt, site_id)
    async with rt.engine.begin() as conn:
        count = (
            await conn.execute(
                select(func.count()).select_from(Charger).where(Charger.site_id == site_id)
            )
        ).scalar() or 0
        if count:
            raise Problem(
                409,
                "Site in use",
                f"{count} chargers stand at {site_id}: move them first",
                "site_id",
                chargers=count,
            )
        await conn.execute(delete(Site).where(Site.id == site_id))
    note(request, "site", site_id, old.model_dump(), None)
    return Response(status_code=204)
