"""CSMS root rotation (issue 16 §7, docs/security-profiles.md "Rotating the CSMS root"):
start (the new root to the fleet, staged, stop on failure; four eyes as any bulk operation),
status, switch the server certificate, finish (remove the old root), stop.

Fleet-wide: a rotation touches every charger and the listener's certificate, so every route
needs ``firmware.trust`` (the security admin's right over trusted roots) without a scope
limit; a scoped grant gets 403. Unsafe moves are 409 problems naming what is missing (the
chargers that lack the new root, those that have not reconnected). Calls are audited by the
middleware; the background end of a rotation writes its own entry.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from evota.api import leader_calls
from evota.api.auditing import note
from evota.api.deps import Principal, RuntimeDep, require
from evota.api.params import Uuid
from evota.api.problems import AUTHENTICATED, Problem, problems
from evota.control import operation as op
from evota.control.rotation import RotationConflict
from evota.pki.rotation import RotationError

router = APIRouter(prefix="/api/v1", tags=["certificates"], responses=AUTHENTICATED)

PERMISSION = "firmware.trust"
BASE = "/certificates/root-rotation"


class RotationIn(BaseModel):
    new_root: str = Field(min_length=1, max_length=10_000, description="PEM: the new CSMS root")
    old_root: str = Field(
        min_length=1, max_length=10_000, description="PEM: the root the server chains to now"
    )
    reason: str = Field(min_length=1, max_length=1000)
    charger_ids: list[str] | None = Field(
        None, max_length=100_000, description="the chargers (default: every charger)"
    )
    stages: list[int] | None = Field(None, max_length=100, description="stage sizes")
    min_share: float = Field(
        1.0,
        gt=0,
        le=1,
        description="share of connected targeted chargers that must hold the "
        "new root before the switch",
    )
    rate_per_second: float = Field(10.0, gt=0, le=1000)


class ReasonIn(BaseModel):
    reason: str = Field(min_length=1, max_length=1000)


class RootOut(BaseModel):
    subject: str
    serial: str
    sha256: str
    not_after: datetime


class RotationOut(BaseModel):
    id: str
    state: str = Field(
        description="awaiting_approval, installing, switched, removing, finished or stopped"
    )
    reason: str
    new_root: RootOut
    old_root: RootOut
    chargers: int
    min_share: float
    install_operation_id: str | None
    install_state: str | None
    remove_operation_id: str | None
    remove_state: str | None
    holding_new_root: int = Field(description="connected targeted chargers holding it")
    connected: int
    lacking_new_root: list[str]
    switch_problem: str | None = Field(description="why the switch is refused now (null: ready)")
    not_reconnected: list[str]
    finish_problem: str | None = Field(description="why the removal is refused now (null: ready)")
    created_by: str
    created_at: datetime
    switched_at: datetime | None
    finished_at: datetime | None


class MoveOut(BaseModel):
    id: str
    state: str
    detail: dict[str, Any] = Field(default_factory=dict)


def _conflict(exc: RotationConflict) -> Problem:
    return Problem(409, "Rotation refused", exc.message, None, **exc.detail)


def _unknown(rotation_id: str) -> Problem:
    return Problem(404, "Not found", f"no root rotation {rotation_id}", "rotation_id")


@router.post(
    BASE,
    response_model=MoveOut,
    status_code=201,
    responses={**problems(409), 202: {"model": MoveOut, "description": "awaiting approval"}},
)
async def start_rotation(
    body: RotationIn,
    request: Request,
    response: Response,
    rt: RuntimeDep,
    who: Principal = require(PERMISSION),
) -> MoveOut:
    """Start a rotation: the new root goes to the chargers in stages; the first charger that
    does not hold it afterwards (inventory) stops the installation. With
    ``certificate.rotate-root`` in EVOTA_APPROVAL_ACTIONS (the default): 202, awaiting a
    second operator's approval."""
    try:
        out = await leader_calls.call(
            rt,
            "rotations.begin",
            actor=leader_calls.actor_json(who.actor),
            new_root=body.new_root,
            old_root=body.old_root,
            reason=body.reason,
            charger_ids=body.charger_ids,
            stages=body.stages,
            min_share=body.min_share,
            rate_per_second=body.rate_per_second,
        )
    except RotationError as exc:
        raise Problem(422, "Invalid rotation", exc.message, exc.field) from None
    except op.OperationError as exc:
        raise Problem(422, "Invalid rotation", str(exc), exc.field) from None
    except RotationConflict as exc:
        raise _conflict(exc) from None
    if "approval_id" in out:  # four eyes: nothing is sent before a second operator approves
        note(request, "root_rotation", out["id"], None, {"approval_id": out["approval_id"]})
        response.status_code = 202
        detail = {"approval_id": out["approval_id"], "action": "certificate.rotate-root"}
        return MoveOut(id=out["id"], state=out["state"], detail=detail)
    install = out["install_operation"]
    note(request, "root_rotation", out["id"], None, {"install_operation_id": install["id"]})
    return MoveOut(id=out["id"], state=out["state"], detail=install)


