"""Operators in the database: users and grants, logins and sessions, MFA, API tokens.

The API and the CLI both call these (``evota user add --data-dir`` creates the first user
straight in the database, before any server runs). Decisions come from the pure modules
(:mod:`evota.operators.credentials`, :mod:`evota.operators.login`); this module reads and
writes rows. Argon2 runs in a worker thread so a login never stalls the OCPP gateway's
event loop. Errors are :class:`UserError` (an HTTP status, a title, a detail and the field
at fault) for the API to turn into a problem and the CLI into one line.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from evota.operators import credentials as cr
from evota.operators import login as lg
from evota.operators import permissions as perms
from evota.store.models import ApiToken, Grant, LoginSession, Site, User

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
TOKEN_PREFIX = "evota_"


class UserError(Exception):
    def __init__(self, status: int, title: str, detail: str = "", field: str | None = None):
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.field = field


def _not_found(username: str) -> UserError:
    return UserError(404, "Unknown user", f"no user named {username!r}", "username")


def normalize_username(name: str) -> str:
    return name.strip().lower()


def username_problem(name: str) -> str | None:
    if not USERNAME.match(name):
        return "must be 1-64 characters: lower-case letters, digits and . _ @ - (not first)"
    return None


def role_problem(roles: Sequence[str]) -> str | None:
    if not roles:
        return "give at least one role"
    for role in roles:
        if role == perms.ADMIN:
            return "admin is the bootstrap token's role and cannot be granted"
        if role not in perms.ROLE_PERMISSIONS:
            return f"unknown role {role!r} (one of {', '.join(perms.ROLES)})"
    return None


@cache
def _dummy_hash() -> str:
    """Verified against for unknown users, so they cost as much time as a wrong password."""
    return cr.hash_password(secrets.token_urlsafe(16))


async def _verify(stored_hash: str | None, password: str) -> bool:
    stored = stored_hash if stored_hash is not None else _dummy_hash()
    ok = await asyncio.to_thread(cr.verify_password, stored, password)
    return ok and stored_hash is not None


# -- users ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserView:
    """What may be shown about a user: no hashes, secrets or recovery codes."""

    id: str
    username: str
    grants: tuple[perms.RoleGrant, ...]
    disabled: bool
    mfa_enabled: bool
    mfa_pending: bool
    recovery_codes_left: int
    failed_logins: int
    locked_until: datetime | None
    last_login_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def roles(self) -> list[str]:
        return list(dict.fromkeys(g.role for g in self.grants))


def _view(row: Any, grants: Sequence[perms.RoleGrant]) -> UserView:
    return UserView(
        id=row.id,
        username=row.username,
        grants=tuple(grants),
        disabled=bool(row.disabled),
        mfa_enabled=bool(row.mfa_enabled),
        mfa_pending=bool(row.mfa_secret) and not row.mfa_enabled,
        recovery_codes_left=len(row.recovery_codes or ()),
        failed_logins=row.failed_logins or 0,
        locked_until=row.locked_until,
        last_login_at=row.last_login_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _grant(row: Any) -> perms.RoleGrant:
    return perms.RoleGrant(
        row.role,
        perms.Scope(
            frozenset(row.sites or ()), frozenset(row.regions or ()), frozenset(row.tags or ())
        ),
    )


async def _grants_by_user(
    conn: AsyncConnection, user_ids: Iterable[str]
) -> dict[str, list[perms.RoleGrant]]:
    ids = list(user_ids)
    found: dict[str, list[perms.RoleGrant]] = {i: [] for i in ids}
    if ids:
        rows = (
            await conn.execute(select(Grant).where(Grant.user_id.in_(ids)).order_by(Grant.id))
        ).all()
        for r in rows:
            found[r.user_id].append(_grant(r))
    return found


async def _row(conn: AsyncConnection, username: str) -> Any:
    return (
        await conn.execute(select(User).where(User.username == normalize_username(username)))
    ).first()


async def get_user(engine: AsyncEngine, username: str) -> UserView:
    async with engine.connect() as conn:
        row = await _row(conn, username)
        if row is None:
            raise _not_found(username)
        grants = await _grants_by_user(conn, [row.id])
    return _view(row, grants[row.id])


async def user_by_id(engine: AsyncEngine, user_id: str) -> UserView:
    async with engine.connect() as conn:
        row = (await conn.execute(select(User).where(User.id == user_id))).first()
        if row is None:
            raise UserError(404, "Unknown user", "the user no longer exists")
        grants = await _grants_by_user(conn, [row.id])
    return _view(row, grants[row.id])


async def list_users(
    engine: AsyncEngine,
    limit: int,
    offset: int,
    *,
    role: str | None = None,
    disabled: bool | None = None,
    q: str | None = None,
) -> tuple[int, list[UserView]]:
    """Users by name; ``role``: holding that role, ``q``: name contains (any case)."""
    query = select(User)
    if role is not None:
        query = query.where(User.id.in_(select(Grant.user_id).where(Grant.role == role)))
    if disabled is not None:
        query = query.where(User.disabled.is_(disabled))
    if q:
        query = query.where(User.username.contains(normalize_username(q), autoescape=True))
    async with engine.connect() as conn:
        total = (
            await conn.execute(select(func.count()).select_from(query.subquery()))
        ).scalar() or 0
        rows = (await conn.execute(query.order_by(User.username).limit(limit).offset(offset))).all()
        grants = await _grants_by_user(conn, [r.id for r in rows])
    return int(total), [_view(r, grants[r.id]) for r in rows]


def _grant_rows(user_id: str, roles: Sequence[str], scope: perms.Scope) -> list[dict[str, Any]]:
    return [
        {
            "user_id": user_id,
            "role": role,
            "sites": sorted(scope.sites),
            "regions": sorted(scope.regions),
            "tags": sorted(scope.tags),
        }
        for role in dict.fromkeys(roles)
    ]


async def create_user(
    engine: AsyncEngine,
    now: datetime,
    username: str,
    password: str,
    roles: Sequence[str],
    scope: perms.Scope = perms.Scope(),
    *,
    grant_now: Sequence[str] | None = None,
) -> UserView:
    """A new user holding ``roles``, each limited to ``scope`` (empty: the whole fleet).

    ``grant_now``: only these of ``roles`` are granted now (the rest wait for a second
    user admin's approval); the user may then start with no role at all.
    """
    name = normalize_username(username)
    if problem := username_problem(name):
        raise UserError(422, "Invalid username", f"username {problem}", "username")
    if problem := role_problem(roles):
        raise UserError(422, "Invalid roles", problem, "roles")
    if problem := cr.password_problem(password, name):
        raise UserError(422, "Password refused", f"the password {problem}", "password")
    password_hash = await asyncio.to_thread(cr.hash_password, password)
    user_id = str(uuid.uuid4())
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(User).values(
                    id=user_id,
                    username=name,
                    password_hash=password_hash,
                    disabled=False,
                    mfa_enabled=False,
                    recovery_codes=[],
                    failed_logins=0,
                    created_at=now,
                    updated_at=now,
                )
            )
            rows = _grant_rows(user_id, roles if grant_now is None else grant_now, scope)
            if rows:
                await conn.execute(insert(Grant), rows)
    except IntegrityError:
        raise UserError(409, "User exists", f"a user named {name!r} exists", "username") from None
    return await get_user(engine, name)


async def _revoke_all(
    conn: AsyncConnection, user_id: str, now: datetime, *, tokens: bool, keep: str | None = None
) -> None:
    sessions = update(LoginSession).where(
        LoginSession.user_id == user_id, LoginSession.revoked_at.is_(None)
    )
    if keep is not None:
        sessions = sessions.where(LoginSession.token_hash != keep)
    await conn.execute(sessions.values(revoked_at=now))
    if tokens:
        await conn.execute(
            update(ApiToken)
            .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )


async def update_user(
    engine: AsyncEngine,
    now: datetime,
    username: str,
    *,
    roles: Sequence[str] | None = None,
    scope: perms.Scope | None = None,
    disabled: bool | None = None,
) -> UserView:
    """Change roles and/or scope (every grant is rewritten) and/or the disabled flag.

    Disabling revokes every session and API token of the user; enabling again does not
    bring them back.
    """
    if roles is not None and (problem := role_problem(roles)):
        raise UserError(422, "Invalid roles", problem, "roles")
    async with engine.begin() as conn:
        row = await _row(conn, username)
        if row is None:
            raise _not_found(username)
        if roles is not None or scope is not None:
            current = (await _grants_by_user(conn, [row.id]))[row.id]
            new_roles = list(roles) if roles is not None else [g.role for g in current]
            new_scope = scope if scope is not None else _common_scope(current)
            await conn.execute(delete(Grant).where(Grant.user_id == row.id))
            if new_roles:
                await conn.execute(insert(Grant), _grant_rows(row.id, new_roles, new_scope))
        values: dict[str, Any] = {"updated_at": now}
        if disabled is not None:
            values["disabled"] = disabled
            if disabled:
                await _revoke_all(conn, row.id, now, tokens=True)
        await conn.execute(update(User).where(User.id == row.id).values(**values))
    return await get_user(engine, username)


def _common_scope(grants: Sequence[perms.RoleGrant]) -> perms.Scope:
    """The scope the API gave every grant (grants written elsewhere: the first one's)."""
    return grants[0].scope if grants else perms.Scope()


def common_scope(view: UserView) -> perms.Scope:
    return _common_scope(view.grants)


async def reset_mfa(engine: AsyncEngine, now: datetime, username: str) -> UserView:
    """Forget the second factor (lost device): the user logs in again and enrols anew.

    The user's sessions end (they may have been opened with the lost device); API tokens
    stay, since automation does not use the device. Revoke them separately if needed.
    """
    async with engine.begin() as conn:
        row = await _row(conn, username)
        if row is None:
            raise _not_found(username)
        await conn.execute(
            update(User)
            .where(User.id == row.id)
            .values(
                mfa_secret=None,
                mfa_enabled=False,
                mfa_last_step=None,
                recovery_codes=[],
                updated_at=now,
            )
        )
        await _revoke_all(conn, row.id, now, tokens=False)
    return await get_user(engine, username)


async def set_password(
    engine: AsyncEngine,
    now: datetime,
    username: str,
    password: str,
    *,
    keep_session: str | None = None,
) -> UserView:
    """Set a new (policy-checked) password, unlock the account and end other sessions.

    ``keep_session`` is the session hash of a user changing their own password: that
    session stays, every other one ends.
    """
    password_hash = await hash_new_password(engine, username, password)
    return await set_password_hash(engine, now, username, password_hash, keep_session=keep_session)


async def hash_new_password(engine: AsyncEngine, username: str, password: str) -> str:
    """The Argon2id hash of a policy-checked new password for ``username`` (not stored)."""
    view = await get_user(engine, username)
    if problem := cr.password_problem(password, view.username):
        raise UserError(422, "Password refused", f"the password {problem}", "password")
    return await asyncio.to_thread(cr.hash_password, password)


async def set_password_hash(
    engine: AsyncEngine,
    now: datetime,
    username: str,
    password_hash: str,
    *,
    keep_session: str | None = None,
) -> UserView:
    """Store a hash made by :func:`hash_new_password` (e.g. once a reset was approved)."""
    view = await get_user(engine, username)
    async with engine.begin() as conn:
        await conn.execute(
            update(User)
            .where(User.id == view.id)
            .values(password_hash=password_hash, failed_logins=0, locked_until=None, updated_at=now)
        )
        await _revoke_all(conn, view.id, now, tokens=False, keep=keep_session)
    return await get_user(engine, username)


async def check_password(
    engine: AsyncEngine, now: datetime, user_id: str, password: str, policy: lg.LockoutPolicy
) -> bool:
    """Whether ``password`` is the user's; a wrong one counts as a failed login."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(User).where(User.id == user_id))).first()
    if row is None:
        return False
    if await _verify(row.password_hash, password):
        return True
    await _record_failure(engine, row.id, now, policy)
    return False


# -- login ---------------------------------------------------------------------------------


class Outcome(StrEnum):
    OK = "ok"
    FAILED = "failed"
    LOCKED = "locked"
    MFA_REQUIRED = "mfa_required"


@dataclass(frozen=True, slots=True)
class NewSession:
    token: str
    csrf_token: str
    expires_at: datetime
    mfa: bool


@dataclass(frozen=True, slots=True)
class LoginResult:
    outcome: Outcome
    username: str
    why: str = ""  # for the audit log only: unknown_user, disabled, password, otp
    roles: tuple[str, ...] = ()
    locked_until: datetime | None = None
    session: NewSession | None = None
    detail: dict[str, Any] = field(default_factory=dict)


async def _record_failure(
    engine: AsyncEngine, user_id: str, now: datetime, policy: lg.LockoutPolicy
) -> lg.LoginState:
    """Count a failure; compare-and-set on the count so concurrent guesses all count."""
    state = lg.LoginState()
    for _ in range(10):
        async with engine.begin() as conn:
            row = (
                await conn.execute(
                    select(User.failed_logins, User.locked_until).where(User.id == user_id)
                )
            ).first()
            if row is None:
                return state
            state = lg.LoginState(row.failed_logins or 0, row.locked_until)
            new = lg.after_failure(state, now, policy)
            if new == state:
                return state
            done = await conn.execute(
                update(User)
                .where(User.id == user_id, User.failed_logins == state.failed)
                .values(failed_logins=new.failed, locked_until=new.locked_until)
            )
            if done.rowcount == 1:
                return new
    return state


async def _check_second_factor(
    engine: AsyncEngine, row: Any, otp: str, now: datetime
) -> str | None:
    """Consume a TOTP code (replay-safe) or a recovery code; what was used, or None."""
    code = otp.strip()
    if code.replace(" ", "").isdigit():
        step = cr.verify_totp(row.mfa_secret or "", code, now, row.mfa_last_step)
        if step is None:
            return None
        async with engine.begin() as conn:
            done = await conn.execute(
                update(User)
                .where(
                    User.id == row.id,
                    or_(User.mfa_last_step.is_(None), User.mfa_last_step < step),
                )
                .values(mfa_last_step=step)
            )
        return "totp" if done.rowcount == 1 else None
    async with engine.begin() as conn:
        current = (
            await conn.execute(
                select(User.recovery_codes).where(User.id == row.id).with_for_update()
            )
        ).scalar()
        remaining = cr.use_recovery_code(current or [], code)
        if remaining is None:
            return None
        await conn.execute(update(User).where(User.id == row.id).values(recovery_codes=remaining))
    return "recovery_code"


async def login(
    engine: AsyncEngine,
    now: datetime,
    username: str,
    password: str,
    otp: str | None,
    *,
    policy: lg.LockoutPolicy,
    session_hours: float,
) -> LoginResult:
    """Check a login attempt and open a session when it succeeds.

    Unknown users and disabled users cost one Argon2 verification like a wrong password and
    get the same answer. A locked account is refused before its password is checked. With
    MFA enabled the password alone gives ``MFA_REQUIRED`` (not counted as a failure); a
    wrong code counts. Without MFA enabled the session has ``mfa=False``: it can read and
    enrol, and the API refuses changes if the user's roles need MFA.
    """
    name = normalize_username(username)
    async with engine.connect() as conn:
        row = await _row(conn, name) if len(name) <= 64 else None
        grants = (await _grants_by_user(conn, [row.id]))[row.id] if row is not None else []
    roles = tuple(dict.fromkeys(g.role for g in grants))
    if row is None or row.disabled:
        await _verify(None, password)
        why = "unknown_user" if row is None else "disabled"
        return LoginResult(Outcome.FAILED, name, why, roles)
    state = lg.LoginState(row.failed_logins or 0, row.locked_until)
    if lg.is_locked(state, now):
        return LoginResult(Outcome.LOCKED, name, "locked", roles, state.locked_until)

    async def failure(why: str) -> LoginResult:
        new = await _record_failure(engine, row.id, now, policy)
        if lg.is_locked(new, now):
            return LoginResult(Outcome.LOCKED, name, why, roles, new.locked_until)
        return LoginResult(Outcome.FAILED, name, why, roles)

    if not await _verify(row.password_hash, password):
        return await failure("password")
    detail: dict[str, Any] = {}
    if row.mfa_enabled:
        if not otp:
            return LoginResult(Outcome.MFA_REQUIRED, name, "otp_missing", roles)
        used = await _check_second_factor(engine, row, otp, now)
        if used is None:
            return await failure("otp")
        detail["second_factor"] = used
    rehash = cr.needs_rehash(row.password_hash)
    new_hash = await asyncio.to_thread(cr.hash_password, password) if rehash else None
    session = NewSession(
        secrets.token_urlsafe(32),
        secrets.token_urlsafe(32),
        now + timedelta(hours=session_hours),
        bool(row.mfa_enabled),
    )
    async with engine.begin() as conn:
        values: dict[str, Any] = {"failed_logins": 0, "locked_until": None, "last_login_at": now}
        if new_hash is not None:
            values["password_hash"] = new_hash
            detail["rehashed"] = True
        await conn.execute(update(User).where(User.id == row.id).values(**values))
        # Forget this user's finished sessions so the table does not grow with every login.
        await conn.execute(
            delete(LoginSession).where(
                LoginSession.user_id == row.id,
                or_(LoginSession.expires_at <= now, LoginSession.revoked_at.is_not(None)),
            )
        )
        await conn.execute(
            insert(LoginSession).values(
                token_hash=cr.token_hash(session.token),
                user_id=row.id,
                csrf_token=session.csrf_token,
                mfa=session.mfa,
                created_at=now,
                last_seen_at=now,
                expires_at=session.expires_at,
            )
        )
    return LoginResult(Outcome.OK, name, "", roles, session=session, detail=detail)


async def logout(engine: AsyncEngine, now: datetime, session_hash: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(LoginSession)
            .where(LoginSession.token_hash == session_hash, LoginSession.revoked_at.is_(None))
            .values(revoked_at=now)
        )


async def session_csrf(engine: AsyncEngine, session_hash: str) -> str | None:
    async with engine.connect() as conn:
        csrf: str | None = (
            await conn.execute(
                select(LoginSession.csrf_token).where(LoginSession.token_hash == session_hash)
            )
        ).scalar()
    return csrf


# -- MFA -----------------------------------------------------------------------------------


async def begin_enrolment(engine: AsyncEngine, now: datetime, user_id: str) -> tuple[str, str]:
    """A new pending TOTP secret for the user (replacing any earlier pending one)."""
    secret = cr.new_totp_secret()
    async with engine.begin() as conn:
        row = (await conn.execute(select(User).where(User.id == user_id))).first()
        if row is None:
            raise UserError(404, "Unknown user", "the user no longer exists")
        if row.mfa_enabled:
            raise UserError(
                409,
                "MFA already enabled",
                "a security admin resets MFA (evota user reset-mfa) before a new enrolment",
            )
        await conn.execute(
            update(User)
            .where(User.id == user_id)
            .values(mfa_secret=secret, mfa_last_step=None, updated_at=now)
        )
    return row.username, secret


async def confirm_enrolment(
    engine: AsyncEngine, now: datetime, user_id: str, session_hash: str | None, otp: str
) -> list[str]:
    """Enable MFA when ``otp`` matches the pending secret; returns the recovery codes.

    The session that confirms has just given a second factor, so it is marked as such.
    """
    async with engine.connect() as conn:
        row = (await conn.execute(select(User).where(User.id == user_id))).first()
    if row is None:
        raise UserError(404, "Unknown user", "the user no longer exists")
    if row.mfa_enabled:
        raise UserError(409, "MFA already enabled", "nothing to confirm")
    if not row.mfa_secret:
        raise UserError(409, "No enrolment", "start with POST /api/v1/auth/mfa/enroll")
    step = cr.verify_totp(row.mfa_secret, otp, now, row.mfa_last_step)
    if step is None:
        raise UserError(
            422, "Wrong code", "the code does not match; check the device's clock", "otp"
        )
    codes = cr.new_recovery_codes()
    async with engine.begin() as conn:
        done = await conn.execute(
            update(User)
            .where(
                User.id == user_id, User.mfa_enabled.is_(False), User.mfa_secret == row.mfa_secret
            )
            .values(
                mfa_enabled=True,
                mfa_last_step=step,
                recovery_codes=[cr.recovery_digest(c) for c in codes],
                updated_at=now,
            )
        )
        if done.rowcount != 1:
            raise UserError(409, "Enrolment changed", "enrol again")
        if session_hash is not None:
            await conn.execute(
                update(LoginSession).where(LoginSession.token_hash == session_hash).values(mfa=True)
            )
    return codes


# -- API tokens ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenView:
    id: int
    name: str
    username: str | None
    roles: list[str]
    sites: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def active(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


def _token_view(row: Any, username: str | None) -> TokenView:
    prefix = f"{username}:" if username else ""
    return TokenView(
        id=row.id,
        name=row.name.removeprefix(prefix),
        username=username,
        roles=list(row.roles or ()),
        sites=list(row.sites or ()),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


async def create_token(
    engine: AsyncEngine,
    now: datetime,
    user_id: str,
    name: str,
    *,
    roles: Sequence[str] | None,
    sites: Sequence[str],
    expires_in_days: int,
) -> tuple[str, TokenView]:
    """A new API token acting as the user: (the secret, shown once; its description).

    The token's roles are fixed at creation (default: all the user's roles now), so a role
    granted to the user later does not widen tokens issued before.
    """
    if not TOKEN_NAME.match(name):
        raise UserError(
            422, "Invalid name", "1-32 characters: letters, digits and . _ - (not first)", "name"
        )
    user = await user_by_id(engine, user_id)
    held = user.roles
    wanted = list(dict.fromkeys(roles)) if roles else held
    if extra := [r for r in wanted if r not in held]:
        raise UserError(
            422, "Roles not held", f"{', '.join(extra)}: not among your roles ({held})", "roles"
        )
    if not wanted:
        raise UserError(422, "No roles", "the user holds no role to give the token", "roles")
    site_ids = sorted(set(sites))
    async with engine.connect() as conn:
        known = set((await conn.execute(select(Site.id).where(Site.id.in_(site_ids)))).scalars())
    if missing := [s for s in site_ids if s not in known]:
        raise UserError(422, "Unknown site", f"no site with id {missing[0]!r}", "sites")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(
                insert(ApiToken).values(
                    name=f"{user.username}:{name}",
                    token_hash=cr.token_hash(secret),
                    role="user",
                    user_id=user.id,
                    roles=wanted,
                    sites=site_ids,
                    created_at=now,
                    expires_at=now + timedelta(days=expires_in_days),
                )
            )
            token_id = result.inserted_primary_key[0]  # type: ignore[index]
            row = (await conn.execute(select(ApiToken).where(ApiToken.id == token_id))).one()
    except IntegrityError:
        raise UserError(409, "Token exists", f"you have a token named {name!r}", "name") from None
    return secret, _token_view(row, user.username)


async def list_tokens(engine: AsyncEngine, user_id: str) -> list[TokenView]:
    async with engine.connect() as conn:
        username = (await conn.execute(select(User.username).where(User.id == user_id))).scalar()
        rows = (
            await conn.execute(
                select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id.desc())
            )
        ).all()
    return [_token_view(r, username) for r in rows]


async def revoke_token(
    engine: AsyncEngine, now: datetime, token_id: int, *, owner: str | None
) -> TokenView:
    """Revoke a user's token; ``owner`` limits it to that user's tokens (None: anyone's).

    The bootstrap admin token is not a user's token and is managed by configuration.
    """
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                select(ApiToken, User.username)
                .join(User, User.id == ApiToken.user_id)
                .where(ApiToken.id == token_id)
            )
        ).first()
        if row is None or (owner is not None and row.user_id != owner):
            raise UserError(404, "Unknown token", f"no token {token_id} of yours", "id")
        if row.revoked_at is None:
            await conn.execute(
                update(ApiToken).where(ApiToken.id == token_id).values(revoked_at=now)
            )
        row = (
            await conn.execute(
                select(ApiToken, User.username)
                .join(User, User.id == ApiToken.user_id)
                .where(ApiToken.id == token_id)
            )
        ).one()
    return _token_view(row, row.username)
