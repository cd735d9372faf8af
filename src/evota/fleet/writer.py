"""Write-behind batching of what chargers report.

The gateway's per-message hot path must not wait for the database (DESIGN principle 4): status,
meter and event writes are queued here and flushed together every ``interval`` seconds in one
transaction, and ``last_seen`` is coalesced to one write per charger per flush period. A failed
flush is retried, so a database hiccup delays data but does not drop it.

While the database is unreachable (a PostgreSQL restart) everything stays queued in order and
is written when it is back; :attr:`FleetWriter.database_error` says why meanwhile (``/healthz``:
degraded). The queue is bounded: charger and session fields coalesce per charger and session,
and the two lists that grow with every message, status history and charger events, together
hold at most ``max_backlog`` rows. Beyond that the *oldest* rows are shed (status history
before events, counted in :attr:`FleetWriter.shed`), so a long outage costs the oldest
history, never the memory of the node or the latest state of a connector.

What a charger sent must never stop the writer (every charger's data would then be lost
until restart): queued data is bounded on the way in (:mod:`evota.fleet.bounds`), an item
the database refuses is written alone, logged with its charger and dropped, and log lines
about it use formatting that cannot raise. Should the task end anyway, it is restarted
(at most ``MAX_RESTARTS`` times a minute) and ``/healthz`` reports it (:meth:`problem`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import bindparam, insert, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.clock import Clock
from evota.fleet.bounds import STORED, bound, clean_optional, clean_text, safe_text
from evota.store.db import sqlite_writer_engine
from evota.store.models import Charger as ChargerRow
from evota.store.models import ChargerEvent, ChargingSession, Connector, ConnectorStatus

log = structlog.get_logger(__name__)

#: Restarts of an ended writer task allowed per minute; beyond that it stays down and
#: ``/healthz`` fails, so the operator's supervisor restarts the process.
MAX_RESTARTS = 5
#: ``charger_events.status`` column width.
_EVENT_STATUS_CHARS = 64


#: SQLSTATE classes of a database that is away rather than refusing an item: connection
#: exceptions (08) and operator intervention (57P01 shutdown, 57P02 crash, 57P03 starting up).
_AWAY_SQLSTATES = ("08", "57P")


def unavailable(exc: BaseException) -> bool:
    """The database is away (refused, reset, restarting), as opposed to refusing an item.

    Queued writes are kept for the first and dropped item by item for the second, so this
    must not mistake an outage for a bad item: asyncpg reports a refused connection as a bare
    ``ConnectionRefusedError``, not SQLAlchemy's ``OperationalError``, and a PostgreSQL
    restart once dropped every report queued meanwhile as "refused by the database".
    """
    if isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        cause = exc.orig.__cause__ if exc.orig is not None else None
        code = getattr(cause, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return isinstance(code, str) and code.startswith(_AWAY_SQLSTATES)
    return False


@dataclass
class _Batch:
    """Queued writes taken out of the queue together."""

    history: list[StatusRow]
    events: list[dict[str, Any]]
    chargers: dict[str, dict[str, Any]]
    sessions: dict[tuple[str, int], dict[str, Any]]  # (charger id, session id) -> fields
    last_seen: dict[str, datetime]

    @property
    def empty(self) -> bool:
        return not (self.history or self.events or self.chargers or self.sessions or self.last_seen)

    def split(self) -> list[_Batch]:
        """One batch per item, in queue order."""
        return (
            [_Batch([row], [], {}, {}, {}) for row in self.history]
            + [_Batch([], [row], {}, {}, {}) for row in self.events]
            + [_Batch([], [], {cid: f}, {}, {}) for cid, f in self.chargers.items()]
            + [_Batch([], [], {}, {txn: f}, {}) for txn, f in self.sessions.items()]
            + [_Batch([], [], {}, {}, {cid: ts}) for cid, ts in self.last_seen.items()]
        )

    def charger_id(self) -> str:
        """The charger a one-item batch of :meth:`split` belongs to (for the log)."""
        if self.history:
            return str(self.history[0][0])
        if self.events:
            return str(self.events[0].get("charger_id"))
        for cid in (*self.chargers, *self.last_seen):
            return str(cid)
        for cid, _ in self.sessions:
            return str(cid)
        return "?"

    def remove(self, single: _Batch) -> None:
        """Forget an item of :meth:`split` once it is written or dropped."""
        if single.history:
            self.history.remove(single.history[0])
        if single.events:
            self.events.remove(single.events[0])
        for cid in single.chargers:
            self.chargers.pop(cid, None)
        for txn in single.sessions:
            self.sessions.pop(txn, None)
        for cid in single.last_seen:
            self.last_seen.pop(cid, None)


#: A connector status change, in the column order of ConnectorStatus.
StatusRow = tuple[str, int, str, str, str | None, str | None, datetime | None, datetime]
_STATUS_FIELDS = (
    "charger_id",
    "connector_id",
    "status",
    "error_code",
    "info",
    "vendor_error_code",
    "charger_timestamp",
    "received_at",
)


class FleetWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        interval: float = 0.25,
        last_seen_interval: float = 5.0,
        max_backlog: int = 1_000_000,
    ) -> None:
        self._engine = engine
        self.max_backlog = max_backlog
        self._sync_engine = sqlite_writer_engine(engine)
        self._clock = clock
        self._interval = interval
        self._last_seen_interval = last_seen_interval
        self._history: list[StatusRow] = []
        self._events: list[dict[str, Any]] = []
        self._chargers: dict[str, dict[str, Any]] = {}
        self._sessions: dict[tuple[str, int], dict[str, Any]] = {}
        self._last_seen: dict[str, datetime] = {}
        self._inflight_chargers: dict[str, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._last_seen_flushed = clock.monotonic()
        self.failures = 0
        self.dropped = 0
        self.shed = 0  # rows shed from a full backlog (oldest first)
        self._shedding = False
        self.database_error: str | None = None  # the database is unreachable: why
        self.restarts = 0
        self.last_failure: str | None = None  # why the task last ended, for /healthz
        self._ended_at: list[float] = []
        self._down: str | None = None  # set when restarts are spent

    # -- queueing (sync, O(1)) -------------------------------------------------------------
    def status(self, row: StatusRow) -> None:
        """Queue a connector status change; the latest per connector is derived at flush."""
        if row[4] is not None or row[5] is not None:  # the charger's free text: 50 chars
            row = (*row[:4], clean_optional(row[4], 50), clean_optional(row[5], 50), *row[6:])
        self._history.append(row)
        if len(self._history) + len(self._events) > self.max_backlog:
            self._shed()

    def event(self, row: dict[str, Any]) -> None:
        """Queue a charger event; its ``data`` is bounded here (:data:`bounds.STORED`)."""
        status = row.get("status")
        if status is not None:
            row["status"] = clean_text(str(status), _EVENT_STATUS_CHARS)
        data = row.get("data")
        if data:
            row["data"] = bound(data, STORED)
        self._events.append(row)
        if len(self._history) + len(self._events) > self.max_backlog:
            self._shed()

    def _shed(self) -> None:
        """Drop the oldest rows over the bound, and a hundredth of it more, so shedding is
        not paid on every message: status history first, then events."""
        over = len(self._history) + len(self._events) - self.max_backlog
        if over <= 0:
            return
        over += self.max_backlog // 100
        history = min(over, len(self._history))
        del self._history[:history]
        events = min(over - history, len(self._events))
        del self._events[:events]
        self.shed += history + events
        if not self._shedding:
            self._shedding = True
            log.error(
                "fleet write backlog full: shedding the oldest status history and events",
                max_backlog=self.max_backlog,
                database=self.database_error,
            )

    def charger(self, charger_id: str, **fields: Any) -> None:
        for name, value in fields.items():
            if isinstance(value, str):
                fields[name] = clean_text(value)
        self._chargers.setdefault(charger_id, {}).update(fields)

    def session(self, charger_id: str, transaction_id: int, **fields: Any) -> None:
        """Queue a change to a session of ``charger_id``: a transactionId a charger sends is
        only ever matched among its own sessions, never another charger's."""
        self._sessions.setdefault((charger_id, transaction_id), {}).update(fields)

    def seen(self, charger_id: str, at: datetime) -> None:
        self._last_seen[charger_id] = at

    def pending_charger_fields(self, charger_id: str) -> dict[str, Any]:
        """Charger fields queued or being written: lets a reconnect see its own recent boot."""
        return {
            **self._inflight_chargers.get(charger_id, {}),
            **self._chargers.get(charger_id, {}),
        }

    @property
    def backlog(self) -> int:
        return len(self._history) + len(self._events) + len(self._chargers) + len(self._sessions)

    # -- flushing ---------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="fleet-writer")
        self._task.add_done_callback(self._ended)

    def problem(self) -> str | None:
        """Why the writer is not running, or None while it runs (``/healthz``)."""
        if self._down is not None:
            return self._down
        if self._task is None or self._task.done():
            return "the fleet writer is not running"
        return None

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The task ended: expected on stop, otherwise a defect. Restart it, within limits."""
        if self._stopping.is_set():
            return
        if task.cancelled():
            reason = "cancelled"
        else:
            exc = task.exception()
            reason = safe_text(exc) if exc is not None else "returned"
        self.last_failure = reason
        now = time.monotonic()
        self._ended_at = [t for t in self._ended_at if now - t < 60.0] + [now]
        if len(self._ended_at) > MAX_RESTARTS:
            self._down = f"the fleet writer ended {len(self._ended_at)} times in a minute: {reason}"
            log.critical("fleet writer stopped for good", reason=reason, backlog=self.backlog)
            return
        self.restarts += 1
        log.error("fleet writer ended; restarting it", reason=reason, restarts=self.restarts)
        self.start()

    async def stop(self) -> None:
        """Write everything still queued. The loop is asked to finish rather than cancelled,
        because cancelling a write mid-transaction can leave SQLite locked."""
        self._stopping.set()
        if self._task:
            await asyncio.wait([self._task])  # a task that ended badly must not stop the flush
            self._task = None
        async with self._flush_lock:
            try:
                await self._flush(include_last_seen=True)
            except Exception as exc:
                if unavailable(exc):
                    raise
                await self._flush_isolating()
        if self._sync_engine is not None:
            self._sync_engine.dispose()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)
            due = self._clock.monotonic() - self._last_seen_flushed >= self._last_seen_interval
            try:
                try:
                    await self.flush(include_last_seen=due)
                except Exception as exc:
                    if unavailable(exc):
                        raise
                    # Some queued item cannot be written (e.g. it references a deleted
                    # charger): write item by item so one bad item does not hold the rest back.
                    self._failed(exc)
                    async with self._flush_lock:
                        await self._flush_isolating()
            except Exception as exc:
                if unavailable(exc):
                    # The database is unreachable or busy: everything stays queued; retry.
                    if self.database_error is None:
                        log.error("database unreachable: charger writes are queued")
                    self.database_error = safe_text(exc)[:200]
                # else a defect in the isolation itself: keep the loop alive
                self._failed(exc)
                if not self._stopping.is_set():
                    await asyncio.sleep(min(5.0, self._interval * 10))

    def _failed(self, exc: BaseException) -> None:
        """Log a failed write. Not ``log.exception``: rendering the traceback's locals or an
        error that quotes the parameters may itself fail on what a charger sent."""
        self.failures += 1
        log.error("fleet write failed", error=safe_text(exc), backlog=self.backlog)

    async def flush(self, include_last_seen: bool = True) -> None:
        async with self._flush_lock:
            await self._flush(include_last_seen)

    def _take(self, include_last_seen: bool) -> _Batch:
        batch = _Batch(self._history, self._events, self._chargers, self._sessions, {})
        self._history, self._events, self._chargers, self._sessions = [], [], {}, {}
        if include_last_seen:
            batch.last_seen, self._last_seen = self._last_seen, {}
            self._last_seen_flushed = self._clock.monotonic()
        self._inflight_chargers = batch.chargers
        return batch

    def _restore(self, batch: _Batch) -> None:
        """Put a batch back in front of newer data, so a retry keeps the order."""
        self._history[:0] = batch.history
        self._events[:0] = batch.events
        for cid, fields in batch.chargers.items():
            self._chargers[cid] = {**fields, **self._chargers.get(cid, {})}
        for txn, fields in batch.sessions.items():
            self._sessions[txn] = {**fields, **self._sessions.get(txn, {})}
        for cid, ts in batch.last_seen.items():
            self._last_seen.setdefault(cid, ts)
        if len(self._history) + len(self._events) > self.max_backlog:
            self._shed()

    async def _flush(self, include_last_seen: bool) -> None:
        batch = self._take(include_last_seen)
        try:
            await self._write(batch)
        except BaseException:
            self._restore(batch)
            raise
        finally:
            self._inflight_chargers = {}

    async def _flush_isolating(self) -> None:
        """Write each queued item in its own transaction; log and drop the ones that fail."""
        batch = self._take(include_last_seen=True)
        try:
            for single in batch.split():
                try:
                    await self._write(single)
                except Exception as exc:
                    if unavailable(exc):
                        raise
                    self.dropped += 1
                    log.error(
                        "dropping a charger report the database refuses",
                        charger_id=single.charger_id(),
                        item=_describe(single),
                        error=safe_text(exc),
                    )
                batch.remove(single)
        except BaseException:
            self._restore(batch)
            raise
        finally:
            self._inflight_chargers = {}

    async def _write(self, batch: _Batch) -> None:
        if batch.empty:
            return
        if self._sync_engine is not None:
            await asyncio.to_thread(self._write_in_thread, batch)
        else:
            async with self._engine.begin() as conn:
                await conn.run_sync(self._write_batch, batch)
        if self.database_error is not None or self._shedding:
            log.info("database writes resumed", backlog=self.backlog, shed=self.shed)
            self.database_error = None
            self._shedding = False

    def _write_in_thread(self, batch: _Batch) -> None:
        assert self._sync_engine is not None
        with self._sync_engine.begin() as conn:
            self._write_batch(conn, batch)

    def _write_batch(self, conn: Connection, batch: _Batch) -> None:
        """All of a batch in one transaction, with as few statements as possible."""
        latest = {(row[0], row[1]): row for row in batch.history}  # the last change wins
        connectors = [
            {
                "charger_id": row[0],
                "connector_id": row[1],
                "status": row[2],
                "error_code": row[3],
                "info": row[4],
                "vendor_error_code": row[5],
                "updated_at": row[7],
            }
            for row in latest.values()
        ]
        for charger_id, fields in batch.chargers.items():
            conn.execute(update(ChargerRow).where(ChargerRow.id == charger_id).values(**fields))
        if batch.last_seen:
            conn.execute(
                update(ChargerRow)
                .where(ChargerRow.id == bindparam("cid"))
                .values(last_seen=bindparam("ts")),
                [{"cid": c, "ts": t} for c, t in batch.last_seen.items()],
            )
        if connectors:
            conn.execute(self._upsert_connectors(conn.dialect.name), connectors)
        if batch.history:
            _insert_history(conn, batch.history)
        if batch.events:
            conn.execute(insert(ChargerEvent), batch.events)
        for (cid, txn), fields in batch.sessions.items():
            conn.execute(
                update(ChargingSession)
                .where(ChargingSession.id == txn, ChargingSession.charger_id == cid)
                .values(**fields)
            )

    @staticmethod
    def _upsert_connectors(dialect: str) -> Any:
        mod = postgresql if dialect == "postgresql" else sqlite
        stmt = mod.insert(Connector)
        cols = ("status", "error_code", "info", "vendor_error_code", "updated_at")
        return stmt.on_conflict_do_update(
            index_elements=["charger_id", "connector_id"],
            set_={c: stmt.excluded[c] for c in cols},
        )


def _describe(single: _Batch) -> str:
    """What a one-item batch holds, for the log: which kind of write, never its payload."""
    if single.history:
        return f"status connector={safe_text(single.history[0][1], 24)}"
    if single.events:
        return f"event kind={safe_text(single.events[0].get('kind'), 40)}"
    if single.chargers:
        return "charger fields " + safe_text(sorted(next(iter(single.chargers.values()))), 200)
    if single.sessions:
        return f"session {safe_text(next(iter(single.sessions))[1], 24)}"
    return "last_seen"


_HISTORY_SQL = "INSERT INTO {table} ({columns}) VALUES ({values})"


def _sqlite_ts(value: datetime | None) -> str | None:
    """The text form SQLAlchemy's SQLite DateTime stores (naive UTC, microseconds)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.isoformat(sep=" ", timespec="microseconds")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(sep=" ", timespec="microseconds")[:26]


def _insert_history(conn: Connection, history: list[StatusRow]) -> None:
    """Insert status history with one driver-level executemany.

    This is the largest write of a busy gateway (one row per status change); SQLAlchemy's
    per-row parameter processing cost about a fifth of the gateway's CPU at 18k msg/s, so the
    rows go to the driver as prepared tuples (docs/performance.md).
    """
    dialect = conn.dialect
    if dialect.paramstyle == "qmark":
        marks = ", ".join("?" * len(_STATUS_FIELDS))
    else:  # numeric_dollar (asyncpg)
        marks = ", ".join(f"${i + 1}" for i in range(len(_STATUS_FIELDS)))
    sql = _HISTORY_SQL.format(
        table=ConnectorStatus.__tablename__, columns=", ".join(_STATUS_FIELDS), values=marks
    )
    if dialect.name == "sqlite":
        params: list[tuple[Any, ...]] = [
            (*row[:6], _sqlite_ts(row[6]), _sqlite_ts(row[7])) for row in history
        ]
    else:
        params = list(history)
    conn.exec_driver_sql(sql, params)
