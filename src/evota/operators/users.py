"""Operators in the database: users and their grants (roles with a scope), passwords.

The API and the CLI both call these (``evota user add --data-dir`` creates the first user
straight in the database, before any server runs). Decisions come from the pure modules
(:mod:`evota.operators.credentials`, :mod:`evota.operators.permissions`); this module reads
and writes rows. Logins and sessions are :mod:`evota.operators.sessions`, the second factor
:mod:`evota.operators.mfa`, API tokens :mod:`evota.operators.tokens`. Argon2 runs in a worker
thread so a password change never stalls the OCPP gateway's event loop. Errors are
:class:`UserError` (a kind, a title, a detail and the field at fault): the API maps the kind
to an HTTP status, the CLI prints one line.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from evota.operators import credentials as cr
from evota.operators import permissions as perms
from evota.store.models import ApiToken, Grant, LoginSession, User

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")


class UserErrorKind(StrEnum):
    """What went wrong, for the edge to map (the API: 404, 422, 409)."""

    NOT_FOUND = "not_found"  # no such user, token or enrolment target
    INVALID = "invalid"  # the input breaks a rule (name, roles, password, code)
    CONFLICT = "conflict"  # the state does not allow it (exists, already enabled, changed)


class UserError(Exception):
    def __init__(
        self, kind: UserErrorKind, title: str, detail: str = "", field: str | None = None
    ) -> None:
        super().__init__(detail or title)
        self.kind = kind
        self.title = title
        self.detail = detail
        self.field = field


NOT_FOUND, INVALID, CONFLICT = (
    UserErrorKind.NOT_FOUND,
    UserErrorKind.INVALID,
    UserErrorKind.CONFLICT,
)


def unknown_user(username: str) -> UserError:
    return UserError(NOT_FOUND, "Unknown user", f"no user named {username!r}", "username")


def user_gone() -> UserError:
    """The user behind a session or token was deleted meanwhile."""
    return UserError(NOT_FOUND, "Unknown user", "the user no longer exists")


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


async def grants_by_user(
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


async def user_row(conn: AsyncConnection, username: str) -> Any:
    return (
        await conn.execute(select(User).where(User.username == normalize_username(username)))
    ).first()


async def get_user(engine: AsyncEngine, username: str) -> UserView:
    async with engine.connect() as conn:
        row = await user_row(conn, username)
        if row is None:
            raise unknown_user(username)
        grants = await grants_by_user(conn, [row.id])
    return _view(row, grants[row.id])


async def user_by_id(engine: AsyncEngine, user_id: str) -> UserView:
    async with engine.connect() as conn:
        row = (await conn.execute(select(User).where(User.id == user_id))).first()
        if row is None:
            raise user_gone()
        grants = await grants_by_user(conn, [row.id])
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
        grants = await grants_by_user(conn, [r.id for r in rows])
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
        raise UserError(INVALID, "Invalid username", f"username {problem}", "username")
    if problem := role_problem(roles):
        raise UserError(INVALID, "Invalid roles", problem, "roles")
    if problem := cr.password_problem(password, name):
        raise UserError(INVALID, "Password refused", f"the password {problem}", "password")
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
        raise UserError(
            CONFLICT, "User exists", f"a user named {name!r} exists", "username"
        ) from None
    return await get_user(engine, name)


async def revoke_all(
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
        raise UserError(INVALID, "Invalid roles", problem, "roles")
    async with engine.begin() as conn:
        row = await user_row(conn, username)
        if row is None:
            raise unknown_user(username)
        if roles is not None or scope is not None:
            current = (await grants_by_user(conn, [row.id]))[row.id]
            new_roles = list(roles) if roles is not None else [g.role for g in current]
            new_scope = scope if scope is not None else _common_scope(current)
            await conn.execute(delete(Grant).where(Grant.user_id == row.id))
            if new_roles:
                await conn.execute(insert(Grant), _grant_rows(row.id, new_roles, new_scope))
        values: dict[str, Any] = {"updated_at": now}
        if disabled is not None:
            values["disabled"] = disabled
            if disabled:
                await revoke_all(conn, row.id, now, tokens=True)
        await conn.execute(update(User).where(User.id == row.id).values(**values))
    return await get_user(engine, username)


def _common_scope(grants: Sequence[perms.RoleGrant]) -> perms.Scope:
    """The scope the API gave every grant (grants written elsewhere: the first one's)."""
    return grants[0].scope if grants else perms.Scope()


def common_scope(view: UserView) -> perms.Scope:
    return _common_scope(view.grants)


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
        raise UserError(INVALID, "Password refused", f"the password {problem}", "password")
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
        await revoke_all(conn, view.id, now, tokens=False, keep=keep_session)
    return await get_user(engine, username)
