"""Rolls stored history up into ``charger_days`` (the shell of :mod:`evota.evidence.daily`).

Incremental and idempotent: each charger continues from the day after its last complete
row, starting from that row's ``end_state``; a charger without rows starts on the day it
was provisioned (at most ``max_days`` back). Today's partial row (``complete`` false) is
rewritten by every run; a day is complete once ``grace`` has passed after its end, so late
writes (the fleet writer's batches, a session's stop) land before it closes. Chargers are
read ``chunk`` at a time and their history ``span_days`` days at a time, so memory stays
bounded whatever the fleet size. Rows of a chunk's span are replaced in one transaction.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, func, insert, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.clock import Clock
from evota.evidence import daily
from evota.periodic import Periodic
from evota.store.models import (
    Charger,
    ChargerDay,
    ChargerEvent,
    ChargingSession,
    ConnectorStatus,
    Job,
)

log = structlog.get_logger("evota.evidence")

GRACE = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class RollupResult:
    chargers: int
    rows: int
    seconds: float


@dataclass(frozen=True, slots=True)
class _Charger:
    id: str
    vendor: str | None
    model: str | None
    site_id: str | None
    firmware_version: str | None
    first_day: int
    state: daily.State
    # When its first rolled day starts observing: its creation, if it was created that day
    # (the hours before it existed are not downtime).
    observed_from: datetime | None = None


@dataclass(frozen=True, slots=True)
class _Raw:
    """A span's rows, as read: charger events, statuses, succeeded jobs, ended sessions."""

    events: Sequence[Any]
    statuses: Sequence[Any]
    jobs: Sequence[Any]
    sessions: Sequence[Any]


def _grouped(raw: _Raw) -> dict[tuple[str, int], list[daily.Event]]:
    """The rows as events, by (charger, day), in time order."""
    found: dict[tuple[str, int], list[daily.Event]] = defaultdict(list)

    def add(charger_id: str, event: daily.Event) -> None:
        found[(charger_id, daily.day_number(event.at))].append(event)

    for r in raw.events:
        if r.kind == "connected":
            add(r.charger_id, daily.Connected(r.received_at))
        elif r.kind == "disconnected":
            add(r.charger_id, daily.Disconnected(r.received_at))
        else:
            version = (r.data or {}).get("firmware_version")
            if isinstance(version, str) and version:
                add(r.charger_id, daily.VersionSeen(r.received_at, version))
    for r in raw.statuses:
        add(r.charger_id, daily.Status(r.received_at, r.connector_id, r.status, r.error_code))
    for r in raw.jobs:
        add(r.charger_id, daily.VersionSeen(r.finished_at, r.target_version))
    for r in raw.sessions:
        add(r.charger_id, daily.SessionEnded(r.stopped_at, failed=r.outcome == "interrupted"))
    for events in found.values():
        events.sort(key=lambda e: e.at)  # stable: same-instant events keep their order
    return found


