"""What a campaign may do, as validated, immutable data: target query, wave specs, policy.

Everything the engine reads comes from here, so a bad value is refused once, at the edge,
with a :class:`PolicyError` naming the exact field path (``policy.auto_stop[0].action``) —
never discovered mid-rollout. The ``*_from_dict`` / ``*_to_dict`` pairs are the JSON shape
stored in the database and accepted by the API; they round-trip exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import time
from typing import Any, TypeVar

from evota.rollout.job import Failure
from evota.selection import Selector

__all__ = [
    "ACTIONS",
    "FAILURES",
    "AutoStopRule",
    "FrozenMap",
    "Policy",
    "PolicyError",
    "Target",
    "WaveSpec",
    "Window",
    "parse_ramp",
    "policy_from_dict",
    "policy_to_dict",
    "target_from_dict",
    "target_to_dict",
    "waves_from_list",
    "waves_to_list",
    "window_to_dict",
    "windows_from_list",
    "with_defaults",
]

ACTIONS = ("pause", "abort", "abort_and_rollback")
ON_INCONCLUSIVE = ("continue", "pause")
GROUP_BY = ("model", "site")
ON_GROUP_FAILURE = ("hold", "hold_and_rollback")
FAILURES = frozenset(f.value for f in Failure)
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

K = TypeVar("K")
V = TypeVar("V")


class PolicyError(ValueError):
    """Bad campaign input; ``field`` is the path of the offending value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def under(self, prefix: str) -> PolicyError:
        return PolicyError(f"{prefix}.{self.field}" if self.field else prefix, self.message)


