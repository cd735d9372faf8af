"""A firmware version's scorecard, pure: where it runs, what went wrong, who shipped it.

The shell (:mod:`evota.evidence.firmware_reads`) reads grouped counts already narrowed to
the operator's scope; everything here is arithmetic over those rows, so it is tested without
a database. KPIs are not computed here: ``kpis_url`` points at their own endpoint
(``/api/v1/firmware/{id}/kpis``), which the lead joins in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from evota.firmware import versions

UNKNOWN = "unknown"
#: Lifecycle states in which an image may have run on chargers (a draft never shipped).
SHIPPABLE = frozenset({"pilot", "released", "deprecated", "revoked"})


@dataclass(frozen=True, slots=True)
class Image:
    """The facts about one image the scorecard needs."""

    id: str
    vendor: str
    version: str
    models: tuple[str, ...] = ()
    state: str = "released"


@dataclass(frozen=True, slots=True)
class Placement:
    """Chargers running the image at one (model, site, region)."""

    model: str | None
    site_id: str | None
    region: str | None
    count: int


@dataclass(frozen=True, slots=True)
class JobCount:
    """Jobs of one kind (update or rollback), state and failure reason."""

    kind: str
    state: str
    failure: str | None
    count: int


@dataclass(frozen=True, slots=True)
class CampaignRow:
    id: str
    name: str
    state: str
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CampaignJobs:
    """A campaign's jobs (in the operator's scope) in one state."""

    campaign_id: str
    state: str
    count: int


@dataclass(frozen=True, slots=True)
class Inputs:
    """Everything the shell reads for one scorecard, already scoped."""

    image: Image
    placements: Sequence[Placement] = ()
    jobs_to: Sequence[JobCount] = ()  # jobs whose image is this one (updates, rollbacks to it)
    rollbacks_away: Sequence[JobCount] = ()  # rollback jobs leaving this version
    security_events: Sequence[tuple[str, int]] = ()  # (type, count) from chargers running it
    campaigns: Sequence[CampaignRow] = ()
    campaign_jobs: Sequence[CampaignJobs] = ()
    all_campaigns: bool = True  # False: list only campaigns with jobs in the operator's scope
    siblings: Sequence[Image] = ()  # the vendor's other images, for the predecessor
    security_days: int = 30


@dataclass(frozen=True, slots=True)
class Scorecard:
    image: Image
    running: int
    by_model: tuple[tuple[str, int], ...]
    by_site: tuple[tuple[str, int], ...]
    by_region: tuple[tuple[str, int], ...]
    updates: dict[str, int]  # update jobs to this image by state
    failed_by_reason: tuple[tuple[str, int], ...]
    rollbacks_to: dict[str, int]  # rollback jobs to this image by state
    rollbacks_away: dict[str, int]  # rollback jobs from this version by state
    security_events: tuple[tuple[str, int], ...]
    security_days: int
    campaigns: tuple[dict[str, Any], ...]
    predecessor: Image | None


def _ranked(counter: Counter[str]) -> tuple[tuple[str, int], ...]:
    """Largest first, then by name, so the order never depends on the rows' order."""
    return tuple(
        sorted(((k, n) for k, n in counter.items() if n > 0), key=lambda kv: (-kv[1], kv[0]))
    )


def _models_overlap(a: Sequence[str], b: Sequence[str]) -> bool:
    """An image without models is for every model of its vendor."""
    return not a or not b or bool(set(a) & set(b))


def predecessor(image: Image, siblings: Iterable[Image]) -> Image | None:
    """The newest image of the same vendor (any case) for an overlapping set of models that
    is older than ``image`` and has shipped (not a draft): what its chargers ran before."""
    key = versions.version_key(image.version)
    vendor = image.vendor.casefold()
    older = [
        s
        for s in siblings
        if s.id != image.id
        and s.vendor.casefold() == vendor
        and s.state in SHIPPABLE
        and _models_overlap(image.models, s.models)
        and versions.version_key(s.version) < key
    ]
    return max(older, key=lambda s: (versions.version_key(s.version), s.version), default=None)


