"""Fleet files and flags -> ChargerSpecs: expansion, key derivation, precise errors, fuzzing."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evota.sim.fleet import (
    ChargerSpec,
    FleetError,
    FleetFileError,
    FleetSpec,
    SiteSpec,
    derive_key,
    dump_fleet,
    fleet_from_flags,
    key_problem,
    load_fleet,
    parse_fleet,
)

EXAMPLE = Path(__file__).parents[2] / "examples" / "fleet.yaml"


def test_the_example_fleet_file_loads() -> None:
    fleet = load_fleet(EXAMPLE)
    ids = [c.identity for c in fleet.chargers]
    assert len(ids) == len(set(ids)) == 49
    assert ids[0] == "ACME-0001" and ids[39] == "ACME-0040" and ids[40] == "VOLT-DC-0001"
    assert [s.id for s in fleet.sites] == ["berlin-hbf", "munich-ost", "lisbon-oriente"]
    assert fleet.sites[1].name == "München Ostbahnhof"
    acme = fleet.chargers[:4]
    assert [c.site_id for c in acme] == ["berlin-hbf", "munich-ost", "lisbon-oriente", "berlin-hbf"]
    assert acme[0].vendor == "Acme" and acme[0].firmware_version == "2.3.1"
    assert acme[0].connectors == 2 and acme[0].tags == ("sim", "ac")
    lab = fleet.chargers[-1]
    assert lab.auth_key == "lab-1-explicit-key-0123456789" and lab.serial_number == "SN-LAB-0001"
    assert acme[0].auth_key == derive_key("evota-demo", "ACME-0001")


def test_keys_are_deterministic_printable_and_depend_on_seed_and_identity() -> None:
    key = derive_key("seed", "CP-1")
    assert key == derive_key("seed", "CP-1") and len(key) == 32 and key_problem(key) is None
    assert key != derive_key("seed", "CP-2") and key != derive_key("other", "CP-1")
    a = parse_fleet("seed: s\ngroups: [{prefix: X-, count: 3}]")
    b = parse_fleet("seed: s\ngroups: [{prefix: X-, count: 3}]")
    assert [c.auth_key for c in a.chargers] == [c.auth_key for c in b.chargers]


def test_defaults_groups_and_numbering() -> None:
    fleet = parse_fleet(
        """
seed: 42
defaults: {vendor: V, model: M, firmware_version: 1.10, connectors: 3, tags: [d]}
groups:
  - {prefix: A-, count: 2}
  - {prefix: B-, count: 3, start: 9, digits: 2, model: M2, tags: []}
