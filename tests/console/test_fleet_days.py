"""The overview's day-by-day series: the charger-day rollup summed per day over the
operator's scope only, and drawn with gaps where a day has nothing to measure."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from evota.api.deps import authenticate
from evota.console import page_charts, queries
from evota.console.page_charts import FleetDay
from evota.evidence.daily import day_number
from evota.store.models import ChargerDay
from tests.conftest import api_client, session_for, start_runtime
from tests.test_scope_escape import _sites_and_chargers

DAY = date(2026, 11, 30)


def _row(charger_id: str, day: date, **values: float) -> dict[str, Any]:
    """One rolled-up charger-day: a whole day observed, Available, nothing happening."""
    return {
        "charger_id": charger_id, "day": day_number(day), "complete": True,
        "firmware_version": "1.0", "version_changed": False, "vendor": "V", "model": "M",
        "site_id": None, "observed_s": 86400.0, "connected_s": 86400.0,
        "available_s": 86400.0, "offline_episodes": 0, "reconnects": 0, "faults": 0,
        "faults_by_code": {}, "sessions": 0, "failed_sessions": 0, "repairs": 0,
        "repair_s": 0.0, "repair_s2": 0.0, "end_state": {},
    } | values  # fmt: skip


async def test_fleet_days_sum_only_the_operators_chargers(tmp_path: Path, database_url: str):
    rt = await start_runtime(tmp_path, database_url)
    try:
        async with api_client(rt) as admin:
            await _sites_and_chargers(admin)  # P-1 in paris, B-1 in berlin
        async with rt.engine.begin() as conn:
            await conn.execute(insert(ChargerDay), [
                _row("P-1", DAY, available_s=43200.0, faults=2, sessions=4, failed_sessions=1),
                _row("B-1", DAY, faults=5, offline_episodes=3, sessions=10),
                _row("P-1", DAY + timedelta(days=1), sessions=0),
                _row("P-1", DAY - timedelta(days=40), faults=9),  # before the window
            ])  # fmt: skip
        paris = await authenticate(rt, await session_for(rt, "p", ["viewer"], sites=["paris"]))
        everyone = await authenticate(rt, await session_for(rt, "a", ["viewer"]))
        since = DAY - timedelta(days=29)

        mine = await queries.fleet_days(rt, paris, since)
        assert mine == [
            FleetDay(DAY, 1, 86400.0, 43200.0, 0, 2, 4, 1),
            FleetDay(DAY + timedelta(days=1), 1, 86400.0, 86400.0, 0, 0, 0, 0),
        ]
        both = await queries.fleet_days(rt, everyone, since)
        assert both[0] == FleetDay(DAY, 2, 172800.0, 129600.0, 3, 7, 14, 1)
    finally:
        await rt.stop()


def test_day_charts_show_shares_and_rates_with_gaps():
    days = [
        FleetDay(DAY, 2, 172800.0, 129600.0, 3, 7, 14, 1),
        FleetDay(DAY + timedelta(days=1), 1, 86400.0, 86400.0, 0, 0, 0, 0),
    ]
    out = page_charts.fleet_day_charts(days)
    table = ET.fromstring(str(out["availability"])).find("div/details/table/tbody")
    assert table is not None
    assert [["".join(c.itertext()) for c in tr] for tr in table] == [
        ["2026-11-30", "75", "92.8571"],
        ["2026-12-01", "100", "—"],  # no sessions: a gap, not 0 %
    ]
    rates = ET.fromstring(str(out["incidents"])).find("div/details/table/tbody")
    assert rates is not None
    assert [["".join(c.itertext()) for c in tr][1:] for tr in rates] == [["3.5", "1.5"], ["0", "0"]]
    empty = page_charts.fleet_day_charts([])
    assert "No data" in str(empty["availability"]) and "No data" in str(empty["incidents"])
    assert not any(math.isnan(d.observed_s) for d in days)
