"""Where a charger's hardware revision comes from (evota.fleet.hardware), and that an image
restricted to a revision is compatible only with a charger that has it."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from evota.firmware.updates import ChargerFacts, ImageFacts, update_refusal
from evota.fleet.hardware import MAX_LENGTH, REVISION_VARIABLES, reported_revision


def item(variable: str, value: Any, component: str = "ChargingStation", **more: Any) -> dict:
    return {"component": component, "variable": variable, "value": value, **more}


def test_ecvariant_wins_over_a_vendors_hardware_revision_in_any_order() -> None:
    items = [item("HardwareRevision", "vendor"), item("ECVariant", "r2")]
    assert reported_revision(items) == "r2"
    assert reported_revision(items[::-1]) == "r2"
    assert reported_revision(items[:1]) == "vendor"


def test_only_a_printable_station_wide_value_counts() -> None:
    assert reported_revision([]) is None
    assert reported_revision([item("ECVariant", "r2", evse_id=1)]) is None
    assert reported_revision([item("ECVariant", "r2", variable_instance="x")]) is None
    assert reported_revision([item("ECVariant", "r2", component="EVSE")]) is None
    assert reported_revision([item("ECVariant", " r2 ")]) == "r2"
    for bad in ("", "  ", "r" * (MAX_LENGTH + 1), "r\x002", None, 2):
        assert reported_revision([item("ECVariant", bad)]) is None


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "component": st.text(max_size=20),
                "variable": st.text(max_size=20),
                "value": st.one_of(st.none(), st.text(max_size=80)),
            }
        )
    )
)
def test_a_reported_revision_always_fits_the_column(items: list[dict[str, Any]]) -> None:
    revision = reported_revision(items)
    if revision is not None:
        assert 0 < len(revision) <= MAX_LENGTH and revision == revision.strip()
        assert any((i["component"], i["variable"]) in REVISION_VARIABLES for i in items)


def image(**fields: Any) -> ImageFacts:
    base: dict[str, Any] = {"id": "fw", "version": "2.0.0", "vendor": "Acme", "state": "released"}
    base["models"] = ("AC22",)
    return ImageFacts(**{**base, **fields})


def charger(revision: str | None) -> ChargerFacts:
    return ChargerFacts("CP-1", "Acme", "AC22", revision, "1.0.0")


def test_an_image_for_one_revision_fits_only_that_revision() -> None:
    fw = image(hardware_revisions=("r2",))
    assert update_refusal(fw, charger("r2")) is None
    refused = update_refusal(fw, charger("r1"))
    assert refused is not None and refused.reason == "incompatible"
    assert refused.detail == "hardware revision r1 is not among r2"
    unknown = update_refusal(fw, charger(None))
    assert unknown is not None and unknown.detail == "hardware revision unknown is not among r2"
    assert update_refusal(image(), charger(None)) is None  # no restriction: any revision
