"""Four-eyes approvals: the inbox, decisions, and the answer a route gives when an action
must wait for a second operator (202 with ``state: awaiting_approval``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from evota.api.deps import Principal, RuntimeDep, authorize_charger, authorize_chargers, require
from evota.api.pages import fetch_page
from evota.api.problems import Problem
from evota.operators import four_eyes
from evota.operators.approvals import ApprovalError
from evota.runtime import Runtime
from evota.store.models import Approval, Operation

router = APIRouter(prefix="/api/v1/approvals", tags=["approvals"])

AWAITING: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "The action waits for a second operator's approval",
        "content": {
            "application/json": {
                "example": {"state": "awaiting_approval", "approval_id": "6f1c…", "action": "…"}
            }
        },
    }
}


class ApprovalOut(BaseModel):
    id: str
    action: str
    summary: str
    payload: dict[str, Any]
    charger_count: int
    state: str
    requested_by: str
    reason: str
    created_at: datetime
    expires_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None
    result: dict[str, Any]


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str | None = Field(None, max_length=1000)


_SECRET = {"auth_salt", "auth_hash"}


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("[redacted]" if k in _SECRET else _redact(v)) for k, v in value.items()}
    return value


def _out(rt: Runtime, row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    data["payload"] = _redact(data.get("payload") or {})
    pending = four_eyes.Pending(row.id, row.action, row.requested_by, row.state, row.expires_at)
    data["state"] = four_eyes.state_at(pending, rt.clock.now())
    return data


async def awaiting(
    rt: Runtime,
    who: Principal,
    action: str,
    summary: str,
    payload: dict[str, Any],
    reason: str | None,
    charger_count: int = 0,
) -> JSONResponse:
    """Create the request and the 202 answer for an action that needs approval."""
    if not reason:
        raise Problem(422, "Reason required", f"{action} needs approval: give a reason", "reason")
    approval_id = await rt.approvals.request(
        who.actor, action, summary, payload, reason, charger_count
    )
    return JSONResponse(
        {"state": "awaiting_approval", "approval_id": approval_id, "action": action},
        status_code=202,
    )


@router.get("")
async def list_approvals(
    rt: RuntimeDep,
    _who: Principal = require("fleet.read"),
    state: str | None = Query(None, description="pending, approved, executed, rejected, …"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    query = select(Approval)
    now = rt.clock.now()
    if state == "pending":
        query = query.where(Approval.state == "pending", Approval.expires_at > now)
    elif state == "expired":
        query = query.where(
            (Approval.state == "expired")
            | ((Approval.state == "pending") & (Approval.expires_at <= now))
        )
    elif state is not None:
        query = query.where(Approval.state == state)
    total, rows = await fetch_page(rt.engine, query, Approval.created_at.desc(), limit, offset)
    return {
        "items": [_out(rt, r) for r in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


async def _load(rt: Runtime, approval_id: str) -> Any:
    row = await rt.approvals.get(approval_id)
    if row is None:
        raise Problem(404, "Unknown approval", f"no approval {approval_id!r}", "approval_id")
    return row


@router.get("/{approval_id}", response_model=ApprovalOut)
async def get_approval(
    approval_id: str, rt: RuntimeDep, _who: Principal = require("fleet.read")
) -> dict[str, Any]:
    return _out(rt, await _load(rt, approval_id))


async def _may_decide(rt: Runtime, who: Principal, row: Any) -> None:
    """The approver must be allowed to do the action themselves."""
    permission = four_eyes.PERMISSION_FOR.get(row.action, "approval.decide")
    payload = row.payload or {}
    if "charger_id" in payload:
        await authorize_charger(rt, who, permission, payload["charger_id"])
    elif row.action == "operation.start":
        async with rt.engine.connect() as conn:
            ids = (
                await conn.execute(
                    select(Operation.charger_ids).where(Operation.id == payload.get("operation_id"))
                )
            ).scalar() or []
        denied = await authorize_chargers(rt, who, permission, ids)
        if denied:
            raise Problem(
                403,
                "Forbidden",
                f"{permission} is not granted for {len(denied)} of the chargers",
                permission=permission,
                chargers=denied[:50],
            )
    else:
        who.check(permission)


async def _decide(
    rt: Runtime, who: Principal, approval_id: str, approve: bool, body: DecisionIn | None
) -> dict[str, Any]:
    row = await _load(rt, approval_id)
    await _may_decide(rt, who, row)
    try:
        await rt.approvals.decide(approval_id, who.actor, approve, body.note if body else None)
    except ApprovalError as exc:
        status = 403 if exc.reason == "self_approval" else 409
        raise Problem(
            status, "Decision refused", str(exc), "approval_id", reason=exc.reason
        ) from None
    return _out(rt, await _load(rt, approval_id))


@router.post("/{approval_id}/approve", response_model=ApprovalOut)
async def approve(
    approval_id: str,
    rt: RuntimeDep,
    who: Principal = require("approval.decide"),
    body: DecisionIn | None = None,
) -> dict[str, Any]:
    """Approve another operator's request; the action runs at once and its result is kept."""
    return await _decide(rt, who, approval_id, True, body)


@router.post("/{approval_id}/reject", response_model=ApprovalOut)
async def reject(
    approval_id: str,
    rt: RuntimeDep,
    who: Principal = require("approval.decide"),
    body: DecisionIn | None = None,
) -> dict[str, Any]:
    return await _decide(rt, who, approval_id, False, body)
