"""The simulator against the real evota (gateway + REST API) on loopback: the contract holds."""

from __future__ import annotations

from evota.control.commands import Reset
from evota.runtime import Runtime
from evota.sim import Fleet, SiteSpec, fleet_from_flags

from ..conftest import TOKEN
from .conftest import fast


async def test_provisioned_fleet_boots_charges_and_obeys_reset(evota_sqlite: Runtime) -> None:
    rt = evota_sqlite
    sites = [SiteSpec(id="s-a", name="A"), SiteSpec(id="s-b", name="B", timezone="UTC")]
    spec = fleet_from_flags(6, prefix="E2E-", seed="e2e", sites=sites)
    config = fast(speed=600.0, session_duration=(60.0, 60.0), meter_interval=20.0)
    fleet = Fleet.from_spec(spec, f"ws://127.0.0.1:{rt.ocpp_port}/ocpp", config=config)
    api = f"http://127.0.0.1:{rt.http_port}"
    first = await fleet.provision(api, TOKEN)
    again = await fleet.provision(api, TOKEN)
    assert (first.created, first.existing, again.created, again.existing) == (8, 0, 0, 8)
    async with fleet:
        await fleet.wait_for_all(lambda c: c.accepted, 10)
        charger = fleet["E2E-0001"]
        assert await charger.begin_session(1)
        result = await rt.gateway.send("E2E-0001", Reset(type="Soft"))
        assert result.status == "Accepted"
        await fleet.wait_until(lambda f: charger.stats.boots_accepted == 2 and charger.accepted, 10)
    summary = fleet.summary()
    assert summary.callerrors == summary.invalid_results == summary.connect_failures == 0
    assert summary.sessions_completed >= 1


async def test_a_wrong_key_is_refused_by_evota(evota_sqlite: Runtime) -> None:
    rt = evota_sqlite
    url = f"ws://127.0.0.1:{rt.ocpp_port}/ocpp"
    await Fleet.from_spec(fleet_from_flags(1, seed="right"), url).provision(
        f"http://127.0.0.1:{rt.http_port}", TOKEN
    )
    async with Fleet.from_spec(fleet_from_flags(1, seed="wrong"), url, config=fast()) as fleet:
        await fleet.wait_until(lambda f: f.summary().http_401 == 1, 5)
        assert fleet.summary().connected == 0
