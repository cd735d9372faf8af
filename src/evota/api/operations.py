"""Bulk operations: one catalog command to a query of chargers, in stages, with a stop at a
failure threshold; operations on many chargers wait for a second operator (202)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import select

from evota.api import leader_calls
from evota.api.deps import Principal, RuntimeDep, authorize_chargers, require, scope_filter
from evota.api.pages import fetch_page
from evota.api.params import PRINTABLE, Limit, Offset, Uuid, text
from evota.api.problems import AUTHENTICATED, Problem, problems
from evota.api.schemas import Page
from evota.control import catalog
from evota.control import operation as op
from evota.control.operations import OperationConflict, OperationRunner, public
from evota.runtime import Runtime
from evota.store.models import Operation

router = APIRouter(prefix="/api/v1/operations", tags=["operations"], responses=AUTHENTICATED)

EXAMPLE: dict[str, Any] = {
    "command": "reset",
    "params": {"type": "Soft"},
    "target": {"sites": ["berlin-1"], "models": ["AC22"]},
    "stages": [5],
    "max_failure_rate": 0.2,
    "rate_per_second": 5,
    "reason": "clear the stuck metering after the 2.4.1 hotfix",
}


Item = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=PRINTABLE)]
Items = Annotated[list[Item], Field(max_length=100_000)]
StageSize = Annotated[int, Field(le=10_000_000, description="at least 1")]
"""A stage size; below 1 is refused by the operation itself, naming ``stages[i]``."""


class TargetIn(BaseModel):
    """Which chargers: the filters combine with AND, a list matches any of its values."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"sites": ["berlin-1"], "models": ["AC22"]}]},
    )
    charger_ids: Items | None = None
    sites: Items | None = None
    regions: Items | None = None
    vendors: Items | None = None
    models: Items | None = None
    tags: Items | None = None
    firmware_versions: Items | None = None
    connected: bool | None = Field(None, description="only (dis)connected chargers")

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class OperationIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE]})
    command: str = Field(min_length=1, max_length=64, description="a catalog command name")
    params: dict[str, Any] = Field(default_factory=dict, description="the command's parameters")
    target: TargetIn
    stages: list[StageSize] | None = Field(
        None,
        max_length=50,
        description="stage sizes in order (the rest forms a last stage); default 10 % first",
    )
    max_failure_rate: float = Field(0.2, ge=0, le=1, description="stop above this share")
    rate_per_second: float = Field(10.0, gt=0, le=op.MAX_RATE)
    reason: str = Field(min_length=1, max_length=1000, description="why (required)")


class CancelIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "wrong parameters"}]}
    )
    reason: str = Field("", max_length=1000)


class OperationOut(BaseModel):
    """An operation as lists show it (secrets in parameters left out)."""

    id: str
    command: str
    params: dict[str, Any]
    target: dict[str, Any]
    chargers: int = Field(description="how many chargers it covers")
    stage_sizes: list[int]
    current_stage: int
    max_failure_rate: float
    rate_per_second: float
    state: str
    state_reason: str | None
    reason: str
    approval_id: str | None
    profile_id: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class StageOut(BaseModel):
    index: int
    size: int
    state: str = Field(description="pending, running, finishing, done or skipped")
    results: dict[str, int]


class ResultOut(BaseModel):
    charger_id: str
    stage: int
    state: str
    status: str | None = Field(description="the charger's answer")
    detail: dict[str, Any]
    at: datetime | None


class OperationDetail(OperationOut):
    """An operation with its progress and one page of per-charger results."""

    progress: dict[str, int] = Field(description="chargers by result state")
    stages: list[StageOut]
    results: list[ResultOut]
    results_total: int


def runner(rt: Runtime) -> OperationRunner:
    operations: OperationRunner = rt.operations
    return operations


def invalid(exc: op.OperationError) -> Problem:
    return Problem(422, "Invalid operation", str(exc), exc.field)


async def targeted(
    rt: Runtime, who: Principal, target: TargetIn, permissions: tuple[str, ...]
) -> tuple[op.Query, list[str]]:
    """The chargers ``target`` selects among those ``who`` can see; 422 for unknown explicit
    ids or an empty result, 403 listing the chargers a permission is missing for."""
    try:
        query = op.query_from_dict(target.as_dict())
    except op.OperationError as exc:
        raise invalid(exc) from None
    if query.empty:
        raise Problem(422, "Invalid operation", "give at least one filter", "target")
    ids, missing = await runner(rt).resolve(query, scope_filter(who))
    if missing:
        raise Problem(
            422,
            "Unknown chargers",
            f"no chargers with ids {', '.join(missing[:10])}",
            "target.charger_ids",
            chargers=missing[:50],
        )
    if not ids:
        raise Problem(422, "Invalid operation", "the target matches no chargers", "target")
    await forbid_denied(rt, who, ids, permissions)
    return query, ids


async def forbid_denied(
    rt: Runtime, who: Principal, ids: list[str], permissions: tuple[str, ...]
) -> None:
    for permission in dict.fromkeys(permissions):
        denied = await authorize_chargers(rt, who, permission, ids)
        if denied:
            raise Problem(
                403,
                "Forbidden",
                f"{permission} is not granted to {who.name} for {len(denied)} of the chargers",
                permission=permission,
                chargers=denied[:50],
                denied=len(denied),
            )


