"""Per-charger protocols in fleet files, flags and ``evota sim``; the 2.0.1 faults' parsing;
the device model's pure rules."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import structlog
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from evota.sim.charger import SimulatedCharger
from evota.sim.cli import sim_command
from evota.sim.control.keys import ConfigKey, change_answer
from evota.sim.devicemodel import Model, get_results, report_items, set_decision
from evota.sim.fleet import (
    FaultProfile,
    FleetError,
    FleetFileError,
    dump_fleet,
    fleet_from_flags,
    mixed_protocol,
    parse_fault_flag,
    parse_fleet,
)

from .conftest import SEED, csms_in_thread, fast, spec
from .test_sim_fleet import fleets

V16, V201 = "ocpp1.6", "ocpp2.0.1"


def test_a_fleet_file_mixes_protocols_per_group_and_charger() -> None:
    fleet = parse_fleet(
        "protocol: ocpp2.0.1\n"
        "groups:\n"
        "  - {prefix: NEW-, count: 2}\n"
        "  - {prefix: OLD-, count: 2, protocol: ocpp1.6}\n"
        "chargers:\n"
        "  - {identity: LAB-1, protocol: ocpp1.6}\n"
        "  - {identity: LAB-2}\n"
    )
    assert {c.identity: c.protocol for c in fleet.chargers} == {
        "NEW-0001": V201,
        "NEW-0002": V201,
        "OLD-0001": V16,
        "OLD-0002": V16,
        "LAB-1": V16,
        "LAB-2": V201,
    }
    defaults = parse_fleet("defaults: {protocol: ocpp2.0.1}\ngroups: [{prefix: A, count: 1}]\n")
    assert defaults.chargers[0].protocol == V201
    assert parse_fleet("groups: [{prefix: A, count: 1}]\n").chargers[0].protocol == V16


def test_the_2_0_1_faults_in_files_and_flags() -> None:
    fleet = parse_fleet(
        "defaults:\n"
        "  faults: {certificate_status: revoked, refuse_cancel: 1, install_verification_fails: 0.5,"
        " defer_download: 0.25}\n"
        "groups: [{prefix: A, count: 1}]\n"
    )
    faults = fleet.chargers[0].faults
    assert (faults.certificate_status, faults.refuse_cancel) == ("revoked", 1)
    assert (faults.install_verification_fails, faults.defer_download) == (0.5, 0.25)
    assert parse_fleet(dump_fleet(fleet)) == fleet
    with pytest.raises(
        FleetFileError, match="certificate_status: must be invalid, revoked or null"
    ):
        parse_fleet(
            "defaults: {faults: {certificate_status: maybe}}\ngroups: [{prefix: A, count: 1}]"
        )
    assert parse_fault_flag("certificate_status=invalid") == ("certificate_status", "invalid")
    assert parse_fault_flag("certificate_status=none") == ("certificate_status", None)
    assert parse_fault_flag("refuse_cancel=0.5") == ("refuse_cancel", 0.5)
    with pytest.raises(ValueError, match="certificate_status"):
        parse_fault_flag("certificate_status=expired")


def test_flags_make_a_2_0_1_or_a_mixed_fleet() -> None:
    assert {c.protocol for c in fleet_from_flags(3, protocol=V201).chargers} == {V201}
    mixed = fleet_from_flags(8, v201_fraction=0.25)
    assert [c.protocol for c in mixed.chargers] == [V16, V16, V16, V201] * 2
    for kwargs, message in (
        ({"protocol": "ocpp2.1"}, "--protocol: must be ocpp1.6 or ocpp2.0.1"),
        ({"v201_fraction": 1.5}, "--v201-fraction: must be a number from 0 to 1"),
    ):
        with pytest.raises(FleetError, match=message):
            fleet_from_flags(1, **kwargs)


@given(st.integers(1, 400), st.floats(0, 1))
def test_a_mixed_fleet_spreads_its_share_evenly(n: int, fraction: float) -> None:
    marks = [mixed_protocol(i, fraction) == V201 for i in range(n)]
    for k in range(1, n + 1):  # every prefix holds its share, give or take one
        assert abs(sum(marks[:k]) - k * fraction) <= 1 + 1e-6


@settings(max_examples=60, deadline=None)
@given(fleets(), st.data())
def test_protocols_and_faults_round_trip_through_a_file(fleet: Any, data: st.DataObject) -> None:
    chargers = tuple(
        replace(
            c,
            protocol=data.draw(st.sampled_from([V16, V201])),
            faults=FaultProfile(
                certificate_status=data.draw(st.sampled_from([None, "invalid", "revoked"])),
                refuse_cancel=data.draw(st.sampled_from([0.0, 0.5, 1.0])),
            ),
        )
        for c in fleet.chargers
    )
    mixed = replace(fleet, chargers=chargers)
    assert parse_fleet(dump_fleet(mixed)) == mixed


def test_an_unknown_protocol_cannot_be_simulated() -> None:
    with pytest.raises(ValueError, match="not simulated"):
        SimulatedCharger(spec(protocol="ocpp2.1"), "ws://unused", fast())


# -- evota sim ---------------------------------------------------------------------------------

app = typer.Typer()
app.command()(sim_command)


@pytest.fixture(autouse=True)
def keep_logging_config() -> Iterator[None]:
    saved = structlog.get_config()
    level = logging.getLogger().level
    yield
    structlog.configure(**saved)
    logging.getLogger().setLevel(level)


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"EVOTA_TOKEN": "", "EVOTA_URL": ""})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--protocol", "ocpp2.1"], "--protocol: must be ocpp1.6 or ocpp2.0.1"),
        (["--v201-fraction", "2"], "--v201-fraction: must be a number from 0 to 1"),
        (["--protocol", V201, "--v201-fraction", "0.5"], "not both"),
        (["--fleet", "FLEET", "--protocol", V201], "--protocol cannot be combined with --fleet"),
        (["--fault", "certificate_status=lost"], "certificate_status: must be invalid, revoked"),
    ],
)
def test_bad_protocol_flags_print_one_line(tmp_path: Any, args: list[str], message: str) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("groups: [{prefix: A, count: 1}]\n")
    result = run(*[str(fleet) if a == "FLEET" else a for a in args])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_runs_a_2_0_1_fleet() -> None:
    with csms_in_thread(protocol=V201) as csms:
        result = run(
            "--url", csms.url, "--count", "2", "--seed", SEED, "--protocol", V201,
            "--duration", "1.0", "--refresh", "0.2", "--ramp-up", "0", "--speed", "60",
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2/2 connected, 2 accepted" in result.stdout
    assert {p["reason"] for p in csms.payloads("BootNotification")} == {"PowerUp"}
    assert csms.invalid == []


# -- the device model (pure) -------------------------------------------------------------------

STORE = {
    "HeartbeatInterval": ConfigKey("60", False, "int"),
    "AuthorizationKey": ConfigKey("", False, "key", secret=True),
    "SecurityProfile": ConfigKey("1", False, "int"),
    "TxCtrlr.TxStartPoint": ConfigKey(
        "Authorized", False, "csl", options=("Authorized", "EVConnected")
    ),
}


def item(component: str, variable: str, **kw: Any) -> dict[str, Any]:
    return {"component": {"name": component}, "variable": {"name": variable}, **kw}


def test_lookups_answer_every_status() -> None:
    model = Model(2)
    results = get_results(
        model,
        STORE,
        [
            item("OCPPCommCtrlr", "HeartbeatInterval"),
            item("SecurityCtrlr", "BasicAuthPassword"),
            item("OCPPCommCtrlr", "Nope"),
            item("Nope", "HeartbeatInterval"),
            item("OCPPCommCtrlr", "HeartbeatInterval", attributeType="Target"),
        ],
        lambda var: "computed",
    )
    assert [(r["attributeStatus"], r.get("attributeValue")) for r in results] == [
        ("Accepted", "60"),
        ("Rejected", None),
        ("UnknownVariable", None),
        ("UnknownComponent", None),
        ("NotSupportedAttributeType", None),
    ]
    assert results[4]["attributeType"] == "Target"
    refused, key = set_decision(model, STORE, item("SecurityCtrlr", "SecurityProfile"))
    assert key is None and refused["attributeStatus"] == "Rejected"  # read-only on 2.0.1
    _, key = set_decision(model, STORE, item("SecurityCtrlr", "BasicAuthPassword"))
    assert key == "AuthorizationKey"  # write-only may be written
    assert change_answer(STORE, "TxCtrlr.TxStartPoint", "EVConnected,Authorized") == "Accepted"
    assert change_answer(STORE, "TxCtrlr.TxStartPoint", "Whenever") == "Rejected"


@given(st.sampled_from(["ConfigurationInventory", "FullInventory", "SummaryInventory"]))
def test_reports_never_leak_write_only_values(base: str) -> None:
    items = report_items(Model(3), STORE, base, lambda var: "x")
    for entry in items:
        [attribute] = entry["variableAttribute"]
        assert (attribute["mutability"] == "WriteOnly") == ("value" not in attribute)
        if base == "ConfigurationInventory":
            assert attribute["mutability"] != "ReadOnly"
        if base == "SummaryInventory":
            assert entry["variable"]["name"] == "AvailabilityState"