def build(data: Inputs) -> Scorecard:
    """The scorecard from the scoped counts."""
    by_model: Counter[str] = Counter()
    by_site: Counter[str] = Counter()
    by_region: Counter[str] = Counter()
    for p in data.placements:
        by_model[p.model or UNKNOWN] += p.count
        by_site[p.site_id or UNKNOWN] += p.count
        by_region[p.region or UNKNOWN] += p.count
    updates: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    rollbacks_to: Counter[str] = Counter()
    for j in data.jobs_to:
        if j.kind == "rollback":
            rollbacks_to[j.state] += j.count
            continue
        updates[j.state] += j.count
        if j.state == "failed":
            failed[j.failure or UNKNOWN] += j.count
    away: Counter[str] = Counter()
    for j in data.rollbacks_away:
        away[j.state] += j.count
    security: Counter[str] = Counter()
    for kind, n in data.security_events:
        security[kind or UNKNOWN] += n
    jobs_by_campaign: dict[str, Counter[str]] = {}
    for cj in data.campaign_jobs:
        jobs_by_campaign.setdefault(cj.campaign_id, Counter())[cj.state] += cj.count
    campaigns = tuple(
        {
            "id": c.id,
            "name": c.name,
            "state": c.state,
            "created_at": c.created_at,
            "started_at": c.started_at,
            "finished_at": c.finished_at,
            "jobs": dict(sorted(jobs_by_campaign.get(c.id, Counter()).items())),
            "chargers": sum(jobs_by_campaign.get(c.id, Counter()).values()),
        }
        for c in sorted(
            data.campaigns,
            key=lambda c: (c.created_at is None, c.created_at or datetime.min, c.id),
        )
        if data.all_campaigns or sum(jobs_by_campaign.get(c.id, Counter()).values()) > 0
    )
    return Scorecard(
        image=data.image,
        running=sum(by_model.values()),
        by_model=_ranked(by_model),
        by_site=_ranked(by_site),
        by_region=_ranked(by_region),
        updates=dict(sorted(updates.items())),
        failed_by_reason=_ranked(failed),
        rollbacks_to=dict(sorted(rollbacks_to.items())),
        rollbacks_away=dict(sorted(away.items())),
        security_events=_ranked(security),
        security_days=data.security_days,
        campaigns=campaigns,
        predecessor=predecessor(data.image, data.siblings),
    )


def to_json(card: Scorecard, base: str = "/api/v1/firmware") -> dict[str, Any]:
    """The API's body: counts as ``[{"key": ..., "chargers": n}]`` lists, links to the KPIs."""

    def rows(items: tuple[tuple[str, int], ...], name: str) -> list[dict[str, Any]]:
        return [{name: k, "chargers": n} for k, n in items]

    prev = card.predecessor
    return {
        "firmware": {
            "id": card.image.id,
            "vendor": card.image.vendor,
            "version": card.image.version,
            "models": list(card.image.models),
            "state": card.image.state,
        },
        "running": {
            "total": card.running,
            "by_model": rows(card.by_model, "model"),
            "by_site": rows(card.by_site, "site_id"),
            "by_region": rows(card.by_region, "region"),
        },
        "incidents": {
            "update_jobs": card.updates,
            "failed_by_reason": [{"reason": k, "jobs": n} for k, n in card.failed_by_reason],
            "rollbacks_to": card.rollbacks_to,
            "rollbacks_away": card.rollbacks_away,
            "security_events": [{"type": k, "events": n} for k, n in card.security_events],
            "security_days": card.security_days,
        },
        "campaigns": [
            {
                **c,
                **{
                    k: (c[k].isoformat() if c[k] is not None else None)
                    for k in ("created_at", "started_at", "finished_at")
                },
            }
            for c in card.campaigns
        ],
        "predecessor": None
        if prev is None
        else {
            "id": prev.id,
            "version": prev.version,
            "state": prev.state,
            "scorecard_url": f"{base}/{prev.id}/scorecard",
        },
        # The API adds the KPIs of the last 30 days (``kpis``); other spans are here.
        "kpis_url": f"{base}/{card.image.id}/kpis",
    }
