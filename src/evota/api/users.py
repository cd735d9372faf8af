"""User administration (permission ``user.admin``, fleet-wide) and password changes.

A user holds roles; the ``scopes`` given with them apply to every role (one grant row per
role, all with the same sites/regions/tags). Every change is audited by hand with what
changed, never with a password.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from evota.api.auth import policy, problem
from evota.api.deps import Principal, PrincipalDep, RuntimeDep, require
from evota.api.operator_schemas import (
    GrantOut,
    PasswordIn,
    ScopeOut,
    UserIn,
    UserOut,
    UserPatch,
)
from evota.api.params import Limit, Name, Offset, text
from evota.api.problems import AUTHENTICATED, Problem, problems
from evota.api.schemas import Page
from evota.operators import users as svc
from evota.operators.permissions import Scope
from evota.runtime import Runtime

router = APIRouter(prefix="/api/v1/users", tags=["users"], responses=AUTHENTICATED)


def user_out(view: svc.UserView) -> UserOut:
    return UserOut(
        id=view.id,
        username=view.username,
        roles=view.roles,
        scopes=ScopeOut.of(svc.common_scope(view)),
        grants=[GrantOut(role=g.role, scope=ScopeOut.of(g.scope)) for g in view.grants],
        disabled=view.disabled,
        mfa_enabled=view.mfa_enabled,
        mfa_pending=view.mfa_pending,
        recovery_codes_left=view.recovery_codes_left,
        failed_logins=view.failed_logins,
        locked_until=view.locked_until,
        last_login_at=view.last_login_at,
        created_at=view.created_at,
        updated_at=view.updated_at,
    )


async def _audit(
    rt: Runtime, request: Request, who: Principal, action: str, username: str, **detail: Any
) -> None:
    request.state.audited = True
    await rt.audit.record(who.actor, action, "ok", target=username, detail=detail)


def _scope_detail(out: UserOut) -> dict[str, Any]:
    return {"roles": out.roles, "scopes": out.scopes.model_dump()}


@router.post("", status_code=201, response_model=UserOut, responses=problems(409))
async def create_user(
    body: UserIn, request: Request, rt: RuntimeDep, who: Principal = require("user.admin")
) -> UserOut:
    """Create a user with roles (and optionally a scope for them). The password must pass
    the policy: at least 12 characters, not the username, not a well-known password."""
    scope = body.scopes.scope() if body.scopes else Scope()
    try:
        view = await svc.create_user(
            rt.engine, rt.clock.now(), body.username, body.password, body.roles, scope
        )
    except svc.UserError as exc:
        raise problem(exc) from None
    out = user_out(view)
    await _audit(rt, request, who, "user.create", out.username, **_scope_detail(out))
    return out


@router.get("", response_model=Page[UserOut])
async def list_users(
    rt: RuntimeDep,
    _who: Principal = require("user.admin"),
    role: str | None = text("users holding this role", 32),
    disabled: bool | None = Query(None, description="true: only disabled users"),
    q: str | None = text("username contains", 64),
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[UserOut]:
    """Users by name."""
    total, views = await svc.list_users(rt.engine, limit, offset, role=role, disabled=disabled, q=q)
    return Page(items=[user_out(v) for v in views], total=total, limit=limit, offset=offset)


@router.get("/{username}", response_model=UserOut, responses=problems(404))
async def get_user(
    username: Name, rt: RuntimeDep, _who: Principal = require("user.admin")
) -> UserOut:
    try:
        return user_out(await svc.get_user(rt.engine, username))
    except svc.UserError as exc:
        raise problem(exc) from None


def _not_yourself(who: Principal, username: str) -> None:
    if svc.normalize_username(username) == who.name and who.user_id is not None:
        raise Problem(409, "Not on yourself", "ask another user admin to disable you", "username")


_CHANGE = problems(404, 409)


@router.patch("/{username}", response_model=UserOut, responses=_CHANGE)
async def update_user(
    username: Name,
    body: UserPatch,
    request: Request,
    rt: RuntimeDep,
    who: Principal = require("user.admin"),
) -> UserOut:
    """Change roles, scopes (rewritten for every role) or the disabled flag."""
    if body.disabled:
        _not_yourself(who, username)
    try:
        view = await svc.update_user(
            rt.engine,
            rt.clock.now(),
            username,
            roles=body.roles,
            scope=body.scopes.scope() if body.scopes is not None else None,
            disabled=body.disabled,
        )
    except svc.UserError as exc:
        raise problem(exc) from None
    out = user_out(view)
    changed = body.model_dump(exclude_unset=True)
    await _audit(
        rt,
        request,
        who,
        "user.update",
        out.username,
        changed=sorted(changed),
        **_scope_detail(out),
        disabled=out.disabled,
    )
    return out


@router.post("/{username}/disable", response_model=UserOut, responses=_CHANGE)
async def disable_user(
    username: Name, request: Request, rt: RuntimeDep, who: Principal = require("user.admin")
) -> UserOut:
    """Disable a user: no more logins, and every session and API token of theirs ends."""
    _not_yourself(who, username)
    try:
        view = await svc.update_user(rt.engine, rt.clock.now(), username, disabled=True)
    except svc.UserError as exc:
        raise problem(exc) from None
    await _audit(rt, request, who, "user.disable", view.username)
    return user_out(view)


@router.post("/{username}/reset-mfa", response_model=UserOut, responses=problems(404))
async def reset_mfa(
    username: Name, request: Request, rt: RuntimeDep, who: Principal = require("user.admin")
) -> UserOut:
    """Forget the user's second factor and recovery codes (lost device); their sessions
    end and they enrol again at the next login. API tokens stay."""
    try:
        view = await svc.reset_mfa(rt.engine, rt.clock.now(), username)
    except svc.UserError as exc:
        raise problem(exc) from None
    await _audit(rt, request, who, "user.reset_mfa", view.username)
    return user_out(view)


@router.post("/{username}/password", response_model=UserOut, responses=problems(404))
async def set_password(
    username: Name, body: PasswordIn, request: Request, rt: RuntimeDep, who: PrincipalDep
) -> UserOut:
    """Change your own password (give ``current_password``; your other sessions end) or,
    with ``user.admin``, reset someone's (all their sessions end, the lockout is lifted)."""
    now = rt.clock.now()
    self_change = who.user_id is not None and svc.normalize_username(username) == who.name
    if self_change:
        assert who.user_id is not None
        if body.current_password is None:
            raise Problem(
                422, "Current password needed", "give current_password", "current_password"
            )
        if not await svc.check_password(
            rt.engine, now, who.user_id, body.current_password, policy(rt)
        ):
            request.state.audited = True
            await rt.audit.record(
                who.actor, "user.password", "failed", target=who.name, detail={"self": True}
            )
            raise Problem(
                403, "Wrong password", "current_password does not match", "current_password"
            )
    else:
        who.check("user.admin")
    try:
        view = await svc.set_password(
            rt.engine,
            now,
            username,
            body.password,
            keep_session=who.session_hash if self_change else None,
        )
    except svc.UserError as exc:
        raise problem(exc) from None
    await _audit(rt, request, who, "user.password", view.username, self=self_change)
    return user_out(view)
