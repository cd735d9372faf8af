"""A charger's password change (issue 16 §8, :mod:`evota.control.passwords`): evota makes a
new key, sends it (1.6 AuthorizationKey, 2.0.1 BasicAuthPassword) and switches to it only when
the charger connects with it; until then, and if it never does, the old key keeps working.
``charger.credentials`` on the charger, and four eyes when that action needs approval. The
command is audited by the command path (the key as ``(secret)``), each later step by the
service; the key itself is never shown, stored in clear or logged."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from evota.api import leader_calls
from evota.api.approvals import AWAITING, awaiting
from evota.api.commands import problem_for
from evota.api.deps import Principal, RuntimeDep, require_charger
from evota.api.params import ChargerId
from evota.api.problems import AUTHENTICATED, Problem, problems
from evota.control import commands
from evota.control.passwords import ChangePending

router = APIRouter(prefix="/api/v1", tags=["chargers"], responses=AUTHENTICATED)


class PasswordIn(BaseModel):
    reason: str | None = Field(None, max_length=1000, description="why (needed for approval)")


class PasswordOut(BaseModel):
    charger_id: str
    state: str = Field(
        description="accepted: waiting for the charger to connect with the new key (both "
        "keys work until then); rejected: the charger refused it, the old key stays; "
        "active: it already connected with the new key"
    )
    until: str | None = Field(None, description="when the old key is kept if it never does")


@router.post(
    "/chargers/{charger_id}/password",
    response_model=PasswordOut,
    responses={**AWAITING, **problems(404, 409, 502, 504)},
)
async def change_password(
    charger_id: ChargerId,
    request: Request,
    rt: RuntimeDep,
    body: PasswordIn | None = None,
    who: Principal = require_charger("charger.credentials"),
) -> Any:
    """Give the charger a new password without risking a lock-out (docs/security-profiles.md,
    "Changing a charger's password")."""
    reason = ((body.reason or "").strip() or None) if body else None
    request.state.audit_reason = reason
    if rt.approvals.required("charger.credentials"):
        return await awaiting(
            rt,
            who,
            "charger.credentials",
            f"send charger {charger_id} a new password",
            {"charger_id": charger_id, "password": True, "reason": reason},
            reason,
            charger_count=1,
        )
    request.state.audited = True  # the command path and the service record the entries
    try:
        changed: dict[str, Any] = await leader_calls.call(
            rt,
            "passwords.change",
            actor=leader_calls.actor_json(who.actor),
            charger_id=charger_id,
            reason=reason,
        )
        return changed
    except ChangePending:
        raise Problem(
            409,
            "Password change pending",
            f"charger {charger_id} has a password change waiting for its reconnection",
        ) from None
    except commands.CommandError as exc:
        raise problem_for(exc) from None
