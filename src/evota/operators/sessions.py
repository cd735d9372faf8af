"""Logins and sessions in the database: password check with lockout, session rows, logout.

The throttling and lockout rules are pure (:mod:`evota.operators.login`); this module counts
failures with compare-and-set, opens and revokes session rows and keeps only the hash of a
session token (:func:`evota.operators.credentials.token_hash`). Argon2 runs in a worker
thread so a login never stalls the OCPP gateway's event loop.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.operators import credentials as cr
from evota.operators import login as lg
from evota.operators import mfa, users
from evota.store.models import LoginSession, User


@cache
def _dummy_hash() -> str:
    """Verified against for unknown users, so they cost as much time as a wrong password."""
    return cr.hash_password(secrets.token_urlsafe(16))


async def _verify(stored_hash: str | None, password: str) -> bool:
    stored = stored_hash if stored_hash is not None else _dummy_hash()
    ok = await asyncio.to_thread(cr.verify_password, stored, password)
    return ok and stored_hash is not None


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
    name = users.normalize_username(username)
    async with engine.connect() as conn:
        row = await users.user_row(conn, name) if len(name) <= 64 else None
        grants = (await users.grants_by_user(conn, [row.id]))[row.id] if row is not None else []
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
        used = await mfa.check_second_factor(engine, row, otp, now)
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
