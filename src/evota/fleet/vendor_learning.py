"""Learn vendor profile values from what firmware jobs actually did.

Input is the job history (``job_events``: each job's state changes and what the charger
reported, with timestamps) tagged with the charger's vendor and model; output is, per
(vendor, model), the observed download, install and reboot durations (median, p90, n),
whether ``Installed`` came before or after the reboot, and suggested profile values (p90 x a
margin, rounded up).  Suggestions are only shown; an operator applies one explicitly.

Pure and streaming: ``Learner.add`` takes one event at a time, in (job, time) order, and keeps
one small record per open job plus the durations per model, so a history of 100,000 jobs is
read in chunks without holding it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "MIN_SAMPLES",
    "SUGGESTED",
    "Durations",
    "EventFact",
    "Learner",
    "Observation",
    "learn",
    "nice_seconds",
    "suggestion_fields",
]

#: Fewer observations than this give no suggested value (the numbers are still shown).
MIN_SAMPLES = 3
#: The profile fields learning may suggest.
SUGGESTED = ("download_seconds", "install_seconds", "reboot_seconds", "installed_before_reboot")
#: Suggested typical duration = p90 x MARGIN, so one slow charger in ten is still typical.
MARGIN = 1.5

# Job states (evota.rollout.job.JobState values; fleet sits below rollout, so by value).
_DOWNLOADING = "downloading"
_DOWNLOAD_DONE = frozenset({"downloaded", "signature_verified", "installing", "rebooting"})
_INSTALL_START = frozenset({"installing"})
_REBOOTING = "rebooting"
#: The events that matter, for the database read to filter on.
EVENTS = frozenset({"firmware_status", "boot"})
STATES = frozenset({_DOWNLOADING, _REBOOTING, *_DOWNLOAD_DONE, *_INSTALL_START})


@dataclass(frozen=True, slots=True)
class EventFact:
    """One job event as the learner needs it."""

    job_id: int
    vendor: str | None
    model: str | None
    at: datetime
    event: str  # "firmware_status", "boot", "created", ...
    state: str  # the job's state after the event
    status: str | None = None  # firmware_status: the charger's status


@dataclass(frozen=True, slots=True)
class Durations:
    n: int
    median: float | None
    p90: float | None

    @staticmethod
    def of(values: list[float]) -> Durations:
        if not values:
            return Durations(0, None, None)
        ordered = sorted(values)
        return Durations(len(ordered), _quantile(ordered, 0.5), _quantile(ordered, 0.9))

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "median": self.median, "p90": self.p90}


@dataclass(frozen=True, slots=True)
class Observation:
    vendor: str | None
    model: str | None
    jobs: int
    download: Durations
    install: Durations
    reboot: Durations
    installed_before_reboot: int  # jobs that reported Installed before rebooting
    installed_after_reboot: int
    suggested: Mapping[str, Any]  # profile field -> suggested value (only with enough samples)

    def to_dict(self) -> dict[str, Any]:
        return {
            "vendor": self.vendor,
            "model": self.model,
            "jobs": self.jobs,
            "download_seconds": self.download.to_dict(),
            "install_seconds": self.install.to_dict(),
            "reboot_seconds": self.reboot.to_dict(),
            "installed_before_reboot": {
                "before": self.installed_before_reboot,
                "after": self.installed_after_reboot,
            },
            "suggested": dict(self.suggested),
        }


def _quantile(ordered: list[float], q: float) -> float:
    """Nearest-rank quantile: an observed value, never an interpolation."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def nice_seconds(value: float) -> float:
    """Round up to a readable value: whole 10 s below 10 minutes, whole minutes above."""
    step = 10 if value < 600 else 60
    return float(max(step, math.ceil(value / step) * step))


@dataclass(slots=True)
class _Job:
    key: tuple[str | None, str | None]
    download_start: datetime | None = None
    download_end: datetime | None = None
    install_start: datetime | None = None
    reboot_start: datetime | None = None
    boot_after_reboot: datetime | None = None
    installed_at: datetime | None = None
    first_boot_after_install: datetime | None = None


