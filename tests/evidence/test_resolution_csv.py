"""The resolution CSV export: group keys come from chargers (models, sites, error codes), so
a key a spreadsheet would run as a formula is written as text."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

from evota.api.resolution import _csv
from evota.evidence.resolution import GroupBy, Report, ResolutionRow


def test_a_formula_in_a_group_key_is_written_as_text() -> None:
    rows = [ResolutionRow('=HYPERLINK("http://x")', actions=1), ResolutionRow("-1+2", actions=1)]
    report = Report(GroupBy.MODEL, timedelta(minutes=30), rows, ResolutionRow("total", 2))
    response = _csv(report)
    assert response.media_type == "text/csv"
    parsed = list(csv.reader(io.StringIO(bytes(response.body).decode())))
    assert parsed[0][:3] == ["model", "actions", "no_fault_before"]
    assert [r[0] for r in parsed[1:]] == ['\'=HYPERLINK("http://x")', "'-1+2", "total"]
    assert parsed[-1][1] == "2"
