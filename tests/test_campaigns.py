"""Campaigns end to end: evota + a simulated fleet on loopback, real downloads and signatures.

Short soak and health windows and a fast simulator keep each campaign to seconds; the policy
logic itself is covered exhaustively (virtual time, 10,000 chargers) in tests/rollout.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from evota import metrics
from evota.rollout.engine import Decision
from evota.runtime import Runtime
from evota.sim import Fleet, SiteSpec, fleet_from_flags
from evota.sim.fleet import FaultProfile, FleetSpec
from evota.store import db
from evota.store.models import ChargerEvent, ChargingSession, Job, JobEvent

from .conftest import TOKEN, Keys
from .sim.conftest import fast
from .support import free_port, serving, until
from .test_firmware_update import FAST_JOBS, MODEL, Bench, running, trust, upload

SITES = [SiteSpec(id=f"site-{i}", name=f"Site {i}", timezone="UTC") for i in range(4)]
POLICY: dict[str, Any] = {
    "success_threshold": 0.5,
    "soak_seconds": 0.5,
    "health_window_seconds": 0.5,
    "retry_backoff_seconds": 0.2,
    "retries": {"booted_previous_version": 2, "download_failed": 2, "timed_out": 1},
    "max_per_site_fraction": 0.5,
}


def fleet_spec(n: int, keys: Keys, prefix: str = "CMP-", **faults: Any) -> FleetSpec:
    base = fleet_from_flags(n, prefix=prefix, seed="campaign", sites=SITES)
    profile = FaultProfile(**faults)
    return replace(
        base,
        chargers=tuple(
            replace(c, firmware_roots=(keys.ca_cert.decode(),), faults=profile)
            for c in base.chargers
        ),
    )


async def booted(api: httpx.AsyncClient, ids: set[str]) -> None:
    """Until evota has written every boot (they are written behind the answer)."""

    async def recorded() -> set[str]:
        page = (await api.get("/api/v1/chargers", params={"limit": 1000})).json()
        return {c["id"] for c in page["items"] if c["vendor"]}

    await until(
        recorded,
        lambda seen: ids <= seen,
        timeout=20,
        describe=lambda seen: f"not recorded: {sorted(ids - seen)[:5]}",
    )


class World(Bench):
    """A whole provisioned fleet at once, and campaigns over it."""

    async def fleet(self, spec: FleetSpec, **config: Any) -> Fleet:
        cfg = fast(speed=600.0, install_duration=1.0, download_retry_interval=0.2, **config)
        fleet = Fleet.from_spec(spec, f"ws://127.0.0.1:{self.rt.ocpp_port}/ocpp", config=cfg)
        await fleet.provision(f"http://127.0.0.1:{self.rt.http_port}", TOKEN)
        await fleet.start()
        self.fleets.append(fleet)
        await fleet.wait_for_all(lambda c: c.accepted, 30)
        await booted(self.api, {c.identity for c in fleet.chargers})
        return fleet

    async def campaign(self, firmware_id: str, **body: Any) -> dict[str, Any]:
        payload = {"name": "test", "firmware_id": firmware_id, "policy": POLICY, **body}
        r = await self.api.post("/api/v1/campaigns", json=payload)
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def get(self, campaign_id: str) -> dict[str, Any]:
        r = await self.api.get(f"/api/v1/campaigns/{campaign_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def until(self, campaign_id: str, done: Any, timeout: float = 60) -> dict[str, Any]:
        """The campaign once ``done(campaign)`` holds (a timeout names its state and waves)."""
        campaign: dict[str, Any] = await until(
            lambda: self.get(campaign_id),
            done,
            timeout=timeout,
            interval=0.2,
            describe=lambda c: f"{c['state']} {c['waves']} {c['notes'][:5]}",
        )
        return campaign


@pytest.fixture
async def world(tmp_path: Path, sqlite_url: str, keys: Keys) -> AsyncIterator[World]:
    async with running(World, tmp_path, sqlite_url, keys, campaign_tick_seconds=0.2) as w:
        yield w


async def jobs_of(rt: Runtime, campaign_id: str) -> list[Any]:
    async with rt.engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    select(Job.charger_id, Job.kind, Job.state, Job.failure, Job.target_version)
                    .where(Job.campaign_id == campaign_id)
                    .order_by(Job.id)
                )
            ).all()
        )


@pytest.mark.slow
async def test_healthy_fleet_completes_every_wave(world: World):
    fw = await upload(world.api, world.tmp_path, world.keys, "2.0.0", size=32 * 1024)
    fleet = await world.fleet(fleet_spec(100, world.keys), session_rate=0.0)
    world.rt.campaigns.facts.full_every = timedelta(hours=1)  # only notices re-read chargers
    rows_before = metrics.CAMPAIGN_JOB_ROWS_READ._value.get()
    chargers_before = metrics.CAMPAIGN_CHARGER_ROWS_READ._value.get()
    c = await world.campaign(fw["id"], waves=[{"count": 4}, {"percent": 25}, {"percent": 100}])
    assert c["eligible"] == 100 and c["excluded"] == []
    assert [w["size"] for w in c["waves"]] == [4, 21, 75]  # percentages are cumulative
    r = await world.api.post(f"/api/v1/campaigns/{c['id']}/start", json={"reason": "test"})
    assert r.status_code == 200 and r.json()["state"] == "running"
    done = await world.until(
        c["id"], lambda c: c["state"] in ("completed", "paused", "aborted"), timeout=120
    )
    assert done["state"] == "completed", done
    assert all(g["gates"] and g["gates"][-1]["passed"] for g in done["waves"])
    gate = done["waves"][0]["gates"][-1]
    assert gate["executed"] == 4 and gate["succeeded"] == 4 and "by_model" in gate
    assert all(ch.firmware_version == "2.0.0" for ch in fleet.chargers)
    jobs = await jobs_of(world.rt, c["id"])
    assert len(jobs) == 100 and {j.state for j in jobs} == {"succeeded"}, done["waves"]
    # waves ran in order: the history shows each advance after a gate
    events = [e["event"] for e in reversed(done["history"])]
    assert events.count("advanced") == 2 and events[-1] == "completed"
    # Each tick read the jobs that changed, not all of them (evota.rollout.campaign_jobs): at
    # most one whole read of the campaign plus one row per job write. Re-reading every job
    # every tick (0.2 s over a run of many seconds) reads thousands more.
    async with world.rt.engine.connect() as conn:
        writes = (
            await conn.execute(
                select(func.count())
                .select_from(JobEvent)
                .join(Job, Job.id == JobEvent.job_id)
                .where(Job.campaign_id == c["id"])
            )
        ).scalar_one()
    rows_read = metrics.CAMPAIGN_JOB_ROWS_READ._value.get() - rows_before
    assert 0 < rows_read <= 100 + writes, (rows_read, writes)
    # Nor every member charger (evota.rollout.charger_facts): one whole read, then each boot
    # notice reads its charger at most three times (at once, after settling, and once more
    # when noticed at the instant of a read). Re-reading them all every tick reads thousands.
    async with world.rt.engine.connect() as conn:
        boots = (
            await conn.execute(
                select(func.count())
                .select_from(ChargerEvent)
                .where(ChargerEvent.kind == "boot", ChargerEvent.charger_id.like("CMP-%"))
            )
        ).scalar_one()
    chargers_read = metrics.CAMPAIGN_CHARGER_ROWS_READ._value.get() - chargers_before
    assert 100 <= chargers_read <= 100 + 3 * boots, (chargers_read, boots)


async def test_an_operators_site_and_charger_edits_reach_a_running_campaign(world: World):
    """A campaign keeps its chargers' facts between evaluations; editing a site's timezone
    or moving a charger to another site is noticed at once, not at the next whole read."""
    facts = world.rt.campaigns.facts
    facts.full_every = facts.settle = timedelta(hours=1)  # only the edits' notices re-read
    fw = await upload(world.api, world.tmp_path, world.keys, "2.0.0", size=16 * 1024)
    fleet = await world.fleet(fleet_spec(8, world.keys))
    by_site: dict[str, set[str]] = {}
    for ch in fleet.chargers:
        by_site.setdefault(str(ch.spec.site_id), set()).add(ch.identity)
    # Open two hours ahead of UTC, closed at every site (UTC) now; open in UTC+6 now.
    hour = datetime.now(UTC).hour
    window = {"start": f"{(hour + 6) % 24:02d}:00", "end": f"{(hour + 8) % 24:02d}:00"}
    c = await world.campaign(
        fw["id"], waves=[{"percent": 100}], policy={**POLICY, "windows": [window]}
    )
    r = await world.api.post(f"/api/v1/campaigns/{c['id']}/start", json={"reason": "test"})
    assert r.status_code == 200
    await world.until(c["id"], lambda c: any("window" in n for n in c["notes"]))
    assert await jobs_of(world.rt, c["id"]) == []
    r = await world.api.patch("/api/v1/sites/site-0", json={"timezone": "Asia/Dhaka"})
    assert r.status_code == 200, r.text
    await until(
        lambda: jobs_of(world.rt, c["id"]),
        lambda jobs: {j.charger_id for j in jobs} == by_site["site-0"],
        timeout=30,
        describe=lambda jobs: str(jobs),
    )
    moved = sorted(by_site["site-1"])[0]
    r = await world.api.patch(f"/api/v1/chargers/{moved}", json={"site_id": "site-0"})
    assert r.status_code == 200, r.text
    jobs = await until(
        lambda: jobs_of(world.rt, c["id"]),
        lambda jobs: {j.charger_id for j in jobs} == by_site["site-0"] | {moved},
        timeout=30,
        describe=lambda jobs: str(jobs),
    )
    assert {j.charger_id for j in jobs} == by_site["site-0"] | {moved}


async def test_bad_image_stops_in_the_pilot_and_rolls_it_back(world: World):
    good = await upload(world.api, world.tmp_path, world.keys, "1.0.0", size=16 * 1024)
    bad = await upload(world.api, world.tmp_path, world.keys, "2.0.0", size=16 * 1024)
    assert good["version"] == "1.0.0"
    fleet = await world.fleet(fleet_spec(24, world.keys, bad_versions=("2.0.0",)))
    policy = {
        **POLICY,
        "auto_stop": [
            {
                "failures": ["unhealthy"],
                "min_executed": 2,
                "max_failure_percent": 25,
                "action": "abort_and_rollback",
            }
        ],
    }
    c = await world.campaign(bad["id"], waves=[{"count": 4}, {"percent": 100}], policy=policy)
    await world.api.post(f"/api/v1/campaigns/{c['id']}/start", json={})
    done = await world.until(
        c["id"], lambda c: c["state"] == "aborted" and not c["rollback"], timeout=60
    )
    assert "unhealthy" in (done["state_reason"] or ""), done
    jobs = await jobs_of(world.rt, c["id"])
    updated = {j.charger_id for j in jobs if j.kind == "update"}
    pilot = await wave_members(world.rt, c["id"], 0)
    assert updated <= pilot  # no charger beyond the pilot got the bad image
    rollbacks = [j for j in jobs if j.kind == "rollback"]
    assert rollbacks and {j.state for j in rollbacks} == {"succeeded"}
    assert {j.target_version for j in rollbacks} == {"1.0.0"}
    on_bad = [ch.identity for ch in fleet.chargers if ch.firmware_version == "2.0.0"]
    assert on_bad == [], on_bad


async def test_charger_that_boots_the_image_but_stays_unavailable_fails_the_gate(world: World):
    """Connected is not Available: the image boots (so every job succeeds), but no connector
    comes back Available, and the gate counts each charger unhealthy and stops the campaign."""
    fw = await upload(world.api, world.tmp_path, world.keys, "2.0.0", size=16 * 1024)
    fleet = await world.fleet(fleet_spec(8, world.keys, unavailable_versions=("2.0.0",)))
    # 4 of 4 healthy would pass 0.5 (Wilson 0.51): only the connector status can stop it.
    c = await world.campaign(fw["id"], waves=[{"count": 4}, {"percent": 100}])
    await world.api.post(f"/api/v1/campaigns/{c['id']}/start", json={})
    done = await world.until(c["id"], lambda c: c["state"] != "running", timeout=60)
    assert done["state"] == "paused", done
    assert "gate 0 failed" in done["state_reason"] and "4 not Available" in done["state_reason"]
    gate = done["waves"][0]["gates"][-1]
    assert (gate["executed"], gate["succeeded"], gate["health"]["not_available"]) == (4, 0, 4)
    why = list(gate["health"]["unhealthy_examples"].values())
    assert len(why) == 4 and all("not Available" in w and "Unavailable" in w for w in why), why
    jobs = await jobs_of(world.rt, c["id"])
    assert [j.state for j in jobs] == ["succeeded"] * 4  # the jobs saw the boot, no more
    pilot = await wave_members(world.rt, c["id"], 0)
    assert {j.charger_id for j in jobs} == pilot
    on_new = {ch.identity for ch in fleet.chargers if ch.firmware_version == "2.0.0"}
    assert on_new == pilot and all(ch.connected for ch in fleet.chargers)


async def wave_members(rt: Runtime, campaign_id: str, index: int) -> set[str]:
    from evota.store.models import Campaign

    async with rt.engine.connect() as conn:
        waves = (
            await conn.execute(select(Campaign.waves).where(Campaign.id == campaign_id))
        ).scalar_one()
    return set(waves[index])


async def test_twelve_chargers_four_then_half_then_all_complete_at_half(world: World):
    """Issue 13's small operator: waves 4 / 50% / 100% at 0.5. The second wave (2 chargers)
    alone would be inconclusive; with the pilot's evidence it is 6/6 and passes."""
    fw = await upload(world.api, world.tmp_path, world.keys, "2.0.0", size=16 * 1024)
    await world.fleet(fleet_spec(12, world.keys), session_rate=0.0)
    waves = [{"count": 4}, {"percent": 50}, {"percent": 100}]
    c = await world.campaign(fw["id"], waves=waves)
    assert [w["size"] for w in c["waves"]] == [4, 2, 6]
    await world.api.post(f"/api/v1/campaigns/{c['id']}/start", json={})
    done = await world.until(c["id"], lambda c: c["state"] != "running", timeout=90)
    assert done["state"] == "completed", done["state_reason"]
    gates = [w["gates"][-1] for w in done["waves"]]
    assert [(g["outcome"], g["executed"], g["wave_numbers"]["executed"]) for g in gates] == [
        ("passed", 4, 4),
        ("passed", 6, 2),
        ("passed", 12, 6),
    ]
    assert gates[1]["reasons"] == ["6/6 healthy: Wilson lower bound 0.610 >= 0.5"]


