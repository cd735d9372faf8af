"""Wave planning: a partition of the eligible set, sizes as specified, spread, deterministic."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evota.rollout.policy import WaveSpec
from evota.rollout.waves import exponential, plan_waves
from evota.selection import ChargerSnapshot


def fleet(n: int, sites: int = 5, models: int = 3) -> list[ChargerSnapshot]:
    return [
        ChargerSnapshot(
            id=f"CP-{i:05d}", site_id=f"s{i % sites}", model=f"m{(i // sites) % models}"
        )
        for i in range(n)
    ]


def test_issue_example_sizes() -> None:
    waves = plan_waves(fleet(60), [WaveSpec(count=4), WaveSpec(percent=25), WaveSpec(percent=100)])
    assert [len(w) for w in waves] == [4, 11, 45]


def test_pilot_is_wave_zero_and_last_spec_takes_the_rest() -> None:
    chargers = fleet(100)
    waves = plan_waves(chargers, [WaveSpec(percent=10), WaveSpec(percent=20)], pilot=["CP-00007"])
    assert waves[0] == ("CP-00007",)
    assert [len(w) for w in waves] == [1, 9, 90]
    assert plan_waves(chargers, []) == (tuple(plan_waves(chargers, [])[0]),)
    with pytest.raises(ValueError, match="not eligible"):
        plan_waves(chargers, [], pilot=["nope"])


def test_waves_are_spread_across_sites_and_models() -> None:
    chargers = fleet(1000, sites=10, models=4)
    first = plan_waves(chargers, [WaveSpec(count=40), WaveSpec(percent=100)], seed="x")[0]
    by = {c.id: c for c in chargers}
    groups = Counter((by[c].site_id, by[c].model) for c in first)
    assert len(groups) == 40  # 40 chargers, 40 distinct (site, model) groups
    models = Counter(by[c].model for c in first[:4])
    assert len(models) == 4  # every model before any model twice


def test_exponential() -> None:
    assert [s.count for s in exponential(1, 2, 20)] == [1, 2, 4, 8, 5]
    assert [s.count for s in exponential(10, 1.5, 30)] == [10, 15, 5]
    assert exponential(5, 2, 0) == ()
    with pytest.raises(ValueError):
        exponential(0, 2, 10)


spec = st.one_of(
    st.builds(WaveSpec, count=st.integers(1, 50)),
    st.builds(WaveSpec, percent=st.floats(0.5, 100)),
)


@given(
    n=st.integers(0, 300),
    sites=st.integers(1, 8),
    models=st.integers(1, 4),
    specs=st.lists(spec, max_size=5),
    pilot_size=st.integers(0, 5),
    seed=st.text(max_size=5),
)
def test_waves_partition_sizes_and_determinism(
    n: int, sites: int, models: int, specs: list[WaveSpec], pilot_size: int, seed: str
) -> None:
    chargers = fleet(n, sites, models)
    pilot = [c.id for c in chargers[:pilot_size]]
    waves = plan_waves(chargers, specs, pilot=pilot, seed=seed)
    flat = [cid for w in waves for cid in w]
    assert len(flat) == len(set(flat)) == n  # no charger twice, none lost
    assert all(waves)  # no empty wave
    if pilot:
        assert waves[0] == tuple(pilot)
    shuffled = chargers[:]
    random.Random(1).shuffle(shuffled)
    assert plan_waves(shuffled, specs, pilot=pilot, seed=seed) == waves  # input order is moot
    # sizes: replay the specs
    covered = len(pilot)
    expected = [len(pilot)] if pilot else []
    for i, s in enumerate(specs):
        left = n - covered
        if i == len(specs) - 1:
            size = left
        elif s.count is not None:
            size = min(s.count, left)
        else:
            assert s.percent is not None
            size = max(0, min(math.ceil(round(n * s.percent / 100, 9)) - covered, left))
        if size:
            expected.append(size)
            covered += size
    if covered < n:
        expected.append(n - covered)
    assert [len(w) for w in waves] == expected
