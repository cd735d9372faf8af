"""The rollup shell over a real database: stored history in, charger_days out, incrementally."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.evidence import daily, kpi_service
from evota.evidence.rollup import Rollup
from evota.store import db
from evota.store.models import (
    Charger,
    ChargerDay,
    ChargerEvent,
    ChargingSession,
    ConnectorStatus,
    Firmware,
    Job,
)

DAY0 = datetime(2026, 3, 2, tzinfo=UTC)


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self.at = now

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return 0.0


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(database_url)
    await db.migrate(engine)
    yield engine
    await engine.dispose()


def h(day: int, hours: float) -> datetime:
    return DAY0 + timedelta(days=day, hours=hours)


async def seed(engine: AsyncEngine) -> None:
    """Two chargers: A runs 1.0 then 2.0 (updated on day 2), B stays on 1.0."""
    async with engine.begin() as conn:
        for cid in ("A", "B"):
            await conn.execute(
                insert(Charger).values(
                    id=cid,
                    auth_salt="s",
                    auth_hash="h",
                    registration="Accepted",
                    vendor="Acme",
                    model="AC22",
                    firmware_version="1.0",
                    created_at=DAY0,
                )
            )
        await conn.execute(
            insert(Firmware).values(
                id="fw-2",
                vendor="Acme",
                version="2.0",
                models=["AC22"],
                sha256="0" * 64,
                size=1,
                state="released",
                created_at=DAY0,
                updated_at=DAY0,
            )
        )
        events: list[dict[str, Any]] = []
        statuses: list[dict[str, Any]] = []
        for cid in ("A", "B"):
            events.append(_ev(cid, "connected", h(0, 6)))
            events.append(_ev(cid, "boot", h(0, 6), {"firmware_version": "1.0"}))
            statuses.append(_st(cid, 1, "Available", h(0, 6)))
        # A: a one-hour fault on day 1, a 30-minute outage on day 3 on 2.0, offline at night
        statuses += [
            _st("A", 1, "Faulted", h(1, 10), "GroundFailure"),
            _st("A", 1, "Available", h(1, 11)),
            _st("A", 1, "Faulted", h(3, 12), "OtherError"),
            _st("A", 1, "Available", h(3, 12.5)),
        ]
        events += [
            _ev("A", "disconnected", h(2, 9)),
            _ev("A", "connected", h(2, 9.5)),
            _ev("A", "boot", h(2, 9.5), {"firmware_version": "2.0"}),
        ]
        await conn.execute(insert(ChargerEvent), events)
        await conn.execute(insert(ConnectorStatus), statuses)
        await conn.execute(
            insert(Job).values(
                charger_id="A",
                firmware_id="fw-2",
                kind="update",
                state="succeeded",
                target_version="2.0",
                previous_version="1.0",
                created_at=h(2, 9),
                updated_at=h(2, 10),
                finished_at=h(2, 10),
            )
        )
        await conn.execute(
            insert(ChargingSession),
            [
                _session("A", h(1, 12), "completed"),
                _session("A", h(3, 13), "interrupted"),
                _session("B", h(3, 13), "completed"),
                _session("B", h(3, 14), "active", stopped=False),
            ],
        )


def _ev(cid: str, kind: str, at: datetime, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"charger_id": cid, "kind": kind, "data": data or {}, "received_at": at}


def _st(cid: str, c: int, status: str, at: datetime, code: str = "NoError") -> dict[str, Any]:
    return {
        "charger_id": cid,
        "connector_id": c,
        "status": status,
        "error_code": code,
        "received_at": at,
    }


def _session(cid: str, stop: datetime, outcome: str, *, stopped: bool = True) -> dict[str, Any]:
    return {
        "charger_id": cid,
        "connector_id": 1,
        "id_tag": "T",
        "meter_start_wh": 0,
        "started_at": stop - timedelta(minutes=30),
        "stopped_at": stop if stopped else None,
        "outcome": outcome,
    }


async def rows(engine: AsyncEngine) -> dict[tuple[str, int], Any]:
    async with engine.connect() as conn:
        found = (await conn.execute(select(ChargerDay).order_by(ChargerDay.day))).all()
    return {(r.charger_id, r.day - daily.day_number(DAY0)): r for r in found}


async def test_rollup_is_incremental_idempotent_and_matches_the_history(engine: AsyncEngine):
    await seed(engine)
    clock = FixedClock(h(4, 1))
    rollup = Rollup(engine, clock, chunk=1, span_days=2)  # chunks and spans of every size
    first = await rollup.run(h(2, 8))  # day 2 partial
    assert first.chargers == 2
    partial = await rows(engine)
    assert not partial[("A", 2)].complete and partial[("A", 1)].complete
    assert partial[("A", 2)].connected_s == 8 * 3600  # midnight to 08:00
    await rollup.run()
    again = await rollup.run()  # nothing new: the same rows
    assert again.rows == 2  # only day 4, today's partial row of each charger, rewritten
    incremental = await rows(engine)

    async with engine.begin() as conn:
        await conn.execute(ChargerDay.__table__.delete())
    await Rollup(engine, clock).run()
    at_once = await rows(engine)
    assert _comparable(incremental) == _comparable(at_once)

    a0, a1, a2, a3 = (at_once[("A", d)] for d in range(4))
    assert a0.connected_s == 18 * 3600 and a0.available_s == 18 * 3600
    assert a0.firmware_version == "1.0" and not a0.version_changed
    assert (a1.faults, a1.faults_by_code, a1.repairs, a1.repair_s) == (
        1,
        {"GroundFailure": 1},
        1,
        3600.0,
    )
    assert a1.available_s == 23 * 3600 and a1.sessions == 1 and a1.failed_sessions == 0
    assert a2.version_changed and a2.firmware_version == "2.0"
    assert a2.reconnects == 1 and a2.offline_episodes == 1  # 30 minutes offline
    assert a2.connected_s == 23.5 * 3600
    assert (a3.sessions, a3.failed_sessions, a3.repair_s) == (1, 1, 1800.0)
    b3 = at_once[("B", 3)]
    assert (b3.sessions, b3.failed_sessions, b3.firmware_version) == (1, 0, "1.0")


async def test_a_charger_is_observed_from_its_creation_not_from_midnight(engine: AsyncEngine):
    """Provisioned at 18:00 and Available from then on: its first day is 6 hours observed
    and fully available, not 24 hours of which 18 were 'down' before it existed."""
    async with engine.begin() as conn:
        await conn.execute(
            insert(Charger).values(
                id="NEW",
                auth_salt="s",
                auth_hash="h",
                registration="Accepted",
                model="AC22",
                firmware_version="1.0",
                created_at=h(0, 18),
            )
        )
        await conn.execute(insert(ChargerEvent), [_ev("NEW", "connected", h(0, 18))])
        await conn.execute(insert(ConnectorStatus), [_st("NEW", 1, "Available", h(0, 18))])
    await Rollup(engine, FixedClock(h(2, 1))).run()
    first, second = (await rows(engine))[("NEW", 0)], (await rows(engine))[("NEW", 1)]
    assert (first.observed_s, first.connected_s, first.available_s) == (6 * 3600,) * 3
    assert (second.observed_s, second.available_s) == (24 * 3600,) * 2


async def test_firmware_kpis_compare_a_version_with_its_predecessor(engine: AsyncEngine):
    await seed(engine)
    now = h(4, 1)
    await Rollup(engine, FixedClock(now)).run()
    result = await kpi_service.firmware_kpis(engine, "fw-2", None, now, days=7)
    assert result["predecessor"] == "1.0"
    assert result["kpis"]["charger_days"] == 2  # A on days 2 (ended on 2.0) and 3
    assert result["comparison"]["session_success_rate"]["verdict"] == "too little data"
    with pytest.raises(kpi_service.NotFound):
        await kpi_service.firmware_kpis(engine, "nope", None, now)


def _comparable(found: dict[tuple[str, int], Any]) -> dict[tuple[str, int], Any]:
    return {k: tuple(v) for k, v in found.items()}


async def test_kpis_count_only_the_callers_chargers(engine: AsyncEngine):
    """A caller limited to a site (an API token's site limit, or a scoped grant) gets KPIs
    over that site's chargers only: the API's own scope_filter narrows every sum."""
    from evota.api.deps import Principal, scope_filter
    from evota.operators import permissions as perms
    from evota.store.models import Site

    await seed(engine)
    async with engine.begin() as conn:
        await conn.execute(
            insert(Site),
            [{"id": s, "name": s, "timezone": "UTC", "tags": [], "created_at": DAY0} for s in "ab"],
        )
        await conn.execute(Charger.__table__.update().where(Charger.id == "A").values(site_id="a"))
        await conn.execute(Charger.__table__.update().where(Charger.id == "B").values(site_id="b"))
    now = h(4, 1)
    await Rollup(engine, FixedClock(now)).run()
    viewer = (perms.RoleGrant("viewer"),)
    only_b = scope_filter(Principal("b", viewer, site_limit=frozenset({"b"})))
    everyone = scope_filter(Principal("all", viewer))
    scoped = await kpi_service.firmware_kpis(engine, "fw-2", only_b, now, days=7)
    assert scoped["kpis"]["charger_days"] == 0  # B never ran 2.0
    assert scoped["predecessor_kpis"]["chargers"] == 1  # B on 1.0, not A
    full = await kpi_service.firmware_kpis(engine, "fw-2", everyone, now, days=7)
    assert full["kpis"]["charger_days"] == 2 and full["predecessor_kpis"]["chargers"] == 2