async def test_a_bad_image_for_one_of_two_models_holds_and_rolls_back_that_model_only(
    world: World,
):
    """DC150 chargers boot 2.0.0 but their connectors stay Unavailable (the jobs succeed);
    with group_by model the pilot's gate holds DC150 and rolls it back, AC22 completes."""
    await upload(world.api, world.tmp_path, world.keys, "1.0.0", size=16 * 1024,
                 models=(MODEL, "DC150"))  # fmt: skip
    fw = await upload(world.api, world.tmp_path, world.keys, "2.0.0", size=16 * 1024,
                      models=(MODEL, "DC150"))  # fmt: skip
    spec = fleet_spec(16, world.keys)
    bad = FaultProfile(unavailable_versions=("2.0.0",))
    chargers = tuple(
        replace(ch, model="DC150", faults=bad) if i % 2 else ch
        for i, ch in enumerate(spec.chargers)
    )
    await world.fleet(replace(spec, chargers=chargers), session_rate=0.0)
    dc = {ch.identity for ch in chargers if ch.model == "DC150"}
    pilot = sorted(dc)[:4] + sorted({ch.identity for ch in chargers} - dc)[:4]
    policy = {**POLICY, "group_by": "model", "on_group_failure": "hold_and_rollback"}
    c = await world.campaign(fw["id"], pilot=pilot, waves=[{"percent": 100}], policy=policy)
    await world.api.post(f"/api/v1/campaigns/{c['id']}/start", json={})
    done = await world.until(c["id"], lambda c: c["state"] != "running", timeout=90)
    assert done["state"] == "completed", done["state_reason"]
    assert list(done["held_groups"]) == ["DC150"]
    assert done["held_groups"]["DC150"].startswith("model DC150: 0/4 healthy")
    pilot_gate = done["waves"][0]["gates"][-1]
    assert pilot_gate["hold"] and pilot_gate["outcome"] == "passed"
    assert (pilot_gate["executed"], pilot_gate["succeeded"]) == (4, 4)  # AC22 alone
    assert done["waves"][1]["jobs"] == {"succeeded": 4, "held": 4}
    jobs = await jobs_of(world.rt, c["id"])
    updated = {j.charger_id for j in jobs if j.kind == "update"}
    assert updated & dc == set(pilot) & dc  # no DC150 charger beyond the pilot
    rollbacks = {j.charger_id: j for j in jobs if j.kind == "rollback"}
    assert set(rollbacks) == set(pilot) & dc
    assert {(j.state, j.target_version) for j in rollbacks.values()} == {("succeeded", "1.0.0")}
    versions = (await world.api.get("/api/v1/chargers", params={"limit": 100})).json()["items"]
    on = {v["id"]: v["firmware_version"] for v in versions}
    assert {on[cid] for cid in dc} == {"1.0.0"}
    assert {on[cid] for cid in set(on) - dc} == {"2.0.0"}


