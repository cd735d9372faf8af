"""Four-eyes approvals: the inbox, decisions, and the answer a route gives when an action
must wait for a second operator (202 with ``state: awaiting_approval``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from evota.api import leader_calls
from evota.api.deps import (
    Principal,
    RuntimeDep,
    authorize_charger,
    authorize_chargers,
    charger_places,
    require,
)
from evota.api.params import Limit, Offset, Uuid, text
from evota.api.problems import AUTHENTICATED, Problem, problems
from evota.api.schemas import Page
from evota.operators import four_eyes
from evota.operators.approvals import ApprovalError
from evota.operators.four_eyes import ApprovalState
from evota.operators.permissions import ChargerPlace
from evota.runtime import Runtime
from evota.store.models import Approval, Operation, Site

router = APIRouter(prefix="/api/v1/approvals", tags=["approvals"], responses=AUTHENTICATED)
STATES = tuple(ApprovalState)


class AwaitingApproval(BaseModel):
    """The answer to an action that waits for a second operator."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "state": "awaiting_approval",
                    "approval_id": "6f1c2f5e-9a4b-4d0c-8a61-2b8f3c1d7e90",
                    "action": "campaign.start",
                }
            ]
        }
    )
    state: Literal["awaiting_approval"]
    approval_id: str
    action: str


AWAITING: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "The action waits for a second operator's approval",
        "model": AwaitingApproval,
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
    details_hidden: bool = Field(
        False,
        description="payload and result left out: the caller may see the request but not do "
        "its action",
    )


class DecisionIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"note": "checked the image report"}]}
    )
    note: str | None = Field(None, max_length=1000)


_SECRET = {"auth_salt", "auth_hash", "password", "password_hash"}


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("[redacted]" if k in _SECRET else _redact(v)) for k, v in value.items()}
    return value


def _out(rt: Runtime, row: Any, seen: four_eyes.Visibility) -> dict[str, Any]:
    data = dict(row._mapping)
    data["payload"] = _redact(data.get("payload") or {}) if seen.details else {}
    if not seen.details:
        data["result"] = {}
    data["details_hidden"] = not seen.details
    pending = four_eyes.Pending(
        row.id, row.action, row.requested_by, ApprovalState(row.state), row.expires_at
    )
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