class FrozenMap(Mapping[K, V]):
    """A hashable, read-only dict, so a frozen Policy stays hashable and comparable."""

    __slots__ = ("_d", "_h")

    def __init__(self, items: Mapping[K, V] | Sequence[tuple[K, V]] = ()) -> None:
        self._d: dict[K, V] = dict(items)
        self._h: int | None = None

    def __getitem__(self, key: K) -> V:
        return self._d[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __hash__(self) -> int:
        if self._h is None:
            self._h = hash(frozenset(self._d.items()))
        return self._h

    def __repr__(self) -> str:
        return f"FrozenMap({self._d!r})"


# -- data ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target(Selector):
    """A campaign's query: the charger filters of :class:`~evota.selection.Selector` (their
    semantics are shared with bulk operations), plus what only a campaign asks: the running
    versions it covers, how long a charger may have been offline, and whether chargers that
    match later join (``dynamic``).
    """

    firmware_versions: tuple[str, ...] = ()
    version_min: str | None = None
    version_max: str | None = None
    older_than_target: bool = False
    max_offline_days: float | None = 7.0
    dynamic: bool = False

    def __post_init__(self) -> None:
        if self.max_offline_days is not None and not _finite_at_least(self.max_offline_days, 0):
            raise PolicyError("max_offline_days", "must be a number >= 0 or null")


@dataclass(frozen=True, slots=True)
class WaveSpec:
    """One wave: ``count`` chargers, or up to ``percent`` of the eligible set *cumulatively*.

    ``percent`` is the share covered after this wave (1, 5, 25, 100 as in hawkBit/AWS), so
    it is independent of how big the earlier waves were.
    """

    count: int | None = None
    percent: float | None = None

    def __post_init__(self) -> None:
        if (self.count is None) == (self.percent is None):
            raise PolicyError("", "give exactly one of count and percent")
        if self.count is not None and (not _is_int(self.count) or self.count < 1):
            raise PolicyError("count", "must be an integer >= 1")
        if self.percent is not None and not (_is_number(self.percent) and 0 < self.percent <= 100):
            raise PolicyError("percent", "must be a number in (0, 100]")


@dataclass(frozen=True, slots=True)
class AutoStopRule:
    """Stop when failures of these types exceed a share of the *executed* jobs.

    An empty ``failures`` set counts every failure type.
    """

    failures: frozenset[str]
    min_executed: int
    max_failure_percent: float
    action: str

    def __post_init__(self) -> None:
        unknown = sorted(set(self.failures) - FAILURES)
        if unknown:
            raise PolicyError(
                "failures", f"unknown failure {unknown[0]!r}; one of {', '.join(sorted(FAILURES))}"
            )
        if not _is_int(self.min_executed) or self.min_executed < 1:
            raise PolicyError("min_executed", "must be an integer >= 1")
        if not (_is_number(self.max_failure_percent) and 0 <= self.max_failure_percent < 100):
            raise PolicyError("max_failure_percent", "must be a number in [0, 100)")
        if self.action not in ACTIONS:
            raise PolicyError("action", f"must be one of {', '.join(ACTIONS)}")


@dataclass(frozen=True, slots=True)
class Window:
    """A recurring maintenance window in the site's local time.

    ``days`` are the days the window *starts* (0 = Monday); ``end <= start`` runs past
    midnight (``end == start`` is a full 24 hours).
    """

    days: frozenset[int]
    start: time
    end: time

    def __post_init__(self) -> None:
        if not self.days or not all(_is_int(d) and 0 <= d <= 6 for d in self.days):
            raise PolicyError("days", "must be a non-empty list of days (mon..sun or 0..6)")
        for name in ("start", "end"):
            t = getattr(self, name)
            if not isinstance(t, time) or t.tzinfo is not None:
                raise PolicyError(name, "must be a local time without a zone")


@dataclass(frozen=True, slots=True)
class Policy:
    """How a campaign proceeds. Rates and shares are fractions except ``*_percent``."""

    success_threshold: float = 0.95  # on the lower bound of the 95% Wilson interval
    soak_seconds: float = 3600
    health_window_seconds: float = 3600
    pause_at_gate: bool = False
    # A gate with too few results to tell (docs/campaigns.md, "Gates"): go on, or wait for
    # an operator's go. A gate without a single executed update always waits.
    on_inconclusive: str = "continue"
    group_by: str | None = None  # judge each model or site on its own too; hold the failing
    on_group_failure: str = "hold"  # or hold_and_rollback: roll the held group back
    auto_stop: tuple[AutoStopRule, ...] = ()
    windows: tuple[Window, ...] = ()  # empty = always open; in each charger's site timezone
    site_windows: Mapping[str, tuple[Window, ...]] = field(default_factory=FrozenMap)
    max_per_site: int | None = None  # concurrent unfinished jobs per site
    max_per_site_fraction: float | None = None  # of the site's chargers (floor, at least 1)
    max_concurrent: int | None = None
    start_rate_per_minute: float | None = None
    retries: Mapping[str, int] = field(default_factory=FrozenMap)  # failure -> extra attempts
    retry_backoff_seconds: float = 300  # doubled for each further retry of the same failure
    rollback_on_failure: tuple[str, ...] = ("unhealthy",)
    health_tolerance: float = 0.1  # allowed absolute worsening of rates vs baseline
    available_within_seconds: float = 600
    # Added by the engine's design (optional):
    max_wait_seconds: float | None = 86400  # a charger without a job this long is skipped
    window_margin_seconds: float = 0  # no start when the window closes sooner than this

    def __post_init__(self) -> None:
        object.__setattr__(self, "site_windows", FrozenMap(self.site_windows))
        object.__setattr__(self, "retries", FrozenMap(self.retries))
        if not (_is_number(self.success_threshold) and 0 <= self.success_threshold <= 1):
            raise PolicyError("success_threshold", "must be a number in [0, 1]")
        for name in (
            "soak_seconds",
            "health_window_seconds",
            "retry_backoff_seconds",
            "health_tolerance",
            "available_within_seconds",
            "window_margin_seconds",
        ):
            if not _finite_at_least(getattr(self, name), 0):
                raise PolicyError(name, "must be a number >= 0")
        for name in ("max_per_site", "max_concurrent"):
            v = getattr(self, name)
            if v is not None and (not _is_int(v) or v < 1):
                raise PolicyError(name, "must be an integer >= 1 or null")
        f = self.max_per_site_fraction
        if f is not None and not (_is_number(f) and 0 < f <= 1):
            raise PolicyError("max_per_site_fraction", "must be a number in (0, 1] or null")
        r = self.start_rate_per_minute
        if r is not None and not (_is_number(r) and 0 < r < math.inf):
            raise PolicyError("start_rate_per_minute", "must be a number > 0 or null")
        w = self.max_wait_seconds
        if w is not None and not _finite_at_least(w, 0):
            raise PolicyError("max_wait_seconds", "must be a number >= 0 or null")
        for failure, extra in self.retries.items():
            if failure not in FAILURES:
                raise PolicyError(f"retries.{failure}", "unknown failure type")
            if not _is_int(extra) or not 0 <= extra <= 100:
                raise PolicyError(f"retries.{failure}", "must be an integer in [0, 100]")
        for i, failure in enumerate(self.rollback_on_failure):
            if failure not in FAILURES:
                raise PolicyError(f"rollback_on_failure[{i}]", f"unknown failure {failure!r}")
        for name, allowed in (
            ("on_inconclusive", ON_INCONCLUSIVE),
            ("group_by", (None, *GROUP_BY)),
            ("on_group_failure", ON_GROUP_FAILURE),
        ):
            if getattr(self, name) not in allowed:
                shown = ", ".join("null" if a is None else a for a in allowed)
                raise PolicyError(name, f"must be one of {shown}")

    def windows_for(self, site_id: str | None) -> tuple[Window, ...]:
        """The site's own windows when it has an override, else the campaign's."""
        if site_id is not None and site_id in self.site_windows:
            return self.site_windows[site_id]
        return self.windows


# -- validation helpers --------------------------------------------------------------------


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _finite_at_least(v: object, low: float) -> bool:
    return _is_number(v) and v >= low  # type: ignore[operator]


def _mapping(d: object, path: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise PolicyError(path, "must be an object")
    return d


def _check_keys(d: Mapping[str, Any], allowed: Sequence[str], path: str) -> None:
    for key in d:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise PolicyError(where, f"unknown field; allowed: {', '.join(allowed)}")


def _strings(v: object, path: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str) or not isinstance(v, Sequence):
        raise PolicyError(path, "must be a list of strings")
    for i, item in enumerate(v):
        if not isinstance(item, str) or not item:
            raise PolicyError(f"{path}[{i}]", "must be a non-empty string")
    return tuple(v)


def _opt_str(v: object, path: str) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str) or not v.strip():
        raise PolicyError(path, "must be a non-empty string or null")
    return v


def _bool(v: object, path: str) -> bool:
    if not isinstance(v, bool):
        raise PolicyError(path, "must be true or false")
    return v


def _build(cls: Any, kw: dict[str, Any], path: str) -> Any:
    try:
        return cls(**kw)
    except PolicyError as exc:
        raise exc.under(path) from None


# -- target --------------------------------------------------------------------------------

_TARGET_LISTS = (
    "vendors",
    "models",
    "hardware_revisions",
    "sites",
    "regions",
    "tags",
    "charger_ids",
    "exclude_ids",
    "firmware_versions",
)
_TARGET_FIELDS = (
    *_TARGET_LISTS,
    "version_min",
    "version_max",
    "older_than_target",
    "max_offline_days",
    "dynamic",
)


def target_from_dict(d: Mapping[str, Any] | None, path: str = "target") -> Target:
    d = _mapping(d if d is not None else {}, path)
    _check_keys(d, _TARGET_FIELDS, path)
    kw: dict[str, Any] = {k: _strings(d.get(k), f"{path}.{k}") for k in _TARGET_LISTS if k in d}
    for k in ("version_min", "version_max"):
        if k in d:
            kw[k] = _opt_str(d[k], f"{path}.{k}")
    for k in ("older_than_target", "dynamic"):
        if k in d:
            kw[k] = _bool(d[k], f"{path}.{k}")
    if "max_offline_days" in d:
        kw["max_offline_days"] = d["max_offline_days"]
    return _build(Target, kw, path)  # type: ignore[no-any-return]


def target_to_dict(t: Target) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(t):
        v = getattr(t, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


# -- waves ---------------------------------------------------------------------------------


def waves_from_list(items: Sequence[Any] | None, path: str = "waves") -> tuple[WaveSpec, ...]:
    """Wave specs; cumulative percentages must grow (a smaller one would be an empty wave)."""
    if items is None:
        return ()
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise PolicyError(path, "must be a list of {count} or {percent} objects")
    specs: list[WaveSpec] = []
    last_percent = 0.0
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        item = _mapping(item, p)
        _check_keys(item, ("count", "percent"), p)
        spec: WaveSpec = _build(WaveSpec, dict(item), p)
        if spec.percent is not None:
            if spec.percent <= last_percent:
                raise PolicyError(f"{p}.percent", "cumulative percentages must increase")
            last_percent = spec.percent
        specs.append(spec)
    return tuple(specs)


def waves_to_list(specs: Sequence[WaveSpec]) -> list[dict[str, Any]]:
    return [{"count": s.count} if s.count is not None else {"percent": s.percent} for s in specs]


# -- policy --------------------------------------------------------------------------------


def _time(v: object, path: str) -> time:
    if isinstance(v, str):
        try:
            t = time.fromisoformat(v)
        except ValueError:
            t = None
        if t is not None and t.tzinfo is None and len(v) >= 4:
            return t
    raise PolicyError(path, 'must be a local time "HH:MM" or "HH:MM:SS"')


def _days(v: object, path: str) -> frozenset[int]:
    if v is None:
        return frozenset(range(7))
    if isinstance(v, str) or not isinstance(v, Sequence) or not v:
        raise PolicyError(path, 'must be a non-empty list of days ("mon".."sun" or 0..6)')
    days: set[int] = set()
    for i, day in enumerate(v):
        if isinstance(day, str) and day[:3].lower() in DAY_NAMES:
            days.add(DAY_NAMES.index(day[:3].lower()))
        elif _is_int(day) and 0 <= day <= 6:
            days.add(day)
        else:
            raise PolicyError(f"{path}[{i}]", 'must be "mon".."sun" or 0 (Monday)..6')
    return frozenset(days)


def _windows(v: object, path: str) -> tuple[Window, ...]:
    if v is None:
        return ()
    if isinstance(v, str) or not isinstance(v, Sequence):
        raise PolicyError(path, "must be a list of windows")
    out: list[Window] = []
    for i, item in enumerate(v):
        p = f"{path}[{i}]"
        item = _mapping(item, p)
        _check_keys(item, ("days", "start", "end"), p)
        for key in ("start", "end"):
            if key not in item:
                raise PolicyError(f"{p}.{key}", "is required")
        kw = {
            "days": _days(item.get("days"), f"{p}.days"),
            "start": _time(item["start"], f"{p}.start"),
            "end": _time(item["end"], f"{p}.end"),
        }
        out.append(_build(Window, kw, p))
    return tuple(out)


def windows_from_list(v: object, path: str) -> tuple[Window, ...]:
    """Windows from their JSON list (None: none), errors naming ``path[i].field``; what a
    site's ``allowed_hours`` holds too (evota.playbooks)."""
    return _windows(v, path)


def window_to_dict(w: Window) -> dict[str, Any]:
    """A window as :func:`windows_from_list` reads it."""
    return _window_to_dict(w)


def _window_to_dict(w: Window) -> dict[str, Any]:
    def fmt(t: time) -> str:
        return t.isoformat(timespec="seconds" if t.second or t.microsecond else "minutes")

    days = [DAY_NAMES[d] for d in sorted(w.days)]
    return {"days": days, "start": fmt(w.start), "end": fmt(w.end)}


_RULE_FIELDS = ("failures", "min_executed", "max_failure_percent", "action")
_POLICY_FIELDS = tuple(f.name for f in fields(Policy))


def policy_from_dict(d: Mapping[str, Any] | None, path: str = "policy") -> Policy:
    d = _mapping(d if d is not None else {}, path)
    _check_keys(d, _POLICY_FIELDS, path)
    kw: dict[str, Any] = dict(d)
    if "pause_at_gate" in d:
        kw["pause_at_gate"] = _bool(d["pause_at_gate"], f"{path}.pause_at_gate")
    if "auto_stop" in d:
        rules = d["auto_stop"] or []
        if isinstance(rules, str) or not isinstance(rules, Sequence):
            raise PolicyError(f"{path}.auto_stop", "must be a list of rules")
        built = []
        for i, rule in enumerate(rules):
            p = f"{path}.auto_stop[{i}]"
            rule = _mapping(rule, p)
            _check_keys(rule, _RULE_FIELDS, p)
            for key in _RULE_FIELDS:
                if key not in rule and key != "failures":
                    raise PolicyError(f"{p}.{key}", "is required")
            rkw = dict(rule)
            rkw["failures"] = frozenset(_strings(rule.get("failures"), f"{p}.failures"))
            built.append(_build(AutoStopRule, rkw, p))
        kw["auto_stop"] = tuple(built)
    if "windows" in d:
        kw["windows"] = _windows(d["windows"], f"{path}.windows")
    if "site_windows" in d:
        sw = _mapping(d["site_windows"] or {}, f"{path}.site_windows")
        kw["site_windows"] = FrozenMap(
            {str(k): _windows(v, f"{path}.site_windows.{k}") for k, v in sw.items()}
        )
    if "retries" in d:
        kw["retries"] = FrozenMap(_mapping(d["retries"] or {}, f"{path}.retries"))
    if "rollback_on_failure" in d:
        kw["rollback_on_failure"] = _strings(
            d["rollback_on_failure"], f"{path}.rollback_on_failure"
        )
    return _build(Policy, kw, path)  # type: ignore[no-any-return]


def with_defaults(policy: Any, defaults: Mapping[str, Any]) -> Any:
    """The campaign's own policy fields over the server's defaults (``EVOTA_CAMPAIGN_DEFAULTS``),
    field by field: a field the campaign gives wins, one it leaves out takes the default."""
    if policy is not None and not isinstance(policy, Mapping):
        return policy  # not an object: policy_from_dict refuses it, naming the field
    return {**defaults, **(policy or {})}


def policy_to_dict(p: Policy) -> dict[str, Any]:
    return {
        "success_threshold": p.success_threshold,
        "soak_seconds": p.soak_seconds,
        "health_window_seconds": p.health_window_seconds,
        "pause_at_gate": p.pause_at_gate,
        "on_inconclusive": p.on_inconclusive,
        "group_by": p.group_by,
        "on_group_failure": p.on_group_failure,
        "auto_stop": [
            {
                "failures": sorted(r.failures),
                "min_executed": r.min_executed,
                "max_failure_percent": r.max_failure_percent,
                "action": r.action,
            }
            for r in p.auto_stop
        ],
        "windows": [_window_to_dict(w) for w in p.windows],
        "site_windows": {
            site: [_window_to_dict(w) for w in ws] for site, ws in p.site_windows.items()
        },
        "max_per_site": p.max_per_site,
        "max_per_site_fraction": p.max_per_site_fraction,
        "max_concurrent": p.max_concurrent,
        "start_rate_per_minute": p.start_rate_per_minute,
        "retries": dict(p.retries),
        "retry_backoff_seconds": p.retry_backoff_seconds,
        "rollback_on_failure": list(p.rollback_on_failure),
        "health_tolerance": p.health_tolerance,
        "available_within_seconds": p.available_within_seconds,
        "max_wait_seconds": p.max_wait_seconds,
        "window_margin_seconds": p.window_margin_seconds,
    }


def parse_ramp(waves: Any) -> tuple[int, float] | None:
    """``{"exponential": {"first": 5, "factor": 4}}`` instead of a list of waves."""
    if not isinstance(waves, dict):
        return None
    ramp = waves.get("exponential")
    if set(waves) != {"exponential"} or not isinstance(ramp, dict):
        raise PolicyError("waves", 'a list of waves or {"exponential": {first, factor}}')
    first, factor = ramp.get("first"), ramp.get("factor", 2)
    if not isinstance(first, int) or isinstance(first, bool) or first < 1:
        raise PolicyError("waves.exponential.first", "must be a whole number >= 1")
    if not isinstance(factor, int | float) or isinstance(factor, bool) or not 1 < factor <= 100:
        raise PolicyError("waves.exponential.factor", "must be a number > 1 and <= 100")
    return first, float(factor)