async def test_link_drops_and_power_loss_are_retried_to_completion(world: World):
    fw = await upload(world.api, world.tmp_path, world.keys, "2.0.0", size=256 * 1024)
    fleet = await world.fleet(fleet_spec(30, world.keys, link_drop=0.3, power_loss=0.1))
    c = await world.campaign(fw["id"], waves=[{"count": 5}, {"percent": 100}])
    await world.api.post(f"/api/v1/campaigns/{c['id']}/start", json={})
    done = await world.until(c["id"], lambda c: c["state"] != "running", timeout=90)
    assert done["state"] == "completed", done
    assert all(ch.firmware_version == "2.0.0" for ch in fleet.chargers)
    jobs = await jobs_of(world.rt, c["id"])
    lost = [j for j in jobs if j.failure == "booted_previous_version"]
    for j in lost:  # detected as its own failure, retried, and then succeeded
        later = [k for k in jobs if k.charger_id == j.charger_id and k.state == "succeeded"]
        assert later, j
    resumed = sum(
        ch.firmware_agent.last_download.resumed
        for ch in fleet.chargers
        if ch.firmware_agent and ch.firmware_agent.last_download
    )
    assert resumed > 0  # dropped links resumed with Range instead of starting over


async def test_chargers_in_session_are_not_interrupted(world: World):
    fw = await upload(world.api, world.tmp_path, world.keys, "2.0.0", size=16 * 1024)
    await world.fleet(fleet_spec(12, world.keys), session_rate=20.0, session_duration=(60.0, 240.0))
    c = await world.campaign(fw["id"], waves=[{"percent": 100}])
    await world.api.post(f"/api/v1/campaigns/{c['id']}/start", json={})
    done = await world.until(c["id"], lambda c: c["state"] != "running", timeout=90)
    assert done["state"] == "completed", done
    async with world.rt.engine.connect() as conn:
        outcomes = (await conn.execute(select(ChargingSession.outcome))).scalars().all()
    assert outcomes and "interrupted" not in outcomes


