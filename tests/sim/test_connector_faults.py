"""The simulator's connector faults: ``faulted_connectors`` (a Reset clears them) and
``stuck_connectors`` (nothing remote does), as fleet files and flags give them. What they do
on the wire is tested end to end in tests/evidence/test_resolution_e2e.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from evota.sim.charger import SimulatedCharger
from evota.sim.fleet import (
    FaultProfile,
    FleetError,
    FleetFileError,
    dump_fleet,
    fleet_from_flags,
    parse_fleet,
)


def test_fleet_file_and_flags_take_connector_lists() -> None:
    spec = parse_fleet(
        "groups:\n"
        "  - {prefix: A-, count: 1, faults: {faulted_connectors: [1], stuck_connectors: [2]}}\n"
    )
    faults = spec.chargers[0].faults
    assert faults == FaultProfile(faulted_connectors=(1,), stuck_connectors=(2,))
    assert parse_fleet(dump_fleet(spec)) == spec
    flags = fleet_from_flags(1, faults=["faulted_connectors=1,2"])
    assert flags.chargers[0].faults == FaultProfile(faulted_connectors=(1, 2))


@pytest.mark.parametrize(
    "text",
    [
        "{faulted_connectors: 1}",
        "{faulted_connectors: [0]}",
        "{stuck_connectors: ['one']}",
        "{stuck_connectors: [true]}",
    ],
)
def test_bad_connector_lists_give_one_precise_error(text: str) -> None:
    with pytest.raises(FleetFileError) as info:
        parse_fleet(f"defaults: {{faults: {text}}}\ngroups: [{{prefix: A, count: 1}}]\n")
    assert "_connectors" in str(info.value)


def test_a_bad_flag_names_the_fault() -> None:
    with pytest.raises(FleetError, match="faulted_connectors: must be a list of connector"):
        fleet_from_flags(1, faults=["faulted_connectors=x"])


def test_idle_status_until_a_reboot(tmp_path: Path) -> None:
    """Faulted connectors report Faulted/InternalError until the charger reboots; stuck ones
    stay Faulted; the others are Available."""
    spec = fleet_from_flags(
        1, connectors=3, faults=["faulted_connectors=1", "stuck_connectors=2"]
    ).chargers[0]
    charger = SimulatedCharger(spec, "ws://127.0.0.1:1/ocpp")
    assert [charger.idle_status(c) for c in (1, 2, 3)] == [
        ("Faulted", "InternalError"),
        ("Faulted", "InternalError"),
        ("Available", "NoError"),
    ]
    charger.connector_faults -= set(spec.faults.faulted_connectors)  # what reboot() does
    assert charger.idle_status(1) == ("Available", "NoError")
    assert charger.idle_status(2) == ("Faulted", "InternalError")
