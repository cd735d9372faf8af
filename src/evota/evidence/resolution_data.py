"""Database reads for remote-resolution analytics: the shell around
:mod:`evota.evidence.resolution`.

Actions are the audit log's ``command.*`` entries (one per command sent: single commands,
every charger of a bulk operation, tagged ``operation:<id>``, and firmware jobs' sends),
linked to their charger through ``audit_chargers``; those that never reached the charger
(offline, unsupported) are left out. Each read is narrowed by ``scoped``, a filter over a
query on ``chargers`` (the API passes :func:`evota.api.deps.scope_filter` for the caller),
so a scoped operator's numbers count only its own chargers; actions on chargers that no
longer exist are left out too.

Status histories and sessions are read only for the chargers that were Faulted before one
of their actions (two scans that return one id per Faulted report): for every other charger
the answer is "no fault before" whatever it reported. The audit log is read in keyset
chunks, histories in chunks of :data:`IDS` chargers (bench/resolution.py, docs/analytics.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Select, exists, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import aliased

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
IDS = 200  # charger ids per IN (...) list: short stalls of the event loop per chunk
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
    if actor.startswith("playbook:"):  # a self-healing playbook's run: its name@version
        return actor
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


async def _ever_faulted(
    conn: AsyncConnection, ids: Sequence[str], since: datetime, until: datetime
) -> list[str]:
    """Those of ``ids`` that could have been Faulted before an action in ``[since, until)``:
    a connector reported Faulted in that range, or its last report before ``since`` was
    Faulted. The rest had no fault before any of their actions, whatever else they
    reported, so their (much longer) histories are never read. Faults are rare: both
    questions go to the whole table at once and return one charger id per faulted charger
    (a scan in the database beats thousands of index look-ups that each fetch a row)."""
    h = ConnectorStatus
    later = aliased(ConnectorStatus)
    in_range = select(h.charger_id).where(
        h.status == rs.FAULTED, h.received_at >= since, h.received_at < until
    )
    still = ~exists().where(
        later.charger_id == h.charger_id,
        later.connector_id == h.connector_id,
        later.id > h.id,
        later.received_at < since,
    )
    before = select(h.charger_id).where(h.status == rs.FAULTED, h.received_at < since, still)
    wanted = set(ids)
    found: set[str] = set()
    for query in (in_range, before):
        # No DISTINCT: it would walk the charger index, fetching a row per report; one id per
        # Faulted report is few rows, deduplicated here.
        found.update(c for c in (await conn.execute(query)).scalars() if c in wanted)
    return sorted(found)


async def _reports(
    conn: AsyncConnection, ids: Sequence[str], since: datetime, end: datetime
) -> list[rs.StatusReport]:
    """Each connector's latest report before ``since`` (what it was when the range began),
    then every report from ``since`` to ``end``, in the order received. One query per chunk
    of chargers and per question, each through the history's charger index."""
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
        rows = list(await conn.execute(select(*cols).join(latest, latest.c.id == cols[0])))
        rows.extend(
            await conn.execute(
                select(*cols).where(
                    ConnectorStatus.charger_id.in_(chunk),
                    ConnectorStatus.received_at >= since,
                    ConnectorStatus.received_at <= end,
                )
            )
        )
        rows.sort(key=lambda r: r.id)  # the order received breaks ties between equal times
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
        # Only a charger that was Faulted before one of its actions needs its history read.
        faulted = await _ever_faulted(conn, sorted(facts), since, until)
        reports = await _reports(conn, faulted, since, end)
        # Sessions are stamped in whole seconds: one in the first action's second counts.
        sessions = await _sessions(conn, faulted, since.replace(microsecond=0), end)
    return Inputs(actions, reports, sessions, facts)
