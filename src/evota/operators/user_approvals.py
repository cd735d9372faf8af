"""What runs when a four-eyes request about a user is approved (``user.grant``,
``user.credentials``): registered by the runtime with :class:`Approvals`, like every other
domain's executors, so the API only creates the requests."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from evota.audit.log import Actor, AuditLog
from evota.clock import Clock
from evota.operators import mfa, users
from evota.operators.approvals import Approvals
from evota.operators.permissions import Scope


def register_approvals(
    approvals: Approvals, engine: AsyncEngine, clock: Clock, audit: AuditLog
) -> None:
    """A grant of approval power, and a reset of credentials, once a second user admin
    approved it."""

    async def execute(payload: dict[str, Any], approver: Actor) -> dict[str, Any]:
        scopes = payload.get("scopes") or {}
        scope = Scope(
            frozenset(scopes.get("sites") or ()),
            frozenset(scopes.get("regions") or ()),
            frozenset(scopes.get("tags") or ()),
        )
        view = await users.update_user(
            engine,
            clock.now(),
            payload["username"],
            roles=payload["roles"],
            scope=scope,
            disabled=payload.get("disabled"),
        )
        await audit.record(
            approver,
            "user.update",
            "ok",
            target=view.username,
            detail={"roles": view.roles, "scopes": scopes, "approved": True},
        )
        return {"username": view.username, "roles": view.roles}

    approvals.register("user.grant", execute)

    async def reset(payload: dict[str, Any], approver: Actor) -> dict[str, Any]:
        name, now = payload["username"], clock.now()
        if payload.get("reset_mfa"):
            await mfa.reset_mfa(engine, now, name)
            await audit.record(approver, "user.reset_mfa", "ok", target=name)
        if payload.get("password_hash"):
            await users.set_password_hash(engine, now, name, payload["password_hash"])
            await audit.record(approver, "user.password", "ok", target=name)
        return {"username": name, "reset": "mfa" if payload.get("reset_mfa") else "password"}

    approvals.register("user.credentials", reset)
