"""Version ordering: table tests for the documented rules, properties for a total order."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evota.firmware.versions import compare, is_newer, sort_versions, version_key

SEMVER_PRECEDENCE = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "2.0.0",
    "2.1.0",
    "2.1.1",
]


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        *itertools.pairwise(SEMVER_PRECEDENCE),
        ("1.2.3", "v1.2.4"),
        ("1.2.3-rc.1", "1.2.3"),
        ("1.9.0", "1.10.0"),
        ("4.0.7.9", "4.0.7.12"),
        ("4.0.7", "4.0.7.12"),
        ("R12B3", "R12B10"),
        ("R12B03", "R12B10"),
        ("R9B99", "R12B1"),
        ("FW_2023.11_b5", "FW_2023.11_b12"),
        ("FW_2023.9_b20", "FW_2023.11_b1"),
        ("", "0"),
        ("1.2", "1.2.1"),
        ("1.2.3", "1.2.3a"),
        ("1a", "ab"),  # number before text at the same position
    ],
)
def test_order(older: str, newer: str) -> None:
    assert compare(older, newer) == -1
    assert compare(newer, older) == 1
    assert is_newer(newer, older)
    assert not is_newer(older, newer)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("1.2", "1.2.0"),
        ("1.2.0", "1.2.0.0"),
        ("1", "1.0.0"),
        ("v1.2.3", "1.2.3"),
        ("V1.2.3", "1.2.3"),
        ("1.2.3+build5", "1.2.3"),
        ("1.2.3+build5", "1.2.3+build6"),
        ("1.0.0-rc.1+b1", "1.0.0-rc.1+b2"),
        ("R12B03", "r12b3"),
        (" 1.2.3 ", "1.2.3"),
    ],
)
def test_equivalent(a: str, b: str) -> None:
    assert compare(a, b) == 0
    assert version_key(a) == version_key(b)
    assert not is_newer(a, b)
    assert not is_newer(b, a)


def test_sort_versions_table() -> None:
    shuffled = [*SEMVER_PRECEDENCE[4:], *SEMVER_PRECEDENCE[:4]][::-1]
    assert sort_versions(shuffled) == SEMVER_PRECEDENCE
    assert sort_versions(["R12B10", "R12B3", "r12b3"]) == ["R12B3", "r12b3", "R12B10"]


@pytest.mark.parametrize(
    "odd", ["", " ", "v", "-", "+", "1.2.3-", "1.2.3+", "..", "\ud800", "²", "9" * 5000]
)
def test_never_raises(odd: str) -> None:
    assert compare(odd, odd) == 0
    compare(odd, "1.2.3")
    is_newer(odd, "1.0.0")


@pytest.mark.parametrize("bad", [None, 1, 1.2, b"1.2.3", ["1.2.3"]])
def test_non_str_is_value_error(bad: object) -> None:
    with pytest.raises(ValueError, match="must be a str"):
        compare(bad, "1.0.0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be a str"):
        version_key(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be a str"):
        sort_versions(["1.0.0", bad])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="must be a str"):
        is_newer("1.0.0", "0.9.0", supersedes={"1.0.0": [bad]})  # type: ignore[list-item]


def test_supersedes_overrides_ordering_transitively() -> None:
    # A vendor renamed its line: ZX-900 replaces AB-100 via an intermediate MM-500.
    supersedes = {"ZX-900": ["MM-500"], "MM-500": ["AB-100"]}
    assert compare("AB-100", "ZX-900") == -1  # ordering alone agrees here...
    assert is_newer("MM-500", "AB-100", supersedes=supersedes)
    assert is_newer("ZX-900", "AB-100", supersedes=supersedes)
    # ...and here the ordering would say the opposite.
    reverse = {"A-1": ["B-1"], "B-1": ["C-1"]}
    assert is_newer("A-1", "C-1", supersedes=reverse)
    assert not is_newer("C-1", "A-1", supersedes=reverse)
    # Matched by equivalence, not spelling.
    assert is_newer("a-01", "c-01", supersedes=reverse)
    # Unlinked pairs still use the ordering.
    assert is_newer("D-1", "A-1", supersedes=reverse)


def test_supersedes_cycle_falls_back_to_ordering() -> None:
    cycle = {"2.0.0": ["1.0.0"], "1.0.0": ["2.0.0"]}
    assert is_newer("2.0.0", "1.0.0", supersedes=cycle)
    assert not is_newer("1.0.0", "2.0.0", supersedes=cycle)


def test_supersedes_bare_str_is_value_error() -> None:
    with pytest.raises(ValueError, match="not a str"):
        is_newer("2", "1", supersedes={"2": "1"})


# --- properties -------------------------------------------------------------------------

_ident = st.one_of(
    st.integers(0, 30).map(str),
    st.text("abrcAZ-", min_size=1, max_size=5),
)
semver = st.builds(
    lambda v, release, pre, build: (
        v
        + ".".join(map(str, release))
        + (f"-{'.'.join(pre)}" if pre else "")
        + (f"+{'.'.join(build)}" if build else "")
    ),
    st.sampled_from(["", "v", "V"]),
    st.lists(st.integers(0, 12), min_size=3, max_size=5),
    st.lists(_ident, max_size=3),
    st.lists(_ident, max_size=2),
)
free_form = st.one_of(
    st.text("0123456789.-_+vVRrBbFW ", max_size=12),
    st.text(max_size=12),
)
versions = st.one_of(semver, free_form)


@given(versions)
def test_reflexive(a: str) -> None:
    assert compare(a, a) == 0
    assert not is_newer(a, a)


@given(versions, versions)
def test_antisymmetric(a: str, b: str) -> None:
    assert compare(a, b) == -compare(b, a)
    assert (compare(a, b) == 0) == (version_key(a) == version_key(b))


@given(versions, versions, versions)
def test_transitive(a: str, b: str, c: str) -> None:
    x, y, z = sort_versions([a, b, c])
    assert compare(x, y) <= 0
    assert compare(y, z) <= 0
    assert compare(x, z) <= 0
    if compare(x, y) < 0 or compare(y, z) < 0:
        assert compare(x, z) < 0


@given(st.lists(versions, max_size=15))
def test_sort_versions_idempotent_and_agrees_with_compare(items: list[str]) -> None:
    once = sort_versions(items)
    assert sort_versions(once) == once
    assert sort_versions(reversed(items)) == once
    assert sorted(once) == sorted(items)
    for left, right in itertools.pairwise(once):
        assert compare(left, right) <= 0


@given(st.text(), st.text())
def test_never_raises_on_arbitrary_text(a: str, b: str) -> None:
    assert compare(a, b) in (-1, 0, 1)
    is_newer(a, b, supersedes={a: [b]})
    sort_versions([a, b])


@settings(max_examples=50)
@given(st.lists(versions, min_size=2, max_size=6, unique_by=version_key), st.data())
def test_supersedes_transitive(chain: list[str], data: st.DataObject) -> None:
    # chain[i + 1] supersedes chain[i], whatever the ordering says.
    supersedes = {newer: [older] for older, newer in itertools.pairwise(chain)}
    i = data.draw(st.integers(0, len(chain) - 2))
    j = data.draw(st.integers(i + 1, len(chain) - 1))
    assert is_newer(chain[j], chain[i], supersedes=supersedes)
    assert not is_newer(chain[i], chain[j], supersedes=supersedes)
