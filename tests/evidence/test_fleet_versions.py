"""The fleet's firmware over time and who is behind, pure (evota.evidence.fleet_versions)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evota.evidence import fleet_versions as fv

NOW = datetime(2026, 3, 10, 15, 30, tzinfo=UTC)
VERSIONS = ["1.0.0", "1.1.0", "2.0.0", "v2.0.0", "R12B3", None]


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=UTC)


def as_dict(day: fv.Day) -> dict[tuple[str, str], int]:
    return dict(day.counts)


def test_a_campaign_moves_chargers_day_by_day() -> None:
    first, _ = fv.window(NOW, 5)  # 6 .. 10 March
    assert first == date(2026, 3, 6)
    chargers = [
        fv.ChargerNow("A", "Acme", "2.0.0", at(1)),
        fv.ChargerNow("B", "Acme", "2.0.0", at(1)),
        fv.ChargerNow("C", "Acme", "1.0.0", at(1)),
        fv.ChargerNow("D", "Acme", None, at(9)),  # new on the 9th, never said its version
    ]
    changes = [
        fv.Change("A", at(7), "1.0.0"),  # a reboot on the old version
        fv.Change("A", at(8), "2.0.0", before="1.0.0"),  # the campaign's job
        fv.Change("B", at(9, 23), "2.0.0", before="1.0.0"),
        fv.Change("C", at(8), "1.0.0"),
    ]
    days = fv.daily(chargers, changes, first, 5, NOW)
    assert [d.day for d in days] == [date(2026, 3, i) for i in range(6, 11)]
    old, new = ("Acme", "1.0.0"), ("Acme", "2.0.0")
    assert as_dict(days[0]) == {old: 3}
    assert as_dict(days[2]) == {old: 2, new: 1}
    assert as_dict(days[3]) == {new: 2, old: 1, ("Acme", "unknown"): 1}
    assert days[4].counts == days[3].counts  # newest first, unknown last
    assert [k for k, _ in days[3].counts] == [new, old, ("Acme", "unknown")]


def test_today_is_the_fleet_as_it_is_even_without_an_event() -> None:
    """A version changed without a boot or job in the window (an edit, an old event) shows
    from now on, so the last day matches the chargers' records."""
    first, _ = fv.window(NOW, 3)
    days = fv.daily([fv.ChargerNow("A", "Acme", "9.9", at(1))], [], first, 3, NOW)
    assert [as_dict(d) for d in days] == [{("Acme", "9.9"): 1}] * 3
    days = fv.daily(
        [fv.ChargerNow("A", "Acme", "9.9", at(1))], [fv.Change("A", at(9), "1.0")], first, 3, NOW
    )
    assert [as_dict(d) for d in days] == [{("Acme", "1.0"): 1}] * 2 + [{("Acme", "9.9"): 1}]


def test_facts_after_now_are_ignored_and_days_are_bounded() -> None:
    first, _ = fv.window(NOW, 1)
    chargers = [fv.ChargerNow("A", "Acme", "1.0", at(1))]
    days = fv.daily(chargers, [fv.Change("A", NOW + timedelta(hours=1), "2.0")], first, 1, NOW)
    assert as_dict(days[0]) == {("Acme", "1.0"): 1}
    for bad in (0, 367):
        with pytest.raises(ValueError, match="days"):
            fv.window(NOW, bad)
        with pytest.raises(ValueError, match="days"):
            fv.daily(chargers, [], first, bad, NOW)


def test_releases_behind_counts_distinct_newer_releases() -> None:
    released = ["1.0.0", "1.1.0", "v1.1.0", "2.0.0", "0.9"]
    assert fv.releases_behind("1.0.0", released) == 2
    assert fv.releases_behind("2.0.0", released) == 0
    assert fv.releases_behind("0.1", released) == 4


def test_sort_keys_vendor_then_newest_first_unknown_last() -> None:
    keys = [("b", "1.0"), ("a", "unknown"), ("a", "10.0"), ("a", "9.0"), ("unknown", "1")]
    assert fv.sort_keys(keys) == [
        ("a", "10.0"),
        ("a", "9.0"),
        ("a", "unknown"),
        ("b", "1.0"),
        ("unknown", "1"),
    ]


# -- the property: the sweep equals a day-by-day replay of each charger ------------------------


def _replay(
    chargers: list[fv.ChargerNow], changes: list[fv.Change], first: date, days: int
) -> list[Counter[tuple[str, str]]]:
    """The rules of the module docstring, one charger and one day at a time."""
    out: list[Counter[tuple[str, str]]] = [Counter() for _ in range(days)]
    for ch in chargers:
        facts = sorted(
            (c for c in changes if c.charger_id == ch.id and c.at <= NOW), key=lambda c: c.at
        )
        if not facts or facts[-1].version != ch.version:
            facts.append(fv.Change(ch.id, NOW, ch.version))
        born = min(ch.since, facts[0].at).date()
        for i in range(days):
            day = first + timedelta(days=i)
            if day < born:
                continue
            seen = [f for f in facts if f.at.date() <= day]
            if seen:
                version = seen[-1].version
            else:
                version = facts[0].before if facts[0].before is not None else facts[0].version
            out[i][(ch.vendor or "unknown", version or "unknown")] += 1
    return out


instants = st.integers(min_value=0, max_value=20 * 24).map(
    lambda h: datetime(2026, 2, 20, tzinfo=UTC) + timedelta(hours=h) - timedelta(minutes=1)
)


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[fv.ChargerNow], list[fv.Change]]:
    n = draw(st.integers(min_value=0, max_value=8))
    chargers = [
        fv.ChargerNow(
            f"C{i}",
            draw(st.sampled_from(["Acme", "acme", None, "Volt"])),
            draw(st.sampled_from(VERSIONS)),
            draw(instants),
        )
        for i in range(n)
    ]
    changes = draw(
        st.lists(
            st.builds(
                fv.Change,
                st.sampled_from([f"C{i}" for i in range(n + 1)]),  # one unknown charger too
                instants,
                st.sampled_from(VERSIONS),
                st.sampled_from(VERSIONS),
            ),
            max_size=25,
        )
    )
    return chargers, changes


@given(fleets(), st.integers(min_value=1, max_value=25))
def test_daily_counts_replay_every_charger(
    fleet: tuple[list[fv.ChargerNow], list[fv.Change]], days: int
) -> None:
    chargers, changes = fleet
    first, _ = fv.window(NOW, days)
    result = fv.daily(chargers, changes, first, days, NOW)
    assert [Counter(as_dict(d)) for d in result] == _replay(chargers, changes, first, days)
    # chargers never vanish, and today is exactly the chargers' current versions
    totals = [d.total for d in result]
    assert totals == sorted(totals)
    now = Counter((c.vendor or "unknown", c.version or "unknown") for c in chargers)
    assert Counter(as_dict(result[-1])) == now
    for d in result:
        assert [k for k, _ in d.counts] == fv.sort_keys(k for k, _ in d.counts)
