"""The console's pure parts, without a browser: the overview's numbers, chart geometry, the
command forms derived from the catalog, and the campaign preview."""

from __future__ import annotations

from datetime import UTC, datetime, time

from hypothesis import given
from hypothesis import strategies as st

from evota.console import forms, overview
from evota.console.overview import Release, VersionCount, summarize
from evota.console.preview import plan_preview
from evota.control import catalog
from evota.firmware import versions
from evota.firmware.updates import ImageFacts
from evota.rollout.policy import Policy, Target, WaveSpec, Window
from evota.selection import ChargerSnapshot

VERSIONS = st.sampled_from(["1.0.0", "1.0.1", "1.1.0", "2.0.0", "2.0.0-rc1", "R12B3", None])
COUNTS = st.lists(
    st.builds(
        VersionCount,
        st.sampled_from(["Acme", "acme", "Volt", None]),
        st.sampled_from(["AC22", "DC150", None]),
        VERSIONS,
        st.integers(0, 50),
    ),
    max_size=30,
)
RELEASES = st.lists(
    st.builds(
        Release,
        st.sampled_from(["Acme", "Volt"]),
        st.sampled_from(["1.0.0", "1.1.0", "2.0.0"]),
        st.sampled_from([("AC22",), ("DC150",), ("AC22", "DC150")]),
    ),
    max_size=5,
)


@given(COUNTS, RELEASES)
def test_summaries_account_for_every_charger(counts, releases):
    models = summarize(counts, releases)
    assert sum(m.total for m in models) == sum(c.count for c in counts if c.count > 0)
    assert len({(m.vendor, m.model) for m in models}) == len(models)
    for m in models:
        assert sum(n for _, n in m.versions) == m.total
        standings = [overview.standing(m, v) for v, n in m.versions for _ in range(n)]
        assert standings.count("behind") == m.behind
        assert standings.count("latest") == m.on_latest
        assert 0 <= m.behind + m.on_latest <= m.total - m.unknown
        assert 0.0 <= m.fragmentation < 1.0
        assert (m.fragmentation == 0.0) == (len(m.versions) == 1)
        known = [v for v, _ in m.versions if v != overview.UNKNOWN]
        keys = [versions.version_key(v) for v in known]
        assert keys == sorted(keys, reverse=True)  # newest first
        if m.latest is not None:
            assert m.latest == max(
                (
                    r.version
                    for r in releases
                    if r.vendor.casefold() == m.vendor.casefold() and m.model in r.models
                ),
                key=versions.version_key,
            )


def test_unreported_versions_are_listed_last_and_are_never_behind():
    counts = [
        VersionCount("Acme", "AC22", None, 2),
        VersionCount("Acme", "AC22", "1.0.0", 3),
        VersionCount("Acme", "AC22", "2.0.0", 1),
    ]
    (m,) = summarize(counts, [Release("ACME", "2.0.0", ("AC22",))])
    assert m.versions == (("2.0.0", 1), ("1.0.0", 3), (overview.UNKNOWN, 2))
    assert (m.latest, m.behind, m.on_latest, m.unknown) == ("2.0.0", 3, 1, 2)


@given(st.lists(st.tuples(st.text(max_size=5), st.integers(0, 1000)), max_size=20))
def test_bars_are_proportional_and_fit(items):
    rows = overview.bars(items, 260.0)
    assert [(b.label, b.count) for b in rows] == items
    top = max((n for _, n in items), default=0)
    for i, b in enumerate(rows):
        assert 0.0 <= b.width <= 260.0
        assert b.y == i * 22.0
        if top:
            assert abs(b.width - 260.0 * b.count / top) < 1e-9
    if top:
        assert max(b.width for b in rows) == 260.0


def test_every_catalog_command_has_a_form_marking_its_required_fields():
    by_name = {f.name: f for f in forms.command_forms()}
    assert set(by_name) == set(catalog.COMMANDS)
    assert next(iter(by_name)) == "reset"  # the commonest first
    for name, spec in catalog.COMMANDS.items():
        schema = spec.params.model_json_schema()
        fields = {f.name: f for f in by_name[name].fields}
        assert set(fields) == set(schema.get("properties", {}))
        for required in schema.get("required", []):
            assert fields[required].required, (name, required)
        assert by_name[name].critical == spec.critical
    reset = {f.name: f for f in by_name["reset"].fields}["type"]
    assert (reset.kind, reset.options[:2], reset.default) == ("select", ("Soft", "Hard"), "Soft")
    profile = {f.name: f for f in by_name["set-charging-profile"].fields}["profile"]
    assert profile.kind == "json" and profile.required


def _charger(i: int, version: str, site: str, tz: str = "UTC", **kw: object) -> ChargerSnapshot:
    return ChargerSnapshot(
        id=f"CP-{i:03}",
        vendor="Acme",
        model="AC22",
        firmware_version=version,
        site_id=site,
        timezone=tz,
        connected=True,
        **kw,  # type: ignore[arg-type]
    )


def test_preview_counts_exclusions_waves_and_windows():
    now = datetime(2025, 3, 5, 12, 0, tzinfo=UTC)  # a Wednesday
    fleet = [_charger(i, "1.0.0", "berlin", "Europe/Berlin") for i in range(6)]
    fleet += [
        _charger(6, "2.0.0", "tokyo", "Asia/Tokyo"),
        _charger(7, "1.0.0", "tokyo", "Asia/Tokyo"),
    ]
    fleet += [_charger(8, "1.0.0", "tokyo", "Asia/Tokyo", other_campaign="c-1")]
    image = ImageFacts(id="fw", vendor="Acme", version="2.0.0", state="released", models=("AC22",))
    night = Window(frozenset({0, 1, 2, 3, 4}), time(22, 0), time(5, 0))
    p = plan_preview(
        name="t",
        target=Target(vendors=("acme",)),
        image=image,
        fleet=fleet,
        wave_specs=(WaveSpec(count=2), WaveSpec(percent=100)),
        ramp=None,
        pilot=(),
        policy=Policy(windows=(night,)),
        now=now,
    )
    assert (p.matched, p.eligible) == (9, 7)
    assert dict((r, n) for r, n, _ in p.excluded) == {
        "already_on_target": 1,
        "in_other_campaign": 1,
    }
    assert p.waves == (2, 5) and len(p.pilot) == 2
    windows = {w.site: w for w in p.windows}
    assert windows["berlin"].chargers == 6 and not windows["berlin"].open_now
    assert windows["berlin"].next_opening == datetime(2025, 3, 5, 21, 0, tzinfo=UTC)  # 22:00 CET
    assert windows["tokyo"].open_now is False
    assert windows["tokyo"].next_opening == datetime(2025, 3, 5, 13, 0, tzinfo=UTC)  # 22:00 JST