@dataclass(slots=True)
class _Model:
    jobs: int = 0
    download: list[float] = field(default_factory=list)
    install: list[float] = field(default_factory=list)
    reboot: list[float] = field(default_factory=list)
    before: int = 0
    after: int = 0


class Learner:
    """Feed events in (job id, time) order with ``add``; read ``observations()``."""

    def __init__(self) -> None:
        self._models: dict[tuple[str | None, str | None], _Model] = {}
        self._job_id: int | None = None
        self._job: _Job | None = None

    def add(self, e: EventFact) -> None:
        if e.job_id != self._job_id:
            self._close()
            self._job_id = e.job_id
            self._job = _Job((e.vendor, e.model))
        j = self._job
        assert j is not None
        if e.state == _DOWNLOADING and j.download_start is None:
            j.download_start = e.at
        if e.state in _DOWNLOAD_DONE and j.download_end is None and j.download_start is not None:
            j.download_end = e.at
        if e.state in _INSTALL_START and j.install_start is None:
            j.install_start = e.at
        if e.state == _REBOOTING and j.reboot_start is None:
            j.reboot_start = e.at
        if e.event == "boot":
            if j.install_start is not None and j.first_boot_after_install is None:
                j.first_boot_after_install = e.at
            if j.reboot_start is not None and j.boot_after_reboot is None:
                j.boot_after_reboot = e.at
        if e.event == "firmware_status" and e.status == "Installed" and j.installed_at is None:
            j.installed_at = e.at

    def _close(self) -> None:
        j = self._job
        self._job = None
        if j is None:
            return
        m = self._models.setdefault(j.key, _Model())
        m.jobs += 1
        _span(m.download, j.download_start, j.download_end)
        # A charger that never says it reboots (1.6 plain: Installing, boot, Installed):
        # the reboot counts toward the install.
        _span(m.install, j.install_start, j.reboot_start or j.first_boot_after_install)
        _span(m.reboot, j.reboot_start, j.boot_after_reboot)
        if j.installed_at is not None and j.install_start is not None:
            boot = j.first_boot_after_install
            if boot is None or j.installed_at <= boot:
                m.before += 1
            else:
                m.after += 1

    def observations(self) -> list[Observation]:
        """Per (vendor, model), most jobs first (then by name, for a stable order)."""
        self._close()
        self._job_id = None
        out = []
        for (vendor, model), m in self._models.items():
            download = Durations.of(m.download)
            install = Durations.of(m.install)
            reboot = Durations.of(m.reboot)
            out.append(
                Observation(
                    vendor,
                    model,
                    m.jobs,
                    download,
                    install,
                    reboot,
                    m.before,
                    m.after,
                    _suggest(download, install, reboot, m.before, m.after),
                )
            )
        out.sort(key=lambda o: (-o.jobs, o.vendor or "", o.model or ""))
        return out


def _span(values: list[float], start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and end >= start:
        values.append((end - start).total_seconds())


def _suggest(
    download: Durations, install: Durations, reboot: Durations, before: int, after: int
) -> dict[str, Any]:
    suggested: dict[str, Any] = {}
    for name, d in (
        ("download_seconds", download),
        ("install_seconds", install),
        ("reboot_seconds", reboot),
    ):
        if d.n >= MIN_SAMPLES and d.p90 is not None:
            suggested[name] = nice_seconds(d.p90 * MARGIN)
    # A behaviour is suggested only when the observations agree.
    if before + after >= MIN_SAMPLES and (before == 0 or after == 0):
        suggested["installed_before_reboot"] = before > 0
    return suggested


def learn(events: Iterable[EventFact]) -> list[Observation]:
    """Observations from events sorted by (job id, time)."""
    learner = Learner()
    for e in events:
        learner.add(e)
    return learner.observations()


def suggestion_fields(
    observation: Observation, only: Iterable[str] | None = None
) -> dict[str, Any]:
    """The suggested values an operator chose to apply (all of them when ``only`` is None);
    a named field without a suggestion is a ``KeyError`` naming it."""
    if only is None:
        return dict(observation.suggested)
    chosen = {}
    for name in only:
        if name not in observation.suggested:
            raise KeyError(name)
        chosen[name] = observation.suggested[name]
    return chosen