@router.get(BASE, response_model=RotationOut, responses=problems(404))
async def current_rotation(rt: RuntimeDep, _who: Principal = require(PERMISSION)) -> RotationOut:
    """The newest rotation, with what its next move waits for."""
    found = await rt.rotations.status()
    if found is None:
        raise Problem(404, "Not found", "no root rotation yet")
    return RotationOut.model_validate(found)


@router.get(f"{BASE}/{{rotation_id}}", response_model=RotationOut, responses=problems(404))
async def rotation(
    rotation_id: Uuid, rt: RuntimeDep, _who: Principal = require(PERMISSION)
) -> RotationOut:
    found = await rt.rotations.status(rotation_id)
    if found is None:
        raise _unknown(rotation_id)
    return RotationOut.model_validate(found)


@router.post(f"{BASE}/{{rotation_id}}/switch", response_model=MoveOut, responses=problems(404, 409))
async def switch_rotation(
    rotation_id: Uuid, rt: RuntimeDep, _who: Principal = require(PERMISSION)
) -> MoveOut:
    """Put the server certificate under the new root in place (``<EVOTA_OCPP_TLS_CERT>.next``
    and ``<EVOTA_OCPP_TLS_KEY>.next``); 409 while any connected charger lacks the new root."""
    try:
        out = await leader_calls.call(rt, "rotations.switch", rotation_id=rotation_id)
    except KeyError:
        raise _unknown(rotation_id) from None
    except RotationConflict as exc:
        raise _conflict(exc) from None
    return MoveOut(id=out["id"], state=out["state"], detail={"reconnecting": out["reconnecting"]})


@router.post(f"{BASE}/{{rotation_id}}/finish", response_model=MoveOut, responses=problems(404, 409))
async def finish_rotation(
    rotation_id: Uuid, body: ReasonIn, rt: RuntimeDep, who: Principal = require(PERMISSION)
) -> MoveOut:
    """Remove the old root from the chargers (staged, stop on failure); 409 before the switch
    or while a charger has not reconnected under the new certificate."""
    try:
        out = await leader_calls.call(
            rt,
            "rotations.finish",
            actor=leader_calls.actor_json(who.actor),
            rotation_id=rotation_id,
            reason=body.reason,
        )
    except KeyError:
        raise _unknown(rotation_id) from None
    except RotationConflict as exc:
        raise _conflict(exc) from None
    except op.OperationError as exc:
        raise Problem(422, "Invalid rotation", str(exc), exc.field) from None
    return MoveOut(id=out["id"], state=out["state"], detail=out["remove_operation"])


@router.post(f"{BASE}/{{rotation_id}}/stop", response_model=MoveOut, responses=problems(404, 409))
async def stop_rotation(
    rotation_id: Uuid, rt: RuntimeDep, _who: Principal = require(PERMISSION)
) -> MoveOut:
    """End a rotation that has not switched (a new one can start then)."""
    try:
        out = await leader_calls.call(rt, "rotations.stop", rotation_id=rotation_id)
    except KeyError:
        raise _unknown(rotation_id) from None
    except RotationConflict as exc:
        raise _conflict(exc) from None
    return MoveOut(id=out["id"], state=out["state"])
