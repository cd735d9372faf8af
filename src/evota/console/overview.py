"""The fleet overview's numbers, pure: version distribution, fragmentation, who is behind.

The console reads grouped counts (vendor, model, version -> chargers) and the released
images; everything shown on the overview is computed here from those, so it can be tested
without a database or a browser.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from evota.firmware import versions

UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class VersionCount:
    """How many chargers of one vendor and model report one firmware version."""

    vendor: str | None
    model: str | None
    version: str | None
    count: int


@dataclass(frozen=True, slots=True)
class Release:
    """A released image: the newest one per model is what chargers should run."""

    vendor: str
    version: str
    models: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ModelSummary:
    vendor: str
    model: str
    total: int
    versions: tuple[tuple[str, int], ...]  # newest first; UNKNOWN (never reported) last
    latest: str | None  # the newest released version for this vendor and model
    behind: int  # chargers on a version older than ``latest``
    unknown: int  # chargers that have not reported a version
    fragmentation: float  # 1 - sum(share²): 0 when all run one version

    @property
    def on_latest(self) -> int:
        if self.latest is None:
            return 0
        key = versions.version_key(self.latest)
        return sum(n for v, n in self.versions if v != UNKNOWN and versions.version_key(v) == key)


def latest_release(releases: Iterable[Release], vendor: str, model: str) -> str | None:
    """The newest released version for a vendor (any case) and model, or None."""
    found = [
        r.version
        for r in releases
        if r.vendor.casefold() == vendor.casefold() and (not r.models or model in r.models)
    ]
    return max(found, key=versions.version_key, default=None)


def fragmentation(counts: Sequence[int]) -> float:
    """Gini-Simpson index: the chance two chargers picked at random run different versions."""
    total = sum(counts)
    if total <= 0:
        return 0.0
    return max(0.0, 1.0 - sum((n / total) ** 2 for n in counts))


def summarize(
    counts: Iterable[VersionCount], releases: Sequence[Release]
) -> tuple[ModelSummary, ...]:
    """One summary per (vendor, model), ordered by vendor then model (unknowns last)."""
    groups: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for c in counts:
        if c.count <= 0:
            continue
        key = (c.vendor or UNKNOWN, c.model or UNKNOWN)
        groups[key][c.version or UNKNOWN] += c.count
    out = []
    for (vendor, model), by_version in groups.items():
        known = sorted(
            (v for v in by_version if v != UNKNOWN), key=versions.version_key, reverse=True
        )
        ordered = [(v, by_version[v]) for v in known]
        unknown = by_version.get(UNKNOWN, 0)
        if unknown:
            ordered.append((UNKNOWN, unknown))
        latest = None if UNKNOWN in (vendor, model) else latest_release(releases, vendor, model)
        behind = 0
        if latest is not None:
            latest_key = versions.version_key(latest)
            behind = sum(
                n for v, n in ordered if v != UNKNOWN and versions.version_key(v) < latest_key
            )
        out.append(
            ModelSummary(
                vendor=vendor,
                model=model,
                total=sum(by_version.values()),
                versions=tuple(ordered),
                latest=latest,
                behind=behind,
                unknown=unknown,
                fragmentation=fragmentation([n for _, n in ordered]),
            )
        )
    out.sort(key=lambda s: (s.vendor == UNKNOWN, s.vendor.casefold(), s.model == UNKNOWN, s.model))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    count: int
    width: float  # in the chart's units, proportional to the count
    y: float


def bars(items: Sequence[tuple[str, int]], width: float, row: float = 22.0) -> tuple[Bar, ...]:
    """Horizontal bar geometry: the largest count spans ``width``; each row is ``row`` high."""
    top = max((n for _, n in items), default=0)
    return tuple(
        Bar(label, n, (width * n / top) if top else 0.0, i * row)
        for i, (label, n) in enumerate(items)
    )


def standing(summary: ModelSummary, version: str) -> str:
    """How a version stands against the model's latest release: latest, behind, ahead, or
    unknown (no version reported, or no release to compare with)."""
    if version == UNKNOWN or summary.latest is None:
        return "unknown"
    key, latest = versions.version_key(version), versions.version_key(summary.latest)
    if key == latest:
        return "latest"
    return "behind" if key < latest else "ahead"