class Rollup:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        *,
        chunk: int = 250,
        span_days: int = 7,
        max_days: int = 400,
        grace: timedelta = GRACE,
        offline_after: timedelta = daily.OFFLINE_AFTER,
        after_run: Callable[[datetime], Awaitable[Any]] | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.chunk = chunk
        self.span_days = span_days
        self.max_days = max_days
        self.grace = grace
        self.offline_after = offline_after
        self.after_run = after_run  # the regression check (evota.evidence.kpi_service)
        self._lock = asyncio.Lock()
        self._periodic = Periodic("kpi-rollup", self.run)
        self.last: RollupResult | None = None

    # -- background --------------------------------------------------------------------------
    def start(self, interval_seconds: float) -> None:
        """Repeat every ``interval_seconds`` (the first run one interval after start)."""
        self._periodic.start(interval_seconds)

    async def stop(self) -> None:
        await self._periodic.stop()

    # -- one run -----------------------------------------------------------------------------
    async def run(self, now: datetime | None = None) -> RollupResult:
        """Roll every charger up to ``now`` (default: the clock); one run at a time."""
        async with self._lock:
            now = now or self.clock.now()
            started = self.clock.monotonic()
            chargers = rows = 0
            after = ""
            while True:
                batch = await self._chargers(after, now)
                if not batch:
                    break
                after = batch[-1].id
                chargers += len(batch)
                rows += await self._roll_chunk(batch, now)
            result = RollupResult(chargers, rows, self.clock.monotonic() - started)
            self.last = result
        if self.after_run is not None:
            await self.after_run(now)
        return result

    async def _chargers(self, after: str, now: datetime) -> list[_Charger]:
        today = daily.day_number(now)
        oldest = today - self.max_days
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        Charger.id,
                        Charger.vendor,
                        Charger.model,
                        Charger.site_id,
                        Charger.firmware_version,
                        Charger.created_at,
                    )
                    .where(Charger.id > after)
                    .order_by(Charger.id)
                    .limit(self.chunk)
                )
            ).all()
            if not rows:
                return []
            ids = [r.id for r in rows]
            # Each charger's last complete day, then those rows' end states: two index
            # lookups (a join of the two made PostgreSQL scan the whole table).
            last = (
                await conn.execute(
                    select(ChargerDay.charger_id, func.max(ChargerDay.day))
                    .where(ChargerDay.charger_id.in_(ids), ChargerDay.complete)
                    .group_by(ChargerDay.charger_id)
                )
            ).all()
            ends: dict[str, tuple[int, Any]] = {}
            if last:
                for r in (
                    await conn.execute(
                        select(ChargerDay.charger_id, ChargerDay.day, ChargerDay.end_state).where(
                            tuple_(ChargerDay.charger_id, ChargerDay.day).in_(
                                [(cid, day) for cid, day in last]
                            )
                        )
                    )
                ).all():
                    ends[r.charger_id] = (r.day, r.end_state)
        out = []
        for r in rows:
            observed_from = None
            if r.id in ends:
                day, end_state = ends[r.id]
                first, state = day + 1, daily.State.from_json(end_state)
            else:
                created = daily.day_number(r.created_at)
                first = max(created, oldest)
                # Provisioned long ago: its version before the first rolled day is unknown,
                # the current one is the best guess (docs/kpis.md).
                state = daily.State(version=r.firmware_version if created < oldest else None)
                if created >= oldest:
                    observed_from = r.created_at
            out.append(
                _Charger(
                    r.id,
                    r.vendor,
                    r.model,
                    r.site_id,
                    r.firmware_version,
                    first,
                    state,
                    observed_from,
                )
            )
        return out

    async def _roll_chunk(self, chargers: Sequence[_Charger], now: datetime) -> int:
        today = daily.day_number(now)
        todo = [c for c in chargers if c.first_day <= today]
        if not todo:
            return 0
        states = {c.id: c.state for c in todo}
        written = 0
        day = min(c.first_day for c in todo)
        while day <= today:
            last = min(today, day + self.span_days - 1)
            active = [c for c in todo if c.first_day <= last]
            raw = await self._events([c.id for c in active], day, last)
            # The day computation is CPU work: in a worker thread, so the event loop (the
            # OCPP gateway, the console) keeps getting the GIL between its slices.
            rows = await asyncio.to_thread(self._rows, active, states, raw, day, last, now)
            await self._write([c.id for c in active], day, last, rows)
            written += len(rows)
            day = last + 1
        return written

    def _rows(
        self,
        active: Sequence[_Charger],
        states: dict[str, daily.State],
        raw: _Raw,
        first: int,
        last: int,
        now: datetime,
    ) -> list[dict[str, Any]]:
        """Day rows of ``active`` for days ``first..last``, carrying ``states`` forward."""
        events = _grouped(raw)
        rows = []
        for c in active:
            for d in range(max(first, c.first_day), last + 1):
                day_start = daily.day_start(d)
                end = min(day_start + daily.DAY, now)
                totals, after = daily.roll(
                    states[c.id], events.get((c.id, d), ()), day_start, end, self.offline_after
                )
                if d == c.first_day and c.observed_from is not None:
                    # Not there before it was created: those hours are not downtime. Its
                    # events still count from midnight (a charger's clock may run behind).
                    since = min(max(day_start, c.observed_from), end)
                    totals = replace(totals, observed=max(end - since, totals.connected))
                states[c.id] = after
                rows.append(
                    _row(c, d, totals, after, complete=now >= day_start + daily.DAY + self.grace)
                )
        return rows

    async def _events(self, ids: list[str], first: int, last: int) -> _Raw:
        """The rows of every event of ``ids`` on days ``first..last`` (turned into events by
        :func:`_grouped` in the worker thread)."""
        since, until = daily.day_start(first), daily.day_start(last + 1)
        async with self.engine.connect() as conn:
            events = (
                await conn.execute(
                    select(
                        ChargerEvent.charger_id,
                        ChargerEvent.kind,
                        ChargerEvent.data,
                        ChargerEvent.received_at,
                    )
                    .where(
                        ChargerEvent.charger_id.in_(ids),
                        ChargerEvent.kind.in_(("connected", "disconnected", "boot")),
                        ChargerEvent.received_at >= since,
                        ChargerEvent.received_at < until,
                    )
                    .order_by(ChargerEvent.id)
                )
            ).all()
            statuses = (
                await conn.execute(
                    select(
                        ConnectorStatus.charger_id,
                        ConnectorStatus.connector_id,
                        ConnectorStatus.status,
                        ConnectorStatus.error_code,
                        ConnectorStatus.received_at,
                    )
                    .where(
                        ConnectorStatus.charger_id.in_(ids),
                        ConnectorStatus.received_at >= since,
                        ConnectorStatus.received_at < until,
                    )
                    .order_by(ConnectorStatus.id)
                )
            ).all()
            jobs = (
                await conn.execute(
                    select(Job.charger_id, Job.target_version, Job.finished_at).where(
                        Job.charger_id.in_(ids),
                        Job.state == "succeeded",
                        Job.kind.in_(("update", "rollback")),
                        Job.finished_at >= since,
                        Job.finished_at < until,
                    )
                )
            ).all()
            sessions = (
                await conn.execute(
                    select(
                        ChargingSession.charger_id,
                        ChargingSession.outcome,
                        ChargingSession.stopped_at,
                    ).where(
                        ChargingSession.charger_id.in_(ids),
                        ChargingSession.stopped_at >= since,
                        ChargingSession.stopped_at < until,
                        ChargingSession.outcome != "active",
                    )
                )
            ).all()
        return _Raw(events, statuses, jobs, sessions)

    async def _write(
        self, ids: list[str], first: int, last: int, rows: list[dict[str, Any]]
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(ChargerDay).where(
                    ChargerDay.charger_id.in_(ids), ChargerDay.day >= first, ChargerDay.day <= last
                )
            )
            for i in range(0, len(rows), 250):  # small statements: short event-loop slices
                await conn.execute(insert(ChargerDay), rows[i : i + 250])


def _row(
    c: _Charger, day: int, t: daily.Totals, after: daily.State, *, complete: bool
) -> dict[str, Any]:
    return {
        "charger_id": c.id,
        "day": day,
        "complete": complete,
        "firmware_version": after.version,
        "version_changed": t.version_changed,
        "vendor": c.vendor,
        "model": c.model,
        "site_id": c.site_id,
        "observed_s": t.observed.total_seconds(),
        "connected_s": t.connected.total_seconds(),
        "available_s": t.available.total_seconds(),
        "offline_episodes": t.offline_episodes,
        "reconnects": t.reconnects,
        "faults": t.fault_count,
        "faults_by_code": dict(t.faults),
        "sessions": t.sessions,
        "failed_sessions": t.failed_sessions,
        "repairs": t.repairs,
        "repair_s": t.repair_time.total_seconds(),
        "repair_s2": t.repair_s2,
        "end_state": after.to_json(),
    }
