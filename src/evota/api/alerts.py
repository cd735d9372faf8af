"""Anomaly alerts over HTTP: the list, the console badge (open counts) and acknowledging."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from evota.api.deps import Principal, RuntimeDep, require
from evota.api.pages import fetch_page
from evota.api.params import AwareInstant, IntId, Limit, Offset, text
from evota.api.problems import AUTHENTICATED, Problem, problems
from evota.audit import alerts as monitor
from evota.audit import anomalies, security_events
from evota.evidence import regression
from evota.store.models import Alert

#: Every rule that raises alerts: the audit-log rules, the chargers' security events and the
#: firmware regression check after each KPI rollup (evota.evidence.regression).
RULES = (*anomalies.RULES, security_events.RULE, regression.RULE)

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"], responses=AUTHENTICATED)


class AlertOut(BaseModel):
    id: int
    rule: str
    subject: str
    message: str
    detail: dict[str, Any]
    created_at: datetime
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    open: bool


class AlertPage(BaseModel):
    items: list[AlertOut]
    total: int
    limit: int
    offset: int


class AlertSummary(BaseModel):
    open: dict[str, int] = Field(description="alerts not yet acknowledged, by rule")
    total_open: int


class AckIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"note": "charger replaced"}]}
    )
    note: str | None = Field(None, max_length=500, description="why it is fine, or what was done")


def _out(data: dict[str, Any]) -> dict[str, Any]:
    data["detail"] = data.get("detail") or {}
    data["open"] = data["acknowledged_at"] is None
    return data


@router.get("", response_model=AlertPage)
async def list_alerts(
    rt: RuntimeDep,
    _who: Principal = require("alert.read"),
    rule: str | None = text(f"one of {', '.join(RULES)}", 64),
    subject: str | None = text("charger id, operator, user:<name> or client:<address>", 100),
    open: bool | None = Query(None, description="true: not acknowledged; false: acknowledged"),
    since: AwareInstant | None = Query(None, description="raised at or after (with offset)"),
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Alerts, newest first."""
    if rule is not None and rule not in RULES:
        raise Problem(422, "Unknown rule", f"rule must be one of {', '.join(RULES)}", "rule")
    query = select(Alert)
    if rule is not None:
        query = query.where(Alert.rule == rule)
    if subject is not None:
        query = query.where(Alert.subject == subject)
    if open is not None:
        query = query.where(
            Alert.acknowledged_at.is_(None) if open else Alert.acknowledged_at.is_not(None)
        )
    if since is not None:
        query = query.where(Alert.created_at >= since)
    total, rows = await fetch_page(rt.engine, query, Alert.id.desc(), limit, offset)
    return {
        "items": [_out(dict(r._mapping)) for r in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


@router.get("/summary", response_model=AlertSummary)
async def alert_summary(rt: RuntimeDep, _who: Principal = require("alert.read")) -> dict[str, Any]:
    """Open alerts by rule: the console's badge."""
    async with rt.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(Alert.rule, func.count())
                .where(Alert.acknowledged_at.is_(None))
                .group_by(Alert.rule)
            )
        ).all()
    counts = dict.fromkeys(RULES, 0) | {r[0]: int(r[1]) for r in rows}
    return {"open": counts, "total_open": sum(counts.values())}


@router.post("/{alert_id}/acknowledge", response_model=AlertOut, responses=problems(404, 409))
async def acknowledge_alert(
    alert_id: IntId,
    request: Request,
    rt: RuntimeDep,
    who: Principal = require("alert.ack"),
    body: AckIn | None = None,
) -> dict[str, Any]:
    """Mark an alert as seen (404 unknown, 409 already acknowledged); audited."""
    note = body.note if body else None
    try:
        row = await monitor.acknowledge(rt.engine, rt.clock, rt.audit, alert_id, who.actor, note)
    except monitor.UnknownAlert:
        raise Problem(404, "Unknown alert", f"no alert with id {alert_id}", "alert_id") from None
    except monitor.AlreadyAcknowledged as exc:
        raise Problem(
            409,
            "Already acknowledged",
            str(exc),
            "alert_id",
            acknowledged_by=exc.by,
            acknowledged_at=exc.at.isoformat() if exc.at else None,
        ) from None
    request.state.audited = True
    return _out(row)
