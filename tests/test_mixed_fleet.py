"""One campaign over a mixed fleet: OCPP 1.6 and 2.0.1 simulated chargers side by side, real
downloads and signatures on loopback. The campaign, its gates and its rollback do not know
which protocol a charger speaks, so a good image completes on both and a bad one gates and
rolls back the same way on both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from evota.sim import Fleet, fleet_from_flags
from evota.sim.fleet import FaultProfile, FleetSpec

from .conftest import Keys
from .test_campaigns import POLICY, SITES, World, jobs_of, wave_members
from .test_firmware_update import MODEL, running, upload

pytestmark = pytest.mark.slow  # a campaign over a mixed fleet, to completion

#: The 2.0.1 chargers are the newer model: a wave touches every model before any model twice,
#: so every wave of two or more holds both protocols.
MODEL_201 = "Sim-DC50"
MODELS = (MODEL, MODEL_201)


def mixed(n: int, keys: Keys, **faults: Any) -> FleetSpec:
    """``n`` chargers, every second one OCPP 2.0.1 (model Sim-DC50), across four sites."""
    base = fleet_from_flags(n, prefix="MIX-", seed="mixed", sites=SITES, v201_fraction=0.5)
    profile = FaultProfile(**faults)
    return replace(
        base,
        chargers=tuple(
            replace(
                c,
                model=MODEL_201 if c.protocol == "ocpp2.0.1" else MODEL,
                firmware_roots=(keys.ca_cert.decode(),),
                faults=profile,
            )
            for c in base.chargers
        ),
    )


def strict(fleets: list[Fleet]) -> None:
    """evota answered every CALL of every simulated charger, validly and without CALLERROR."""
    for fleet in fleets:
        for charger in fleet:
            s = charger.stats
            assert not s.callerrors and s.invalid_results == 0, (charger.identity, s.callerrors)


@pytest.fixture
async def world(tmp_path: Path, sqlite_url: str, keys: Keys) -> AsyncIterator[World]:
    async with running(World, tmp_path, sqlite_url, keys, campaign_tick_seconds=0.2) as w:
        yield w
        strict(w.fleets)


async def test_a_campaign_updates_a_mixed_fleet(world: World) -> None:
    fw = await upload(world.api, world.tmp_path, world.keys, "2.0.0", size=32 * 1024, models=MODELS)
    fleet = await world.fleet(mixed(40, world.keys), session_rate=0.0)
    protocols = {c.identity: c.spec.protocol for c in fleet}
    assert sorted(protocols.values()).count("ocpp2.0.1") == 20
    c = await world.campaign(fw["id"], waves=[{"count": 4}, {"percent": 100}])
    assert c["eligible"] == 40 and c["excluded"] == []
    r = await world.api.post(f"/api/v1/campaigns/{c['id']}/start", json={"reason": "test"})
    assert r.status_code == 200, r.text
    done = await world.until(c["id"], lambda c: c["state"] != "running", timeout=45)
    assert done["state"] == "completed", done
    assert all(ch.firmware_version == "2.0.0" for ch in fleet)
    jobs = await jobs_of(world.rt, c["id"])
    assert len(jobs) == 40 and {j.state for j in jobs} == {"succeeded"}
    pilot = await wave_members(world.rt, c["id"], 0)
    assert {protocols[cid] for cid in pilot} == {"ocpp1.6", "ocpp2.0.1"}
    # Each charger took the update its protocol speaks: 1.6 SignedUpdateFirmware with its
    # statuses, 2.0.1 UpdateFirmware reporting InstallRebooting and booting FirmwareUpdate.
    for ch in fleet:
        # (a slow answer may time out and the job resend: at least once, never the other kind)
        spoken, other = (
            ("UpdateFirmware", "SignedUpdateFirmware")
            if ch.wire.protocol == "ocpp2.0.1"
            else ("SignedUpdateFirmware", "UpdateFirmware")
        )
        assert ch.stats.calls_received[spoken] >= 1
        assert ch.stats.calls_received.get(other, 0) == 0
        assert ch.firmware_history[-2:] == ["InstallRebooting", "Installed"]
        assert ch.stats.invalid_results == 0 and not ch.stats.errors_sent
    summary = fleet.summary()
    assert summary.callerrors == 0 and summary.invalid_results == 0


async def test_a_bad_image_gates_and_rolls_back_both_protocols_alike(world: World) -> None:
    good = await upload(
        world.api, world.tmp_path, world.keys, "1.0.0", size=16 * 1024, models=MODELS
    )
    bad = await upload(
        world.api, world.tmp_path, world.keys, "2.0.0", size=16 * 1024, models=MODELS
    )
    assert good["version"] == "1.0.0"
    fleet = await world.fleet(mixed(24, world.keys, bad_versions=("2.0.0",)))
    protocols = {c.identity: c.spec.protocol for c in fleet}
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
        c["id"], lambda c: c["state"] == "aborted" and not c["rollback"], timeout=45
    )
    assert "unhealthy" in (done["state_reason"] or ""), done
    jobs = await jobs_of(world.rt, c["id"])
    pilot = await wave_members(world.rt, c["id"], 0)
    assert {protocols[cid] for cid in pilot} == {"ocpp1.6", "ocpp2.0.1"}
    updates = [j for j in jobs if j.kind == "update"]
    assert {j.charger_id for j in updates} <= pilot  # nobody beyond the pilot got it
    by_protocol: dict[str, set[tuple[str, str | None]]] = {}
    for j in updates:
        by_protocol.setdefault(protocols[j.charger_id], set()).add((j.state, j.failure))
    # Both protocols failed the same way: booted the bad image, Faulted, job unhealthy.
    assert by_protocol["ocpp1.6"] == by_protocol["ocpp2.0.1"] == {("failed", "unhealthy")}
    rollbacks = [j for j in jobs if j.kind == "rollback"]
    assert {protocols[j.charger_id] for j in rollbacks} == {"ocpp1.6", "ocpp2.0.1"}
    assert {(j.state, j.target_version) for j in rollbacks} == {("succeeded", "1.0.0")}
    assert [ch.identity for ch in fleet if ch.firmware_version == "2.0.0"] == []
    # The 2.0.1 chargers reported the fault as 2.0.1 does: Faulted EVSEs and a Problem event.
    for cid in pilot:
        ch = fleet[cid]
        if ch.wire.protocol == "ocpp2.0.1":
            assert ch.stats.calls_sent["NotifyEvent"] == 2  # Problem true, then cleared
