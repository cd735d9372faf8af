"""The charts the campaign page and the overview draw from the data they already load."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from evota.console import overview, page_charts
from evota.console.charts import WaveProgress

SVG = "{http://www.w3.org/2000/svg}"


def rows(markup: object) -> list[list[str]]:
    fig = ET.fromstring(str(markup))
    body = fig.find("div/details/table/tbody")
    assert body is not None
    return [["".join(c.itertext()) for c in tr] for tr in body]


def desc(markup: object) -> str:
    d = ET.fromstring(str(markup)).find(f"{SVG}svg/{SVG}desc")
    assert d is not None and d.text is not None
    return d.text


def test_wave_progress_counts_jobs_as_the_waves_table_does():
    waves = [
        {"index": 0, "size": 4, "jobs": {"succeeded": 4}, "gates": []},
        {"index": 1, "size": 10, "jobs": {"succeeded": 3, "failed": 1, "cancelled": 1,
                                          "downloading": 2, "pending": 3}},
        {"index": 2, "size": 20, "jobs": {"pending": 20}},
    ]  # fmt: skip
    assert page_charts.wave_progress(waves) == [
        WaveProgress("Wave 1 (pilot)", 4, 0, 0, 0),
        WaveProgress("Wave 2", 3, 2, 2, 3),
        WaveProgress("Wave 3", 0, 0, 0, 20),
    ]
    out = page_charts.campaign_charts({"waves": waves})
    assert set(out) == {"waves"}  # no gate yet: no gate charts
    assert rows(out["waves"])[1] == ["Wave 2", "3", "2", "2", "3", "10"]


def test_gate_evidence_per_wave_uses_the_latest_evaluation():
    # A gate as stored before gates accumulated evidence (passed, no upper bound) ...
    old = {"executed": 2, "succeeded": 2, "failed": 0, "wilson_lower": 0.342,
           "threshold": 0.5, "passed": False}  # fmt: skip
    # ... and as the three-outcome gate stores it, with the wave's own numbers beside.
    new = {"executed": 6, "succeeded": 6, "failed": 0, "wilson_lower": 0.61,
           "wilson_upper": 1.0, "threshold": 0.5, "outcome": "passed",
           "wave_numbers": {"executed": 2, "succeeded": 2}}  # fmt: skip
    waves = [
        {"index": 0, "size": 4, "jobs": {"succeeded": 4}, "gates": [{**old, "executed": 4,
                                                                    "succeeded": 4}]},
        {"index": 1, "size": 2, "jobs": {"succeeded": 2}, "gates": [old, new]},
        {"index": 2, "size": 6, "jobs": {"pending": 6}, "gates": []},
    ]  # fmt: skip
    out = page_charts.campaign_charts({"waves": waves})
    assert rows(out["gate_counts"]) == [
        ["Gate 1 (pilot)", "4", "4", "0"],
        ["Gate 2", "6", "6", "2"],
    ]
    assert rows(out["gate_rates"]) == [
        ["Gate 1 (pilot): 4/4", "failed", "1", "0.342", "—"],
        ["Gate 2: 6/6", "passed", "1", "0.61", "1"],
    ]
    assert "reference threshold 0.5" in desc(out["gate_rates"])


def test_overview_charts_per_model_and_against_the_release():
    counts = [
        overview.VersionCount("EVBox", "AC22", "1.1.0", 5),
        overview.VersionCount("EVBox", "AC22", "1.0.0", 3),
        overview.VersionCount("EVBox", "AC22", None, 1),
        overview.VersionCount("ABB", "DC50", "3.0", 2),
    ]
    models = overview.summarize(counts, [overview.Release("EVBox", "1.1.0", ("AC22",))])
    out = page_charts.overview_charts(models)
    assert rows(out["versions"]) == [
        ["ABB DC50", "2", "0", "0", "0", "2"],  # columns: 3.0, 1.1.0, 1.0.0, unreported
        ["EVBox AC22", "0", "5", "3", "1", "9"],
    ]
    assert rows(out["standing"]) == [
        ["ABB DC50", "0", "0", "2", "2"],  # on the latest, behind, no release or unreported
        ["EVBox AC22", "5", "3", "1", "9"],
    ]
    assert page_charts.overview_charts([]) == {}
    assert "evchart-csv" not in str(out["versions"])  # no link without an export to follow
    linked = page_charts.overview_charts(models, versions_csv="/v.csv", standing_csv="/s.csv")
    assert 'href="/v.csv"' in str(linked["versions"])
    assert 'href="/s.csv"' in str(linked["standing"])


def test_overview_names_the_top_versions_and_groups_the_rest():
    counts = [overview.VersionCount("V", "M", f"1.{i}.0", 10 + i) for i in range(10)]
    models = overview.summarize(counts, [])
    head = ET.fromstring(str(page_charts.overview_charts(models)["versions"])).find(
        "div/details/table/thead/tr"
    )
    assert head is not None
    names = ["".join(th.itertext()) for th in head][1:-1]
    assert names == [f"1.{i}.0" for i in range(9, 2, -1)] + [page_charts.OTHER]
    assert rows(page_charts.overview_charts(models)["versions"])[0][-2:] == ["33", "145"]


def test_the_latest_gate_per_model_marks_a_held_group():
    def group(executed: int, succeeded: int, outcome: str) -> dict[str, object]:
        return {"executed": executed, "succeeded": succeeded, "wilson_lower": 0.1,
                "wilson_upper": 0.9, "outcome": outcome}  # fmt: skip

    gate = {"executed": 8, "succeeded": 5, "threshold": 0.5, "outcome": "inconclusive",
            "group_by": "model", "hold": {"DC50": "model DC50: 1/4 healthy"},
            "by_model": {"AC22": group(4, 4, "passed"), "DC50": group(4, 1, "failed")},
            "by_site": {"paris": group(8, 5, "inconclusive")}}  # fmt: skip
    waves = [{"index": 0, "size": 8, "jobs": {"succeeded": 5, "failed": 3}, "gates": [gate]}]
    out = page_charts.campaign_charts({"waves": waves, "held_groups": {}})
    assert rows(out["gate_groups"]) == [
        ["AC22: 4/4", "passed", "1", "0.1", "0.9"],
        ["DC50: 1/4 (held)", "failed", "0.25", "0.1", "0.9"],
    ]
    fig = ET.fromstring(str(out["gate_groups"]))
    assert "".join(fig.find("figcaption").itertext()).startswith("Latest gate by model")  # type: ignore[union-attr]
    # Grouped by site: the site numbers; one model and no grouping: no per-group chart.
    by_site = page_charts.campaign_charts(
        {"waves": [{**waves[0], "gates": [{**gate, "group_by": "site"}]}], "held_groups": {}}
    )
    assert rows(by_site["gate_groups"]) == [["paris: 5/8", "inconclusive", "0.625", "0.1", "0.9"]]
    one = {**gate, "group_by": None, "by_model": {"AC22": group(8, 5, "inconclusive")}}
    assert "gate_groups" not in page_charts.campaign_charts(
        {"waves": [{**waves[0], "gates": [one]}]}
    )
