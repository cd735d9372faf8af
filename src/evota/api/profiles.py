"""Configuration profiles: desired settings for the chargers a query selects, their drift
against what the chargers reported, and applying them as a staged operation."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from evota.api import leader_calls
from evota.api.deps import Principal, RuntimeDep, require, scope_filter, target_allowed
from evota.api.operations import (
    CREATED,
    OperationDetail,
    StageSize,
    TargetIn,
    created,
    forbid_denied,
    invalid,
    runner,
)
from evota.api.pages import fetch_page
from evota.api.params import BigLimit, Limit, Offset, Uuid, text
from evota.api.problems import AUTHENTICATED, Problem, problems
from evota.api.schemas import Page
from evota.audit.changes import diff
from evota.control import catalog, profiles
from evota.control import operation as op
from evota.control.configuration import ConfigurationService
from evota.runtime import Runtime
from evota.store.models import ConfigProfile

router = APIRouter(
    prefix="/api/v1/config-profiles", tags=["configuration profiles"], responses=AUTHENTICATED
)

EXAMPLE: dict[str, Any] = {
    "name": "AC22 metering",
    "target": {"models": ["AC22"]},
    "settings": {"MeterValueSampleInterval": "60", "HeartbeatInterval": "300"},
}


_SETTINGS = (
    f"configuration key (1-{profiles.MAX_KEY} characters) -> desired value "
    f"(a string of at most {profiles.MAX_VALUE}); at most {profiles.MAX_SETTINGS} keys"
)


class ProfileIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE]})
    name: str = Field(min_length=1, max_length=200)
    target: TargetIn = Field(description="the same query as an operation's target")
    settings: dict[str, str] = Field(description=_SETTINGS)


class ProfilePatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"settings": {"MeterValueSampleInterval": "30"}}]},
    )
    name: Annotated[str, Field(min_length=1, max_length=200)] | SkipJsonSchema[None] = None
    target: TargetIn | SkipJsonSchema[None] = None
    settings: dict[str, str] | SkipJsonSchema[None] = Field(None, description=_SETTINGS)


class ProfileOut(BaseModel):
    id: str
    name: str
    target: dict[str, Any]
    settings: dict[str, str]
    created_by: str
    created_at: datetime
    updated_at: datetime


class DriftRow(BaseModel):
    charger_id: str
    key: str
    desired: str
    actual: str | None
    kind: str = Field(description=", ".join(profiles.KINDS))
    fixable: bool = Field(description="ChangeConfiguration can fix it")


class DriftOut(BaseModel):
    """How the chargers a profile covers (that the caller can see) differ from it."""

    profile_id: str
    name: str
    chargers: int
    in_sync: int
    drifted: int
    not_fetched: int = Field(description="chargers whose configuration evota has not read yet")
    fixable: int
    by_kind: dict[str, int]
    not_fetched_ids: list[str] = Field(description="the first 100 of them")
    rows: list[DriftRow]
    rows_total: int


class ApplyIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"reason": "metering every minute", "stages": [5]}]},
    )
    stages: list[StageSize] | None = Field(None, max_length=50)
    max_failure_rate: float = Field(0.2, ge=0, le=1)
    rate_per_second: float = Field(10.0, gt=0, le=op.MAX_RATE)
    reason: str = Field(min_length=1, max_length=1000, description="why (required)")


def service(rt: Runtime) -> ConfigurationService:
    configuration: ConfigurationService = rt.configuration
    return configuration


def _checked(target: TargetIn | None, settings: dict[str, Any] | None) -> None:
    if target is not None:
        try:
            query = op.query_from_dict(target.as_dict())
        except op.OperationError as exc:
            raise invalid(exc) from None
        if query.empty:
            raise Problem(422, "Invalid profile", "give at least one filter", "target")
    if settings is not None:
        problem = profiles.settings_problem(settings)
        if problem is not None:
            raise Problem(422, "Invalid profile", problem[1], problem[0])
        for key in settings:
            if key.casefold() in catalog.SECRET_KEYS:
                raise Problem(
                    422,
                    "Invalid profile",
                    f"{key} is a charger credential, not a profile setting",
                    f"settings.{key}",
                )


def _out(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


async def _load(rt: Runtime, profile_id: str) -> Any:
    async with rt.engine.connect() as conn:
        row = (
            await conn.execute(select(ConfigProfile).where(ConfigProfile.id == profile_id))
        ).first()
    if row is None:
        raise Problem(404, "Unknown profile", f"no profile {profile_id!r}", "profile_id")
    return row


async def _writable(rt: Runtime, who: Principal, row: Any) -> None:
    """404 unless the profile's target stays inside the caller's ``config.write`` scope: a
    scoped operator changes only profiles confined to its scope, as if others did not exist
    (a profile targeting a whole vendor, say, needs ``config.write`` fleet-wide)."""
    if not await target_allowed(rt, who, "config.write", row.target or {}):
        raise Problem(404, "Unknown profile", f"no profile {row.id!r}", "profile_id")


async def _target_writable(rt: Runtime, who: Principal, target: dict[str, Any]) -> None:
    if not await target_allowed(rt, who, "config.write", target):
        raise Problem(
            403,
            "Forbidden",
            "the target reaches chargers outside your config.write scope: confine it to your "
            "sites, regions, tags or chargers",
            "target",
            permission="config.write",
        )


async def _audit(
    rt: Runtime, request: Request, who: Principal, action: str, profile_id: str, detail: Any
) -> None:
    request.state.audited = True
    await rt.audit.record(
        who.actor,
        f"config_profile.{action}",
        "ok",
        target=profile_id,
        detail={"target_type": "config_profile", **detail},
    )


def _audited(row: Any) -> dict[str, Any]:
    """A profile as its audit entry compares it."""
    return {"name": row.name, "target": row.target, "settings": row.settings}


@router.post("", status_code=201, response_model=ProfileOut, responses=problems(409))
async def create_profile(
    body: ProfileIn, request: Request, rt: RuntimeDep, who: Principal = require("config.write")
) -> dict[str, Any]:
    _checked(body.target, body.settings)
    now = rt.clock.now()
    profile_id = str(uuid.uuid4())
    values: dict[str, Any] = {
        "id": profile_id,
        "name": body.name,
        "target": op.query_from_dict(body.target.as_dict()).to_dict(),
        "settings": body.settings,
        "created_by": who.name,
        "created_at": now,
        "updated_at": now,
    }
    await _target_writable(rt, who, values["target"])
    try:
        async with rt.engine.begin() as conn:
            await conn.execute(insert(ConfigProfile).values(**values))
    except IntegrityError:
        raise Problem(
            409, "Profile exists", f"a profile named {body.name!r} exists", "name"
        ) from None
    created = await _load(rt, profile_id)
    detail = {"name": body.name, **values["target"], "changes": diff(None, _audited(created))}
    await _audit(rt, request, who, "created", profile_id, detail)
    return _out(created)


@router.get("", response_model=Page[ProfileOut])
async def list_profiles(
    rt: RuntimeDep,
    _who: Principal = require("operation.read"),
    q: str | None = text("name contains (case-insensitive)"),
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Profiles by name."""
    query = select(ConfigProfile)
    if q:
        query = query.where(func.lower(ConfigProfile.name).contains(q.lower(), autoescape=True))
    total, rows = await fetch_page(rt.engine, query, ConfigProfile.name, limit, offset)
    return {"items": [_out(r) for r in rows], "total": total, "limit": limit, "offset": offset}


