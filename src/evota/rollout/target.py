"""Which chargers a campaign covers, and why every other matching charger is left out.

:func:`evota.selection.matches` is the query alone (who the operator *meant*);
:func:`plan_eligibility` then applies the per-charger image checks of
:func:`evota.firmware.updates.update_refusal` (the same words as a single-charger update),
the version filters, connectivity and other campaigns, so the operator sees a reason for
every charger that will not be updated.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from evota.firmware import versions
from evota.firmware.updates import ChargerFacts, ImageFacts, Refusal, update_refusal
from evota.rollout.policy import Target
from evota.selection import ChargerSnapshot, matcher

__all__ = ["Eligibility", "Exclusion", "nothing_to_update", "plan_eligibility"]


@dataclass(frozen=True, slots=True)
class Exclusion:
    charger_id: str
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Eligibility:
    eligible: tuple[str, ...]
    excluded: tuple[Exclusion, ...]


_REASONS = {"downgrade": "would_downgrade"}  # update_refusal's code -> campaign reason


def _version_problem(target: Target, image: ImageFacts, current: str | None) -> str | None:
    """Why the current version is outside the target's version filters, or None."""
    if not (
        target.firmware_versions
        or target.version_min
        or target.version_max
        or target.older_than_target
    ):
        return None
    if current is None:
        return "charger has not reported a firmware version"
    key = versions.version_key(current)
    if target.firmware_versions and all(
        versions.version_key(v) != key for v in target.firmware_versions
    ):
        return f"runs {current}, not one of {', '.join(target.firmware_versions)}"
    if target.version_min and key < versions.version_key(target.version_min):
        return f"runs {current}, below {target.version_min}"
    if target.version_max and key > versions.version_key(target.version_max):
        return f"runs {current}, above {target.version_max}"
    if target.older_than_target and key >= versions.version_key(image.version):
        return f"runs {current}, not older than {image.version}"
    return None


def plan_eligibility(
    target: Target,
    image: ImageFacts,
    chargers: Iterable[ChargerSnapshot],
    now: datetime,
    *,
    allow_downgrade: bool = False,
) -> Eligibility:
    """Split the chargers the query selects into eligible ids and exclusions with reasons.

    Checks run in this order and the first one that applies is the reason: the image checks
    (``incompatible``, ``image_too_large`` (the vendor profile's maximum),
    ``already_on_target``, ``would_downgrade``, ``needs_intermediate``; ``revoked`` for a
    revoked image), ``version_not_targeted``, ``in_other_campaign``,
    ``offline_too_long`` (not connected and last seen longer ago than ``max_offline_days``,
    or never seen). Output keeps the input order.
    """
    match = matcher(target)
    offline_limit = (
        None if target.max_offline_days is None else timedelta(days=target.max_offline_days)
    )
    # Fleets have few distinct (vendor, model, revision, version) combinations: check each once.
    refusals: dict[tuple[str | int | None, ...], Refusal | None] = {}
    version_problems: dict[str | None, str | None] = {}
    eligible: list[str] = []
    excluded: list[Exclusion] = []
    for c in chargers:
        if not match(c):
            continue
        facts = (c.vendor, c.model, c.hardware_revision, c.firmware_version)
        key = (*facts, c.max_image_bytes)
        if key not in refusals:
            refusals[key] = update_refusal(
                image,
                ChargerFacts("", *facts, max_image_bytes=c.max_image_bytes),
                allow_downgrade=allow_downgrade,
            )
        refusal = refusals[key]
        if refusal is not None:
            reason = _REASONS.get(refusal.reason, refusal.reason)
            excluded.append(Exclusion(c.id, reason, refusal.detail))
            continue
        if c.firmware_version not in version_problems:
            version_problems[c.firmware_version] = _version_problem(
                target, image, c.firmware_version
            )
        problem = version_problems[c.firmware_version]
        if problem is not None:
            excluded.append(Exclusion(c.id, "version_not_targeted", problem))
            continue
        if c.other_campaign is not None:
            excluded.append(
                Exclusion(c.id, "in_other_campaign", f"in active campaign {c.other_campaign}")
            )
            continue
        if offline_limit is not None and not c.connected:
            if c.last_seen is None:
                excluded.append(Exclusion(c.id, "offline_too_long", "never seen online"))
                continue
            if now - c.last_seen > offline_limit:
                days = (now - c.last_seen).total_seconds() / 86400
                excluded.append(
                    Exclusion(
                        c.id,
                        "offline_too_long",
                        f"offline for {days:.1f} days (limit {target.max_offline_days:g})",
                    )
                )
                continue
        eligible.append(c.id)
    return Eligibility(tuple(eligible), tuple(excluded))


def nothing_to_update(eligible: int, excluded: Sequence[Mapping[str, Any]]) -> str | None:
    """Why a campaign cannot start, or None: with no eligible charger it would go straight to
    ``completed`` ("all 0 waves done") and tell the operator nothing. The reason counts the
    exclusions by reason, most frequent first, so the operator sees what to change."""
    if eligible > 0:
        return None
    counts = Counter(str(e.get("reason", "unknown")) for e in excluded)
    if not counts:
        return "no charger matches the campaign's target"
    parts = ", ".join(
        f"{n} {reason}" for reason, n in sorted(counts.items(), key=lambda i: (-i[1], i[0]))
    )
    return f"no eligible charger: {sum(counts.values())} excluded ({parts})"