"""
    )
    assert fleet.seed == "42"
    assert [c.identity for c in fleet.chargers] == ["A-0001", "A-0002", "B-09", "B-10", "B-11"]
    first, last = fleet.chargers[0], fleet.chargers[-1]
    assert (first.vendor, first.model, first.firmware_version) == ("V", "M", "1.10")
    assert first.connectors == 3 and first.tags == ("d",) and first.site_id is None
    assert (last.model, last.tags) == ("M2", ())
    assert first.serial_number != last.serial_number


def test_flags_build_a_fleet() -> None:
    fleet = fleet_from_flags(3, prefix="P-", vendor="V", connectors=1, seed="s", site_id="x")
    assert [c.identity for c in fleet.chargers] == ["P-0001", "P-0002", "P-0003"]
    assert fleet.chargers[0].auth_key == derive_key("s", "P-0001")
    assert fleet.sites == (SiteSpec(id="x", name="x"),)
    assert fleet.chargers[2].site_id == "x" and fleet.chargers[2].connectors == 1
    a, b = SiteSpec(id="a", name="A"), SiteSpec(id="b", name="B")
    spread = fleet_from_flags(3, sites=[a, b])
    assert spread.sites == (a, b)
    assert [c.site_id for c in spread.chargers] == ["a", "b", "a"]
    with pytest.raises(FleetError, match="not both"):
        fleet_from_flags(3, sites=[a], site_id="x")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0}, "--count"),
        ({"count": 1, "connectors": 0}, "--connectors"),
        ({"count": 1, "vendor": "V" * 21}, "--vendor: must be at most 20"),
        ({"count": 1, "prefix": "a:b"}, "--prefix"),
        ({"count": 1, "prefix": "x" * 45}, "--prefix"),
    ],
)
def test_bad_flags_raise_fleet_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(FleetError, match=message):
        fleet_from_flags(**kwargs)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("- a\n- b\n", "line 1: a fleet file must be a mapping"),
        ("groups: [\n", "line 2: invalid YAML"),
        ("seed: x\nsedd: y\ngroups: []\n", "line 2, sedd: unknown key 'sedd'"),
        ("groups:\n  - prefix: A\n    count: ten\n", "line 3, groups[0].count: must be a whole"),
        ("groups:\n  - prefix: A\n    count: 0\n", "line 3, groups[0].count: must be 1-100000"),
        ("groups:\n  - prefix: A\n    count: 1\n    connectors: 101\n", "groups[0].connectors"),
        ("groups:\n  - {count: 1}\n", "line 2, groups[0]: a group needs prefix"),
        ("groups:\n  - {prefix: A, count: 1, site: x}\n", "line 2, groups[0].site: unknown site"),
        ("groups:\n  - {prefix: 'a b', count: 1}\n", "groups[0].prefix: identity 'a b0001'"),
        ("groups:\n - {prefix: A, count: 1}\n - {prefix: A, count: 1}\n", "line 3, groups[1]"),
        ("chargers:\n  - {identity: X, auth_key: short}\n", "chargers[0].auth_key: auth_key must"),
        ("chargers:\n  - {identity: X, vendor: ABCDEFGHIJKLMNOPQRSTU}\n", "at most 20"),
        ("chargers:\n  - {identity: X, protocol: ocpp2.1}\n", "'ocpp2.1' is not simulated"),
        ("chargers:\n  - {identity: X, tags: oops}\n", "chargers[0].tags: tags must be a list"),
        ("chargers:\n  - {identity: X, vendor: null}\n", "chargers[0].vendor: must be a text"),
        ("sites:\n  - {id: s, timezone: Mars/Olympus}\ngroups: []\n", "unknown IANA timezone"),
        ("sites:\n  - {id: s}\n  - {id: s}\n", "line 3, sites[1].id: duplicate site id"),
        ("seed: a\nseed: b\n", "line 2, (top level): duplicate key 'seed'"),
        ("seed: !!python/object:os.system x\n", "line 1, seed: cannot read value"),
        ("seed: s\n", "the fleet has no chargers"),
        ("a: &a [*a]\n", "too deeply nested"),
    ],
)
def test_bad_fleet_files_give_one_precise_error(text: str, message: str) -> None:
    with pytest.raises(FleetFileError) as info:
        parse_fleet(text, source="fleet.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("fleet.yaml")
    assert "\n" not in str(info.value)


def test_unreadable_files_are_fleet_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FleetFileError, match="cannot read the file"):
        load_fleet(tmp_path / "missing.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(FleetFileError, match="not UTF-8"):
        load_fleet(binary)


# -- property tests --------------------------------------------------------------------------

_SAFE = string.ascii_letters + string.digits + "-_.#%?!~"
_TEXT = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"))
identities = st.text(_SAFE, min_size=1, max_size=48)


# Strings YAML would read as something else unless the dumper quotes them.
_TRICKY = ["yes", "no", "null", "~", "1.10", "0x1F", "1e3", " lead", "a: b", "- x", "#c", "'q"]


def texts(max_size: int) -> st.SearchStrategy[str]:
    return st.sampled_from([t for t in _TRICKY if len(t) <= max_size]) | st.text(
        _TEXT, min_size=1, max_size=max_size
    )


def keys() -> st.SearchStrategy[str]:
    return st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=16, max_size=40)


@st.composite
def fleets(draw: st.DrawFn) -> FleetSpec:
    seed = draw(texts(30))
    site_ids = draw(st.lists(texts(64), max_size=4, unique=True))
    sites = tuple(
        SiteSpec(
            id=sid,
            name=draw(texts(200)),
            timezone=draw(st.sampled_from(["Europe/Berlin", "UTC", "America/New_York"])),
            region=draw(st.none() | texts(20)),
            tags=tuple(draw(st.lists(texts(64), max_size=3))),
        )
        for sid in site_ids
    )
    chargers = []
    for identity in draw(st.lists(identities, min_size=1, max_size=8, unique=True)):
        chargers.append(
            ChargerSpec(
                identity=identity,
                auth_key=draw(st.just(derive_key(seed, identity)) | keys()),
                vendor=draw(texts(20)),
                model=draw(texts(20)),
                serial_number=draw(texts(25)),
                firmware_version=draw(texts(50)),
                site_id=draw(st.sampled_from([None, *site_ids])),
                connectors=draw(st.integers(1, 100)),
                tags=tuple(draw(st.lists(texts(64), max_size=3))),
            )
        )
    return FleetSpec(seed=seed, sites=sites, chargers=tuple(chargers))


@settings(max_examples=150, deadline=None)
@given(fleets())
def test_valid_fleets_round_trip_through_a_file(fleet: FleetSpec) -> None:
    assert parse_fleet(dump_fleet(fleet)) == fleet


@settings(max_examples=100, deadline=None)
@given(
    seed=texts(20),
    groups=st.lists(
        st.fixed_dictionaries(
            {"prefix": st.text(_SAFE, max_size=10), "count": st.integers(1, 30)},
            optional={"start": st.integers(0, 10**6), "connectors": st.integers(1, 100)},
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_groups_expand_to_their_counts_or_report_a_clash(
    seed: str, groups: list[dict[str, Any]]
) -> None:
    text = yaml.safe_dump({"seed": seed, "groups": groups})
    try:
        fleet = parse_fleet(text)
    except FleetFileError as exc:
        assert "also defined at line" in str(exc)  # prefixes/ranges may overlap
        return
    assert len(fleet.chargers) == sum(g["count"] for g in groups)
    for c in fleet.chargers:
        assert c.auth_key == derive_key(seed, c.identity) and key_problem(c.auth_key) is None


_VOCAB = [
    "seed", "protocol", "defaults", "sites", "groups", "chargers", "id", "name", "timezone",
    "region", "tags", "prefix", "count", "start", "digits", "site", "vendor", "model",
    "firmware_version", "connectors", "identity", "auth_key", "serial_number", "junk",
]  # fmt: skip
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**13)
    | st.floats(allow_nan=True)
    | st.text(max_size=50)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(_VOCAB), inner, max_size=5)
    ),
    max_leaves=25,
)


def _parse_or_fleet_error(text: str) -> None:
    try:
        parse_fleet(text, source="junk.yaml")
    except FleetFileError as exc:
        assert str(exc).startswith("junk.yaml")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_VOCAB), _values, max_size=6))
def test_structured_junk_only_ever_raises_fleet_file_error(doc: dict[str, Any]) -> None:
    _parse_or_fleet_error(yaml.safe_dump(doc))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_random_text_only_ever_raises_fleet_file_error(text: str) -> None:
    _parse_or_fleet_error(text)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_mutated_example_only_ever_raises_fleet_file_error(data: st.DataObject) -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    i = data.draw(st.integers(0, len(lines) - 1))
    lines[i] = data.draw(st.sampled_from(["", lines[i][: len(lines[i]) // 2], "  - [", "x: {"]))
    _parse_or_fleet_error("\n".join(lines))
