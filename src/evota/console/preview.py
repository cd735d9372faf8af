"""The campaign wizard's live preview: what ``POST /api/v1/campaigns`` would plan, unsaved.

The same pure functions the campaign runner uses (target, eligibility, waves, windows) run
over the chargers the operator can see, so the count and the exclusion reasons the wizard
shows are the ones the draft will have (give or take chargers that connect in between).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select

from evota.api.deps import Principal, scope_filter
from evota.api.problems import Problem
from evota.firmware import repository as repo
from evota.firmware.updates import ImageFacts, image_facts
from evota.rollout import windows as win
from evota.rollout.campaign import ACTIVE
from evota.rollout.policy import (
    Policy,
    PolicyError,
    Target,
    WaveSpec,
    policy_from_dict,
    target_from_dict,
    waves_from_list,
    with_defaults,
)
from evota.rollout.policy import parse_ramp as ramp_of
from evota.rollout.target import plan_eligibility
from evota.rollout.waves import exponential, plan_waves
from evota.runtime import Runtime
from evota.selection import ChargerSnapshot
from evota.store.models import Campaign, Charger


@dataclass(frozen=True, slots=True)
class SiteWindow:
    site: str
    timezone: str
    chargers: int
    open_now: bool
    next_opening: datetime | None
    closes: datetime | None
    always: bool


@dataclass(frozen=True, slots=True)
class Preview:
    matched: int
    eligible: int
    excluded: tuple[tuple[str, int, tuple[str, ...]], ...]  # reason, count, example details
    waves: tuple[int, ...]
    pilot: tuple[str, ...]  # the first wave's chargers
    windows: tuple[SiteWindow, ...]


def plan_preview(
    *,
    name: str,
    target: Target,
    image: ImageFacts,
    fleet: Sequence[ChargerSnapshot],
    wave_specs: Sequence[WaveSpec] | None,
    ramp: tuple[int, float] | None,
    pilot: Sequence[str],
    policy: Policy,
    now: datetime,
) -> Preview:
    """Eligibility, waves and the next window per site, as the runner would plan them."""
    eligibility = plan_eligibility(target, image, fleet, now)
    by_id = {c.id: c for c in fleet}
    eligible = [by_id[c] for c in eligibility.eligible]
    specs: Sequence[WaveSpec] = wave_specs or ()
    if ramp is not None:
        specs = exponential(ramp[0], ramp[1], len(eligible)) or waves_from_list([{"percent": 100}])
    unknown = [c for c in pilot if c not in set(eligibility.eligible)]
    if unknown:
        raise PolicyError("pilot", f"pilot chargers are not eligible: {', '.join(unknown[:10])}")
    planned = plan_waves(eligible, specs, pilot=pilot, seed=name)
    reasons: Counter[str] = Counter(e.reason for e in eligibility.excluded)
    examples: dict[str, list[str]] = {}
    for e in eligibility.excluded:
        shown = examples.setdefault(e.reason, [])
        if len(shown) < 3:
            shown.append(f"{e.charger_id}: {e.detail}")
    sites: dict[tuple[str, str], int] = Counter(
        (c.site_id or "(no site)", c.timezone) for c in eligible
    )
    spans = []
    for (site, tz), count in sorted(sites.items()):
        ws = policy.windows_for(None if site == "(no site)" else site)
        spans.append(
            SiteWindow(
                site=site,
                timezone=tz,
                chargers=count,
                open_now=win.window_open(ws, tz, now),
                next_opening=win.next_opening(ws, tz, now) if ws else None,
                closes=win.current_close(ws, tz, now) if ws else None,
                always=not ws,
            )
        )
    return Preview(
        matched=len(eligibility.eligible) + len(eligibility.excluded),
        eligible=len(eligible),
        excluded=tuple((r, n, tuple(examples[r])) for r, n in reasons.most_common()),
        waves=tuple(len(w) for w in planned),
        pilot=tuple(planned[0]) if planned else (),
        windows=tuple(spans),
    )


def _invalid(exc: PolicyError) -> Problem:
    return Problem(422, "Invalid campaign", exc.message, exc.field)


async def preview(rt: Runtime, who: Principal, body: Mapping[str, Any]) -> Preview:
    """Validate like the create endpoint (same problems, same field names) and plan."""
    if not isinstance(body, Mapping):
        raise Problem(422, "Invalid campaign", "send a JSON object", "(body)")
    firmware_id = body.get("firmware_id")
    if not isinstance(firmware_id, str) or not firmware_id:
        raise Problem(422, "Invalid campaign", "choose a firmware image", "firmware_id")
    fw = await repo.get_firmware(rt.engine, firmware_id)
    if fw is None:
        raise Problem(422, "Unknown firmware", f"no firmware {firmware_id!r}", "firmware_id")
    pilot = body.get("pilot") or []
    if not isinstance(pilot, list) or not all(isinstance(p, str) for p in pilot):
        raise Problem(422, "Invalid campaign", "a list of charger ids", "pilot")
    raw_waves = body.get("waves", [{"percent": 100}])
    try:
        target = target_from_dict(body.get("target") or {})
        ramp = ramp_of(raw_waves)
        specs = waves_from_list(raw_waves) if ramp is None else None
        policy = policy_from_dict(
            with_defaults(body.get("policy") or {}, rt.settings.campaign_defaults)
        )
    except PolicyError as exc:
        raise _invalid(exc) from None
    async with rt.engine.connect() as conn:
        ids = list((await conn.execute(scope_filter(who)(select(Charger.id)))).scalars())
        snapshots = await rt.campaigns.snapshots(conn, ids)
        active = (
            await conn.execute(
                select(Campaign.id, Campaign.waves).where(Campaign.state.in_(ACTIVE))
            )
        ).all()
    busy = {cid: row.id for row in active for wave in row.waves for cid in wave}
    fleet = [
        replace(s, other_campaign=busy[cid]) if cid in busy else s for cid, s in snapshots.items()
    ]
    try:
        return plan_preview(
            name=str(body.get("name") or ""),
            target=target,
            image=image_facts(fw),
            fleet=fleet,
            wave_specs=specs,
            ramp=ramp,
            pilot=pilot,
            policy=policy,
            now=rt.clock.now(),
        )
    except PolicyError as exc:
        raise _invalid(exc) from None
