"""The campaign runner's charger facts: kept between evaluations, read again when noticed.

Against a real SQLite file; the clock is a plain datetime moved by the test, so every
"later" is exact.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, insert, update

from evota import metrics
from evota.fleet import vendors
from evota.fleet.vendors import VendorProfile
from evota.rollout.charger_facts import SESSIONS_BY_ID, ChargerFacts
from evota.store import db
from evota.store.models import Charger, ChargingSession, Site

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
IDS = [f"CP-{i:03d}" for i in range(12)]


@pytest.fixture
async def engine(sqlite_url):
    engine = db.create_engine(sqlite_url)
    await db.migrate(engine)
    async with engine.begin() as conn:
        await conn.execute(
            insert(Site),
            [
                {"id": s, "name": s, "timezone": "UTC", "region": "north", "created_at": T0}
                for s in ("S1", "S2")
            ],
        )
        await conn.execute(
            insert(Charger),
            [
                {
                    "id": cid,
                    "auth_salt": "00",
                    "auth_hash": "00",
                    "registration": "Accepted",
                    "site_id": "S1" if i % 2 else "S2",
                    "tags": [],
                    "vendor": "ACME",
                    "model": "X1",
                    "firmware_version": "1.0.0",
                    "connected": False,
                    "created_at": T0,
                }
                for i, cid in enumerate(IDS)
            ],
        )
    yield engine
    await engine.dispose()


class World:
    def __init__(self, engine) -> None:
        self.engine = engine
        self.online: set[str] = set(IDS)
        self.profile = vendors.DEFAULT
        self.facts = ChargerFacts(
            lambda cid: cid in self.online,
            lambda _v, _m, _fw: self.profile,
            full_every=timedelta(seconds=60),
            settle=timedelta(seconds=10),
        )

    async def read(self, at: datetime, members: list[str] = IDS, campaign: str = "C1"):
        before = metrics.CAMPAIGN_CHARGER_ROWS_READ._value.get()
        async with self.engine.connect() as conn:
            fleet = await self.facts.read(conn, campaign, members, at)
        return fleet, int(metrics.CAMPAIGN_CHARGER_ROWS_READ._value.get() - before)

    async def set(self, cid: str, **values) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(Charger).where(Charger.id == cid).values(**values))


@pytest.fixture
def world(engine) -> World:
    return World(engine)


async def test_a_campaign_is_read_whole_once_then_only_what_changed(world: World):
    fleet, read = await world.read(T0)
    assert read == len(IDS) and set(fleet) == set(IDS)
    assert fleet["CP-001"].site_id == "S1" and fleet["CP-001"].region == "north"
    fleet, read = await world.read(T0 + timedelta(seconds=1))
    assert read == 0 and set(fleet) == set(IDS)


async def test_an_unnoticed_change_is_seen_at_the_next_whole_read(world: World):
    await world.read(T0)
    await world.set("CP-003", site_id="S2", tags=["pilot"])
    fleet, _ = await world.read(T0 + timedelta(seconds=59))
    assert fleet["CP-003"].site_id == "S1"  # remembered: nothing said it changed
    fleet, read = await world.read(T0 + timedelta(seconds=60))
    assert read == len(IDS)
    assert fleet["CP-003"].site_id == "S2" and fleet["CP-003"].tags == {"pilot"}


async def test_a_notice_reads_the_charger_at_once_and_once_more_after_settling(world: World):
    await world.read(T0)
    # A boot is noticed before the write-behind writer stores its version.
    world.facts.changed("CP-004", T0 + timedelta(seconds=2))
    fleet, read = await world.read(T0 + timedelta(seconds=3))
    assert read == 1 and fleet["CP-004"].firmware_version == "1.0.0"
    await world.set("CP-004", firmware_version="2.0.0")  # stored later
    fleet, read = await world.read(T0 + timedelta(seconds=5))
    assert read == 0 and fleet["CP-004"].firmware_version == "1.0.0"
    fleet, read = await world.read(T0 + timedelta(seconds=12))  # settle ended at 12 s
    assert read == 1 and fleet["CP-004"].firmware_version == "2.0.0"
    fleet, read = await world.read(T0 + timedelta(seconds=13))
    assert read == 0


async def test_a_notice_during_a_read_is_not_lost(world: World):
    await world.read(T0)
    # Noticed at the very moment of the previous read: it may have missed it.
    world.facts.changed("CP-005", T0)
    await world.set("CP-005", tags=["late"])
    fleet, read = await world.read(T0 + timedelta(seconds=1))
    assert read == 1 and fleet["CP-005"].tags == {"late"}


async def test_a_site_notice_reads_the_sites_chargers(world: World):
    await world.read(T0)
    async with world.engine.begin() as conn:
        await conn.execute(update(Site).where(Site.id == "S1").values(timezone="Europe/Berlin"))
    world.facts.site_changed("S1", T0 + timedelta(seconds=1))
    fleet, read = await world.read(T0 + timedelta(seconds=2))
    s1 = [cid for i, cid in enumerate(IDS) if i % 2]
    assert read == len(s1)
    assert {fleet[c].timezone for c in s1} == {"Europe/Berlin"}
    assert {fleet[c].timezone for c in IDS if c not in s1} == {"UTC"}


async def test_connection_sessions_and_profile_are_fresh_every_read(world: World):
    fleet, _ = await world.read(T0)
    assert fleet["CP-000"].connected and not fleet["CP-000"].in_session
    world.online.discard("CP-000")
    async with world.engine.begin() as conn:
        await conn.execute(
            insert(ChargingSession).values(
                charger_id="CP-001",
                connector_id=1,
                id_tag="TAG",
                meter_start_wh=0,
                started_at=T0,
                outcome="active",
            )
        )
    world.profile = VendorProfile(max_per_site=3, max_image_bytes=1024)
    fleet, read = await world.read(T0 + timedelta(seconds=1))
    assert read == 0
    assert not fleet["CP-000"].connected
    assert fleet["CP-001"].in_session and not fleet["CP-002"].in_session
    assert fleet["CP-002"].max_per_site == 3 and fleet["CP-002"].max_image_bytes == 1024


async def test_a_large_campaign_reads_sessions_in_progress_at_once(world: World, engine):
    members = [f"BIG-{i:05d}" for i in range(SESSIONS_BY_ID + 1)]
    async with engine.begin() as conn:
        await conn.execute(
            insert(Charger),
            [
                {
                    "id": cid,
                    "auth_salt": "00",
                    "auth_hash": "00",
                    "registration": "Accepted",
                    "tags": [],
                    "connected": False,
                    "created_at": T0,
                }
                for cid in members
            ],
        )
        await conn.execute(
            insert(ChargingSession),
            [
                {
                    "charger_id": cid,
                    "connector_id": 1,
                    "id_tag": "T",
                    "meter_start_wh": 0,
                    "started_at": T0,
                    "outcome": outcome,
                }
                for cid, outcome in (
                    (members[7], "active"),
                    (members[8], "completed"),
                    ("CP-000", "active"),  # not a member
                )
            ],
        )
    fleet, read = await world.read(T0, members, campaign="BIG")
    assert read == len(members)
    assert {c for c, s in fleet.items() if s.in_session} == {members[7]}


async def test_a_member_joined_later_is_read_and_a_deleted_one_left_out(world: World):
    await world.read(T0, IDS[:6])
    fleet, read = await world.read(T0 + timedelta(seconds=1), IDS[:8])
    assert read == 2 and set(fleet) == set(IDS[:8])
    async with world.engine.begin() as conn:
        await conn.execute(delete(Charger).where(Charger.id == "CP-002"))
    world.facts.changed("CP-002", T0 + timedelta(seconds=2))
    fleet, _ = await world.read(T0 + timedelta(seconds=3), IDS[:8])
    assert "CP-002" not in fleet and len(fleet) == 7


async def test_campaigns_are_kept_apart_and_forgotten_when_done(world: World):
    a, _ = await world.read(T0, IDS[:4], campaign="A")
    b, _ = await world.read(T0, IDS[4:], campaign="B")
    assert set(a) == set(IDS[:4]) and set(b) == set(IDS[4:])
    world.facts.retain(["B"])
    _, read = await world.read(T0 + timedelta(seconds=1), IDS[:4], campaign="A")
    assert read == 4  # forgotten: read whole again
    _, read = await world.read(T0 + timedelta(seconds=1), IDS[4:], campaign="B")
    assert read == 0


async def test_a_flood_of_notices_is_bounded(world: World, monkeypatch):
    from evota.rollout import charger_facts

    monkeypatch.setattr(charger_facts, "MAX_NOTICES", 5)
    await world.read(T0)
    for i in range(50):  # any ids at all: a charger controls what it is called
        world.facts.changed(f"X-{i}", T0 + timedelta(seconds=1))
    assert len(world.facts._noticed) <= 5
    _, read = await world.read(T0 + timedelta(seconds=2))
    assert read == len(IDS)  # beyond the bound every campaign is read whole instead
