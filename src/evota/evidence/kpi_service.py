"""Post-rollout KPIs from ``charger_days`` (the shell of :mod:`evota.evidence.kpis`).

Every figure is an SQL aggregate over the pre-aggregated rows, narrowed to the caller's
chargers by ``scope`` (the API's ``scope_filter``: a function narrowing a query over
``chargers``), so the work per request is a handful of indexed sums whatever the history's
length. Only complete days count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Integer, Select, case, cast, func, select, true
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.audit import anomalies
from evota.evidence import daily, regression, scorecard
from evota.evidence.kpis import Sums, compare, kpis
from evota.store.models import Alert, Campaign, Charger, ChargerDay, Firmware, Job

log = structlog.get_logger("evota.evidence")

Scope = Callable[[Select[Any]], Select[Any]] | None
MAX_DAYS = 90
#: An alert for the same version and rate is not raised again within this long.
ALERT_QUIET = timedelta(days=7)


class NotFound(LookupError):
    pass


def _share() -> Any:
    return ChargerDay.available_s / ChargerDay.observed_s


_COLUMNS = (
    func.count().label("charger_days"),
    func.count(func.distinct(ChargerDay.charger_id)).label("chargers"),
    func.coalesce(func.sum(ChargerDay.observed_s), 0.0).label("observed_s"),
    func.coalesce(func.sum(ChargerDay.connected_s), 0.0).label("connected_s"),
    func.coalesce(func.sum(ChargerDay.available_s), 0.0).label("available_s"),
    func.coalesce(func.sum(_share()), 0.0).label("available_share"),
    func.coalesce(func.sum(_share() * _share()), 0.0).label("available_share2"),
    func.coalesce(func.sum(ChargerDay.offline_episodes), 0).label("offline_episodes"),
    func.coalesce(func.sum(ChargerDay.reconnects), 0).label("reconnects"),
    func.coalesce(func.sum(ChargerDay.faults), 0).label("faults"),
    func.coalesce(func.sum(case((ChargerDay.faults > 0, 1), else_=0)), 0).label("faulty_days"),
    func.coalesce(func.sum(ChargerDay.sessions), 0).label("sessions"),
    func.coalesce(func.sum(ChargerDay.failed_sessions), 0).label("failed_sessions"),
    func.coalesce(func.sum(ChargerDay.repairs), 0).label("repairs"),
    func.coalesce(func.sum(ChargerDay.repair_s), 0.0).label("repair_s"),
    func.coalesce(func.sum(ChargerDay.repair_s2), 0.0).label("repair_s2"),
)


def _scoped(query: Select[Any], scope: Scope) -> Select[Any]:
    if scope is None:
        return query
    return scope(query.join(Charger, Charger.id == ChargerDay.charger_id))


async def sums(engine: AsyncEngine, where: Iterable[Any], scope: Scope = None) -> Sums:
    """The sums of the complete charger-days matching ``where`` (and ``scope``)."""
    conds = [ChargerDay.complete, ChargerDay.observed_s > 0, *where]
    async with engine.connect() as conn:
        row = (await conn.execute(_scoped(select(*_COLUMNS).where(*conds), scope))).one()
        codes: dict[str, int] = {}
        if row.faults:
            by_code = _by_code(conn.dialect.name, [*conds, ChargerDay.faults > 0], scope)
            codes = {str(k): int(n) for k, n in (await conn.execute(by_code)).all() if n}
    values = {k: row._mapping[k] for k in row._mapping}
    return Sums(**values, faults_by_code=codes)


def _by_code(dialect: str, conds: list[Any], scope: Scope) -> Any:
    """Faults summed per error code inside the database (its JSON functions), so no row's
    JSON crosses into Python: (code, count) rows."""
    if dialect == "postgresql":
        each = func.json_each_text(ChargerDay.faults_by_code).table_valued("key", "value")
        count: Any = func.sum(cast(each.c.value, Integer))
    else:
        each = func.json_each(ChargerDay.faults_by_code).table_valued("key", "value")
        count = func.sum(each.c.value)
    query = select(each.c.key, count).select_from(ChargerDay).join(each, true())
    return _scoped(query.where(*conds), scope).group_by(each.c.key)


def add(a: Sums, b: Sums) -> Sums:
    """Two disjoint sets of charger-days together (distinct chargers may be counted twice)."""
    codes = Counter(a.faults_by_code)
    codes.update(b.faults_by_code)
    fields = {f: getattr(a, f) + getattr(b, f) for f in Sums.__slots__ if f != "faults_by_code"}  # type: ignore[attr-defined]
    return Sums(**fields, faults_by_code=dict(codes))


def _last_complete(now: datetime) -> int:
    """The last day that can be complete at ``now`` (yesterday)."""
    return daily.day_number(now) - 1


# -- campaigns ------------------------------------------------------------------------------
async def campaign_kpis(
    engine: AsyncEngine, campaign_id: str, scope: Scope, now: datetime, days: int = 7
) -> dict[str, Any]:
    """A campaign's updated chargers ``days`` before vs after their update day (the update
    day excluded), and updated vs not-yet-updated chargers of the same models on the same
    days (the concurrent control group)."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(Campaign.id, Campaign.name, Campaign.firmware_id, Firmware.version)
                .join(Firmware, Firmware.id == Campaign.firmware_id)
                .where(Campaign.id == campaign_id)
            )
        ).first()
        if row is None:
            raise NotFound(campaign_id)
        updated = _scoped_jobs(
            select(Job.charger_id, Job.finished_at).where(
                Job.campaign_id == campaign_id,
                Job.kind == "update",
                Job.state == "succeeded",
                Job.finished_at.is_not(None),
            ),
            scope,
        )
        jobs = (await conn.execute(updated)).all()
        models = (
            (
                await conn.execute(
                    _over_chargers(
                        select(func.distinct(Charger.model)).where(
                            Charger.id.in_(
                                select(Job.charger_id).where(
                                    Job.campaign_id == campaign_id,
                                    Job.kind == "update",
                                    Job.state == "succeeded",
                                )
                            ),
                            Charger.model.is_not(None),
                        ),
                        scope,
                    )
                )
            )
            .scalars()
            .all()
        )
    target = row.version
    last = _last_complete(now)
    update_days = sorted({daily.day_number(j.finished_at) for j in jobs})
    before = after = Sums()
    for u in update_days:
        chargers = select(Job.charger_id).where(
            Job.campaign_id == campaign_id,
            Job.kind == "update",
            Job.state == "succeeded",
            Job.finished_at >= daily.day_start(u),
            Job.finished_at < daily.day_start(u + 1),
        )
        mine = ChargerDay.charger_id.in_(chargers)
        before = add(
            before,
            await sums(engine, [mine, ChargerDay.day >= u - days, ChargerDay.day < u], scope),
        )
        if u + 1 <= last:
            after = add(
                after,
                await sums(
                    engine,
                    [mine, ChargerDay.day > u, ChargerDay.day <= min(u + days, last)],
                    scope,
                ),
            )
    control_days: list[int] = []
    treated = control = Sums()
    if update_days and update_days[0] + 1 <= last and models:
        first, final = update_days[0] + 1, min(update_days[-1] + days, last)
        control_days = [first, final]
        same = [
            ChargerDay.model.in_(list(models)),
            ChargerDay.day >= first,
            ChargerDay.day <= final,
            ChargerDay.firmware_version.is_not(None),
            ChargerDay.version_changed.is_(False),
        ]
        treated = await sums(engine, [*same, ChargerDay.firmware_version == target], scope)
        control = await sums(engine, [*same, ChargerDay.firmware_version != target], scope)
    return {
        "campaign_id": campaign_id,
        "name": row.name,
        "firmware_id": row.firmware_id,
        "target_version": target,
        "days": days,
        "updated_chargers": len(jobs),
        "update_days": [daily.day_date(u).isoformat() for u in update_days],
        "last_complete_day": daily.day_date(last).isoformat(),
        "before": kpis(before),
        "after": kpis(after),
        "before_after": compare(before, after, ("before", "after")),
        "control": {
            "models": sorted(models),
            "days": [daily.day_date(d).isoformat() for d in control_days],
            "updated": kpis(treated),
            "not_updated": kpis(control),
            "comparison": compare(control, treated, ("not_updated", "updated")),
        },
    }


