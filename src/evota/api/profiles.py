"""Configuration profiles: desired settings for the chargers a query selects, their drift
against what the chargers reported, and applying them as a staged operation."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from evota.api.deps import Principal, RuntimeDep, require, scope_filter
from evota.api.operations import created, forbid_denied, invalid, runner
from evota.api.pages import fetch_page
from evota.api.problems import Problem
from evota.control import catalog, profiles
from evota.control import operation as op
from evota.control.configuration import ConfigurationService
from evota.runtime import Runtime
from evota.store.models import ConfigProfile

router = APIRouter(prefix="/api/v1/config-profiles", tags=["configuration profiles"])

EXAMPLE: dict[str, Any] = {
    "name": "AC22 metering",
    "target": {"models": ["AC22"]},
    "settings": {"MeterValueSampleInterval": "60", "HeartbeatInterval": "300"},
}


class ProfileIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE]})
    name: str = Field(min_length=1, max_length=200)
    target: dict[str, Any] = Field(description="the same query as an operation's target")
    settings: dict[str, Any] = Field(description="configuration key -> desired value")


class ProfilePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=200)
    target: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None


class ApplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stages: list[int] | None = Field(None, max_length=50)
    max_failure_rate: float = Field(0.2, ge=0, le=1)
    rate_per_second: float = Field(10.0, gt=0, le=op.MAX_RATE)
    reason: str = Field(min_length=1, max_length=1000, description="why (required)")


def service(rt: Runtime) -> ConfigurationService:
    configuration: ConfigurationService = rt.configuration
    return configuration


def _checked(target: dict[str, Any] | None, settings: dict[str, Any] | None) -> None:
    if target is not None:
        try:
            query = op.query_from_dict(target)
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


async def _audit(
    rt: Runtime, request: Request, who: Principal, action: str, profile_id: str, detail: Any
) -> None:
    request.state.audited = True
    await rt.audit.record(
        who.actor, f"config_profile.{action}", "ok", target=profile_id, detail=detail
    )


@router.post("", status_code=201)
async def create_profile(
    body: ProfileIn, request: Request, rt: RuntimeDep, who: Principal = require("config.write")
) -> dict[str, Any]:
    _checked(body.target, body.settings)
    now = rt.clock.now()
    profile_id = str(uuid.uuid4())
    values: dict[str, Any] = {
        "id": profile_id,
        "name": body.name,
        "target": op.query_from_dict(body.target).to_dict(),
        "settings": body.settings,
        "created_by": who.name,
        "created_at": now,
        "updated_at": now,
    }
    try:
        async with rt.engine.begin() as conn:
            await conn.execute(insert(ConfigProfile).values(**values))
    except IntegrityError:
        raise Problem(
            409, "Profile exists", f"a profile named {body.name!r} exists", "name"
        ) from None
    await _audit(rt, request, who, "created", profile_id, {"name": body.name, **values["target"]})
    return _out(await _load(rt, profile_id))


@router.get("")
async def list_profiles(
    rt: RuntimeDep,
    _who: Principal = require("operation.read"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    total, rows = await fetch_page(
        rt.engine, select(ConfigProfile), ConfigProfile.name, limit, offset
    )
    return {"items": [_out(r) for r in rows], "total": total, "limit": limit, "offset": offset}


@router.get("/{profile_id}")
async def get_profile(
    profile_id: str, rt: RuntimeDep, _who: Principal = require("operation.read")
) -> dict[str, Any]:
    return _out(await _load(rt, profile_id))


@router.patch("/{profile_id}")
async def patch_profile(
    profile_id: str,
    body: ProfilePatch,
    request: Request,
    rt: RuntimeDep,
    who: Principal = require("config.write"),
) -> dict[str, Any]:
    await _load(rt, profile_id)
    _checked(body.target, body.settings)
    values: dict[str, Any] = {"updated_at": rt.clock.now()}
    if body.name is not None:
        values["name"] = body.name
    if body.target is not None:
        values["target"] = op.query_from_dict(body.target).to_dict()
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
    await _audit(rt, request, who, "updated", profile_id, {"changed": changed})
    return _out(await _load(rt, profile_id))


@router.delete("/{profile_id}", status_code=204)
async def delete_profile(
    profile_id: str, request: Request, rt: RuntimeDep, who: Principal = require("config.write")
) -> Response:
    row = await _load(rt, profile_id)
    async with rt.engine.begin() as conn:
        await conn.execute(delete(ConfigProfile).where(ConfigProfile.id == profile_id))
    await _audit(rt, request, who, "deleted", profile_id, {"name": row.name})
    return Response(status_code=204)


@router.get("/{profile_id}/drift")
async def drift(
    profile_id: str,
    rt: RuntimeDep,
    who: Principal = require("operation.read"),
    kind: str | None = Query(
        None, description="only rows of this kind: " + ", ".join(profiles.KINDS)
    ),
    limit: int = Query(1000, ge=0, le=10000),
    offset: int = Query(0, ge=0),
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
    "/{profile_id}/apply", status_code=201, responses={202: {"description": "Waits for approval"}}
)
async def apply(
    profile_id: str,
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
        result = await service(rt).apply(
            row,
            actor=who.actor,
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
