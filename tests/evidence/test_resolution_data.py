"""The resolution analytics' database reads on SQLite and PostgreSQL: which audit entries are
actions, whose histories are read (only chargers Faulted before an action, including a fault
that began before the range), and the caller's scope."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.evidence import resolution as rs
from evota.evidence.resolution_data import resolution_inputs
from evota.store import db
from evota.store.models import AuditCharger, AuditEntry, Charger, ChargingSession, ConnectorStatus

T0 = datetime(2026, 3, 1, tzinfo=UTC)
SINCE, UNTIL = T0, T0 + timedelta(days=10)
NOW = T0 + timedelta(days=30)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    e = db.create_engine(database_url)
    await db.migrate(e)
    yield e
    await e.dispose()


def _status(cid: str, connector: int, status: str, at: datetime) -> dict[str, Any]:
    code = "GroundFailure" if status == "Faulted" else "NoError"
    return {
        "charger_id": cid,
        "connector_id": connector,
        "status": status,
        "error_code": code,
        "received_at": at,
    }


async def _seed(engine: AsyncEngine) -> None:
    day = timedelta(days=1)
    chargers = ["OLD-FAULT", "OLD-CLEARED", "HEALTHY", "OTHER-SITE", "OFFLINE"]
    entries = [
        ("OLD-FAULT", "command.reset", "Accepted", T0 + day),
        ("OLD-CLEARED", "command.reset", "Accepted", T0 + day),
        ("HEALTHY", "command.clear-cache", "Accepted", T0 + day),
        ("OTHER-SITE", "command.reset", "Accepted", T0 + day),
        ("OFFLINE", "command.reset", "error:offline", T0 + day),  # never reached the charger
        ("HEALTHY", "command.reset", "Accepted", UNTIL + day),  # after the range
        ("GONE", "command.reset", "Accepted", T0 + day),  # no such charger (deleted)
        ("HEALTHY", "api.something", "ok", T0 + day),  # not a command
    ]
    async with engine.begin() as conn:
        await conn.execute(
            insert(Charger),
            [
                {
                    "id": cid,
                    "auth_salt": "s",
                    "auth_hash": "h",
                    "registration": "Accepted",
                    "tags": [],
                    "model": "M1",
                    "site_id": None,
                    "created_at": T0 - 100 * day,
                }
                for cid in chargers
            ],
        )
        await conn.execute(
            insert(ConnectorStatus),
            [
                # Faulted since long before the range, nothing since: still Faulted at the reset.
                _status("OLD-FAULT", 1, "Faulted", T0 - 40 * day),
                _status("OLD-FAULT", 1, "Available", T0 + day + timedelta(minutes=2)),
                # Faulted before the range, but cleared before it began.
                _status("OLD-CLEARED", 1, "Faulted", T0 - 40 * day),
                _status("OLD-CLEARED", 1, "Available", T0 - 39 * day),
                _status("HEALTHY", 1, "Available", T0 - 5 * day),
                _status("HEALTHY", 1, "Charging", T0 + 2 * day),
                _status("OTHER-SITE", 1, "Faulted", T0 + timedelta(hours=1)),
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
                    "started_at": T0 + day + timedelta(minutes=5),
                    "outcome": "completed",
                }
                for cid in ("OLD-FAULT", "HEALTHY")
            ],
        )
        for seq, (cid, action, outcome, at) in enumerate(entries, 1):
            await conn.execute(
                insert(AuditEntry).values(
                    id=seq,
                    seq=seq,
                    at=at,
                    actor="op",
                    role="operator",
                    action=action,
                    outcome=outcome,
                    target=cid,
                    detail={},
                    prev_hash="0" * 64,
                    hash="0" * 64,
                )
            )
            await conn.execute(insert(AuditCharger).values(entry_id=seq, charger_id=cid))


async def test_actions_histories_and_scope(engine: AsyncEngine) -> None:
    await _seed(engine)
    window = timedelta(minutes=30)

    def not_other(q: Any) -> Any:
        return q.where(Charger.id != "OTHER-SITE")

    inputs = await resolution_inputs(
        engine, not_other, since=SINCE, until=UNTIL, window=window, now=NOW
    )
    assert sorted((a.charger_id, a.kind) for a in inputs.actions) == [
        ("HEALTHY", "clear-cache"),
        ("OLD-CLEARED", "reset"),
        ("OLD-FAULT", "reset"),
    ]
    # Only the charger Faulted before its action has its history and sessions read.
    assert {r.charger_id for r in inputs.reports} == {"OLD-FAULT"}
    assert {s.charger_id for s in inputs.sessions} == {"OLD-FAULT"}
    out = rs.report(inputs.actions, inputs.reports, inputs.sessions, inputs.facts, NOW)
    assert (out.total.actions, out.total.no_fault_before, out.total.faulted) == (3, 2, 1)
    assert out.total.resolved == 1 and out.total.median_seconds == 5 * 60

    everyone = await resolution_inputs(
        engine, lambda q: q, since=SINCE, until=UNTIL, window=window, now=NOW
    )
    assert "OTHER-SITE" in {a.charger_id for a in everyone.actions}
    assert {r.charger_id for r in everyone.reports} == {"OLD-FAULT", "OTHER-SITE"}


async def test_a_session_stamped_in_the_second_the_range_begins_is_read(
    engine: AsyncEngine,
) -> None:
    """``since`` with a fraction of a second: a session the charger stamped in that second
    (whole seconds) still resolves a reset sent just after ``since``."""
    second = T0 + timedelta(days=1)
    since = second + timedelta(milliseconds=500)
    async with engine.begin() as conn:
        await conn.execute(
            insert(Charger).values(
                id="EDGE",
                auth_salt="s",
                auth_hash="h",
                registration="Accepted",
                tags=[],
                created_at=T0,
            )
        )
        await conn.execute(
            insert(ConnectorStatus),
            [
                _status("EDGE", 1, "Faulted", T0),
                _status("EDGE", 1, "Available", second + timedelta(seconds=2)),
            ],
        )
        await conn.execute(
            insert(ChargingSession).values(
                charger_id="EDGE",
                connector_id=1,
                id_tag="T",
                meter_start_wh=0,
                started_at=second,
                outcome="completed",
            )
        )
        await conn.execute(
            insert(AuditEntry).values(
                id=1,
                seq=1,
                at=second + timedelta(milliseconds=700),
                actor="op",
                role="operator",
                action="command.reset",
                outcome="Accepted",
                target="EDGE",
                detail={},
                prev_hash="0" * 64,
                hash="0" * 64,
            )
        )
        await conn.execute(insert(AuditCharger).values(entry_id=1, charger_id="EDGE"))
    inputs = await resolution_inputs(
        engine, lambda q: q, since=since, until=UNTIL, window=timedelta(minutes=30), now=NOW
    )
    out = rs.report(inputs.actions, inputs.reports, inputs.sessions, inputs.facts, NOW)
    assert (out.total.faulted, out.total.resolved) == (1, 1)
