"""The anomaly monitor: feeds committed audit entries to the pure rules and raises alerts.

Each alert is stored (``alerts`` table: the console badge and ``GET /api/v1/alerts``),
counted (``evota_alerts_total{rule}``) and audited (``alert.raised`` by ``system``). Entries
by ``system`` and ``alert.*`` entries are not fed back, so an alert never triggers another.
On start the windows are rebuilt from the audit log and the quiet periods from the alerts
table, so a restart neither forgets two of three resets nor repeats an alert.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from evota import metrics
from evota.audit import anomalies, security_events
from evota.audit.chain import Entry
from evota.audit.log import SYSTEM, Actor, AuditLog, Recorded
from evota.clock import Clock
from evota.store.models import Alert, AuditCharger, AuditEntry, ChargerEvent

log = structlog.get_logger("evota.alerts")

_BATCH = 2000


class AlertMonitor:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        audit: AuditLog,
        thresholds: anomalies.Thresholds,
        *,
        rules_engine: AsyncEngine | None = None,
    ) -> None:
        self.engine = engine
        # The rules run on the runner leader (observe, security_event): what they raise is
        # written fenced in a cluster (evota.cluster.fence). raise_alert is any node's.
        self._rules_engine = rules_engine or engine
        self.clock = clock
        self.audit = audit
        self.state = anomalies.State(thresholds)
        self._running = False
        # Security events chargers report (evota.audit.security_events): decided on the hot
        # path, stored by tasks that stop() waits for.
        self.security = security_events.State(security_events.Thresholds())
        self._raising: set[asyncio.Task[Any]] = set()
        # Cluster mode: every node's entries reach the leader's rules through the event relay
        # (evota.cluster.events calls observe), so the local listener stands aside.
        self.local_audit = True
        self._replayed_seq = 0  # the last entry the windows were rebuilt from

    async def start(self) -> None:
        await self._rebuild()
        await self._rebuild_security()
        if not self._running:
            self._running = True
            self.audit.listen(self._heard)

    async def stop(self) -> None:
        self._running = False  # AuditLog has no unlisten: the listener just goes quiet
        await self.drain()

    async def drain(self) -> None:
        """Wait until every security alert decided so far is stored."""
        while self._raising:
            await asyncio.gather(*self._raising, return_exceptions=True)

    def security_event(
        self,
        charger_id: str,
        event_type: str,
        tech_info: str | None = None,
        charger_timestamp: datetime | None = None,
    ) -> None:
        """A charger's SecurityEventNotification (called by the fleet service, must not
        block): the pure rule decides now, the alert is written by a task."""
        if not self._running:
            return
        now = self.clock.now()
        event = security_events.Reported(charger_id, event_type, now, tech_info, charger_timestamp)
        self.security, raised = security_events.observe(self.security, event, now)
        if raised is None:
            return
        alert = anomalies.Alert(
            security_events.RULE,
            raised.subject,
            raised.at,
            raised.message,
            chargers=(raised.subject,),
            detail=raised.detail,
        )
        task = asyncio.get_running_loop().create_task(self._raise_logged(alert))
        self._raising.add(task)
        task.add_done_callback(self._raising.discard)

    async def _raise_logged(self, alert: anomalies.Alert) -> None:
        try:
            await self._raise(alert, self._rules_engine)
        except Exception:  # the database is down: the event itself is still stored
            log.exception("could not raise alert", rule=alert.rule, subject=alert.subject)

    async def _rebuild_security(self) -> None:
        """Quiet periods and per-charger caps from the security alerts already raised, and
        the windows of repeated types from the stored events, so a restart neither repeats
        an alert nor forgets the first of two log clearings."""
        now = self.clock.now()
        t = self.security.thresholds
        state = security_events.State(t)
        async with self.engine.connect() as conn:
            raised = (
                await conn.execute(
                    select(Alert.subject, Alert.detail, Alert.created_at)
                    .where(Alert.rule == security_events.RULE, Alert.created_at > now - t.quiet)
                    .order_by(Alert.id)
                )
            ).all()
            repeated = (
                await conn.execute(
                    select(ChargerEvent.charger_id, ChargerEvent.status, ChargerEvent.received_at)
                    .where(
                        ChargerEvent.kind == "security_event",
                        ChargerEvent.status.in_(sorted(security_events.REPEATED)),
                        ChargerEvent.received_at > now - t.repeats_window,
                    )
                    .order_by(ChargerEvent.id)
                )
            ).all()
        for row in raised:
            kind = (row.detail or {}).get("event")
            if isinstance(kind, str):
                state = security_events.fired(state, row.subject, kind, row.created_at)
        for ev in repeated:
            reported = security_events.Reported(ev.charger_id, ev.status, ev.received_at)
            state = security_events.counted(state, reported)
        self.security = security_events.prune(state, now)

    async def _heard(self, recorded: Recorded) -> None:
        if not self._running or not self.local_audit:
            return
        event = anomalies.event_of(recorded.entry, recorded.chargers)
        if event is None:
            return
        await self.observe(event)

    async def observe(self, event: anomalies.Event, seq: int | None = None) -> None:
        """Feed one audit event to the rules (this node's, or any node's in a cluster). An
        entry the start already replayed (``seq``: relayed events a new leader finds waiting)
        counts once."""
        if not self._running or (seq is not None and seq <= self._replayed_seq):
            return
        self.state, alerts = anomalies.observe(self.state, event, self.clock.now())
        for alert in alerts:
            await self._raise(alert, self._rules_engine)

    async def raise_alert(self, alert: anomalies.Alert) -> int:
        """Raise an alert decided outside the audit rules (the gateway's failed charger keys);
        the caller keeps its own quiet period."""
        return await self._raise(alert, self.engine)

    async def _raise(self, alert: anomalies.Alert, engine: AsyncEngine) -> int:
        detail = {"subject": alert.subject, **alert.detail}
        if alert.chargers:
            detail["chargers"] = list(alert.chargers)
        async with engine.begin() as conn:
            result = await conn.execute(
                insert(Alert).values(
                    rule=alert.rule,
                    subject=alert.subject,
                    message=alert.message[:500],
                    detail=detail,
                    created_at=alert.at,
                )
            )
            alert_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        metrics.ALERTS.labels(alert.rule).inc()
        log.warning("alert raised", rule=alert.rule, subject=alert.subject, alert_id=alert_id)
        await self.audit.record(
            SYSTEM,
            "alert.raised",
            alert.rule,
            target=str(alert_id),
            chargers=alert.chargers,
            reason=alert.message[:1000],
            detail={"alert_id": alert_id, "rule": alert.rule, **detail},
        )
        return alert_id

    async def _rebuild(self) -> None:
        """Replay the audit entries of the longest window, then restore quiet periods from
        the alerts actually raised (replayed firings are not real ones)."""
        now = self.clock.now()
        since = now - self.state.thresholds.lookback
        state = anomalies.State(self.state.thresholds)
        replayed = 0
        async for entry, chargers in _recent(self.engine, since):
            self._replayed_seq = max(self._replayed_seq, entry.seq)
            event = anomalies.event_of(entry, chargers)
            if event is None:
                continue
            state, _ = anomalies.observe(state, event, max(event.at, state.swept or event.at))
            replayed += 1
        state = replace(state, quiet={})
        async with self.engine.connect() as conn:
            raised = (
                await conn.execute(
                    select(Alert.rule, Alert.subject, Alert.created_at)
                    .where(Alert.created_at > since)
                    .order_by(Alert.id)
                )
            ).all()
        for row in raised:
            if row.rule in anomalies.AUDIT_RULES:
                state = anomalies.fired(state, row.rule, row.subject, row.created_at)
        self.state = anomalies.prune(state, now)
        log.info("alert windows rebuilt", entries=replayed, alerts=len(raised))


async def _recent(engine: AsyncEngine, since: datetime) -> AsyncIterator[tuple[Entry, list[str]]]:
    """(entry, charger ids) of the entries the rules count, since ``since``, in order."""
    last = 0
    counted = or_(AuditEntry.action.like("command.%"), AuditEntry.action == "auth.login")
    while True:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(AuditEntry)
                    .where(AuditEntry.id > last, AuditEntry.at > since, counted)
                    .order_by(AuditEntry.id)
                    .limit(_BATCH)
                )
            ).all()
            ids = [r.id for r in rows]
            links: dict[int, list[str]] = {}
            if ids:
                for link in (
                    await conn.execute(
                        select(AuditCharger.entry_id, AuditCharger.charger_id).where(
                            AuditCharger.entry_id.in_(ids)
                        )
                    )
                ).all():
                    links.setdefault(link.entry_id, []).append(link.charger_id)
        if not rows:
            return
        for row in rows:
            yield _entry(row), links.get(row.id, [])
        last = rows[-1].id


def _entry(row: Any) -> Entry:
    return Entry(
        seq=row.seq,
        at=row.at,
        actor=row.actor,
        role=row.role,
        action=row.action,
        outcome=row.outcome,
        target=row.target,
        reason=row.reason,
        request_id=row.request_id,
        detail=row.detail or {},
    )


class UnknownAlert(LookupError):
    pass


class AlreadyAcknowledged(Exception):
    def __init__(self, by: str | None, at: datetime | None) -> None:
        super().__init__(f"acknowledged by {by} at {at.isoformat() if at else '?'}")
        self.by = by
        self.at = at


async def acknowledge(
    engine: AsyncEngine,
    clock: Clock,
    audit: AuditLog,
    alert_id: int,
    actor: Actor,
    note: str | None = None,
) -> dict[str, Any]:
    """Mark an alert seen; the update only matches an open alert, so two operators
    acknowledging at once get one success and one :class:`AlreadyAcknowledged`."""
    now = clock.now()
    async with engine.begin() as conn:
        row = (await conn.execute(select(Alert).where(Alert.id == alert_id))).first()
        if row is None:
            raise UnknownAlert(alert_id)
        detail = dict(row.detail or {})
        if note:
            detail["ack_note"] = note
        done = await conn.execute(
            update(Alert)
            .where(Alert.id == alert_id, Alert.acknowledged_at.is_(None))
            .values(acknowledged_by=actor.name, acknowledged_at=now, detail=detail)
        )
        if done.rowcount == 0:
            raise AlreadyAcknowledged(row.acknowledged_by, row.acknowledged_at)
        fresh = (await conn.execute(select(Alert).where(Alert.id == alert_id))).one()
    await audit.record(
        actor,
        "alert.acknowledged",
        "acknowledged",
        target=str(alert_id),
        reason=note,
        detail={"alert_id": alert_id, "rule": row.rule, "subject": row.subject},
    )
    return dict(fresh._mapping)
