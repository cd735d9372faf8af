"""Post-rollout KPIs end to end: a simulated fleet, a campaign to a subtly bad version
(``degraded_versions``: it passes every health gate, then its sessions fail), days moved
on a shifted clock, the rollup, the API, the CLI and the regression alert."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from typer.testing import CliRunner

from evota.cli import app as cli_app
from evota.runtime import Runtime
from evota.sim import Fleet, fleet_from_flags
from evota.sim.fleet import FaultProfile
from evota.store.models import ChargingSession

from ..conftest import TOKEN, Keys, ShiftedClock, api_client, session_for, start_runtime
from ..sim.conftest import fast
from ..support import until
from ..test_campaigns import POLICY, booted
from ..test_firmware_update import FAST_JOBS, trust, upload

SESSIONS = 8  # per charger per day: 32 on each side of 4 chargers, above every minimum


async def sessions_done(rt: Runtime, expected: int) -> None:
    async def count() -> int:
        async with rt.engine.connect() as conn:
            return int(
                (
                    await conn.execute(
                        select(func.count()).where(ChargingSession.outcome != "active")
                    )
                ).scalar_one()
            )

    await until(count, lambda n: n >= expected, timeout=30, describe=str)


async def charge(fleet: Fleet) -> None:
    """Every charger runs SESSIONS sessions, one after the other, on connector 1."""

    async def one(ch: Any) -> None:
        for _ in range(SESSIONS):
            await ch.begin_session(1, duration=1.0)

    await asyncio.gather(*(one(ch) for ch in fleet.chargers))


async def test_a_degraded_version_shows_in_kpis_against_before_and_control(
    tmp_path: Path, sqlite_url: str, keys: Keys
):
    clock = ShiftedClock()
    # tomorrow 08:00 UTC: whole days ahead, and the test signing certificates already valid
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    clock.move_to(tomorrow.replace(hour=8, minute=0, second=0, microsecond=0))
    rt = await start_runtime(
        tmp_path,
        sqlite_url,
        clock=clock,
        **FAST_JOBS,
        campaign_tick_seconds=0.2,
        kpi_rollup_minutes=0,
    )
    api = api_client(rt)
    fleet: Fleet | None = None
    try:
        await trust(api, keys)
        base = fleet_from_flags(8, prefix="KPI-", seed="kpi", connectors=1)
        profile = FaultProfile(degraded_versions=("2.0.0",))
        spec = replace(
            base,
            chargers=tuple(
                replace(c, firmware_roots=(keys.ca_cert.decode(),), faults=profile)
                for c in base.chargers
            ),
        )
        cfg = fast(speed=600.0, install_duration=1.0, session_rate=0.0)
        fleet = Fleet.from_spec(
            spec, f"ws://127.0.0.1:{rt.ocpp_port}/ocpp", config=cfg, clock=clock
        )
        await fleet.provision(f"http://127.0.0.1:{rt.http_port}", TOKEN)
        await fleet.start()
        await fleet.wait_for_all(lambda c: c.accepted, 30)
        ids = [c.identity for c in fleet.chargers]
        await booted(api, set(ids))

        # day 0: everyone on 1.0.0, every session completes
        await charge(fleet)
        await sessions_done(rt, 8 * SESSIONS)

        # day 1: half the fleet updated to 2.0.0, which passes the health gate
        clock.advance(days=1)
        await upload(api, tmp_path, keys, "1.0.0", size=8 * 1024)
        fw = await upload(api, tmp_path, keys, "2.0.0", size=8 * 1024)
        updated = ids[:4]
        r = await api.post(
            "/api/v1/campaigns",
            json={
                "name": "kpi",
                "firmware_id": fw["id"],
                "target": {"charger_ids": updated},
                "waves": [{"percent": 100}],
                "policy": POLICY,
            },
        )
        assert r.status_code == 201, r.text
        campaign = r.json()["id"]
        r = await api.post(f"/api/v1/campaigns/{campaign}/start", json={"reason": "test"})
        assert r.status_code == 200, r.text

        async def state() -> str:
            return str((await api.get(f"/api/v1/campaigns/{campaign}")).json()["state"])

        assert await until(
            state, lambda s: s in ("completed", "paused", "aborted"), timeout=60
        ) == ("completed")

        # day 2: the updated chargers' sessions fail, the others' complete
        clock.advance(days=1)
        await charge(fleet)
        await sessions_done(rt, 16 * SESSIONS)

        # day 3: roll up (on demand) and read
        clock.advance(days=1)
        r = await api.post("/api/v1/kpis/rollup")
        assert r.status_code == 200, r.text
        assert r.json()["chargers"] == 8

        r = await api.get(f"/api/v1/campaigns/{campaign}/kpis", params={"days": 1})
        assert r.status_code == 200, r.text
        k = r.json()
        assert k["updated_chargers"] == 4 and k["target_version"] == "2.0.0"
        assert k["before"]["session_success_rate"] == 1.0
        assert k["after"]["session_success_rate"] == 0.0
        assert k["after"]["faults_by_code"] == {"GroundFailure": 4 * SESSIONS}
        assert k["before"]["faults"] == 0
        ba = k["before_after"]["session_success_rate"]
        assert ba["verdict"] == "worse" and ba["n"] == {"before": 32, "after": 32}
        assert ba["ci95"][1] < 0
        control = k["control"]["comparison"]["session_success_rate"]
        assert control["verdict"] == "worse", control
        assert k["control"]["not_updated"]["session_success_rate"] == 1.0
        # the 4 chargers' days are too few to judge their fault rate
        assert k["before_after"]["faults_per_charger_day"]["verdict"] == "too little data"

        r = await api.get(f"/api/v1/firmware/{fw['id']}/kpis", params={"days": 7})
        assert r.status_code == 200, r.text
        f = r.json()
        assert f["predecessor"] == "1.0.0"
        assert f["kpis"]["session_success_rate"] == 0.0
        assert f["predecessor_kpis"]["session_success_rate"] == 1.0
        assert [g["metric"] for g in f["regressions"]] == ["session_failure_rate"]
        # the version's scorecard carries the same KPIs against the same predecessor
        r = await api.get(f"/api/v1/firmware/{fw['id']}/scorecard")
        assert r.status_code == 200, r.text
        card = r.json()
        assert card["predecessor"]["version"] == card["kpis"]["predecessor"] == "1.0.0"
        assert card["kpis"]["kpis"]["session_success_rate"] == 0.0
        assert [g["metric"] for g in card["kpis"]["regressions"]] == ["session_failure_rate"]

        # the rollup ran the regression check: one alert, linking to revoke and rollback
        r = await api.get("/api/v1/alerts", params={"rule": "firmware_regression"})
        alerts = [a for a in r.json()["items"] if a["rule"] == "firmware_regression"]
        assert len(alerts) == 1, alerts
        detail = alerts[0]["detail"]
        assert detail["revoke"] == f"/api/v1/firmware/{fw['id']}/revoke"
        assert detail["rollback"] == [f"/api/v1/campaigns/{campaign}/abort"]
        await api.post("/api/v1/kpis/rollup")  # again: deduplicated, no second alert
        r = await api.get("/api/v1/alerts")
        assert sum(a["rule"] == "firmware_regression" for a in r.json()["items"]) == 1

        # bad input: a 422 naming the field; an unknown campaign: 404
        r = await api.get(f"/api/v1/campaigns/{campaign}/kpis", params={"days": 0})
        assert r.status_code == 422 and "days" in r.text
        r = await api.get("/api/v1/campaigns/nope/kpis")
        assert r.status_code == 404

        # the console: a KPI section with its tables and chart on both pages
        cookie = await session_for(rt, "vera", ["viewer"])
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{rt.http_port}", cookies={"evota_session": cookie}
        ) as web:
            page = await web.get(f"/console/campaigns/{campaign}")
            assert page.status_code == 200, page.text
            assert 'data-testid="campaign-kpis"' in page.text
            assert 'data-kpi="session_success_rate"' in page.text and ">worse<" in page.text
            assert 'id="campaign-kpis"' in page.text  # the chart
            page = await web.get(f"/console/firmware/{fw['id']}")
            assert page.status_code == 200, page.text
            assert 'data-testid="firmware-kpis"' in page.text
            assert 'data-testid="regression"' in page.text

        # the CLI: a table, --json, and one clear line for an unknown id
        env = {"EVOTA_URL": f"http://127.0.0.1:{rt.http_port}", "EVOTA_TOKEN": TOKEN}
        runner = CliRunner()
        out = await asyncio.to_thread(
            runner.invoke, cli_app, ["campaign", "kpis", campaign, "--days", "1"], env=env
        )
        assert out.exit_code == 0, out.output
        assert "session success" in out.output and "worse" in out.output
        out = await asyncio.to_thread(
            runner.invoke, cli_app, ["firmware", "kpis", fw["id"], "--json"], env=env
        )
        assert out.exit_code == 0, out.output
        assert json.loads(out.output)["predecessor"] == "1.0.0"
        out = await asyncio.to_thread(runner.invoke, cli_app, ["campaign", "kpis", "nope"], env=env)
        assert out.exit_code != 0 and len(out.output.strip().splitlines()) == 1, out.output
    finally:
        if fleet is not None:
            await fleet.stop()
        await api.aclose()
        await rt.stop()
