"""Database reads for the scorecard and the fleet's firmware history: the shell around
:mod:`evota.evidence.scorecard` and :mod:`evota.evidence.fleet_versions`.

Every read is narrowed by ``scoped``, a filter over a query on ``chargers`` (the API passes
:func:`evota.api.deps.scope_filter` for the caller), so a scoped operator's numbers count
only its own chargers. Long reads go in keyset chunks of :data:`CHUNK` rows, so 100,000
chargers over a year never sit in one result set.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, String, and_, func, literal, not_, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from evota.evidence import fleet_versions as fv
from evota.evidence import scorecard as sc
from evota.rollout.job import JobState
from evota.store.models import Campaign, Charger, ChargerEvent, Firmware, Job, Site

Scoped = Callable[[Select[Any]], Select[Any]]
CHUNK = 5000


def _in_scope(scoped: Scoped, vendor: str | None = None, model: str | None = None) -> Any:
    query = select(Charger.id)
    if vendor:
        query = query.where(func.lower(Charger.vendor) == vendor.lower())
    if model:
        query = query.where(Charger.model == model)
    return scoped(query)


def _image(row: Any) -> sc.Image:
    return sc.Image(row.id, row.vendor, row.version, tuple(row.models or ()), row.state)


async def scorecard_inputs(
    engine: AsyncEngine,
    firmware_id: str,
    scoped: Scoped,
    *,
    now: datetime,
    security_days: int = 30,
    all_campaigns: bool = True,
) -> sc.Inputs | None:
    """The scoped counts for one image's scorecard; None if there is no such image."""
    fw_cols = (Firmware.id, Firmware.vendor, Firmware.version, Firmware.models, Firmware.state)
    async with engine.connect() as conn:
        row = (await conn.execute(select(*fw_cols).where(Firmware.id == firmware_id))).first()
        if row is None:
            return None
        image = _image(row)
        same_vendor = func.lower(Firmware.vendor) == image.vendor.lower()
        runs_it = (
            func.lower(Charger.vendor) == image.vendor.lower(),
            Charger.firmware_version == image.version,
        )
        ids = _in_scope(scoped)
        grouped: Any = (
            select(Charger.model, Charger.site_id, Site.region, func.count())
            .outerjoin(Site, Site.id == Charger.site_id)
            .where(*runs_it)
            .group_by(Charger.model, Charger.site_id, Site.region)
        )
        placements: Any = (await conn.execute(scoped(grouped))).all()
        jobs_to = (
            await conn.execute(
                select(Job.kind, Job.state, Job.failure, func.count())
                .where(Job.firmware_id == image.id, Job.charger_id.in_(ids))
                .group_by(Job.kind, Job.state, Job.failure)
            )
        ).all()
        away = (
            await conn.execute(
                select(Job.kind, Job.state, Job.failure, func.count())
                .join(Firmware, Firmware.id == Job.firmware_id)
                .where(
                    Job.kind == "rollback",
                    Job.previous_version == image.version,
                    same_vendor,
                    Job.charger_id.in_(ids),
                )
                .group_by(Job.kind, Job.state, Job.failure)
            )
        ).all()
        running_ids = scoped(select(Charger.id).where(*runs_it))
        security = (
            await conn.execute(
                select(ChargerEvent.status, func.count())
                .where(
                    ChargerEvent.kind == "security_event",
                    ChargerEvent.received_at >= now - timedelta(days=security_days),
                    ChargerEvent.charger_id.in_(running_ids),
                )
                .group_by(ChargerEvent.status)
            )
        ).all()
        campaigns = (
            await conn.execute(
                select(
                    Campaign.id,
                    Campaign.name,
                    Campaign.state,
                    Campaign.created_at,
                    Campaign.started_at,
                    Campaign.finished_at,
                ).where(Campaign.firmware_id == image.id)
            )
        ).all()
        campaign_jobs = (
            await conn.execute(
                select(Job.campaign_id, Job.state, func.count())
                .where(
                    Job.firmware_id == image.id,
                    Job.campaign_id.is_not(None),
                    Job.charger_id.in_(ids),
                )
                .group_by(Job.campaign_id, Job.state)
            )
        ).all()
        siblings = (await conn.execute(select(*fw_cols).where(same_vendor))).all()
    return sc.Inputs(
        image=image,
        placements=[sc.Placement(r[0], r[1], r[2], int(r[3])) for r in placements],
        jobs_to=[sc.JobCount(r[0], r[1], r[2], int(r[3])) for r in jobs_to],
        rollbacks_away=[sc.JobCount(r[0], r[1], r[2], int(r[3])) for r in away],
        security_events=[(str(r[0] or ""), int(r[1])) for r in security],
        campaigns=[sc.CampaignRow(r[0], r[1], r[2], r[3], r[4], r[5]) for r in campaigns],
        campaign_jobs=[sc.CampaignJobs(str(r[0]), r[1], int(r[2])) for r in campaign_jobs],
        all_campaigns=all_campaigns,
        siblings=[_image(r) for r in siblings],
        security_days=security_days,
    )