def _serve_env(data_dir: Path, ports: dict[str, int]) -> dict[str, str]:
    env = {
        **os.environ,
        "EVOTA_DATA_DIR": str(data_dir),
        "EVOTA_ADMIN_TOKEN": TOKEN,
        "EVOTA_HTTP_PORT": str(ports["http"]),
        "EVOTA_OCPP_PORT": str(ports["ocpp"]),
        "EVOTA_DOWNLOAD_PORT": str(ports["download"]),
        "EVOTA_CAMPAIGN_TICK_SECONDS": "0.2",
        "EVOTA_APPROVAL_ACTIONS": "[]",  # this test is about the kill, not four eyes
        "EVOTA_LOG_LEVEL": "warning",
    }
    for key, value in FAST_JOBS.items():
        env[f"EVOTA_{key.upper()}"] = str(value)
    return env


async def _start_server(data_dir: Path, ports: dict[str, int]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "evota",
        "serve",
        env=_serve_env(data_dir, ports),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await serving(f"http://127.0.0.1:{ports['http']}")
    return proc


@pytest.mark.slow
async def test_campaign_survives_a_hard_kill_of_the_server(tmp_path: Path, keys: Keys):
    ports = {"http": free_port(), "ocpp": free_port(), "download": free_port()}
    data_dir = tmp_path / "data"
    proc = await _start_server(data_dir, ports)
    api = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{ports['http']}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=15,
    )
    fleet = Fleet.from_spec(
        fleet_spec(30, keys),
        f"ws://127.0.0.1:{ports['ocpp']}/ocpp",
        config=fast(speed=600.0, install_duration=2.0, download_retry_interval=0.2),
    )
    try:
        await trust(api, keys)
        fw = await upload(api, tmp_path, keys, "2.0.0", size=64 * 1024)
        await fleet.provision(f"http://127.0.0.1:{ports['http']}", TOKEN)
        await fleet.start()
        await fleet.wait_for_all(lambda c: c.accepted, 30)
        await booted(api, {c.identity for c in fleet.chargers})
        r = await api.post(
            "/api/v1/campaigns",
            json={
                "name": "kill",
                "firmware_id": fw["id"],
                "waves": [{"count": 5}, {"percent": 100}],
                "policy": POLICY,
            },
        )
        campaign_id = r.json()["id"]

        async def campaign() -> dict[str, Any]:
            return dict((await api.get(f"/api/v1/campaigns/{campaign_id}")).json())

        await api.post(f"/api/v1/campaigns/{campaign_id}/start", json={})
        await until(  # kill while the second wave is in flight
            campaign,
            lambda c: c["current_wave"] == 1 and c["waves"][1]["jobs"].get("pending", 0) < 20,
            timeout=30,
            interval=0.1,
        )
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        proc = await _start_server(data_dir, ports)
        c = await until(campaign, lambda c: c["state"] != "running", timeout=120, interval=0.2)
        assert c["state"] == "completed", c
        assert all(ch.firmware_version == "2.0.0" for ch in fleet.chargers)
        engine = db.create_engine(f"sqlite+aiosqlite:///{data_dir / 'evota.db'}")
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(Job.id, Job.charger_id, Job.state, Job.failure)
                    .where(Job.campaign_id == campaign_id)
                    .order_by(Job.id)
                )
            ).all()
            events = (
                await conn.execute(
                    select(
                        JobEvent.job_id,
                        JobEvent.at,
                        JobEvent.event,
                        JobEvent.state,
                        JobEvent.detail,
                    ).order_by(JobEvent.id)
                )
            ).all()
        await engine.dispose()
        succeeded = [r.charger_id for r in rows if r.state == "succeeded"]
        unsettled = {r.charger_id for r in rows} - set(succeeded)
        history = [
            (r.charger_id, e)
            for r in rows
            if r.charger_id in unsettled
            for e in events
            if e.job_id == r.id
        ]
        assert not unsettled, history  # one success each
        assert len(succeeded) == len(set(succeeded)) == 30
        # a second update only where the first one failed (no update sent twice without need)
        for cid in {r.charger_id for r in rows}:
            mine = [r for r in rows if r.charger_id == cid]
            assert all(r.state == "failed" for r in mine[:-1]), mine
    finally:
        await fleet.stop()
        await api.aclose()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()


