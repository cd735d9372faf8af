"""Logging in and out, who am I, MFA enrolment, and a user's own API tokens.

Every answer here is audited by hand (``auth.login`` with its outcome, ``auth.logout``,
``auth.mfa_enrolled``, ``token.create``/``token.revoke``) with the client address and
never a password, code or token; the generic middleware entry is switched off.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response

from evota.api.auditing import note
from evota.api.deps import (
    MFA_ENROLMENT_REQUIRED,
    MFA_REQUIRED,
    SESSION_COOKIE,
    Principal,
    PrincipalDep,
    RuntimeDep,
)
from evota.api.operator_schemas import (
    ConfirmIn,
    ConfirmOut,
    EnrollOut,
    GrantOut,
    LoginIn,
    LoginOut,
    MeOut,
    ScopeOut,
    TokenCreated,
    TokenIn,
    TokenOut,
)
from evota.api.params import IntId, text
from evota.api.problems import AUTHENTICATED, Problem, problem_response, problems
from evota.audit.log import Actor
from evota.operators import credentials as cr
from evota.operators import login as lg
from evota.operators import mfa, sessions, tokens
from evota.operators import permissions as perms
from evota.operators import users as svc
from evota.runtime import Runtime

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])

LOCKED = "https://evota.dev/problems/account-locked"
RATE_LIMITED = "https://evota.dev/problems/too-many-logins"


STATUS = {
    svc.UserErrorKind.NOT_FOUND: 404,
    svc.UserErrorKind.INVALID: 422,
    svc.UserErrorKind.CONFLICT: 409,
}


def problem(exc: svc.UserError) -> Problem:
    """A user error as the API answers it: the kind decides the status."""
    return Problem(STATUS[exc.kind], exc.title, exc.detail, exc.field)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _throttle(request: Request, rt: Runtime) -> lg.LoginThrottle:
    """One throttle per app (per runtime), created on first use."""
    state = request.app.state
    throttle: lg.LoginThrottle | None = getattr(state, "login_throttle", None)
    if throttle is None or throttle.limit != rt.settings.login_rate_per_minute:
        throttle = lg.LoginThrottle(rt.settings.login_rate_per_minute)
        state.login_throttle = throttle
    return throttle


def policy(rt: Runtime) -> lg.LockoutPolicy:
    s = rt.settings
    return lg.LockoutPolicy(s.login_max_failures, timedelta(minutes=s.login_lockout_minutes))


def _grants(grants: tuple[perms.RoleGrant, ...] | list[perms.RoleGrant]) -> list[GrantOut]:
    return [GrantOut(role=g.role, scope=ScopeOut.of(g.scope)) for g in grants]


def _session_only(who: Principal, what: str) -> str:
    if who.kind != "session" or who.user_id is None:
        raise Problem(
            403,
            "Log in as a user",
            f"{what} needs a login session (POST /api/v1/auth/login), not an API token",
            field="Authorization",
        )
    return who.user_id


@router.post(
    "/login",
    response_model=LoginOut,
    responses=problems(401, 403, 422, 423, 429),
)
async def login(body: LoginIn, request: Request, response: Response, rt: RuntimeDep) -> Any:
    """Log in with username, password and (when enrolled) a one-time code.

    Returns a session token (use it as a bearer token, or rely on the ``evota_session``
    cookie plus the ``X-CSRF-Token`` header in a browser). 401: wrong credentials; 403 with
    type ``mfa-required``: send ``otp`` too; 423: the account is locked for a while; 429:
    too many attempts from this address.
    """
    request.state.audited = True
    client = _client(request)
    request_id = getattr(request.state, "request_id", None)
    tried = svc.normalize_username(body.username)[:100]
    if rt.shared_limits is not None:  # a cluster: the attempts of every node count
        retry_after = await rt.shared_limits.login.check(client)
    else:
        retry_after = _throttle(request, rt).check(client, rt.clock.monotonic())
    if retry_after is not None:
        await rt.audit.record(
            Actor(tried, (), request_id),
            "auth.login",
            "rate_limited",
            target=tried,
            detail={"client": client},
        )
        seconds = math.ceil(retry_after)
        return problem_response(
            429,
            "Too many login attempts",
            f"try again in {seconds} s",
            type_=RATE_LIMITED,
            headers={"Retry-After": str(seconds)},
            retry_after=seconds,
        )
    s = rt.settings
    result = await sessions.login(
        rt.engine,
        rt.clock.now(),
        body.username,
        body.password,
        body.otp or None,
        policy=policy(rt),
        session_hours=s.session_max_hours,
    )
    detail: dict[str, Any] = {"client": client, **result.detail}
    if result.why:
        detail["why"] = result.why
    if result.locked_until is not None:
        detail["locked_until"] = result.locked_until.isoformat()
    await rt.audit.record(
        Actor(result.username[:100], result.roles, request_id),
        "auth.login",
        str(result.outcome),
        target=result.username[:100],
        detail=detail,
    )
    if result.outcome is sessions.Outcome.LOCKED:
        assert result.locked_until is not None
        wait = max(1, math.ceil((result.locked_until - rt.clock.now()).total_seconds()))
        return problem_response(
            423,
            "Account locked",
            f"too many failed logins; locked until {result.locked_until.isoformat()}",
            "username",
            type_=LOCKED,
            headers={"Retry-After": str(wait)},
            locked_until=result.locked_until.isoformat(),
        )
    if result.outcome is sessions.Outcome.MFA_REQUIRED:
        return problem_response(
            403,
            "MFA required",
            "send the authenticator's code (or a recovery code) as otp",
            "otp",
            type_=MFA_REQUIRED,
        )
    if result.outcome is sessions.Outcome.FAILED or result.session is None:
        field = "otp" if result.why == "otp" else "password"
        return problem_response(
            401, "Login failed", "wrong username, password or one-time code", field
        )
    session = result.session
    response.set_cookie(
        SESSION_COOKIE,
        session.token,
        max_age=int(s.session_max_hours * 3600),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return LoginOut(
        token=session.token,
        csrf_token=session.csrf_token,
        expires_at=session.expires_at,
        mfa=session.mfa,
        mfa_required=perms.needs_mfa(result.roles, s.mfa_required_roles),
        username=result.username,
        roles=list(result.roles),
    )


@router.post("/logout", status_code=204, response_class=Response, responses=AUTHENTICATED)
async def logout(request: Request, rt: RuntimeDep, who: PrincipalDep) -> Response:
    """End this login session (API tokens are revoked with DELETE /auth/tokens/{id})."""
    _session_only(who, "logging out")
    assert who.session_hash is not None
    await sessions.logout(rt.engine, rt.clock.now(), who.session_hash)
    request.state.audited = True
    await rt.audit.record(who.actor, "auth.logout", "ok", target=who.name)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/me", response_model=MeOut, responses=AUTHENTICATED)
async def me(rt: RuntimeDep, who: PrincipalDep) -> MeOut:
    """Who is calling: roles, grants with their scopes, and the state of the second factor."""
    mfa_enabled: bool | None = None
    if who.user_id is not None:
        try:
            mfa_enabled = (await svc.user_by_id(rt.engine, who.user_id)).mfa_enabled
        except svc.UserError as exc:
            raise problem(exc) from None
    csrf = await sessions.session_csrf(rt.engine, who.session_hash) if who.session_hash else None
    return MeOut(
        name=who.name,
        kind=who.kind,
        roles=list(who.roles),
        grants=_grants(who.grants),
        mfa=who.mfa,
        mfa_required=who.mfa_required,
        mfa_enabled=mfa_enabled,
        site_limit=sorted(who.site_limit),
        csrf_token=csrf,
    )


@router.post("/mfa/enroll", response_model=EnrollOut, responses={**AUTHENTICATED, **problems(409)})
async def mfa_enroll(request: Request, rt: RuntimeDep, who: PrincipalDep) -> EnrollOut:
    """Start TOTP enrolment: a new secret for the authenticator app; confirm with a code."""
    note(request, "user", who.name)  # the secret is in the answer only, never in the log
    user_id = _session_only(who, "MFA enrolment")
    try:
        username, secret = await mfa.begin_enrolment(rt.engine, rt.clock.now(), user_id)
    except svc.UserError as exc:
        raise problem(exc) from None
    uri = cr.otpauth_uri(secret, username)
    return EnrollOut(secret=secret, otpauth_uri=uri, qr_svg=cr.qr_svg(uri))


@router.post(
    "/mfa/confirm", response_model=ConfirmOut, responses={**AUTHENTICATED, **problems(409)}
)
async def mfa_confirm(
    body: ConfirmIn, request: Request, rt: RuntimeDep, who: PrincipalDep
) -> ConfirmOut:
    """Finish enrolment with a code from the app: MFA is on, and this session counts as
    having given its second factor. Returns the recovery codes, shown only this once."""
    user_id = _session_only(who, "MFA enrolment")
    try:
        codes = await mfa.confirm_enrolment(
            rt.engine, rt.clock.now(), user_id, who.session_hash, body.otp
        )
    except svc.UserError as exc:
        raise problem(exc) from None
    request.state.audited = True
    await rt.audit.record(
        who.actor,
        "auth.mfa_enrolled",
        "ok",
        target=who.name,
        detail={"recovery_codes": len(codes)},
    )
    return ConfirmOut(recovery_codes=codes)


def _token_out(view: tokens.TokenView, rt: Runtime) -> TokenOut:
    return TokenOut(
        id=view.id,
        name=view.name,
        username=view.username,
        roles=view.roles,
        sites=view.sites,
        created_at=view.created_at,
        expires_at=view.expires_at,
        revoked_at=view.revoked_at,
        last_used_at=view.last_used_at,
        active=view.active(rt.clock.now()),
    )


@router.post("/tokens", status_code=201, response_model=TokenCreated, responses=AUTHENTICATED)
async def create_token(
    body: TokenIn, request: Request, rt: RuntimeDep, who: PrincipalDep
) -> TokenCreated:
    """An API token for automation acting as you, narrowed to some of your roles and to
    sites; it expires. The token is in this answer only: it is stored hashed."""
    user_id = _session_only(who, "creating an API token")
    if who.mfa_required and not who.mfa:
        raise Problem(
            403,
            "MFA enrolment required",
            "enrol a second factor before creating API tokens",
            type_=MFA_ENROLMENT_REQUIRED,
        )
    try:
        secret, view = await tokens.create_token(
            rt.engine,
            rt.clock.now(),
            user_id,
            body.name,
            roles=body.roles,
            sites=body.sites,
            expires_in_days=body.expires_in_days,
        )
    except svc.UserError as exc:
        raise problem(exc) from None
    request.state.audited = True
    await rt.audit.record(
        who.actor,
        "token.create",
        "ok",
        target=f"token:{view.id}",
        detail={
            "name": view.name,
            "roles": view.roles,
            "sites": view.sites,
            "expires_at": view.expires_at.isoformat() if view.expires_at else None,
        },
    )
    return TokenCreated(**_token_out(view, rt).model_dump(), token=secret)


@router.get("/tokens", response_model=list[TokenOut], responses={**AUTHENTICATED, **problems(404)})
async def list_tokens(
    rt: RuntimeDep,
    who: PrincipalDep,
    username: str | None = text("another user's (user.admin)", 64),
) -> list[TokenOut]:
    """Your API tokens (never their secrets), newest first, revoked and expired included."""
    user_id = who.user_id
    if username is not None and svc.normalize_username(username) != who.name:
        who.check("user.admin")
        try:
            user_id = (await svc.get_user(rt.engine, username)).id
        except svc.UserError as exc:
            raise problem(exc) from None
    if user_id is None:
        return []
    return [_token_out(v, rt) for v in await tokens.list_tokens(rt.engine, user_id)]


@router.delete(
    "/tokens/{token_id}", response_model=TokenOut, responses={**AUTHENTICATED, **problems(404)}
)
async def revoke_token(
    token_id: IntId, request: Request, rt: RuntimeDep, who: PrincipalDep
) -> TokenOut:
    """Revoke one of your tokens (a user admin may revoke anyone's). Idempotent."""
    owner = None if who.can("user.admin") else who.user_id
    if owner is None and not who.can("user.admin"):
        raise Problem(404, "Unknown token", f"no token {token_id} of yours", "id")
    try:
        view = await tokens.revoke_token(rt.engine, rt.clock.now(), token_id, owner=owner)
    except svc.UserError as exc:
        raise problem(exc) from None
    request.state.audited = True
    await rt.audit.record(
        who.actor,
        "token.revoke",
        "ok",
        target=f"token:{token_id}",
        detail={"name": view.name, "owner": view.username},
    )
    return _token_out(view, rt)
