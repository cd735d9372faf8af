"""Raising a charger's security profile without a lock-out (issue 16 §4,
:mod:`evota.control.profile_upgrades`): ``charger.write`` on the charger, as raising it in
``PATCH /chargers/{id}`` is; the commands are audited by the command path, the outcome by the
service. The request waits for the charger (at most ``deadline_seconds``)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator

from evota.api import leader_calls
from evota.api.commands import problem_for
from evota.api.deps import Principal, RuntimeDep, require, require_charger
from evota.api.operations import (
    CREATED,
    OperationDetail,
    StageSize,
    TargetIn,
    created,
    invalid,
    runner,
    targeted,
)
from evota.api.params import ChargerId
from evota.api.problems import AUTHENTICATED, Problem, problems
from evota.control import commands
from evota.control import operation as op
from evota.control.profile_upgrades import STEP, UpgradeRefused

router = APIRouter(prefix="/api/v1", tags=["chargers"], responses=AUTHENTICATED)


def _root_pem(v: str | None) -> str | None:
    if v is None:
        return v
    from cryptography import x509

    try:
        x509.load_pem_x509_certificate(v.encode())
    except Exception:  # ValueError, InvalidVersion, UnsupportedAlgorithm: all a 422
        raise ValueError("not a PEM X.509 certificate") from None
    return v


class UpgradeIn(BaseModel):
    profile: Literal[2, 3] = Field(description="the security profile to move the charger to")
    root: str | None = Field(
        None,
        max_length=5500,
        description="PEM of the CSMS root the server certificate chains to: installed first "
        "unless the charger lists it",
    )
    deadline_seconds: float = Field(
        120, ge=1, le=600, description="how long to wait for the reconnection"
    )
    reason: str | None = Field(None, max_length=1000, description="why (optional)")

    @field_validator("root")
    @classmethod
    def _pem(cls, v: str | None) -> str | None:
        return _root_pem(v)


class UpgradeOut(BaseModel):
    charger_id: str
    state: str = Field(description="upgraded, or failed (the charger keeps its old profile)")
    security_profile: int
    why: str | None = None


@router.post(
    "/chargers/{charger_id}/security-profile/upgrade",
    response_model=UpgradeOut,
    responses=problems(404, 409, 502, 504),
)
async def upgrade_security_profile(
    charger_id: ChargerId,
    body: UpgradeIn,
    request: Request,
    rt: RuntimeDep,
    who: Principal = require_charger("charger.write"),
) -> Any:
    """Install the CSMS root if needed, switch the profile, wait for the charger to reconnect
    on it, and only then enforce it (docs/security-profiles.md, "Upgrading a charger's
    security profile")."""
    reason = (body.reason or "").strip() or None
    request.state.audited = True  # the command path and the service record the entries
    request.state.audit_reason = reason
    try:
        return await leader_calls.call(
            rt,
            "profile_upgrades.upgrade",
            actor=leader_calls.actor_json(who.actor),
            charger_id=charger_id,
            profile=body.profile,
            root=body.root,
            deadline_seconds=body.deadline_seconds,
            reason=reason,
        )
    except UpgradeRefused as exc:
        raise Problem(409, "Upgrade refused", exc.message, "profile") from None
    except commands.CommandError as exc:
        raise problem_for(exc) from None


class StagedUpgradeIn(BaseModel):
    profile: Literal[2, 3] = Field(description="the security profile to move the chargers to")
    root: str | None = Field(None, max_length=5500, description="PEM of the CSMS root")
    deadline_seconds: float = Field(120, ge=1, le=600, description="per charger")
    target: TargetIn
    stages: list[StageSize] | None = Field(
        None, max_length=50, description="stage sizes in order; default 10 % first"
    )
    max_failure_rate: float = Field(
        0.0, ge=0, le=1, description="stop above this share (default: the first failure)"
    )
    reason: str = Field(min_length=1, max_length=1000, description="why (required)")

    @field_validator("root")
    @classmethod
    def _pem(cls, v: str | None) -> str | None:
        return _root_pem(v)


@router.post(
    "/security-profile/upgrades",
    status_code=201,
    response_model=OperationDetail,
    responses={**CREATED, **problems(403)},
)
async def staged_upgrade(
    body: StagedUpgradeIn,
    request: Request,
    rt: RuntimeDep,
    who: Principal = require("charger.write"),
) -> JSONResponse:
    """Upgrade many chargers as a bulk operation (command ``upgrade-security-profile``):
    staged, stopping at the first failure by default, and waiting for a second operator above
    ``EVOTA_APPROVAL_CHARGER_THRESHOLD`` chargers like any bulk operation."""
    reason = body.reason.strip()
    request.state.audit_reason = reason or None
    if not reason:
        raise Problem(422, "Reason required", "say why in 'reason'", "reason")
    query, ids = await targeted(rt, who, body.target, ("charger.write",))
    params: dict[str, Any] = {"profile": body.profile, "deadline_seconds": body.deadline_seconds}
    if body.root is not None:
        params["root"] = body.root
    request.state.audited = True  # the runner records operation.created with the chargers
    try:
        result = await leader_calls.call(
            rt,
            "operations.create",
            actor=leader_calls.actor_json(who.actor),
            command=STEP,
            params=params,
            charger_ids=ids,
            reason=reason,
            target=query.to_dict(),
            stages=body.stages,
            max_failure_rate=body.max_failure_rate,
            rate_per_second=1.0,
        )
    except op.OperationError as exc:
        request.state.audited = False
        raise invalid(exc) from None
    described = await runner(rt).describe(result["id"], limit=0)
    return created(result, described or {})