def created(result: dict[str, Any], body: dict[str, Any]) -> JSONResponse:
    """201 for a running operation, 202 when it waits for a second operator."""
    status = 202 if result["state"] == op.OperationState.AWAITING_APPROVAL else 201
    return JSONResponse(
        jsonable_encoder({**body, **result}),
        status_code=status,
        headers={"Location": f"/api/v1/operations/{result['id']}"},
    )


CREATED: dict[int | str, dict[str, Any]] = {
    202: {"description": "Waits for a second operator's approval", "model": OperationDetail}
}


@router.post(
    "",
    status_code=201,
    response_model=OperationDetail,
    responses={**CREATED, **problems(403)},
)
async def create_operation(
    body: OperationIn,
    request: Request,
    rt: RuntimeDep,
    who: Principal = require("operation.write"),
) -> JSONResponse:
    """Start an operation, or (on more chargers than ``EVOTA_APPROVAL_CHARGER_THRESHOLD``)
    ask a second operator to approve it: 202 with ``state: awaiting_approval``."""
    reason = body.reason.strip()
    request.state.audit_reason = reason or None
    if not reason:
        raise Problem(422, "Reason required", "say why in 'reason'", "reason")
    spec = catalog.get(body.command)
    if spec is None:
        raise Problem(
            422,
            "Unknown command",
            f"no command {body.command!r} (see the catalog: {', '.join(sorted(catalog.COMMANDS))})",
            "command",
        )
    _query, ids = await targeted(rt, who, body.target, ("operation.write", spec.permission))
    request.state.audited = True  # the runner records operation.created with the chargers
    try:
        result = await leader_calls.call(
            rt,
            "operations.create",
            actor=leader_calls.actor_json(who.actor),
            command=body.command,
            params=body.params,
            charger_ids=ids,
            reason=reason,
            target=_query.to_dict(),
            stages=body.stages,
            max_failure_rate=body.max_failure_rate,
            rate_per_second=body.rate_per_second,
        )
    except op.OperationError as exc:
        request.state.audited = False
        raise invalid(exc) from None
    described = await runner(rt).describe(result["id"], limit=0)
    return created(result, described or {})


@router.get("", response_model=Page[OperationOut])
async def list_operations(
    rt: RuntimeDep,
    _who: Principal = require("operation.read"),
    state: str | None = text("one of " + ", ".join(op.OperationState), 24),
    command: str | None = text("a catalog command name", 64),
    profile_id: str | None = text("operations applying this configuration profile", 36),
    created_by: str | None = text("who started it", 100),
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Operations, newest first."""
    if state is not None and state not in frozenset(op.OperationState):
        raise Problem(422, "Invalid request", f"unknown state {state!r}", "state")
    query = select(Operation)
    if state:
        query = query.where(Operation.state == state)
    if command:
        query = query.where(Operation.command == command)
    if profile_id:
        query = query.where(Operation.profile_id == profile_id)
    if created_by:
        query = query.where(Operation.created_by == created_by)
    total, rows = await fetch_page(rt.engine, query, Operation.created_at.desc(), limit, offset)
    return {
        "items": [public(r) for r in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


@router.get("/{operation_id}", response_model=OperationDetail, responses=problems(404))
async def get_operation(
    operation_id: Uuid,
    rt: RuntimeDep,
    _who: Principal = require("operation.read"),
    result_state: str | None = Query(
        None,
        alias="results",
        max_length=16,
        description="only results in this state: " + ", ".join(op.ResultState),
    ),
    limit: int = Query(500, ge=0, le=5000, description="per-charger results per page"),
    offset: Offset = 0,
) -> dict[str, Any]:
    """Progress per result state and per stage, and a page of per-charger results."""
    if result_state is not None and result_state not in frozenset(op.ResultState):
        raise Problem(422, "Invalid request", f"unknown result state {result_state!r}", "results")
    found = await runner(rt).describe(
        operation_id, result_state=result_state, limit=limit, offset=offset
    )
    if found is None:
        raise Problem(404, "Unknown operation", f"no operation {operation_id!r}", "operation_id")
    return found


@router.post("/{operation_id}/cancel", response_model=OperationDetail, responses=problems(404, 409))
async def cancel_operation(
    operation_id: Uuid,
    request: Request,
    rt: RuntimeDep,
    who: Principal = require("operation.write"),
    body: CancelIn | None = None,
) -> dict[str, Any]:
    """Stop sending; chargers not yet sent are skipped, answers on their way are recorded."""
    reason = (body.reason if body else "").strip() or "cancelled"
    async with rt.engine.connect() as conn:
        ids = (
            await conn.execute(select(Operation.charger_ids).where(Operation.id == operation_id))
        ).scalar()
    unknown = Problem(404, "Unknown operation", f"no operation {operation_id!r}", "operation_id")
    # an operation reaching chargers the caller cannot see reads as unknown (its charger ids
    # are not listed in a 403), one it can see but not change is 403
    if ids is None or await authorize_chargers(rt, who, "fleet.read", ids):
        raise unknown
    await forbid_denied(rt, who, list(ids), ("operation.write",))
    request.state.audited = True
    try:
        await leader_calls.call(
            rt,
            "operations.cancel",
            operation_id=operation_id,
            actor=leader_calls.actor_json(who.actor),
            reason=reason,
        )
    except LookupError:
        raise Problem(
            404, "Unknown operation", f"no operation {operation_id!r}", "operation_id"
        ) from None
    except OperationConflict as exc:
        request.state.audited = False
        raise Problem(409, "Not possible now", str(exc), "state") from None
    found = await runner(rt).describe(operation_id, limit=0)
    assert found is not None
    return found
