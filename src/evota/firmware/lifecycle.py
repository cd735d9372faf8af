"""Firmware images' lifecycle and compatibility rules, pure.

The repository stores an image's state, the API and the console offer its moves, and the
update path, campaigns and the download listener refuse a revoked image: all of them read
the same table here, so none of them needs the database to decide. Vendors compare
case-insensitively (chargers report them with inconsistent case); models and hardware
revisions compare exactly.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Final, Protocol

__all__ = [
    "LIFECYCLE",
    "STATES",
    "UPLOAD_STATES",
    "Compatible",
    "FirmwareState",
    "compatibility_problem",
    "transition_problem",
]


class FirmwareState(enum.StrEnum):
    DRAFT = "draft"
    PILOT = "pilot"
    RELEASED = "released"
    DEPRECATED = "deprecated"
    REVOKED = "revoked"  # final: a revoked image is never served again


STATES: Final = tuple(FirmwareState)
"""Every state, in lifecycle order (the order offered to operators)."""

UPLOAD_STATES: Final = (FirmwareState.DRAFT, FirmwareState.PILOT, FirmwareState.RELEASED)
"""An image enters the repository in one of these; deprecation and revocation come later."""

_S = FirmwareState
LIFECYCLE: Final[Mapping[str, frozenset[FirmwareState]]] = {
    _S.DRAFT: frozenset({_S.PILOT, _S.RELEASED, _S.REVOKED}),
    _S.PILOT: frozenset({_S.RELEASED, _S.DRAFT, _S.REVOKED}),
    _S.RELEASED: frozenset({_S.DEPRECATED, _S.REVOKED}),
    _S.DEPRECATED: frozenset({_S.RELEASED, _S.REVOKED}),
    _S.REVOKED: frozenset(),
}
"""Allowed moves from each state (keyed by the plain string a row holds). Revocation is
final: a revoked image is never served again."""


def transition_problem(current: str, target: str) -> str | None:
    """None when the lifecycle table allows ``current -> target``, else why not."""
    if target not in LIFECYCLE:
        return f"unknown state {target!r} (one of {', '.join(STATES)})"
    allowed = LIFECYCLE.get(current, frozenset())
    if target in allowed:
        return None
    if not allowed:
        return f"firmware is {current}: no further transitions are possible"
    options = ", ".join(s for s in STATES if s in allowed)
    return f"cannot go from {current} to {target} (allowed from {current}: {options})"


class Compatible(Protocol):
    """What the compatibility check reads of an image (a record, a row or ``ImageFacts``)."""

    @property
    def vendor(self) -> str: ...
    @property
    def models(self) -> Sequence[str]: ...
    @property
    def hardware_revisions(self) -> Sequence[str]: ...


def compatibility_problem(
    firmware: Compatible,
    vendor: str | None,
    model: str | None,
    hardware_revision: str | None,
) -> str | None:
    """None when the image fits a charger reporting this vendor, model and hardware revision.

    Empty model or hardware-revision lists mean "any"; vendors compare case-insensitively.
    """
    if vendor is None or vendor.casefold() != firmware.vendor.casefold():
        return f"image is for vendor {firmware.vendor}, charger reports {vendor or 'none'}"
    if firmware.models and model not in firmware.models:
        return f"model {model or 'unknown'} is not among {', '.join(firmware.models)}"
    if firmware.hardware_revisions and hardware_revision not in firmware.hardware_revisions:
        return (
            f"hardware revision {hardware_revision or 'unknown'} is not among "
            f"{', '.join(firmware.hardware_revisions)}"
        )
    return None