async def _chunks(conn: AsyncConnection, query: Select[Any], key: Any) -> AsyncIterator[list[Any]]:
    """``query``'s rows in keyset chunks ordered by ``key`` (its first column)."""
    last: Any = None
    while True:
        q = query if last is None else query.where(key > last)
        rows = (await conn.execute(q.order_by(key).limit(CHUNK))).all()
        if not rows:
            return
        yield rows
        if len(rows) < CHUNK:
            return
        last = rows[-1][0]


def _version_changes(start: datetime, narrowed: Callable[[Any, Any], Any]) -> Any:
    """Boots and succeeded jobs since ``start`` as one stream of facts (charger, at, version,
    before), keeping only the facts that change the charger's version: the first one in the
    window, and any whose version differs from the fact before it. The database drops the
    repeats (a charger rebooting weekly on the same version) in one window-function pass, so
    a year of boots costs a sort in the database, not a row each in Python. Dropping a fact
    that repeats its predecessor's version changes nothing in :func:`fleet_versions.daily`."""
    version = ChargerEvent.data["firmware_version"].as_string()
    boots = narrowed(
        select(
            ChargerEvent.charger_id.label("charger_id"),
            ChargerEvent.received_at.label("at"),
            version.label("version"),
            literal(None, String(50)).label("before"),
            literal(0).label("src"),
        ).where(
            ChargerEvent.kind == "boot",
            ChargerEvent.received_at >= start,
            version.is_not(None),  # a boot that did not say its version tells nothing
        ),
        ChargerEvent.charger_id,
    )
    finished = func.coalesce(Job.finished_at, Job.updated_at)
    jobs = narrowed(
        select(
            Job.charger_id,
            finished,
            Job.target_version,
            Job.previous_version,
            literal(1),
        ).where(Job.state == JobState.SUCCEEDED, finished >= start),
        Job.charger_id,
    )
    facts = union_all(boots, jobs).subquery()
    previous = func.lag(facts.c.version).over(
        partition_by=facts.c.charger_id, order_by=(facts.c.at, facts.c.src)
    )
    ranked = select(facts, previous.label("previous")).subquery()
    changed = (
        select(
            ranked,
            func.count().over(partition_by=ranked.c.charger_id).label("facts"),
        )
        .where(or_(ranked.c.previous.is_(None), ranked.c.previous != ranked.c.version))
        .subquery()
    )
    # A charger whose one fact says what it runs now tells what having no fact tells: drop it
    # too (in a quiet window that is nearly every charger).
    quiet = and_(
        changed.c.facts == 1,
        changed.c.before.is_(None),
        Charger.firmware_version.is_not(None),
        changed.c.version == Charger.firmware_version,
    )
    return (
        select(changed.c.charger_id, changed.c.at, changed.c.version, changed.c.before)
        .join(Charger, Charger.id == changed.c.charger_id)
        .where(not_(quiet))
        .order_by(changed.c.at, changed.c.src)
    )


async def _rows(conn: AsyncConnection, query: Any) -> AsyncIterator[Any]:
    """``query``'s rows, fetched :data:`CHUNK` at a time (a server-side cursor on
    PostgreSQL), so a year of boots never sits in one result set."""
    result = await conn.stream(query.execution_options(yield_per=CHUNK))
    async for partition in result.partitions():
        for row in partition:
            yield row


async def history(
    engine: AsyncEngine,
    scoped: Scoped,
    *,
    now: datetime,
    days: int,
    vendor: str | None = None,
    model: str | None = None,
) -> tuple[fv.Day, ...]:
    """Per-day version counts over the last ``days`` days (see :func:`fleet_versions.daily`)."""
    first_day, start = fv.window(now, days)
    chargers: list[fv.ChargerNow] = []
    async with engine.connect() as conn:
        query: Any = select(
            Charger.id, Charger.vendor, Charger.firmware_version, Charger.created_at
        )
        if vendor:
            query = query.where(func.lower(Charger.vendor) == vendor.lower())
        if model:
            query = query.where(Charger.model == model)
        async for rows in _chunks(conn, scoped(query), Charger.id):
            chargers.extend(fv.ChargerNow(r[0], r[1], r[2], r[3] or start) for r in rows)
        known = {c.id for c in chargers}
        # The scope's chargers as a subquery narrow the facts read, unless it is everyone:
        # then the filter would only cost a semi-join per row.
        fleet: Any = select(func.count()).select_from(Charger)
        if vendor:
            fleet = fleet.where(func.lower(Charger.vendor) == vendor.lower())
        if model:
            fleet = fleet.where(Charger.model == model)
        everyone = int((await conn.execute(fleet)).scalar_one()) == len(known)
        ids = _in_scope(scoped, vendor, model)

        def narrowed(query: Any, column: Any) -> Any:
            return query if everyone else query.where(column.in_(ids))

        changes = [
            fv.Change(r.charger_id, r.at, r.version, r.before)
            async for r in _rows(conn, _version_changes(start, narrowed))
            if r.charger_id in known
        ]
    # A second or two of pure CPU for 100,000 chargers: off the event loop the gateway runs on.
    return await asyncio.to_thread(fv.daily, chargers, changes, first_day, days, now)
