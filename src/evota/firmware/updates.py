"""Whether one firmware image may go to one charger: the pre-checks behind every update.

Pure functions over plain facts, so the single-charger API, campaigns (eligibility and
exclusion reasons) and the console all refuse for the same reasons with the same words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evota.firmware import versions
from evota.firmware.lifecycle import FirmwareState, compatibility_problem


@dataclass(frozen=True, slots=True)
class ImageFacts:
    id: str
    vendor: str
    version: str
    state: str
    models: Sequence[str] = ()
    hardware_revisions: Sequence[str] = ()
    min_current_version: str | None = None
    supersedes: Sequence[str] = ()
    size: int | None = None  # bytes


def image_facts(fw: Any) -> ImageFacts:
    """The facts of a firmware row or ``repository.FirmwareRecord`` (duck-typed: this
    module must not import the database layer)."""
    return ImageFacts(
        id=fw.id,
        vendor=fw.vendor,
        version=fw.version,
        state=fw.state,
        models=tuple(fw.models or ()),
        hardware_revisions=tuple(fw.hardware_revisions or ()),
        min_current_version=fw.min_current_version,
        supersedes=tuple(fw.supersedes or ()),
        size=getattr(fw, "size", None),
    )


@dataclass(frozen=True, slots=True)
class ChargerFacts:
    id: str
    vendor: str | None
    model: str | None
    hardware_revision: str | None
    firmware_version: str | None
    # The vendor profile's largest image (evota.fleet.vendors), None if not known.
    max_image_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an update is refused: ``reason`` is a stable code, ``detail`` a sentence."""

    reason: str
    detail: str


def update_refusal(
    image: ImageFacts, charger: ChargerFacts, *, allow_downgrade: bool = False
) -> Refusal | None:
    """The first reason the update must not be sent, or None."""
    if image.state == FirmwareState.REVOKED:
        return Refusal("revoked", f"firmware {image.version} is revoked")
    problem = compatibility_problem(image, charger.vendor, charger.model, charger.hardware_revision)
    if problem:
        return Refusal("incompatible", problem)
    limit = charger.max_image_bytes
    if limit is not None and image.size is not None and image.size > limit:
        return Refusal(
            "image_too_large",
            f"the image is {image.size} bytes; this model's vendor profile allows at most {limit}",
        )
    current = charger.firmware_version or None
    if current is not None and versions.compare(current, image.version) == 0:
        return Refusal("already_on_target", f"charger already runs {image.version}")
    if current is not None and not allow_downgrade:
        supersedes = {image.version: list(image.supersedes)} if image.supersedes else None
        if not versions.is_newer(image.version, current, supersedes=supersedes):
            return Refusal(
                "downgrade",
                f"{image.version} is older than the installed {current}; "
                "set allow_downgrade to install it anyway",
            )
    minimum = image.min_current_version
    if minimum and current is not None and versions.compare(current, minimum) < 0:
        return Refusal(
            "needs_intermediate",
            f"charger runs {current}; this release requires at least {minimum} first",
        )
    return None
