"""The retention pruner: the leader's periodic runner that applies evota.store.retention.

Every run: daily partitions are created ahead and whole expired days dropped (PostgreSQL,
partitioned tables), then the expired rows left are deleted ``batch`` at a time (the part
of a day that is partly kept; all of them on SQLite), each batch its own
short transaction, and audit entries past their retention are archived, then pruned behind
a signed checkpoint (evota.audit.archive). DDL on a partitioned table waits at most
``LOCK_TIMEOUT`` for its lock and is tried again next run: it never queues readers and
writers behind it for long. Nothing a running job, an open session, a running campaign's
health check or the KPI rollup still reads is removed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Final

import structlog
from sqlalchemy import Table, delete, exists, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from evota.audit.archive import ArchiveError, archive
from evota.audit.log import AuditLog
from evota.clock import Clock
from evota.evidence import daily
from evota.periodic import Periodic
from evota.rollout.campaign import CampaignState
from evota.rollout.job import TERMINAL
from evota.store import retention
from evota.store.models import (
    Campaign,
    Charger,
    ChargerDay,
    ChargerEvent,
    ChargingSession,
    ConnectorStatus,
    Job,
    JobEvent,
)

log = structlog.get_logger("evota.retention")

LOCK_TIMEOUT: Final = "2s"
_ROLLUP_MAX_DAYS: Final = 400  # evota.evidence.rollup.Rollup.max_days
_CHUNK: Final = 1000


@dataclass
class PruneResult:
    deleted: dict[str, int] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    archived: int = 0
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(self.deleted.values())


class Pruner:
    """``start(interval)``/``stop()`` like the other runners; ``run_once`` for tests/CLI."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        policy: retention.Retention,
        *,
        audit: AuditLog | None = None,
        archive_dir: Path | None = None,
        batch: int = 5000,
        rollup: bool = True,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.policy = policy
        self.audit = audit
        self.archive_dir = archive_dir
        self.batch = batch
        self.rollup = rollup  # the KPI rollup runs: keep what it has still to read
        self._periodic = Periodic("retention", self.run_once)

    def start(self, interval_seconds: float) -> None:
        self._periodic.start(interval_seconds)

    async def stop(self) -> None:
        await self._periodic.stop()

    async def run_once(self) -> PruneResult:
        began = time.perf_counter()
        now = self.clock.now()
        result = PruneResult()
        floors = await self._floors(now)
        p = self.policy
        for table, days in (
            (ConnectorStatus.__table__, p.status_days),
            (ChargerEvent.__table__, p.events_days),
        ):
            assert isinstance(table, Table)
            before = retention.cutoff(now, days, floors)
            if await self._partitioned(table.name):
                await self._partitions(table.name, now.date(), before, result)
            if before is not None:  # what is left of a partly expired day, in batches
                result.deleted[table.name] = await self._delete_by_id(table, before)
        before = retention.cutoff(now, p.job_events_days)
        if before is not None:
            result.deleted["job_events"] = await self._delete_job_events(before)
        before = retention.cutoff(now, p.sessions_days, floors)
        if before is not None:
            result.deleted["sessions"] = await self._delete_sessions(before)
        before = retention.cutoff(now, p.audit_days)
        if before is not None and self.audit is not None and self.archive_dir is not None:
            result.archived = await self._archive_audit(before)
        result.seconds = time.perf_counter() - began
        if result.rows or result.dropped or result.archived:
            log.info(
                "retention run",
                deleted=result.deleted,
                dropped=result.dropped,
                archived=result.archived,
                seconds=round(result.seconds, 3),
            )
        return result

    # -- what must stay ----------------------------------------------------------------------

    async def _floors(self, now: datetime) -> list[datetime | None]:
        """The earliest times something still reads: the KPI rollup's next day per charger
        and each running or paused campaign's baseline window."""
        floors: list[datetime | None] = []
        async with self.engine.connect() as conn:
            for row in await conn.execute(
                select(Campaign.started_at, Campaign.policy).where(
                    Campaign.state.in_((CampaignState.RUNNING, CampaignState.PAUSED)),
                    Campaign.started_at.is_not(None),
                )
            ):
                window = float((row.policy or {}).get("health_window_seconds", 3600))
                floors.append(row.started_at - timedelta(seconds=window))
            if self.rollup:
                floors.append(retention.rollup_floor(await _rollup_next_days(conn, now)))
        return floors

    # -- row deletes in batches ------------------------------------------------------------------

    async def _delete_by_id(self, table: Table, before: datetime) -> int:
        """Walk the table's oldest rows by id (ids grow with time), deleting those received
        before ``before``: each batch reads one index range and deletes by primary key."""
        deleted = 0
        id_col, at_col = table.c.id, table.c.received_at
        while True:
            async with self.engine.begin() as conn:
                rows = (
                    await conn.execute(select(id_col, at_col).order_by(id_col).limit(self.batch))
                ).all()
                ids, done = retention.expired_ids([(r[0], r[1]) for r in rows], before)
                if ids:
                    await conn.execute(delete(table).where(id_col.in_(ids)))
            deleted += len(ids)
            if done:
                return deleted

    async def _delete_job_events(self, before: datetime) -> int:
        """History of jobs finished before ``before``; never of a job still running."""
        deleted = 0
        while True:
            async with self.engine.begin() as conn:
                jobs = (
                    (
                        await conn.execute(
                            select(Job.id)
                            .where(
                                Job.state.in_(sorted(TERMINAL)),
                                Job.finished_at < before,
                                exists().where(JobEvent.job_id == Job.id),
                            )
                            .order_by(Job.id)
                            .limit(max(1, self.batch // 20))
                        )
                    )
                    .scalars()
                    .all()
                )
                if not jobs:
                    return deleted
                gone = await conn.execute(delete(JobEvent).where(JobEvent.job_id.in_(jobs)))
            deleted += gone.rowcount or 0

    async def _delete_sessions(self, before: datetime) -> int:
        """Stopped sessions only: an open one (no stop yet) is never touched."""
        deleted = 0
        while True:
            async with self.engine.begin() as conn:
                ids = (
                    (
                        await conn.execute(
                            select(ChargingSession.id)
                            .where(
                                ChargingSession.stopped_at.is_not(None),
                                ChargingSession.stopped_at < before,
                                ChargingSession.outcome != "active",
                            )
                            .order_by(ChargingSession.id)
                            .limit(self.batch)
                        )
                    )
                    .scalars()
                    .all()
                )
                if not ids:
                    return deleted
                await conn.execute(delete(ChargingSession).where(ChargingSession.id.in_(ids)))
            deleted += len(ids)

    async def _archive_audit(self, before: datetime) -> int:
        assert self.audit is not None and self.archive_dir is not None
        total = 0
        while True:
            try:
                done = await archive(
                    self.audit, self.archive_dir, before=before, batch=min(self.batch, 2000)
                )
            except ArchiveError as exc:  # a broken chain, no key: say so, prune nothing
                log.error("audit not archived", reason=str(exc))
                return total
            if done is None:
                return total
            total += done.entries

    # -- partitions (PostgreSQL) ---------------------------------------------------------------

    async def _partitioned(self, table: str) -> bool:
        if self.engine.dialect.name != "postgresql":
            return False
        async with self.engine.connect() as conn:
            kind = (
                await conn.execute(
                    text("SELECT relkind::text FROM pg_class WHERE oid = to_regclass(:t)"),
                    {"t": table},
                )
            ).scalar()
        return kind == "p"

    async def _partitions(
        self, table: str, today: date, before: datetime | None, result: PruneResult
    ) -> None:
        async with self.engine.connect() as conn:
            names = await partition_names(conn, table)
        for part in retention.partitions_to_create(table, names, today):
            if await self._ddl(create_partition_sql(table, part)):
                result.created.append(part.name)
        if before is None:
            return
        for name in retention.partitions_to_drop(table, names, before):
            if await self._ddl([f'DROP TABLE "{retention.PARTITION_SCHEMA}"."{name}"']):
                result.dropped.append(name)

    async def _ddl(self, statements: Sequence[str]) -> bool:
        """Run DDL in one transaction that waits at most LOCK_TIMEOUT for its locks."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
                for sql in statements:
                    await conn.execute(text(sql))
        except DBAPIError as exc:
            log.warning("partition change put off to the next run", error=str(exc)[:200])
            return False
        return True


async def partition_names(conn: AsyncConnection, table: str) -> list[str]:
    rows = await conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(:t)"
        ),
        {"t": table},
    )
    return [r[0] for r in rows]


def create_partition_sql(table: str, part: retention.Partition) -> list[str]:
    """A day's partition; rows the default partition caught for that day (when no run
    created it in time) move into it in the same transaction."""
    schema = retention.PARTITION_SCHEMA
    key = retention.PARTITIONED[table]
    default = f'"{schema}"."{retention.default_partition(table)}"'
    new = f'"{schema}"."{part.name}"'
    lo, hi = part.start.isoformat(), part.end.isoformat()
    return [
        f"CREATE TABLE {new} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
        f"WITH moved AS (DELETE FROM {default} WHERE {key} >= '{lo}' AND {key} < '{hi}' "
        f"RETURNING *) INSERT INTO {new} SELECT * FROM moved",
        f"ALTER TABLE {table} ATTACH PARTITION {new} FOR VALUES FROM ('{lo}') TO ('{hi}')",
    ]


async def _rollup_next_days(conn: AsyncConnection, now: datetime) -> list[int]:
    """Per charger, the first day the KPI rollup has still to read (as the rollup picks it:
    after its last complete day, else its provisioning day, at most 400 days back)."""
    today = daily.day_number(now)
    out: list[int] = []
    after = ""
    while True:
        rows = (
            await conn.execute(
                select(Charger.id, Charger.created_at)
                .where(Charger.id > after)
                .order_by(Charger.id)
                .limit(_CHUNK)
            )
        ).all()
        if not rows:
            return out
        ids = [r.id for r in rows]
        last = dict(
            (
                await conn.execute(
                    select(ChargerDay.charger_id, func.max(ChargerDay.day))
                    .where(ChargerDay.charger_id.in_(ids), ChargerDay.complete)
                    .group_by(ChargerDay.charger_id)
                )
            ).all()
        )
        for r in rows:
            if r.id in last:
                out.append(int(last[r.id]) + 1)
            else:
                out.append(max(daily.day_number(r.created_at), today - _ROLLUP_MAX_DAYS))
        after = rows[-1].id
