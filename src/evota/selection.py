"""Which chargers a query selects: the one matching rule campaigns and bulk operations share.

A campaign's target (:class:`evota.rollout.policy.Target`) and an operation's or a
configuration profile's query both pick chargers by the same attributes with the same
semantics, so this module holds the snapshot they look at and the match, pure; what only a
campaign asks (version filters, image checks, offline limits) stays in ``evota.rollout``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

__all__ = ["ChargerSnapshot", "Selector", "matcher", "matches"]


@dataclass(frozen=True, slots=True)
class ChargerSnapshot:
    """What a decision knows about one charger at one moment."""

    id: str
    vendor: str | None = None
    model: str | None = None
    hardware_revision: str | None = None
    firmware_version: str | None = None
    site_id: str | None = None
    region: str | None = None
    tags: frozenset[str] = frozenset()
    timezone: str = "UTC"
    connected: bool = False
    last_seen: datetime | None = None
    in_session: bool = False
    other_campaign: str | None = None  # the active campaign that already covers it
    # From the charger's vendor profile (evota.fleet.vendors; None: no limit known).
    max_per_site: int | None = None  # safe concurrent updates per site for this model
    max_image_bytes: int | None = None  # larger images are refused before sending


@dataclass(frozen=True, slots=True)
class Selector:
    """A query over chargers. Empty tuples mean "no constraint"; filters combine with AND.

    ``tags`` matches a charger carrying ANY of the listed tags (tags usually name
    alternatives such as cohorts); ``charger_ids`` narrows to those ids; ``exclude_ids``
    wins over everything else. Vendors compare case-insensitively, the rest exactly.
    """

    vendors: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    hardware_revisions: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    charger_ids: tuple[str, ...] = ()
    exclude_ids: tuple[str, ...] = ()


def matches(selector: Selector, charger: ChargerSnapshot) -> bool:
    """Whether the query selects this charger."""
    return matcher(selector)(charger)


def matcher(selector: Selector) -> Callable[[ChargerSnapshot], bool]:
    """:func:`matches` for one query, with its sets built once (for a whole fleet)."""
    vendors = {v.casefold() for v in selector.vendors}
    models = set(selector.models)
    revisions = set(selector.hardware_revisions)
    sites = set(selector.sites)
    regions = set(selector.regions)
    tags = frozenset(selector.tags)
    ids = set(selector.charger_ids)
    exclude = set(selector.exclude_ids)

    def match(c: ChargerSnapshot) -> bool:
        return not (
            c.id in exclude
            or (ids and c.id not in ids)
            or (vendors and (c.vendor or "").casefold() not in vendors)
            or (models and c.model not in models)
            or (revisions and c.hardware_revision not in revisions)
            or (sites and c.site_id not in sites)
            or (regions and c.region not in regions)
            or (tags and tags.isdisjoint(c.tags))
        )

    return match