@router.get("", response_model=Page[ApprovalOut])
async def list_approvals(
    rt: RuntimeDep,
    who: Principal = require("fleet.read"),
    state: str | None = text("one of " + ", ".join(STATES), 16),
    action: str | None = text("e.g. campaign.start, operation.start", 64),
    requested_by: str | None = text("who asked", 100),
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Requests the caller could see the target of, newest first (``state=pending``: the
    inbox); payload and result only where the caller holds the action's permission."""
    if state is not None and state not in STATES:
        raise Problem(422, "Invalid request", f"unknown state {state!r}", "state")
    query = select(Approval)
    if action is not None:
        query = query.where(Approval.action == action)
    if requested_by is not None:
        query = query.where(Approval.requested_by == requested_by)
    now = rt.clock.now()
    if state == ApprovalState.PENDING:
        query = query.where(Approval.state == ApprovalState.PENDING, Approval.expires_at > now)
    elif state == ApprovalState.EXPIRED:
        query = query.where(
            (Approval.state == ApprovalState.EXPIRED)
            | ((Approval.state == ApprovalState.PENDING) & (Approval.expires_at <= now))
        )
    elif state is not None:
        query = query.where(Approval.state == state)
    async with rt.engine.connect() as conn:
        rows = (await conn.execute(query.order_by(Approval.created_at.desc()))).all()
    # Filtered here, not in SQL: whether a request is visible depends on its target's place.
    seen = await visibilities(rt, who, rows)
    visible = [(r, v) for r, v in zip(rows, seen, strict=True) if v.listed]
    return {
        "items": [_out(rt, r, v) for r, v in visible[offset : offset + limit]],
        "total": len(visible),
        "limit": limit,
        "offset": offset,
    }


def _charger_ids(row: Any, operations: dict[str, list[str]]) -> list[str] | None:
    """The chargers a charger-level request acts on (None: a fleet-wide target)."""
    payload = row.payload or {}
    if four_eyes.READ_FOR.get(row.action) != "fleet.read":
        return None
    if "charger_id" in payload:
        return [str(payload["charger_id"])]
    return operations.get(str(payload.get("operation_id")), [])


async def visibilities(
    rt: Runtime, who: Principal, rows: Sequence[Any]
) -> list[four_eyes.Visibility]:
    """What ``who`` may see of each request (see :func:`four_eyes.visibility`)."""
    op_ids = {
        str((r.payload or {}).get("operation_id"))
        for r in rows
        if r.action == "operation.start" and (r.payload or {}).get("operation_id")
    }
    operations: dict[str, list[str]] = {}
    if op_ids:
        async with rt.engine.connect() as conn:
            found = await conn.execute(
                select(Operation.id, Operation.charger_ids).where(Operation.id.in_(sorted(op_ids)))
            )
            operations = {o.id: list(o.charger_ids or []) for o in found}
    wanted = {c for r in rows for c in (_charger_ids(r, operations) or [])}
    places = await charger_places(rt, wanted)
    out = []
    for r in rows:
        ids = _charger_ids(r, operations)
        targets: list[ChargerPlace] | None = None
        if ids:
            targets = [places[c] for c in ids if c in places] or None
        out.append(four_eyes.visibility(who.grants, r.action, targets, who.site_limit))
    return out


async def _load(rt: Runtime, approval_id: str, who: Principal) -> tuple[Any, four_eyes.Visibility]:
    """The request and what ``who`` may see of it; 404 also when its target is out of sight."""
    row = await rt.approvals.get(approval_id)
    seen = (await visibilities(rt, who, [row]))[0] if row is not None else None
    if row is None or seen is None or not seen.listed:
        raise Problem(404, "Unknown approval", f"no approval {approval_id!r}", "approval_id")
    return row, seen


@router.get("/{approval_id}", response_model=ApprovalOut, responses=problems(404))
async def get_approval(
    approval_id: Uuid, rt: RuntimeDep, who: Principal = require("fleet.read")
) -> dict[str, Any]:
    """One request (404 if the caller could not see its target)."""
    return _out(rt, *await _load(rt, approval_id, who))


async def _may_decide(rt: Runtime, who: Principal, row: Any) -> None:
    """The approver must be allowed to do the action themselves."""
    permission = four_eyes.PERMISSION_FOR.get(row.action, "approval.decide")
    payload = row.payload or {}
    if "charger_id" in payload:
        place = await authorize_charger(rt, who, permission, payload["charger_id"])
        changes = payload.get("changes") or {}
        if "site_id" in changes:  # the change also moves the charger: scope over both ends
            async with rt.engine.connect() as conn:
                region = (
                    await conn.execute(select(Site.region).where(Site.id == changes["site_id"]))
                ).scalar()
            who.check(
                "charger.write", ChargerPlace(place.id, changes["site_id"], region, place.tags)
            )
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
    row, _seen = await _load(rt, approval_id, who)
    await _may_decide(rt, who, row)
    try:
        await leader_calls.call(
            rt,
            "approvals.decide",
            approval_id=approval_id,
            decider=leader_calls.actor_json(who.actor),
            approve=approve,
            note=body.note if body else None,
        )
    except ApprovalError as exc:
        status = 403 if exc.reason == "self_approval" else 409
        raise Problem(
            status, "Decision refused", str(exc), "approval_id", reason=exc.reason
        ) from None
    return _out(rt, *await _load(rt, approval_id, who))


_DECIDE = problems(404, 409)


@router.post("/{approval_id}/approve", response_model=ApprovalOut, responses=_DECIDE)
async def approve(
    approval_id: Uuid,
    rt: RuntimeDep,
    who: Principal = require("approval.decide"),
    body: DecisionIn | None = None,
) -> dict[str, Any]:
    """Approve another operator's request; the action runs at once and its result is kept."""
    return await _decide(rt, who, approval_id, True, body)


@router.post("/{approval_id}/reject", response_model=ApprovalOut, responses=_DECIDE)
async def reject(
    approval_id: Uuid,
    rt: RuntimeDep,
    who: Principal = require("approval.decide"),
    body: DecisionIn | None = None,
) -> dict[str, Any]:
    return await _decide(rt, who, approval_id, False, body)
