"""Database reads for remote-resolution analytics: the shell around
:mod:`evota.evidence.resolution`.

Actions are the audit log's ``command.*`` entries (one per command sent: single commands,
every charger of a bulk operation, tagged ``operation:<id>``, and firmware jobs' sends),
linked to their charger through ``audit_chargers``; those that never reached the charger
(offline, unsupported) are left out. Each read is narrowed by ``scoped``, a filter over a
query on ``chargers`` (the API passes :func:`evota.api.deps.scope_filter` for the caller),
so a scoped operator's numbers count only its own chargers; actions on chargers that no
longer exist are left out too. Long reads go in keyset chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Select, and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from evota.evidence import resolution as rs
from evota.store.models import (
    AuditCharger,
    AuditEntry,
    Charger,
    ChargingSession,
    ConnectorStatus,
)

Scoped = Callable[[Select[Any]], Select[Any]]
CHUNK = 5000
IDS = 500  # charger ids per IN (...) list
MAX_RANGE = timedelta(days=366)
DEFAULT_RANGE = timedelta(days=30)
_PREFIX = "command."


@dataclass(frozen=True, slots=True)
class Inputs:
    """Everything :func:`evota.evidence.resolution.report` needs, for one caller's scope."""

    actions: list[rs.Action]
    reports: list[rs.StatusReport]
    sessions: list[rs.SessionStart]
    facts: dict[str, rs.ChargerFacts]


def _source(actor: str, request_id: str | None) -> str:
    if request_id and request_id.startswith("operation:"):
        return request_id
    return "job" if actor == "system" else "command"


async def _actions(conn: AsyncConnection, since: datetime, until: datetime) -> list[rs.Action]:
    out: list[rs.Action] = []
    last = 0
    while True:
        rows = (
            await conn.execute(
                select(
                    AuditEntry.id,
                    AuditEntry.at,
                    AuditEntry.action,
                    AuditEntry.outcome,
                    AuditEntry.actor,
                    AuditEntry.request_id,
                    AuditCharger.charger_id,
                )
                .join(AuditCharger, AuditCharger.entry_id == AuditEntry.id)
                .where(
                    AuditEntry.id > last,
                    AuditEntry.action.startswith(_PREFIX),
                    AuditEntry.at >= since,
                    AuditEntry.at < until,
                )
                .order_by(AuditEntry.id)
                .limit(CHUNK)
            )
        ).all()
        for r in rows:
            if rs.reached_charger(r.outcome):
                kind = r.action[len(_PREFIX) :]
                out.append(rs.Action(r.charger_id, r.at, kind, _source(r.actor, r.request_id)))
        if len(rows) < CHUNK:
            return out
        last = rows[-1].id


async def _facts(
    conn: AsyncConnection, ids: Sequence[str], scoped: Scoped
) -> dict[str, rs.ChargerFacts]:
    facts: dict[str, rs.ChargerFacts] = {}
    for i in range(0, len(ids), IDS):
        query = cast(
            Select[Any],
            select(Charger.id, Charger.model, Charger.vendor, Charger.site_id).where(
                Charger.id.in_(ids[i : i + IDS])
            ),
        )
        for r in await conn.execute(scoped(query)):
            facts[r.id] = rs.ChargerFacts(r.model, r.vendor, r.site_id)
    return facts


async def _reports(
    conn: AsyncConnection, ids: Sequence[str], since: datetime, end: datetime
) -> list[rs.StatusReport]:
    """Each connector's latest report before ``since`` (what it was when the range began),
    then every report from ``since`` to ``end``, in the order received."""
    out: list[rs.StatusReport] = []
    cols = (
        ConnectorStatus.id,
        ConnectorStatus.charger_id,
        ConnectorStatus.connector_id,
        ConnectorStatus.status,
        ConnectorStatus.error_code,
        ConnectorStatus.received_at,
    )
    for i in range(0, len(ids), IDS):
        chunk = ids[i : i + IDS]
        latest = (
            select(func.max(ConnectorStatus.id).label("id"))
            .where(ConnectorStatus.charger_id.in_(chunk), ConnectorStatus.received_at < since)
            .group_by(ConnectorStatus.charger_id, ConnectorStatus.connector_id)
            .subquery()
        )
        rows = list(
            await conn.execute(
                select(*cols).join(latest, latest.c.id == ConnectorStatus.id).order_by(cols[0])
            )
        )
        last = 0
        while True:
            batch = (
                await conn.execute(
                    select(*cols)
                    .where(
                        ConnectorStatus.charger_id.in_(chunk),
                        ConnectorStatus.id > last,
                        and_(
                            ConnectorStatus.received_at >= since, ConnectorStatus.received_at <= end
                        ),
                    )
                    .order_by(ConnectorStatus.id)
                    .limit(CHUNK)
                )
            ).all()
            rows.extend(batch)
            if len(batch) < CHUNK:
                break
            last = batch[-1].id
        out.extend(
            rs.StatusReport(r.charger_id, r.connector_id, r.status, r.error_code, r.received_at)
            for r in rows
        )
    return out


async def _sessions(
    conn: AsyncConnection, ids: Sequence[str], since: datetime, end: datetime
) -> list[rs.SessionStart]:
    out: list[rs.SessionStart] = []
    for i in range(0, len(ids), IDS):
        rows = await conn.execute(
            select(ChargingSession.charger_id, ChargingSession.started_at).where(
                ChargingSession.charger_id.in_(ids[i : i + IDS]),
                ChargingSession.started_at >= since,
                ChargingSession.started_at <= end,
            )
        )
        out.extend(rs.SessionStart(r.charger_id, r.started_at) for r in rows)
    return out


async def resolution_inputs(
    engine: AsyncEngine,
    scoped: Scoped,
    *,
    since: datetime,
    until: datetime,
    window: timedelta,
    now: datetime,
) -> Inputs:
    """The actions in ``[since, until)`` on chargers in scope, with the reports and sessions
    that judge them: up to each window's end and the repeat window after it (never past
    ``now``)."""
    end = min(until + window + rs.REPEAT_WINDOW, now)
    async with engine.connect() as conn:
        actions = await _actions(conn, since, until)
        ids = sorted({a.charger_id for a in actions})
        facts = await _facts(conn, ids, scoped)
        actions = [a for a in actions if a.charger_id in facts]
        ids = sorted(facts)
        reports = await _reports(conn, ids, since, end)
        sessions = await _sessions(conn, ids, since, end)
    return Inputs(actions, reports, sessions, facts)