@router.get("/{profile_id}", response_model=ProfileOut, responses=problems(404))
async def get_profile(
    profile_id: Uuid, rt: RuntimeDep, _who: Principal = require("operation.read")
) -> dict[str, Any]:
    return _out(await _load(rt, profile_id))


@router.patch("/{profile_id}", response_model=ProfileOut, responses=problems(404, 409))
async def patch_profile(
    profile_id: Uuid,
    body: ProfilePatch,
    request: Request,
    rt: RuntimeDep,
    who: Principal = require("config.write"),
) -> dict[str, Any]:
    old = await _load(rt, profile_id)
    await _writable(rt, who, old)
    _checked(body.target, body.settings)
    values: dict[str, Any] = {"updated_at": rt.clock.now()}
    if body.name is not None:
        values["name"] = body.name
    if body.target is not None:
        values["target"] = op.query_from_dict(body.target.as_dict()).to_dict()
        await _target_writable(rt, who, values["target"])
    if body.settings is not None:
        values["settings"] = body.settings
    try:
        async with rt.engine.begin() as conn:
            await conn.execute(
                update(ConfigProfile).where(ConfigProfile.id == profile_id).values(**values)
            )
    except IntegrityError:
        raise Problem(
            409, "Profile exists", f"a profile named {body.name!r} exists", "name"
        ) from None
    changed = sorted(k for k in values if k != "updated_at")
    new = await _load(rt, profile_id)
    detail = {"changed": changed, "changes": diff(_audited(old), _audited(new))}
    await _audit(rt, request, who, "updated", profile_id, detail)
    return _out(new)