def _over_chargers(query: Any, scope: Scope) -> Any:
    """A query over ``chargers`` narrowed to the caller's."""
    return query if scope is None else scope(query)


def _scoped_jobs(query: Any, scope: Scope) -> Any:
    if scope is None:
        return query
    return scope(query.join(Charger, Charger.id == Job.charger_id))


# -- firmware versions ------------------------------------------------------------------------
async def _image(engine: AsyncEngine, firmware_id: str) -> Any:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(Firmware.id, Firmware.vendor, Firmware.version, Firmware.models).where(
                    Firmware.id == firmware_id
                )
            )
        ).first()
    if row is None:
        raise NotFound(firmware_id)
    return row


async def predecessor(engine: AsyncEngine, image: Any) -> str | None:
    """The version chargers most often ran before this image's succeeded updates; without
    any, its previous release (:func:`evota.evidence.scorecard.predecessor`: the newest
    older shipped image of the vendor for overlapping models), as the scorecard names it."""
    async with engine.connect() as conn:
        prev = (
            await conn.execute(
                select(Job.previous_version, func.count().label("n"))
                .where(
                    Job.firmware_id == image.id,
                    Job.kind == "update",
                    Job.state == "succeeded",
                    Job.previous_version.is_not(None),
                    Job.previous_version != image.version,
                )
                .group_by(Job.previous_version)
                .order_by(func.count().desc(), Job.previous_version)
                .limit(1)
            )
        ).first()
        if prev is not None:
            return str(prev.previous_version)
        siblings = (
            await conn.execute(
                select(
                    Firmware.id, Firmware.vendor, Firmware.version, Firmware.models, Firmware.state
                ).where(func.lower(Firmware.vendor) == image.vendor.lower())
            )
        ).all()
    this = scorecard.Image(image.id, image.vendor, image.version, tuple(image.models or ()))
    found = scorecard.predecessor(
        this,
        [
            scorecard.Image(r.id, r.vendor, r.version, tuple(r.models or ()), r.state)
            for r in siblings
        ],
    )
    return found.version if found is not None else None


