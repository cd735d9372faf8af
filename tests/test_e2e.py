"""End to end: simulated fleet -> gateway -> database -> REST API, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses

from sqlalchemy import func, select

from evota.demo import BLOCKED_CARD, DEMO_CARDS, demo_fleet, seed_cards
from evota.sim import Fleet
from evota.sim.charger import SimConfig
from evota.store.models import ChargingSession, ConnectorStatus
from tests.conftest import TOKEN, api_client, start_runtime
from tests.support import until

FAST = SimConfig(
    speed=600.0,
    session_rate=120.0,  # sessions per charger per simulated hour
    session_duration=(60.0, 120.0),
    meter_interval=20.0,
    call_timeout=5.0,
    backoff_initial=0.05,
    backoff_max=0.2,
    ping_interval=None,
    close_timeout=0.5,
)


async def test_demo_fleet_reaches_the_api(tmp_path, database_url):
    # evota as shipped: only the demo's cards, provisioned in the token store, may charge
    evota = await start_runtime(tmp_path, database_url, authorize_all=False)
    try:
        await _demo_fleet_reaches_the_api(evota)
    finally:
        await evota.stop()


async def _demo_fleet_reaches_the_api(evota):
    spec = demo_fleet(12)
    assert len({c.vendor for c in spec.chargers}) == 2
    assert len({c.model for c in spec.chargers}) == 3
    assert len({s.timezone for s in spec.sites}) == 3
    config = dataclasses.replace(FAST, id_tags=DEMO_CARDS)
    fleet = Fleet.from_spec(
        spec, f"ws://127.0.0.1:{evota.ocpp_port}/ocpp", config=config, ramp_up=0.2
    )
    report = await fleet.provision(f"http://127.0.0.1:{evota.http_port}", TOKEN)
    assert await seed_cards(f"http://127.0.0.1:{evota.http_port}", TOKEN) == len(DEMO_CARDS)
    assert report.failed == []
    async with fleet:
        await fleet.wait_for_all(lambda c: c.accepted, 15)
        await fleet.wait_until(lambda f: f.summary().sessions_completed >= 3, 20)
        await evota.fleet.writer.flush()

        async with api_client(evota) as api:
            page = (await api.get("/api/v1/chargers", params={"limit": 100})).json()
            assert page["total"] == 12
            by_id = {c["id"]: c for c in page["items"]}
            for sim in spec.chargers:
                got = by_id[sim.identity]
                assert got["connected"] is True
                assert (got["vendor"], got["model"], got["firmware_version"], got["site_id"]) == (
                    sim.vendor,
                    sim.model,
                    sim.firmware_version,
                    sim.site_id,
                )
                assert got["last_seen"] is not None
            dc = (await api.get("/api/v1/chargers", params={"model": "DC150"})).json()
            assert dc["total"] == sum(1 for c in spec.chargers if c.model == "DC150")
            one = spec.chargers[0]
            detail = (await api.get(f"/api/v1/chargers/{one.identity}")).json()
            assert {k["connector_id"] for k in detail["connectors"]} >= set(
                range(0, one.connectors + 1)
            )
            assert any(e["kind"] == "boot" for e in detail["recent_events"])

            # Reset through the REST API: the simulated charger accepts, reboots and boots again.
            sim = fleet[one.identity]
            r = await api.post(
                f"/api/v1/chargers/{one.identity}/commands/reset",
                json={"type": "Hard", "reason": "e2e"},
            )
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "Accepted"
            await fleet.wait_until(lambda f: sim.stats.boots_accepted >= 2 and sim.accepted, 15)

        async with evota.engine.connect() as conn:
            completed = (
                await conn.execute(
                    select(func.count()).where(ChargingSession.outcome == "completed")
                )
            ).scalar_one()
            history = (
                await conn.execute(select(func.count()).select_from(ConnectorStatus))
            ).scalar_one()
            tags = set((await conn.execute(select(ChargingSession.id_tag))).scalars())
        assert completed >= 3
        assert tags <= set(DEMO_CARDS) - {BLOCKED_CARD}  # the blocked card never started one
        assert history >= 12 * 2  # connector 0 and at least one connector per charger
    summary = fleet.summary()
    assert summary.callerrors == 0 and summary.invalid_results == 0


async def test_status_history_round_trips_through_the_fast_insert(evota):
    """Rows written by the driver-level insert read back as aware UTC datetimes."""
    from datetime import UTC, datetime, timedelta, timezone

    from evota.fleet.charger import ChargerState
    from evota.fleet.events import Registration, StatusReported

    state = ChargerState("CP-hist", Registration.ACCEPTED, booted=True)
    from tests.conftest import provision

    await provision(evota, "CP-hist", "0123456789abcdef")
    plus2 = timezone(timedelta(hours=2))
    charger_ts = datetime(2026, 3, 29, 3, 30, 0, tzinfo=plus2)
    evota.fleet.handle(state, StatusReported(1, "Charging", "NoError", "hi", "V1", charger_ts))
    evota.fleet.handle(state, StatusReported(2, "Faulted", "GroundFailure", None, None, None))
    await evota.fleet.writer.flush()
    async with evota.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(ConnectorStatus)
                .where(ConnectorStatus.charger_id == "CP-hist")
                .order_by(ConnectorStatus.connector_id)
            )
        ).all()
    assert [(r.connector_id, r.status, r.error_code, r.info) for r in rows] == [
        (1, "Charging", "NoError", "hi"),
        (2, "Faulted", "GroundFailure", None),
    ]
    assert rows[0].charger_timestamp == charger_ts.astimezone(UTC)
    assert rows[0].received_at.tzinfo is not None
    assert abs(rows[0].received_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert rows[1].charger_timestamp is None


async def test_connected_filter_follows_the_fleet(evota):
    spec = demo_fleet(6)
    fleet = Fleet.from_spec(
        spec, f"ws://127.0.0.1:{evota.ocpp_port}/ocpp", config=FAST, ramp_up=0.1
    )
    await fleet.provision(f"http://127.0.0.1:{evota.http_port}", TOKEN)
    async with fleet:
        await fleet.wait_for_all(lambda c: c.accepted, 15)
        await evota.fleet.writer.flush()
        async with api_client(evota) as api:
            online = (await api.get("/api/v1/chargers", params={"connected": "true"})).json()
            assert online["total"] == 6
    # the server sees the sockets close a moment after the fleet stops
    await until(lambda: not evota.gateway.connections, timeout=5)
    await evota.fleet.writer.flush()
    async with api_client(evota) as api:
        online = (await api.get("/api/v1/chargers", params={"connected": "true"})).json()
        offline = (await api.get("/api/v1/chargers", params={"connected": "false"})).json()
    assert (online["total"], offline["total"]) == (0, 6)
