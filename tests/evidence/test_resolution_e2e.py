"""Remote-resolution analytics end to end: simulated chargers with a Faulted connector get a
Reset through the API; the one whose fault a reboot clears and that then charges counts as
resolved, the one whose connector stays Faulted (it even charges on its other connector) as
unresolved. Then the same numbers by error code, as CSV, for a scoped operator, and the
refusals."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from evota.cli import app as cli_app
from evota.sim import Fleet, fleet_from_flags
from evota.sim.charger import SimulatedCharger
from evota.sim.fleet import FaultProfile
from evota.store.models import ChargingSession, ConnectorStatus
from tests.conftest import TOKEN, Keys, ShiftedClock, api_client, session_for, start_runtime
from tests.sim.conftest import fast
from tests.support import until
from tests.test_firmware_update import Bench

URL = "/api/v1/analytics/resolution"


@pytest.fixture
async def world(tmp_path: Path, database_url: str, keys: Keys) -> AsyncIterator[Bench]:
    clock = ShiftedClock()
    rt = await start_runtime(tmp_path, database_url, clock=clock, call_timeout=5.0)
    b = Bench(rt, api_client(rt), keys, tmp_path)
    b.clock = clock  # type: ignore[attr-defined]
    try:
        yield b
    finally:
        await b.close()
        await b.api.aclose()
        await rt.stop()


async def _status(b: Bench, charger_id: str, connector: int) -> str | None:
    """The latest status evota stored for a connector (its history, as the analytics read)."""
    async with b.rt.engine.connect() as conn:
        return (
            await conn.execute(
                select(ConnectorStatus.status)
                .where(
                    ConnectorStatus.charger_id == charger_id,
                    ConnectorStatus.connector_id == connector,
                )
                .order_by(ConnectorStatus.id.desc())
                .limit(1)
            )
        ).scalar()


async def _sessions(b: Bench, charger_id: str) -> int:
    async with b.rt.engine.connect() as conn:
        count = await conn.execute(
            select(func.count())
            .select_from(ChargingSession)
            .where(ChargingSession.charger_id == charger_id)
        )
        return int(count.scalar() or 0)


async def _reset(b: Bench, charger: SimulatedCharger) -> None:
    boots = charger.stats.boots_accepted
    r = await b.api.post(
        f"/api/v1/chargers/{charger.identity}/commands/reset",
        json={"type": "Hard", "reason": "connector 1 faulted"},
    )
    assert r.status_code == 200 and r.json()["status"] == "Accepted", r.text
    await until(lambda: charger.stats.boots_accepted > boots and charger.accepted, timeout=15)


async def _charge(b: Bench, charger: SimulatedCharger, connector: int) -> None:
    before = await _sessions(b, charger.identity)
    assert await charger.begin_session(connector, "TAG-1", duration=30.0)
    await until(lambda: _sessions(b, charger.identity), lambda n: n > before)


async def _cli(b: Bench, *args: str) -> Any:
    env = {
        "EVOTA_URL": f"http://127.0.0.1:{b.rt.http_port}",
        "EVOTA_TOKEN": TOKEN,
        "COLUMNS": "200",
    }
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, cli_app, ["analytics", *args], env=env)


def _row(body: dict[str, Any], key: str) -> dict[str, Any]:
    [row] = [r for r in body["rows"] if r["key"] == key]
    return row


async def test_a_reset_that_clears_the_fault_counts_resolved_one_that_does_not_unresolved(
    world: Bench,
) -> None:
    b = world
    fixed = await b.charger("RES-0001", roots=False, faults=FaultProfile(faulted_connectors=(1,)))
    stuck = await b.charger("BAD-0001", roots=False, faults=FaultProfile(stuck_connectors=(1,)))
    for c in (fixed, stuck):
        await until(lambda c=c: _status(b, c.identity, 1), lambda s: s == "Faulted")
        await until(lambda c=c: _status(b, c.identity, 2), lambda s: s == "Available")

    # Nothing was sent yet: nothing to judge.
    empty = (await b.api.get(URL)).json()
    assert empty["rows"] == [] and empty["total"]["actions"] == 0

    await _reset(b, fixed)
    await _reset(b, stuck)
    await until(lambda: _status(b, fixed.identity, 1), lambda s: s == "Available")
    assert stuck.connector_status[1] == "Faulted"
    await _charge(b, fixed, 1)  # the fixed connector charges again
    await _charge(b, stuck, 2)  # a session, but connector 1 is still Faulted

    # While the stuck charger's window is open it is pending, the fixed one already resolved.
    body = (await b.api.get(URL)).json()
    reset = _row(body, "reset")
    assert (reset["actions"], reset["resolved"], reset["pending"], reset["faulted"]) == (2, 1, 1, 1)

    # 31 minutes later both windows are over: 1 of 2 resolved.
    b.clock.advance(minutes=31)  # type: ignore[attr-defined]
    body = (await b.api.get(URL, params={"truck_roll_cost": 250})).json()
    reset = _row(body, "reset")
    assert (reset["actions"], reset["faulted"], reset["resolved"], reset["pending"]) == (2, 2, 1, 0)
    assert reset["no_fault_before"] == 0
    assert reset["resolution_rate"] == 0.5
    assert 0 < reset["resolution_low"] < 0.5 < reset["resolution_high"] < 1
    assert 0 < reset["median_seconds"] <= reset["p90_seconds"] < 30 * 60
    assert reset["truck_rolls_avoided"] == 1 and reset["money_saved"] == 250
    assert body["total"]["resolved"] == 1 and body["window_minutes"] == 30

    by_code = (await b.api.get(URL, params={"group_by": "error_code"})).json()
    assert [(r["key"], r["actions"], r["resolved"]) for r in by_code["rows"]] == [
        ("InternalError", 2, 1)
    ]
    by_model = (await b.api.get(URL, params={"group_by": "model"})).json()
    assert [(r["key"], r["actions"]) for r in by_model["rows"]] == [("Sim-AC22", 2)]

    exported = await b.api.get(URL, params={"format": "csv", "group_by": "command"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["command"], r["actions"], r["resolved"]) for r in rows] == [
        ("reset", "2", "1"),
        ("total", "2", "1"),
    ]

    shown = await _cli(b, "resolution", "--by", "error_code", "--truck-roll-cost", "250")
    assert shown.exit_code == 0, shown.output
    # (the table's width is the terminal's: a cell may wrap, so its parts are checked)
    assert "InternalError" in shown.output and "1/2" in shown.output, shown.output
    assert "50%" in shown.output, shown.output
    as_json = await _cli(b, "resolution", "--json")
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["total"]["resolved"] == 1
    bad = await _cli(b, "resolution", "--since", "last week")
    assert bad.exit_code == 1 and "--since: not an ISO 8601 time" in bad.output
    refused = await _cli(b, "resolution", "--since", "2020-01-01", "--until", "2022-01-01")
    assert refused.exit_code == 1 and "at most 366 days" in refused.output, refused.output

    # The console page: the same numbers as a table and a chart, the CSV link, the nav link.
    viewer_all = await session_for(b.rt, "fleet-viewer", ["viewer"])
    async with api_client(b.rt, None) as web:
        web.cookies.set("evota_session", viewer_all)
        page = await web.get("/console/resolution", params={"group_by": "error_code"})
        assert page.status_code == 200, page.text
        html = page.text
        assert 'href="/console/resolution"' in html and "Remote resolution" in html
        assert "<td>InternalError</td>" in html and "<td>1/2</td>" in html
        assert 'role="img"' in html and "Resolution rate by error code before" in html
        assert "format=csv" in html
        bad = await web.get("/console/resolution", params={"window_minutes": "0"})
        assert bad.status_code == 422 and "window_minutes" in bad.text

    # A scoped operator sees the numbers of its own chargers only.
    site = {"id": "depot", "name": "Depot", "timezone": "Europe/Berlin"}
    assert (await b.api.post("/api/v1/sites", json=site)).status_code == 201
    patched = await b.api.patch(f"/api/v1/chargers/{stuck.identity}", json={"site_id": "depot"})
    assert patched.status_code == 200, patched.text
    token = await session_for(b.rt, "depot-viewer", ["viewer"], sites=["depot"])
    async with api_client(b.rt, token) as viewer:
        mine = (await viewer.get(URL)).json()
        by_site = (await b.api.get(URL, params={"group_by": "site"})).json()
    assert _row(mine, "reset")["actions"] == 1 and mine["total"]["resolved"] == 0
    assert {r["key"]: r["actions"] for r in by_site["rows"]} == {"depot": 1, "(unknown)": 1}


async def test_bad_parameters_are_refused_naming_the_field(world: Bench) -> None:
    api = world.api
    cases = [
        ({"group_by": "colour"}, "group_by"),
        ({"window_minutes": 0}, "window_minutes"),
        ({"window_minutes": 24 * 60 + 1}, "window_minutes"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "since"),
        ({"since": "2024-01-01T00:00:00Z", "until": "2025-06-01T00:00:00Z"}, "since"),
        ({"format": "xls"}, "format"),
        ({"truck_roll_cost": -1}, "truck_roll_cost"),
    ]
    for params, field in cases:
        r = await api.get(URL, params=params)
        assert r.status_code == 422, (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["field"] == field, (params, r.json())


async def test_a_bulk_operations_reset_counts_per_charger(world: Bench) -> None:
    """Each charger of a bulk operation is one action (the operation's commands are audited
    one per charger, tagged with the operation)."""
    b = world
    chargers = [
        await b.charger(f"{p}-0001", roots=False, faults=FaultProfile(faulted_connectors=(1,)))
        for p in ("OPA", "OPB")  # Bench.charger numbers from 0001 per prefix
    ]
    for c in chargers:
        await until(lambda c=c: _status(b, c.identity, 1), lambda s: s == "Faulted")
    boots = {c.identity: c.stats.boots_accepted for c in chargers}
    r = await b.api.post(
        "/api/v1/operations",
        json={
            "command": "reset",
            "params": {"type": "Hard"},
            "target": {"charger_ids": [c.identity for c in chargers]},
            "reason": "connector 1 faulted on both",
        },
    )
    assert r.status_code == 201, r.text
    op = r.json()["id"]
    await until(
        lambda: b.api.get(f"/api/v1/operations/{op}"),
        lambda res: res.json()["state"] == "completed",
        timeout=20,
    )
    for c in chargers:
        await until(lambda c=c: c.stats.boots_accepted > boots[c.identity] and c.accepted)
        await until(lambda c=c: _status(b, c.identity, 1), lambda s: s == "Available")
    await _charge(b, chargers[0], 1)  # only the first charges again
    b.clock.advance(minutes=31)  # type: ignore[attr-defined]
    reset = _row((await b.api.get(URL)).json(), "reset")
    assert (reset["actions"], reset["faulted"], reset["resolved"]) == (2, 2, 1)


async def test_a_2_0_1_charger_resolved_by_a_reset(world: Bench) -> None:
    """The same on OCPP 2.0.1: the EVSE reports Faulted (stored with the adapter's error
    code), an Immediate reset clears it, a TransactionEvent session resolves it."""
    b = world
    spec = fleet_from_flags(
        1, prefix="V2-", seed="res", protocol="ocpp2.0.1", faults=["faulted_connectors=1"]
    )
    fleet = Fleet.from_spec(spec, f"ws://127.0.0.1:{b.rt.ocpp_port}/ocpp", config=fast(speed=600.0))
    await fleet.provision(f"http://127.0.0.1:{b.rt.http_port}", TOKEN)
    b.fleets.append(fleet)
    await fleet.start()
    charger = fleet["V2-0001"]
    await fleet.wait_until(lambda f: charger.accepted, 10)
    await until(lambda: _status(b, charger.identity, 1), lambda s: s == "Faulted")
    await _reset(b, charger)
    await until(lambda: _status(b, charger.identity, 1), lambda s: s == "Available")
    await _charge(b, charger, 1)
    by_code = (await b.api.get(URL, params={"group_by": "error_code"})).json()
    assert [(r["key"], r["faulted"], r["resolved"]) for r in by_code["rows"]] == [
        ("OtherError", 1, 1)
    ]
