"""The console's SVG charts: well-formed markup, every label escaped, a "no data" chart for
empty data, and nothing non-finite drawn, whatever the values."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from markupsafe import Markup

from evota.console import charts
from evota.console.charts import Estimate, Layer, Series, WaveProgress

SVG = "{http://www.w3.org/2000/svg}"
T0 = datetime(2026, 12, 1, tzinfo=UTC)
EVIL = '<script>alert("x")</script> & "quotes"'


def parse(markup: Markup) -> ET.Element:
    """The figure as XML (the charts are XHTML-clean: no HTML-only void elements)."""
    assert isinstance(markup, Markup)
    return ET.fromstring(str(markup))


def svg_of(figure: ET.Element) -> ET.Element:
    svg = figure.find(f"{SVG}svg")
    assert svg is not None
    return svg


def desc_of(markup: Markup) -> str:
    desc = svg_of(parse(markup)).find(f"{SVG}desc")
    assert desc is not None and desc.text is not None
    return desc.text


def numbers(markup: Markup) -> None:
    text = str(markup).lower()
    assert "nan" not in text.replace("nanos", "")
    assert "inf" not in text.replace("info", "")


def every_chart(title: str, label: str) -> list[Markup]:
    times = [T0 + timedelta(hours=h) for h in range(4)]
    line = [Series(label, [(t, float(i)) for i, t in enumerate(times)])]
    bands = [Layer(label, [1, 2, 3, 4]), Layer("b", [4, 3, 2, 1])]
    return [
        charts.time_series("ts", title, line),
        charts.stacked_area("sa", title, times, bands),
        charts.stacked_bars("sb", title, [label, "m2"], [Layer(label, [1, 2]), Layer("v", [3, 0])]),
        charts.wave_progress("wp", title, [WaveProgress(label, 1, 2, 3, 4)]),
        charts.grouped_bars("gb", title, [label], [Layer(label, [5]), Layer("ok", [4])]),
        charts.comparison("cp", title, [Estimate(label, 0.5, 0.4, 0.6, label)], reference=0.9),
    ]


def test_every_chart_is_an_accessible_figure_with_a_table():
    for markup in every_chart("Sessions per day", "Sim-AC22"):
        fig = parse(markup)
        assert fig.tag == "figure"
        cid = fig.get("id")
        svg = svg_of(fig)
        assert svg.get("role") == "img"
        assert svg.get("aria-labelledby") == f"{cid}-title"
        assert svg.get("aria-describedby") == f"{cid}-desc"
        assert svg.get("viewBox", "").startswith("0 0 640 ")
        assert svg.find(f"{SVG}title").text == "Sessions per day"  # type: ignore[union-attr]
        desc = svg.find(f"{SVG}desc")
        assert desc is not None and "Sim-AC22" in (desc.text or "")
        assert fig.find("figcaption").text == "Sessions per day"  # type: ignore[union-attr]
        legend = fig.find("ul[@class='evchart-legend']")
        assert (
            legend is not None
            and len(legend) >= 1
            and all("".join(li.itertext()).strip() for li in legend)
        )
        assert all(li[0].get("aria-hidden") == "true" for li in legend)
        for key in legend.iter(f"{SVG}svg"):  # the swatches are decoration
            assert key.get("aria-hidden") == "true"
        table = fig.find("div/details/table")
        assert table is not None and table.find("caption").text == "Sessions per day"  # type: ignore[union-attr]
        assert "Sim-AC22" in "".join(table.itertext())
        numbers(markup)


def test_labels_from_chargers_are_escaped():
    for markup in every_chart(EVIL, EVIL):
        text = str(markup)
        assert "<script>" not in text
        assert "&lt;script&gt;" in text
        fig = parse(markup)  # still well-formed: the quotes and ampersand are escaped too
        assert svg_of(fig).find(f"{SVG}title").text == EVIL  # type: ignore[union-attr]
        assert EVIL in "".join(fig.itertext())


def test_csv_link_and_ids():
    markup = charts.wave_progress(
        'waves "1"', "Waves", [WaveProgress("1", 1)], csv_url="/x.csv?a=1&b=<2>"
    )
    fig = parse(markup)
    assert fig.get("id") == "waves--1-"
    link = fig.find("div/a")
    assert link is not None and link.get("href") == "/x.csv?a=1&b=<2>"
    assert "CSV" in "".join(link.itertext())
    ids = [e.get("id") for e in fig.iter() if e.get("id")]
    assert len(ids) == len(set(ids)) == 4
    assert parse(charts.wave_progress("1st", "W", [])).get("id") == "chart-1st"
    for unsafe in ("javascript:alert(1)", " javascript:x", "//evil.example/x", "data:text/csv,a"):
        assert "evchart-csv" not in str(charts.wave_progress("w", "W", [], csv_url=unsafe))
    assert "evchart-csv" in str(charts.wave_progress("w", "W", [], csv_url="https://x/y.csv"))


@pytest.mark.parametrize(
    "markup",
    [
        charts.time_series("a", "T", []),
        charts.time_series("a", "T", [Series("s", [])]),
        charts.time_series("a", "T", [Series("s", [(T0, math.nan), (T0, math.inf)])]),
        charts.stacked_area("a", "T", [], []),
        charts.stacked_area("a", "T", [T0], [Layer("x", [0])]),
        charts.stacked_bars("a", "T", [], []),
        charts.wave_progress("a", "T", []),
        charts.grouped_bars("a", "T", ["g"], [Layer("x", [math.nan])]),
        charts.comparison("a", "T", []),
        charts.comparison("a", "T", [Estimate("x", math.nan)]),
    ],
)
def test_empty_data_is_a_no_data_chart(markup: Markup):
    fig = parse(markup)
    svg = svg_of(fig)
    assert svg.find(f"{SVG}desc").text == "No data."  # type: ignore[union-attr]
    assert "No data" in "".join(svg.itertext())
    assert "No data" in "".join(fig.find("div/details/table").itertext())  # type: ignore[union-attr]


def test_one_point_and_gaps():
    at = T0 + timedelta(hours=9, minutes=30)
    one = charts.time_series("a", "T", [Series("s", [(at, 3.0)])], unit="kWh")
    svg = svg_of(parse(one))
    assert len(list(svg.iter(f"{SVG}circle"))) == 1  # a dot, not an invisible line
    ticks = [t.text for t in svg.iter(f"{SVG}text") if t.get("text-anchor") == "middle"]
    assert ticks == ["2026-12-01 09:30"]  # its own time, not a made-up hour around it
    day = parse(charts.time_series("a", "T", [Series("s", [(T0, 3.0)])]))  # daily data
    ticks = [t.text for t in svg_of(day).iter(f"{SVG}text") if t.get("text-anchor") == "middle"]
    assert ticks == ["2026-12-01"]
    assert "".join(day.find("div/details/table/tbody/tr/th").itertext()) == "2026-12-01"  # type: ignore[union-attr]
    assert "latest 3 kWh" in svg.find(f"{SVG}desc").text  # type: ignore[operator,union-attr]
    # A NaN splits the line in two; the table shows it as a dash.
    pts = [(T0 + timedelta(hours=h), v) for h, v in enumerate([1.0, 2.0, math.nan, 3.0, 4.0])]
    gap = charts.time_series("a", "T", [Series("s", pts)])
    fig = parse(gap)
    assert len(list(svg_of(fig).iter(f"{SVG}path"))) == 2
    assert "—" in "".join(fig.find("div/details/table").itertext())  # type: ignore[union-attr]
    numbers(gap)
    single = charts.stacked_area("a", "T", [T0], [Layer("v1", [3]), Layer("v2", [1])], share=True)
    assert len(list(svg_of(parse(single)).iter(f"{SVG}rect"))) == 2


def test_the_description_states_the_numbers():
    waves = [WaveProgress("Wave 1 (pilot)", succeeded=4), WaveProgress("Wave 2", 1, 1, 2, 6)]
    assert desc_of(charts.wave_progress("w", "Waves", waves)) == (
        "Stacked bar chart. Wave 1 (pilot): succeeded 4; "
        "Wave 2: succeeded 1, failed 1, running 2, pending 6"
    )
    cmp = charts.comparison(
        "c",
        "Session failure rate",
        [Estimate("before", 0.1, 0.05, 0.15, "before"), Estimate("after", 0.2, 0.1, 0.3, "after")],
        reference=0.12,
        reference_label="fleet",
    )
    assert desc_of(cmp) == (
        "Comparison. before (before): 0.1 (95% CI 0.05 to 0.15); "
        "after (after): 0.2 (95% CI 0.1 to 0.3); reference fleet 0.12"
    )


def test_share_bars_fill_the_width_and_keep_counts_in_the_table():
    fig = parse(
        charts.stacked_bars(
            "s", "Versions", ["A", "B"], [Layer("1.0", [1, 30]), Layer("2.0", [3, 10])], share=True
        )
    )
    rects = [r for r in svg_of(fig).iter(f"{SVG}rect")]
    widths = [float(r.get("width", 0)) for r in rects]
    assert widths[0] + widths[1] == pytest.approx(widths[2] + widths[3], abs=0.2)
    cells = [[c.text for c in tr] for tr in fig.find("div/details/table/tbody")]  # type: ignore[union-attr]
    assert cells == [["A", "1", "3", "4"], ["B", "30", "10", "40"]]


def test_nice_ticks():
    assert charts.nice_ticks(0, 10) == (0, 2, 4, 6, 8, 10)
    assert charts.nice_ticks(0, 0.95) == (0, 0.2, 0.4, 0.6, 0.8, 1.0)
    assert charts.nice_ticks(3, 3) == (1, 2, 3, 4, 5)
    assert charts.nice_ticks(0, 0) == (0, 0.2, 0.4, 0.6, 0.8, 1.0)
    # a span below what a float can divide (hypothesis found 0..5e-324: log10(0))
    assert charts.nice_ticks(0, 5e-324) == (0, 0.2, 0.4, 0.6, 0.8, 1.0)
    assert charts.nice_ticks(5e-324, 1e-323) == (-1.0, -0.5, 0.0, 0.5, 1.0)
    assert charts.nice_ticks(-0.3, 0.2)[0] <= -0.3
    assert charts.nice_ticks(math.nan, math.inf) == charts.nice_ticks(0, 1)
    assert charts.nice_ticks(0, 12, integer=True) == (0, 5, 10, 15)  # jobs: no 2.5 or 7.5
    assert charts.nice_ticks(0, 12) == (0, 2.5, 5, 7.5, 10, 12.5)
    assert charts.nice_ticks(0, 2, integer=True) == (0, 1, 2)  # not 0.5 steps
    gate = charts.grouped_bars("g", "T", ["a", "b"], [Layer("x", [4, 12]), Layer("y", [4, 9])])
    ticks = [
        t.text for t in svg_of(parse(gate)).iter(f"{SVG}text") if t.get("text-anchor") == "end"
    ]
    assert ticks == ["0", "5", "10", "15"]


def test_time_ticks_are_round():
    ticks = charts.time_ticks(T0 + timedelta(minutes=7), T0 + timedelta(hours=5, minutes=1))
    assert ticks[0] == T0 + timedelta(hours=1) and all(t.minute == 0 for t in ticks)
    days = charts.time_ticks(T0, T0 + timedelta(days=30))
    assert all(t.hour == 0 for t in days) and len(days) <= 6
    assert charts.time_ticks(T0, T0) == (T0,)
    naive = charts.time_ticks(T0.replace(tzinfo=None), T0.replace(tzinfo=None) + timedelta(days=1))
    assert naive[0].tzinfo is UTC


finite_or_not = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e15, max_value=1e15),
    st.integers(min_value=-(10**18), max_value=10**18).map(float),
)


@given(
    values=st.lists(finite_or_not, max_size=12),
    hours=st.lists(st.integers(min_value=0, max_value=24 * 400), max_size=12),
)
def test_extreme_values_never_break_the_markup(values: list[float], hours: list[int]):
    n = min(len(values), len(hours))
    times = [T0 + timedelta(hours=h) for h in hours[:n]]
    vals = values[:n]
    for markup in (
        charts.time_series("a", "T", [Series("s", list(zip(times, vals, strict=True)))]),
        charts.stacked_area("a", "T", times, [Layer("x", vals), Layer("y", vals[::-1])]),
        charts.stacked_bars("a", "T", [str(i) for i in range(n)], [Layer("x", vals)]),
        charts.grouped_bars("a", "T", [str(i) for i in range(n)], [Layer("x", vals)]),
        charts.comparison(
            "a", "T", [Estimate(str(i), v, v - 1, v + 1) for i, v in enumerate(vals)], reference=1
        ),
    ):
        parse(markup)
        numbers(markup)
