"""Configuration drift, pure: a profile's desired settings against what a charger reported.

A charger's reported configuration is the full answer to a GetConfiguration without keys,
which OCPP 1.6 defines as *every* key the charger knows. So for each desired key:

- ``differs``: reported with another value, writable — ChangeConfiguration fixes it;
- ``missing``: the charger knows the key but reported no value — it can be set;
- ``unknown_key``: not among the keys the charger reported — it does not support the key,
  so a ChangeConfiguration would only be answered NotSupported (cannot fix);
- ``readonly``: reported read-only with another value (cannot fix).

Keys compare case-insensitively (OCPP keys are CiString); values compare exactly, except
``true``/``false``, which chargers spell in any case. A charger whose configuration was never
fetched has no rows: it is counted as ``not_fetched``, not as in sync.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "KINDS",
    "MAX_KEY",
    "MAX_SETTINGS",
    "MAX_VALUE",
    "Drift",
    "Report",
    "Reported",
    "drift",
    "report",
    "same_value",
    "settings_problem",
]

KINDS = ("differs", "missing", "unknown_key", "readonly")
FIXABLE = frozenset({"differs", "missing"})
MAX_KEY = 50  # CiString50, and ChargerSetting.key
MAX_VALUE = 500  # CiString500
MAX_SETTINGS = 200


@dataclass(frozen=True, slots=True)
class Reported:
    value: str | None
    readonly: bool = False


@dataclass(frozen=True, slots=True)
class Drift:
    charger_id: str
    key: str
    desired: str
    actual: str | None
    kind: str

    @property
    def fixable(self) -> bool:
        return self.kind in FIXABLE

    def to_dict(self) -> dict[str, Any]:
        return {
            "charger_id": self.charger_id,
            "key": self.key,
            "desired": self.desired,
            "actual": self.actual,
            "kind": self.kind,
            "fixable": self.fixable,
        }


def settings_problem(settings: Any, path: str = "settings") -> tuple[str, str] | None:
    """(field, message) for settings that cannot be a profile, or None."""
    if not isinstance(settings, Mapping) or not settings:
        return path, "must be a non-empty object of key -> value"
    if len(settings) > MAX_SETTINGS:
        return path, f"at most {MAX_SETTINGS} keys"
    seen: set[str] = set()
    for key, value in settings.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY or key != key.strip():
            return f"{path}.{key}", f"keys are 1-{MAX_KEY} characters without outer spaces"
        if key.casefold() in seen:
            return f"{path}.{key}", "duplicate key (keys are case-insensitive)"
        seen.add(key.casefold())
        if not isinstance(value, str) or len(value) > MAX_VALUE:
            return f"{path}.{key}", f"values are strings of at most {MAX_VALUE} characters"
    return None


_BOOLEANS = frozenset({"true", "false"})


def same_value(desired: str, actual: str) -> bool:
    if desired == actual:
        return True
    return desired.casefold() in _BOOLEANS and desired.casefold() == actual.casefold()


def drift(
    charger_id: str, desired: Mapping[str, str], reported: Mapping[str, Reported]
) -> list[Drift]:
    """Every desired key the charger does not have as desired, in the profile's key order."""
    by_key = {k.casefold(): r for k, r in reported.items()}
    rows: list[Drift] = []
    for key, want in desired.items():
        got = by_key.get(key.casefold())
        if got is None:
            rows.append(Drift(charger_id, key, want, None, "unknown_key"))
        elif got.value is not None and same_value(want, got.value):
            continue
        elif got.readonly:
            rows.append(Drift(charger_id, key, want, got.value, "readonly"))
        elif got.value is None:
            rows.append(Drift(charger_id, key, want, None, "missing"))
        else:
            rows.append(Drift(charger_id, key, want, got.value, "differs"))
    return rows


@dataclass(frozen=True, slots=True)
class Report:
    chargers: int
    in_sync: tuple[str, ...]
    drifted: tuple[str, ...]
    not_fetched: tuple[str, ...]
    rows: tuple[Drift, ...]

    @property
    def fixable(self) -> tuple[str, ...]:
        """Chargers with at least one drifted key that ChangeConfiguration can fix."""
        return tuple(dict.fromkeys(r.charger_id for r in self.rows if r.fixable))

    def counts(self) -> dict[str, Any]:
        kinds = Counter(r.kind for r in self.rows)
        return {
            "chargers": self.chargers,
            "in_sync": len(self.in_sync),
            "drifted": len(self.drifted),
            "not_fetched": len(self.not_fetched),
            "fixable": len(self.fixable),
            "by_kind": {k: kinds.get(k, 0) for k in KINDS},
        }


def report(
    desired: Mapping[str, str],
    charger_ids: Iterable[str],
    configs: Mapping[str, Mapping[str, Reported]],
) -> Report:
    """The drift of every charger (``configs`` lacks the ones never fetched)."""
    in_sync: list[str] = []
    drifted: list[str] = []
    not_fetched: list[str] = []
    rows: list[Drift] = []
    count = 0
    for cid in charger_ids:
        count += 1
        config = configs.get(cid)
        if config is None:
            not_fetched.append(cid)
            continue
        found = drift(cid, desired, config)
        if found:
            drifted.append(cid)
            rows.extend(found)
        else:
            in_sync.append(cid)
    return Report(count, tuple(in_sync), tuple(drifted), tuple(not_fetched), tuple(rows))