async def test_pause_at_gate_refusals_and_exclusions(world: World):
    fw = await upload(world.api, world.tmp_path, world.keys, "2.0.0", size=16 * 1024)
    spec = fleet_spec(10, world.keys)
    spec = replace(
        spec,
        chargers=(
            *spec.chargers[:8],
            replace(spec.chargers[8], firmware_version="2.0.0"),  # already on target
            replace(spec.chargers[9], model="DC150"),  # incompatible
        ),
    )
    await world.fleet(spec)
    api = world.api
    r = await api.post(
        "/api/v1/campaigns",
        json={
            "name": "x",
            "firmware_id": fw["id"],
            "policy": {"auto_stop": [{"action": "explode"}]},
        },
    )
    assert r.status_code == 422 and r.json()["field"].startswith("policy.auto_stop[0]")
    r = await api.post("/api/v1/campaigns", json={"name": "x", "firmware_id": "nope"})
    assert r.status_code == 422 and r.json()["field"] == "firmware_id"
    c = await world.campaign(
        fw["id"], waves=[{"count": 2}, {"percent": 100}], policy={**POLICY, "pause_at_gate": True}
    )
    assert c["eligible"] == 8
    reasons = {e["charger_id"]: e["reason"] for e in c["excluded"]}
    assert reasons == {"CMP-0009": "already_on_target", "CMP-0010": "incompatible"}
    r = await api.post(f"/api/v1/campaigns/{c['id']}/pause", json={})
    assert r.status_code == 409  # a draft cannot be paused
    assert (await api.get("/api/v1/campaigns/nope")).status_code == 404
    await api.post(f"/api/v1/campaigns/{c['id']}/start", json={})
    paused = await world.until(c["id"], lambda c: c["state"] == "paused")
    assert paused["current_wave"] == 0 and paused["waves"][0]["gates"], paused
    # 2 of 2 is not enough evidence for a 0.5 threshold (Wilson 0.34..1): inconclusive
    assert paused["state_reason"] == (
        "waiting for operator at gate 0 (inconclusive: 2/2 healthy;"
        " 2 more would pass 0.5 at 95% (Wilson 0.342..1.000))"
    )
    assert paused["waves"][1]["jobs"] == {"pending": 6}  # nothing beyond the pilot started
    r = await api.post(f"/api/v1/campaigns/{c['id']}/resume", json={"reason": "pilot looks good"})
    assert r.status_code == 200 and r.json()["state"] == "running"
    at_last = await world.until(c["id"], lambda c: c["state"] == "paused", timeout=60)
    assert at_last["current_wave"] == 1 and "waiting for operator" in at_last["state_reason"]
    await api.post(f"/api/v1/campaigns/{c['id']}/resume", json={"reason": "done"})
    done = await world.until(c["id"], lambda c: c["state"] not in ("running",), timeout=60)
    assert done["state"] == "completed", [(e["event"], e["detail"]) for e in done["history"]]
    history = [(e["event"], e["detail"].get("reason")) for e in reversed(done["history"])]
    assert ("go", "pilot looks good") in history
    listed = (await api.get("/api/v1/campaigns")).json()
    assert [x["id"] for x in listed["items"]] == [c["id"]]