def _version_rows(image: Any, version: str) -> list[Any]:
    conds = [ChargerDay.firmware_version == version, ChargerDay.vendor == image.vendor]
    if image.models:
        conds.append(ChargerDay.model.in_(list(image.models)))
    return conds


async def firmware_kpis(
    engine: AsyncEngine, firmware_id: str, scope: Scope, now: datetime, days: int = 30
) -> dict[str, Any]:
    """A version's KPIs over the last ``days`` complete days against its predecessor's over
    the same days, and the regression test's findings. Raises :class:`NotFound`."""
    image = await _image(engine, firmware_id)
    prev = await predecessor(engine, image)
    last = _last_complete(now)
    window = [ChargerDay.day > last - days, ChargerDay.day <= last]
    mine = await sums(engine, [*_version_rows(image, image.version), *window], scope)
    theirs = (
        await sums(engine, [*_version_rows(image, prev), *window], scope)
        if prev is not None
        else Sums()
    )
    findings = regression.regressions(theirs, mine) if prev is not None else []
    return {
        "firmware_id": image.id,
        "vendor": image.vendor,
        "version": image.version,
        "predecessor": prev,
        "days": days,
        "from": daily.day_date(last - days + 1).isoformat(),
        "to": daily.day_date(last).isoformat(),
        "kpis": kpis(mine),
        "predecessor_kpis": kpis(theirs) if prev is not None else None,
        "comparison": compare(theirs, mine, ("predecessor", "version"))
        if prev is not None
        else None,
        "regressions": [
            {
                "metric": f.metric,
                "predecessor_rate": f.old_rate,
                "version_rate": f.new_rate,
                "n": {"predecessor": f.old_n, "version": f.new_n},
                "z": f.z,
            }
            for f in findings
        ],
    }


# -- the regression alert -------------------------------------------------------------------
async def check_regressions(
    engine: AsyncEngine,
    now: datetime,
    raise_alert: Callable[[anomalies.Alert], Any],
    days: int = 30,
) -> list[anomalies.Alert]:
    """After each rollup: every image that ran in the last ``days`` days is tested against
    its predecessor, fleet-wide; a finding raises one alert per image and rate, not again
    within :data:`ALERT_QUIET`."""
    last = _last_complete(now)
    async with engine.connect() as conn:
        ran = (
            (
                await conn.execute(
                    select(func.distinct(ChargerDay.firmware_version)).where(
                        ChargerDay.day > last - days, ChargerDay.firmware_version.is_not(None)
                    )
                )
            )
            .scalars()
            .all()
        )
        if not ran:
            return []
        images = (
            await conn.execute(
                select(Firmware.id, Firmware.vendor, Firmware.version).where(
                    Firmware.version.in_(list(ran)), Firmware.state != "revoked"
                )
            )
        ).all()
        recent = {
            r.subject
            for r in (
                await conn.execute(
                    select(Alert.subject).where(
                        Alert.rule == regression.RULE, Alert.created_at > now - ALERT_QUIET
                    )
                )
            ).all()
        }
    raised = []
    for image in images:
        result = await firmware_kpis(engine, image.id, None, now, days)
        for f in result["regressions"]:
            subject = f"{image.id}:{f['metric']}"
            if subject in recent:
                continue
            finding = regression.Finding(
                f["metric"],
                f["predecessor_rate"],
                f["version_rate"],
                f["n"]["predecessor"],
                f["n"]["version"],
                f["z"],
            )
            campaigns = await _campaigns_of(engine, image.id)
            alert = anomalies.Alert(
                regression.RULE,
                subject,
                now,
                finding.message(image.version, result["predecessor"]),
                detail={
                    "firmware_id": image.id,
                    "version": image.version,
                    "predecessor": result["predecessor"],
                    **f,
                    "revoke": f"/api/v1/firmware/{image.id}/revoke",
                    "rollback": [f"/api/v1/campaigns/{c}/abort" for c in campaigns],
                },
            )
            await raise_alert(alert)
            recent.add(subject)
            raised.append(alert)
    return raised


async def _campaigns_of(engine: AsyncEngine, firmware_id: str) -> list[str]:
    async with engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    select(Campaign.id)
                    .where(Campaign.firmware_id == firmware_id)
                    .order_by(Campaign.created_at.desc())
                    .limit(10)
                )
            )
            .scalars()
            .all()
        )


__all__ = [
    "NotFound",
    "add",
    "campaign_kpis",
    "check_regressions",
    "firmware_kpis",
    "predecessor",
    "sums",
]
