"""Data retention: the pure rules (evota.store.retention) and the pruner (evota.cluster.pruner)
on a real database: expired rows go in small batches, and nothing still needed goes with
them (a running job's history, an open session, what the KPI rollup and a running campaign
still read); audit entries are archived behind a signed checkpoint, never just deleted."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import insert, select, update

from evota.audit.log import Actor, AuditLog
from evota.cluster.pruner import Pruner
from evota.config import Settings
from evota.evidence import daily
from evota.store import db, retention
from evota.store.models import (
    AuditEntry,
    Campaign,
    Charger,
    ChargerDay,
    ChargerEvent,
    ChargingSession,
    ConnectorStatus,
    Firmware,
    Job,
    JobEvent,
)
from tests.conftest import ShiftedClock, make_settings, start_runtime

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def test_cutoff_keeps_forever_at_zero_and_never_passes_a_floor() -> None:
    assert retention.cutoff(NOW, 0) is None
    assert retention.cutoff(NOW, 10) == NOW - timedelta(days=10)
    early = NOW - timedelta(days=30)
    assert retention.cutoff(NOW, 10, [None, early, NOW]) == early


def test_expired_ids_stop_at_the_first_young_row_or_a_short_batch() -> None:
    old, young = NOW - timedelta(days=2), NOW
    assert retention.expired_ids([(1, old), (2, old)], NOW - timedelta(days=1)) == ([1, 2], False)
    assert retention.expired_ids([(1, old), (2, young)], NOW - timedelta(days=1)) == ([1], True)
    assert retention.expired_ids([], NOW) == ([], True)


def test_daily_partitions_are_created_ahead_and_dropped_when_wholly_expired() -> None:
    t = "connector_status_history"
    today = date(2026, 6, 1)
    made = retention.partitions_to_create(t, [f"{t}_p20260601"], today, ahead=2)
    assert [p.name for p in made] == [f"{t}_p20260602", f"{t}_p20260603"]
    assert made[0].start == datetime(2026, 6, 2, tzinfo=UTC)
    assert made[0].end == datetime(2026, 6, 3, tzinfo=UTC)
    existing = [f"{t}_p20260530", f"{t}_default", f"{t}_p20260529", f"{t}_p20260531"]
    cut = datetime(2026, 5, 31, 6, tzinfo=UTC)  # the 31st is partly kept: stays whole
    assert retention.partitions_to_drop(t, existing, cut) == [f"{t}_p20260529", f"{t}_p20260530"]
    assert retention.parse_partition(t, f"{t}_default") is None
    # The table as it was before partitioning covers everything before its day.
    before = [f"{t}_before20260603", f"{t}_p20260603"]
    assert [p.name for p in retention.partitions_to_create(t, before, today, ahead=3)] == [
        f"{t}_p20260604"
    ]
    assert retention.partitions_to_drop(t, before, datetime(2026, 6, 2, tzinfo=UTC)) == []
    assert retention.partitions_to_drop(t, before, datetime(2026, 6, 3, tzinfo=UTC)) == [
        f"{t}_before20260603"
    ]


def test_rollup_floor_is_the_start_of_the_earliest_day_still_to_roll() -> None:
    assert retention.rollup_floor([]) is None
    day = daily.day_number(NOW)
    assert retention.rollup_floor([day, day - 3]) == datetime(2026, 5, 29, tzinfo=UTC)


def test_history_retention_below_two_days_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="at least 2 days"):
        Settings(data_dir=tmp_path, retention_status_days=1)
    assert Settings(data_dir=tmp_path, retention_status_days=0).retention().status_days == 0


async def _fill(conn: Any, now: datetime) -> None:
    old, young = now - timedelta(days=100), now - timedelta(days=1)
    await conn.execute(
        insert(ConnectorStatus),
        [
            {
                "charger_id": "CP1",
                "connector_id": 1,
                "status": "Available",
                "error_code": "NoError",
                "received_at": at,
            }
            for at in [old] * 23 + [young] * 4
        ],
    )
    await conn.execute(
        insert(ChargerEvent),
        [
            {"charger_id": "CP1", "kind": "boot", "data": {}, "received_at": at}
            for at in [old] * 9 + [young] * 2
        ],
    )
    await conn.execute(
        insert(Firmware).values(
            id="fw1",
            vendor="V",
            version="1",
            models=[],
            hardware_revisions=[],
            sha256="0" * 64,
            size=1,
            state="released",
            release_notes="",
            supersedes=[],
            created_at=old,
            updated_at=old,
        )
    )
    for job_id, state, finished in ((1, "succeeded", old), (2, "sending", None)):
        await conn.execute(
            insert(Job).values(
                id=job_id,
                charger_id="CP1",
                firmware_id="fw1",
                state=state,
                target_version="1",
                created_at=old,
                updated_at=old,
                finished_at=finished,
            )
        )
        await conn.execute(
            insert(JobEvent),
            [{"job_id": job_id, "at": old, "event": "x", "state": state, "detail": {}}] * 5,
        )
    await conn.execute(
        insert(ChargingSession),
        [
            {
                "charger_id": "CP1",
                "connector_id": 1,
                "id_tag": "T",
                "meter_start_wh": 0,
                "started_at": old,
                "stopped_at": stopped,
                "outcome": outcome,
            }
            for stopped, outcome in ((old, "completed"), (None, "active"), (young, "completed"))
        ],
    )


async def test_pruner_deletes_expired_rows_in_batches_and_keeps_what_is_needed(
    tmp_path: Path, database_url: str
) -> None:
    engine = db.create_engine(database_url)
    await db.migrate(engine)
    clock = ShiftedClock()
    now = clock.now()
    try:
        async with engine.begin() as conn:
            await _fill(conn, now)
        policy = retention.Retention(
            status_days=30, events_days=30, job_events_days=30, sessions_days=30
        )
        pruner = Pruner(engine, clock, policy, batch=5, rollup=False)  # batches of 5 rows
        result = await pruner.run_once()
        assert result.deleted == {
            "connector_status_history": 23,
            "charger_events": 9,
            "job_events": 5,
            "sessions": 1,
        }
        async with engine.connect() as conn:
            assert len((await conn.execute(select(ConnectorStatus.id))).all()) == 4
            assert len((await conn.execute(select(ChargerEvent.id))).all()) == 2
            jobs = (await conn.execute(select(JobEvent.job_id))).scalars().all()
            assert jobs == [2] * 5  # the running job keeps its history
            open_and_young = (await conn.execute(select(ChargingSession.outcome))).scalars()
            assert sorted(open_and_young) == ["active", "completed"]
        assert (await pruner.run_once()).rows == 0  # nothing left to do
    finally:
        await engine.dispose()


async def test_pruner_keeps_what_the_rollup_and_a_running_campaign_still_read(
    tmp_path: Path, database_url: str
) -> None:
    engine = db.create_engine(database_url)
    await db.migrate(engine)
    clock = ShiftedClock()
    now = clock.now()
    try:
        async with engine.begin() as conn:
            await _fill(conn, now)
            await conn.execute(
                insert(Charger).values(
                    id="CP1",
                    auth_salt="s",
                    auth_hash="h",
                    registration="accepted",
                    tags=[],
                    created_at=now - timedelta(days=200),
                )
            )
        policy = retention.Retention(status_days=30, events_days=30, job_events_days=0)
        # The rollup never ran for CP1: all of its history since provisioning stays.
        result = await Pruner(engine, clock, policy, batch=5).run_once()
        assert result.rows == 0
        async with engine.begin() as conn:  # the rollup is through the day before yesterday
            await conn.execute(insert(ChargerDay).values(**_day("CP1", now - timedelta(days=2))))
            await conn.execute(
                insert(Campaign).values(
                    id="c1",
                    name="c",
                    firmware_id="fw1",
                    state="running",
                    target={},
                    wave_specs=[],
                    policy={"health_window_seconds": 3600},
                    waves=[],
                    excluded=[],
                    held_groups={},
                    created_at=now - timedelta(days=101),
                    updated_at=now,
                    started_at=now - timedelta(days=100, minutes=30),
                )
            )
        # A running campaign started 100 days ago reads from then minus its health window.
        assert (await Pruner(engine, clock, policy, batch=5).run_once()).rows == 0
        async with engine.begin() as conn:
            await conn.execute(
                update(Campaign).values(started_at=now - timedelta(days=100, minutes=-30))
            )
        # Started half an hour after the rows: an hour's window still reaches them.
        assert (await Pruner(engine, clock, policy, batch=5).run_once()).rows == 0
        async with engine.begin() as conn:
            await conn.execute(update(Campaign).values(started_at=now - timedelta(days=99)))
        result = await Pruner(engine, clock, policy, batch=5).run_once()
        assert result.deleted == {"connector_status_history": 23, "charger_events": 9}
    finally:
        await engine.dispose()


def _day(charger_id: str, at: datetime) -> dict[str, Any]:
    zero = dict.fromkeys(("observed_s", "connected_s", "available_s", "repair_s", "repair_s2"), 0.0)
    counts = dict.fromkeys(
        ("offline_episodes", "reconnects", "faults", "sessions", "failed_sessions", "repairs"), 0
    )
    return {
        "charger_id": charger_id,
        "day": daily.day_number(at),
        "complete": True,
        "version_changed": False,
        "faults_by_code": {},
        "end_state": {},
        **zero,
        **counts,
    }


async def test_pruner_archives_audit_entries_behind_a_checkpoint(
    tmp_path: Path, database_url: str
) -> None:
    engine = db.create_engine(database_url)
    await db.migrate(engine)
    clock = ShiftedClock()
    try:
        audit, created = AuditLog.for_data_dir(engine, clock, tmp_path, create_key=True)
        await audit.start(created)
        clock.advance(days=-50)
        for i in range(7):
            await audit.record(Actor("alice", ("admin",)), "site.create", "ok", target=str(i))
        clock.advance(days=50)
        await audit.record(Actor("alice", ("admin",)), "site.create", "ok", target="new")
        pruner = Pruner(
            engine,
            clock,
            retention.Retention(status_days=0, events_days=0, job_events_days=0, audit_days=30),
            audit=audit,
            archive_dir=tmp_path / "archive",
        )
        assert (await pruner.run_once()).archived == 7
        async with engine.connect() as conn:
            assert (await conn.execute(select(AuditEntry.seq))).scalars().all() == [8]
        assert await audit.verify() == (1, None)
        assert len(list((tmp_path / "archive").iterdir())) == 1
    finally:
        await engine.dispose()


async def test_the_runtime_runs_the_pruner_under_the_leadership(
    tmp_path: Path, database_url: str
) -> None:
    rt = await start_runtime(tmp_path, database_url, retention_interval_minutes=30)
    try:
        assert rt.pruner.policy == make_settings(tmp_path, database_url).retention()
        assert rt.pruner.archive_dir == rt.settings.data_dir / "audit-archive"
        assert (await rt.pruner.run_once()).rows == 0
    finally:
        await rt.stop()
