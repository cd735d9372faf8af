"""Split the eligible chargers into waves: a pilot, then growing waves, each spread out.

A wave that lands on one site or one model tells the gate little and can take a whole site
down, so every wave is drawn round-robin over (site, model) groups: the first wave touches
as many groups as it has chargers (and every model before any model twice), and no group
gets a second charger in a wave before every group has one. The order is a seeded shuffle,
so the same campaign name plans the same waves whatever the input order.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence

from evota.rollout.policy import WaveSpec
from evota.selection import ChargerSnapshot

__all__ = ["exponential", "plan_waves", "spread_order"]


def spread_order(chargers: Sequence[ChargerSnapshot], seed: str = "") -> list[str]:
    """All charger ids, ordered so that every prefix is spread across sites and models."""
    rng = random.Random(f"evota-waves:{seed}")
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for c in chargers:
        groups[(c.site_id or "", c.model or "")].append(c.id)
    # Order the groups so that a round visits every model before any model again: group g
    # gets rank (its index among the shuffled groups of its model, shuffled model rank).
    by_model: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for key in sorted(groups):
        by_model[key[1]].append(key)
    models = sorted(by_model)
    rng.shuffle(models)
    group_rank: dict[tuple[str, str], tuple[int, int]] = {}
    for m_rank, model in enumerate(models):
        keys = by_model[model]
        rng.shuffle(keys)
        for i, key in enumerate(keys):
            group_rank[key] = (i, m_rank)
    ranked: list[tuple[int, tuple[int, int], str]] = []
    for key in sorted(groups, key=group_rank.__getitem__):
        ids = sorted(groups[key])
        rng.shuffle(ids)
        rank = group_rank[key]
        ranked.extend((k, rank, cid) for k, cid in enumerate(ids))
    ranked.sort()
    return [cid for _, _, cid in ranked]


def plan_waves(
    eligible: Sequence[ChargerSnapshot],
    specs: Sequence[WaveSpec],
    *,
    pilot: Sequence[str] = (),
    seed: str = "",
) -> tuple[tuple[str, ...], ...]:
    """The waves, as charger ids; together they partition ``eligible`` exactly.

    The explicit ``pilot`` (if any) is wave 0, pinned as given. Then each spec in turn:
    ``count`` takes that many, ``percent`` takes up to ceil(percent% of all eligible) covered
    in total (pilot included). The last spec takes everything left, so the campaign always
    covers the whole eligible set; no specs means one wave with the rest. Empty waves (a
    percentage already reached) are dropped.
    """
    ids = {c.id for c in eligible}
    if len(ids) != len(eligible):
        raise ValueError("eligible chargers must have distinct ids")
    pinned = tuple(dict.fromkeys(pilot))
    unknown = [cid for cid in pinned if cid not in ids]
    if unknown:
        raise ValueError(f"pilot chargers not eligible: {', '.join(unknown[:10])}")
    total = len(eligible)
    pinned_set = set(pinned)
    order = spread_order([c for c in eligible if c.id not in pinned_set], seed)
    waves: list[tuple[str, ...]] = [pinned] if pinned else []
    covered = len(pinned)
    taken = 0
    for i, spec in enumerate(specs):
        left = len(order) - taken
        if i == len(specs) - 1:
            size = left
        elif spec.count is not None:
            size = min(spec.count, left)
        else:
            assert spec.percent is not None
            goal = math.ceil(round(total * spec.percent / 100, 9))
            size = max(0, min(goal - covered, left))
        if size:
            waves.append(tuple(order[taken : taken + size]))
            taken += size
            covered += size
    if taken < len(order):
        waves.append(tuple(order[taken:]))
    return tuple(waves)


def exponential(first: int, factor: float, total: int) -> tuple[WaveSpec, ...]:
    """Counts ``first``, ``first*factor``, ``first*factor²``… (rounded up) covering ``total``."""
    if first < 1 or not factor >= 1 or total < 0:
        raise ValueError("need first >= 1, factor >= 1, total >= 0")
    specs: list[WaveSpec] = []
    covered = 0
    size = float(first)
    while covered < total:
        n = min(math.ceil(size), total - covered)
        specs.append(WaveSpec(count=n))
        covered += n
        size *= factor
    return tuple(specs)
