"""The local authorization list of a simulated charger (pure): versioned, Full or
Differential updates, bounded by ``SendLocalListMaxLength`` and ``LocalAuthListMaxLength``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class LocalList:
    version: int = 0
    entries: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # idTag -> idTagInfo


def apply_local_list(
    current: LocalList,
    version: int,
    update_type: str,
    entries: list[dict[str, Any]],
    *,
    max_send: int,
    max_length: int,
    enabled: bool = True,
) -> tuple[str, LocalList]:
    """SendLocalList's status and the list afterwards (unchanged unless Accepted)."""
    if not enabled:
        return "NotSupported", current
    if len(entries) > max_send:
        return "Failed", current
    if update_type == "Differential" and version <= current.version:
        return "VersionMismatch", current
    merged: dict[str, Mapping[str, Any]] = {} if update_type == "Full" else dict(current.entries)
    for entry in entries:
        info = entry.get("idTagInfo")
        if info is None:
            merged.pop(entry["idTag"], None)
        else:
            merged[entry["idTag"]] = info
    if len(merged) > max_length:
        return "Failed", current
    return "Accepted", LocalList(version, merged)
