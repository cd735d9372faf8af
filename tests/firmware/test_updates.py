"""Pre-checks for sending one image to one charger (pure)."""

from __future__ import annotations

import pytest

from evota.firmware.updates import ChargerFacts, ImageFacts, update_refusal

IMAGE = ImageFacts(id="fw", vendor="Acme", version="2.0.0", state="released", models=("AC22",))


def charger(version: str | None = "1.0.0", **kw: object) -> ChargerFacts:
    base: dict[str, object] = {
        "id": "CP",
        "vendor": "ACME",
        "model": "AC22",
        "hardware_revision": None,
        "firmware_version": version,
    }
    base.update(kw)
    return ChargerFacts(**base)  # type: ignore[arg-type]


def reason(image: ImageFacts, c: ChargerFacts, **kw: bool) -> str | None:
    refusal = update_refusal(image, c, **kw)
    return refusal.reason if refusal else None


def test_a_compatible_upgrade_passes():
    assert reason(IMAGE, charger()) is None
    assert reason(IMAGE, charger(version=None)) is None  # never reported: nothing to compare
    assert reason(IMAGE, charger(version="")) is None


@pytest.mark.parametrize(
    ("image", "c", "expected"),
    [
        (ImageFacts("fw", "Acme", "2.0.0", "revoked"), charger(), "revoked"),
        (IMAGE, charger(vendor="Volt"), "incompatible"),
        (IMAGE, charger(model="DC150"), "incompatible"),
        (
            ImageFacts("fw", "Acme", "2.0.0", "released", hardware_revisions=("r2",)),
            charger(hardware_revision="r1"),
            "incompatible",
        ),
        (IMAGE, charger(version="2.0"), "already_on_target"),  # 2.0 == 2.0.0
        (IMAGE, charger(version="2.1.0"), "downgrade"),
        (
            ImageFacts("fw", "Acme", "2.0.0", "released", min_current_version="1.5.0"),
            charger(version="1.2.0"),
            "needs_intermediate",
        ),
    ],
)
def test_refusals(image, c, expected):
    assert reason(image, c) == expected


def test_downgrade_allowed_on_request_and_supersedes_overrides_the_order():
    assert reason(IMAGE, charger(version="2.1.0"), allow_downgrade=True) is None
    # "A-2" sorts before "Z-1", but the vendor says A-2 replaces Z-1
    renamed = ImageFacts("fw", "Acme", "A-2", "released", supersedes=("Z-1",))
    assert reason(renamed, charger(version="Z-1")) is None
    plain = ImageFacts("fw", "Acme", "A-2", "released")
    assert reason(plain, charger(version="Z-1")) == "downgrade"
