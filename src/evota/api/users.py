"""User administration (permission ``user.admin``, fleet-wide) and password changes.

A user holds roles; the ``scopes`` given with them apply to every role (one grant row per
role, all with the same sites/regions/tags). Every change is audited by hand with what
changed, never with a password.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from evota.api.approvals import AWAITING, awaiting
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
from evota.audit import changes
from evota.operators import four_eyes, mfa, sessions
from evota.operators import users as svc
from evota.operators.permissions import RoleGrant, Scope
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
    await rt.audit.record(
        who.actor, action, "ok", target=username, detail={"target_type": "user", **detail}
    )


def _audited(out: UserOut) -> dict[str, Any]:
    """A user as an audit entry compares it (never a secret: see evota.audit.changes)."""
    return {**_scope_detail(out), "disabled": out.disabled}


def _scope_detail(out: UserOut) -> dict[str, Any]:
    return {"roles": out.roles, "scopes": out.scopes.model_dump()}


def _grant_needs_approval(
    rt: Runtime, who: Principal, before: list[RoleGrant], after: list[RoleGrant]
) -> bool:
    """Whether a grant must wait for a second user admin (``user.grant``): it gives approval
    power the user did not have. The bootstrap token (break-glass, the root of trust that
    sets up the first operators) grants at once."""
    return (
        who.kind != "admin"
        and rt.approvals.required("user.grant")
        and four_eyes.grants_approval_power(before, after)
    )


def _grant_payload(username: str, roles: list[str], scope: Scope, **extra: Any) -> dict[str, Any]:
    return {
        "username": username,
        "roles": roles,
        "scopes": {
            "sites": sorted(scope.sites),
            "regions": sorted(scope.regions),
            "tags": sorted(scope.tags),
        },
        **extra,
    }


@router.post("", status_code=201, response_model=UserOut, responses={**AWAITING, **problems(409)})
async def create_user(
    body: UserIn, request: Request, rt: RuntimeDep, who: Principal = require("user.admin")
) -> Any:
    """Create a user with roles (and optionally a scope for them). The password must pass
    the policy: at least 12 characters, not the username, not a well-known password.

    Roles that can decide approvals (operator, firmware_manager, security_admin) wait for a
    second user admin (202, ``user.grant``): the account is created at once with the other
    roles (possibly none), so a user admin cannot make a second account to approve its own
    requests."""
    scope = body.scopes.scope() if body.scopes else Scope()
    wanted = [RoleGrant(r, scope) for r in body.roles]
    gated = _grant_needs_approval(rt, who, [], wanted)
    now_roles = [g.role for g in wanted if g not in four_eyes.approval_power(wanted)]
    try:
        view = await svc.create_user(
            rt.engine,
            rt.clock.now(),
            body.username,
            body.password,
            body.roles,
            scope,
            grant_now=now_roles if gated else None,
        )
    except svc.UserError as exc:
        raise problem(exc) from None
    out = user_out(view)
    await _audit(
        rt,
        request,
        who,
        "user.create",
        out.username,
        **_scope_detail(out),
        changes=changes.diff(None, {"username": out.username, **_audited(out)}),
    )
    if not gated:
        return out
    answer = await awaiting(
        rt,
        who,
        "user.grant",
        f"grant {', '.join(body.roles)} to new user {out.username}",
        _grant_payload(out.username, list(body.roles), scope),
        f"new user {out.username}",
    )
    return _with_user(answer, out)


def _with_user(answer: JSONResponse, out: UserOut) -> JSONResponse:
    """The 202 answer, with the user as it is until the grant is approved."""
    data = json.loads(bytes(answer.body))
    data["user"] = out.model_dump(mode="json")
    return JSONResponse(data, status_code=202)


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


@router.patch("/{username}", response_model=UserOut, responses={**AWAITING, **_CHANGE})
async def update_user(
    username: Name,
    body: UserPatch,
    request: Request,
    rt: RuntimeDep,
    who: Principal = require("user.admin"),
) -> Any:
    """Change roles, scopes (rewritten for every role) or the disabled flag.

    A change that gives approval power (a role that decides approvals, or such a role on a
    wider scope), also to yourself, waits for a second user admin (202, ``user.grant``)."""
    if body.disabled:
        _not_yourself(who, username)
    scope = body.scopes.scope() if body.scopes is not None else None
    if body.roles is not None or scope is not None:
        try:
            current = await svc.get_user(rt.engine, username)
        except svc.UserError as exc:
            raise problem(exc) from None
        if body.roles is not None and (bad := svc.role_problem(body.roles)):
            raise Problem(422, "Invalid roles", bad, "roles")
        roles = list(body.roles) if body.roles is not None else current.roles
        new_scope = scope if scope is not None else svc.common_scope(current)
        wanted = [RoleGrant(r, new_scope) for r in roles]
        if _grant_needs_approval(rt, who, list(current.grants), wanted):
            request.state.audited = True  # the approval request is the audit entry
            return await awaiting(
                rt,
                who,
                "user.grant",
                f"grant {', '.join(roles)} to {current.username}",
                _grant_payload(current.username, roles, new_scope, disabled=body.disabled),
                f"role change of {current.username}",
            )
    try:
        old = user_out(await svc.get_user(rt.engine, username))
        view = await svc.update_user(
            rt.engine,
            rt.clock.now(),
            username,
            roles=body.roles,
            scope=scope,
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
        changes=changes.diff(_audited(old), _audited(out)),
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


async def _credentials_need_approval(rt: Runtime, who: Principal, username: str) -> str | None:
    """The user's name when resetting their credentials must wait for a second user admin
    (``user.credentials``): they hold approval power, and a user admin who could set their
    password and second factor could log in as them and approve its own requests."""
    try:
        target = await svc.get_user(rt.engine, username)
    except svc.UserError as exc:
        raise problem(exc) from None
    if (
        who.kind != "admin"
        and rt.approvals.required("user.credentials")
        and four_eyes.approval_power(target.grants)
    ):
        return target.username
    return None


@router.post(
    "/{username}/reset-mfa", response_model=UserOut, responses={**AWAITING, **problems(404)}
)
async def reset_mfa(
    username: Name, request: Request, rt: RuntimeDep, who: Principal = require("user.admin")
) -> Any:
    """Forget the user's second factor and recovery codes (lost device); their sessions
    end and they enrol again at the next login. API tokens stay.

    For a user with approval power this waits for a second user admin (202)."""
    if name := await _credentials_need_approval(rt, who, username):
        request.state.audited = True  # the approval request is the audit entry
        return await awaiting(
            rt,
            who,
            "user.credentials",
            f"reset the second factor of {name}",
            {"username": name, "reset_mfa": True},
            f"MFA reset of {name}",
        )
    try:
        view = await mfa.reset_mfa(rt.engine, rt.clock.now(), username)
    except svc.UserError as exc:
        raise problem(exc) from None
    await _audit(rt, request, who, "user.reset_mfa", view.username)
    return user_out(view)


@router.post(
    "/{username}/password", response_model=UserOut, responses={**AWAITING, **problems(404)}
)
async def set_password(
    username: Name, body: PasswordIn, request: Request, rt: RuntimeDep, who: PrincipalDep
) -> Any:
    """Change your own password (give ``current_password``; your other sessions end) or,
    with ``user.admin``, reset someone's (all their sessions end, the lockout is lifted).

    Resetting the password of a user with approval power waits for a second user admin
    (202); only the new password's hash is kept with the request."""
    now = rt.clock.now()
    self_change = who.user_id is not None and svc.normalize_username(username) == who.name
    if self_change:
        assert who.user_id is not None
        if body.current_password is None:
            raise Problem(
                422, "Current password needed", "give current_password", "current_password"
            )
        if not await sessions.check_password(
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
        if name := await _credentials_need_approval(rt, who, username):
            try:
                password_hash = await svc.hash_new_password(rt.engine, name, body.password)
            except svc.UserError as exc:
                raise problem(exc) from None
            request.state.audited = True  # the approval request is the audit entry
            return await awaiting(
                rt,
                who,
                "user.credentials",
                f"reset the password of {name}",
                {"username": name, "password_hash": password_hash},
                f"password reset of {name}",
            )
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