@router.delete("/{profile_id}", status_code=204, response_class=Response, responses=problems(404))
async def delete_profile(
    profile_id: Uuid, request: Request, rt: RuntimeDep, who: Principal = require("config.write")
) -> Response:
    row = await _load(rt, profile_id)
    await _writable(rt, who, row)
    async with rt.engine.begin() as conn:
        await conn.execute(delete(ConfigProfile).where(ConfigProfile.id == profile_id))
    detail = {"name": row.name, "changes": diff(_audited(row), None)}
    await _audit(rt, request, who, "deleted", profile_id, detail)
    return Response(status_code=204)


@router.get("/{profile_id}/drift", response_model=DriftOut, responses=problems(404))
async def drift(
    profile_id: Uuid,
    rt: RuntimeDep,
    who: Principal = require("operation.read"),
    kind: str | None = Query(
        None, max_length=16, description="only rows of this kind: " + ", ".join(profiles.KINDS)
    ),
    limit: BigLimit = 1000,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Which chargers the profile covers (that the caller can see) differ from it, how."""
    if kind is not None and kind not in profiles.KINDS:
        raise Problem(422, "Invalid request", f"unknown kind {kind!r}", "kind")
    row = await _load(rt, profile_id)
    report = await service(rt).report(row, scope_filter(who))
    rows = [r for r in report.rows if kind is None or r.kind == kind]
    return {
        "profile_id": row.id,
        "name": row.name,
        **report.counts(),
        "not_fetched_ids": list(report.not_fetched[:100]),
        "rows": [r.to_dict() for r in rows[offset : offset + limit]],
        "rows_total": len(rows),
    }


@router.post(
    "/{profile_id}/apply",
    status_code=201,
    response_model=OperationDetail,
    responses={**CREATED, **problems(403, 404, 409)},
)
async def apply(
    profile_id: Uuid,
    body: ApplyIn,
    request: Request,
    rt: RuntimeDep,
    who: Principal = require("operation.write"),
) -> JSONResponse:
    """Fix the drift on every charger in scope where ChangeConfiguration can: an operation
    (201), or a request for a second operator's approval (202) as for any operation."""
    reason = body.reason.strip()
    request.state.audit_reason = reason or None
    if not reason:
        raise Problem(422, "Reason required", "say why in 'reason'", "reason")
    row = await _load(rt, profile_id)
    report = await service(rt).report(row, scope_filter(who))
    ids = list(report.fixable)
    if not ids:
        raise Problem(
            409,
            "Nothing to fix",
            f"no charger in scope has drift ChangeConfiguration can fix "
            f"({len(report.in_sync)} in sync, {len(report.not_fetched)} not fetched yet)",
            "profile_id",
        )
    await forbid_denied(rt, who, ids, ("operation.write", "config.write"))
    request.state.audited = True
    try:
        result = await leader_calls.call(
            rt,
            "configuration.apply",
            profile_id=row.id,
            actor=leader_calls.actor_json(who.actor),
            reason=reason,
            charger_ids=ids,
            stages=body.stages,
            max_failure_rate=body.max_failure_rate,
            rate_per_second=body.rate_per_second,
        )
    except op.OperationError as exc:
        request.state.audited = False
        raise invalid(exc) from None
    described = await runner(rt).describe(result["id"], limit=0)
    return created(result, described or {})