async def test_scheduled_dynamic_campaign_sse_cli_and_revocation(world: World):
    from datetime import UTC, datetime, timedelta

    from .test_cli import invoke

    fw = await upload(world.api, world.tmp_path, world.keys, "2.0.0", size=16 * 1024)
    api = world.api
    world.rt.campaigns.join_interval = 0.2
    await world.fleet(fleet_spec(4, world.keys))
    at = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
    c = await world.campaign(
        fw["id"], target={"dynamic": True}, waves=[{"percent": 100}], name="dyn"
    )
    r = await api.post(f"/api/v1/campaigns/{c['id']}/start", json={"at": at})
    assert r.json()["state"] == "scheduled"
    # newcomers join while it runs
    await world.until(c["id"], lambda c: c["state"] == "running", timeout=10)
    late = await world.fleet(fleet_spec(2, world.keys, prefix="NEW-"))
    done = await world.until(c["id"], lambda c: c["state"] != "running", timeout=60)
    assert done["state"] == "completed", done
    assert done["eligible"] == 6 and all(ch.firmware_version == "2.0.0" for ch in late.chargers)

    # live stream: the first server-sent event is the campaign document
    async with api.stream("GET", f"/api/v1/campaigns/{c['id']}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.aiter_lines()
        assert await anext(lines) == "event: campaign"
        data = await anext(lines)
        assert json.loads(data.removeprefix("data: "))["state"] == "completed"

    r = await invoke(world.rt, "campaign", "show", c["id"])
    assert r.exit_code == 0 and "completed" in r.stdout
    r = await invoke(world.rt, "campaign", "list", "--json")
    assert c["id"] in r.stdout
    r = await invoke(world.rt, "campaign", "pause", c["id"])
    assert r.exit_code == 1 and "HTTP 409" in r.output
    r = await invoke(world.rt, "campaign", "watch", c["id"])
    assert r.exit_code == 0 and '"state": "completed"' in r.stdout
    r = await invoke(
        world.rt,
        "campaign",
        "create",
        "--name",
        "cli",
        "--firmware",
        "2.0.0",
        "--vendor",
        "Evota",
        "--wave",
        "1",
        "--wave",
        "100%",
        "--json",
    )
    assert r.exit_code == 0, r.output
    created = json.loads(r.stdout)
    # every charger is already on 2.0.0: nothing eligible, each exclusion has its reason
    assert created["eligible"] == 0 and {e["reason"] for e in created["excluded"]} == {
        "already_on_target"
    }
    # ... which creating it says, and starting it is refused with the reasons (it used to go
    # straight to completed, "all 0 waves done")
    empty = "no eligible charger: 6 excluded (6 already_on_target)"
    assert created["notes"] == [f"{empty}: starting it will be refused"]
    r = await api.post(f"/api/v1/campaigns/{created['id']}/start", json={})
    assert r.status_code == 409 and r.json()["field"] == "target", r.text
    assert r.json()["detail"] == empty
    r = await invoke(world.rt, "campaign", "start", created["id"])
    assert r.exit_code == 1 and empty in r.output and len(r.output.strip().splitlines()) == 1
    assert (await world.get(created["id"]))["state"] == "draft"
    r = await invoke(
        world.rt, "campaign", "create", "--name", "x", "--firmware", "2.0.0", "--wave", "half"
    )
    assert r.exit_code == 1 and "--wave" in r.output
    r = await invoke(world.rt, "campaign", "abort", created["id"], "--reason", "nothing to do")
    assert r.exit_code == 0 and "aborted" in r.stdout

    # revoking an image stops the campaigns that roll it out
    fw3 = await upload(world.api, world.tmp_path, world.keys, "3.0.0", size=16 * 1024)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    r = await api.get(f"/api/v1/firmware/{fw['id']}/chargers")
    assert r.json()["total"] == 6 and len(r.json()["items"]) == 6
    bad = {"exponential": {"first": 0}}
    r = await api.post(
        "/api/v1/campaigns", json={"name": "x", "firmware_id": fw3["id"], "waves": bad}
    )
    assert r.status_code == 422 and r.json()["field"] == "waves.exponential.first"
    c3 = await world.campaign(
        fw3["id"], waves={"exponential": {"first": 1, "factor": 2}}, name="to-revoke"
    )
    assert [w["size"] for w in c3["waves"]] == [1, 2, 3]
    await api.post(f"/api/v1/campaigns/{c3['id']}/start", json={"at": later})
    r = await api.post(f"/api/v1/firmware/{fw3['id']}/revoke", json={"reason": "bricks"})
    assert r.status_code == 200
    stopped = await world.get(c3["id"])
    assert stopped["state"] == "aborted" and stopped["state_reason"] == "firmware revoked"


class ShiftedClock:
    """Real time, moved to another instant: the whole server lives at ``start`` + elapsed."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def move_to(self, start: datetime) -> None:
        self.offset = start - datetime.now(UTC)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def monotonic(self) -> float:
        return time.monotonic()


async def test_windows_hold_in_site_local_time_across_the_dst_change(
    tmp_path: Path, sqlite_url: str, keys: Keys
):
    clock = ShiftedClock()
    sites = [
        SiteSpec(id="berlin", name="Berlin", timezone="Europe/Berlin"),
        SiteSpec(id="london", name="London", timezone="Europe/London"),  # 01:00 GMT -> 02:00 BST
    ]
    base = fleet_from_flags(4, prefix="DST-", seed="dst", sites=sites)
    spec = replace(
        base,
        chargers=tuple(replace(c, firmware_roots=(keys.ca_cert.decode(),)) for c in base.chargers),
    )
    async with running(
        World, tmp_path, sqlite_url, keys, clock=clock, campaign_tick_seconds=0.2
    ) as world:
        rt, api = world.rt, world.api
        fw = await upload(api, tmp_path, keys, "2.0.0", size=16 * 1024)  # certificates: now
        # 2026-03-29 01:59:53 in Berlin (CET); seconds later clocks jump to 03:00 CEST.
        clock.move_to(datetime(2026, 3, 29, 0, 59, 53, tzinfo=UTC))
        await world.fleet(spec)
        window = {"start": "03:00", "end": "04:00"}  # every day, local time of each site
        c = await world.campaign(
            fw["id"], waves=[{"percent": 100}], policy={**POLICY, "windows": [window]}
        )
        r = await api.post(f"/api/v1/campaigns/{c['id']}/start", json={})
        started = datetime.fromisoformat(r.json()["started_at"])
        assert started < datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # still 01:59 CET: closed
        berlin = {ch.identity for ch in world.fleets[0].chargers if ch.spec.site_id == "berlin"}
        for _ in range(200):
            jobs = await jobs_of(rt, c["id"])
            if {j.charger_id for j in jobs if j.state == "succeeded"} == berlin:
                break
            await asyncio.sleep(0.1)
        assert {j.charger_id for j in jobs} == berlin, jobs  # London's 03:00 is an hour away
        async with rt.engine.connect() as conn:
            created = (
                (await conn.execute(select(Job.created_at).where(Job.campaign_id == c["id"])))
                .scalars()
                .all()
            )
        # nothing started before the window opened at 03:00 CEST (01:00 UTC)
        assert min(created) >= datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
        summary = await world.get(c["id"])
        assert summary["state"] == "running"
        assert any("window" in n for n in summary["notes"]), summary["notes"]


async def test_campaign_start_waits_for_a_second_operator(
    tmp_path: Path, sqlite_url: str, keys: Keys
):
    from .conftest import api_client, session_for

    async with running(
        World,
        tmp_path,
        sqlite_url,
        keys,
        campaign_tick_seconds=0.2,
        approval_actions=["campaign.start", "firmware.revoke"],
    ) as world:
        fw = await upload(world.api, world.tmp_path, world.keys, "2.0.0", size=16 * 1024)
        fleet = await world.fleet(fleet_spec(8, world.keys))
        c = await world.campaign(fw["id"], waves=[{"count": 4}, {"percent": 100}])
        ann = await session_for(world.rt, "ann", ["firmware_manager"])
        ben = await session_for(world.rt, "ben", ["firmware_manager"])
        async with api_client(world.rt, ann) as a, api_client(world.rt, ben) as b:
            r = await a.post(f"/api/v1/campaigns/{c['id']}/start", json={"reason": "Q4 fix"})
            assert r.status_code == 202 and r.json()["state"] == "awaiting_approval"
            approval = r.json()["approval_id"]
            # what the engine's tick would do with it now: nothing, it waits for a second person
            assert await world.rt.campaigns.evaluate(c["id"]) == Decision()
            assert (await world.get(c["id"]))["state"] == "draft"
            assert (await jobs_of(world.rt, c["id"])) == []
            r = await a.post(f"/api/v1/approvals/{approval}/approve")
            assert r.status_code == 403 and r.json()["reason"] == "self_approval"
            r = await b.post(f"/api/v1/approvals/{approval}/approve", json={"note": "go"})
            assert r.status_code == 200 and r.json()["state"] == "executed", r.text
            done = await world.until(c["id"], lambda c: c["state"] != "running")
            assert done["state"] == "completed", (done["state_reason"], done["waves"])
            assert all(ch.firmware_version == "2.0.0" for ch in fleet.chargers)
            assert any("approved by ben" in str(h["detail"]) for h in done["history"])
            # a campaign with nothing to update is refused before anyone is asked to approve
            empty = await world.campaign(fw["id"], waves=[{"percent": 100}], name="empty")
            r = await a.post(f"/api/v1/campaigns/{empty['id']}/start", json={"reason": "again"})
            assert r.status_code == 409 and r.json()["field"] == "target", r.text
            assert r.json()["detail"].startswith("no eligible charger: 8 excluded")
            pending = (await a.get("/api/v1/approvals", params={"state": "pending"})).json()
            assert pending["total"] == 0, pending
            # every UpdateFirmware the campaign sent is in the audit log with the answer
            from evota.store.models import AuditCharger, AuditEntry

            async with world.rt.engine.connect() as conn:
                sent = (
                    await conn.execute(
                        select(AuditCharger.charger_id, AuditEntry.outcome)
                        .join(AuditEntry, AuditEntry.id == AuditCharger.entry_id)
                        .where(AuditEntry.action == "command.signed-update-firmware")
                    )
                ).all()
            assert {r.charger_id for r in sent} == {ch.identity for ch in fleet.chargers}
            assert {r.outcome for r in sent} == {"Accepted"}

            # revoking needs approval too; until then the image stays usable
            r = await a.post(f"/api/v1/firmware/{fw['id']}/revoke", json={"reason": "CVE"})
            assert r.status_code == 202
            assert (await a.get(f"/api/v1/firmware/{fw['id']}")).json()["state"] != "revoked"
            r = await b.post(f"/api/v1/approvals/{r.json()['approval_id']}/approve")
            assert r.status_code == 200 and r.json()["state"] == "executed"
            assert (await a.get(f"/api/v1/firmware/{fw['id']}")).json()["state"] == "revoked"
