"""The second factor in the database: TOTP enrolment, its check at login, and its reset.

TOTP and recovery codes are pure (:mod:`evota.operators.credentials`); this module keeps the
pending secret, consumes a code at most once (compare-and-set on the last accepted step, a
row lock for recovery codes) and, on a reset, ends the user's sessions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.operators import credentials as cr
from evota.operators import users
from evota.store.models import LoginSession, User


async def begin_enrolment(engine: AsyncEngine, now: datetime, user_id: str) -> tuple[str, str]:
    """A new pending TOTP secret for the user (replacing any earlier pending one)."""
    secret = cr.new_totp_secret()
    async with engine.begin() as conn:
        row = (await conn.execute(select(User).where(User.id == user_id))).first()
        if row is None:
            raise users.user_gone()
        if row.mfa_enabled:
            raise users.UserError(
                users.CONFLICT,
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
        raise users.user_gone()
    if row.mfa_enabled:
        raise users.UserError(users.CONFLICT, "MFA already enabled", "nothing to confirm")
    if not row.mfa_secret:
        raise users.UserError(
            users.CONFLICT, "No enrolment", "start with POST /api/v1/auth/mfa/enroll"
        )
    step = cr.verify_totp(row.mfa_secret, otp, now, row.mfa_last_step)
    if step is None:
        raise users.UserError(
            users.INVALID, "Wrong code", "the code does not match; check the device's clock", "otp"
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
            raise users.UserError(users.CONFLICT, "Enrolment changed", "enrol again")
        if session_hash is not None:
            await conn.execute(
                update(LoginSession).where(LoginSession.token_hash == session_hash).values(mfa=True)
            )
    return codes


async def check_second_factor(engine: AsyncEngine, row: Any, otp: str, now: datetime) -> str | None:
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


async def reset_mfa(engine: AsyncEngine, now: datetime, username: str) -> users.UserView:
    """Forget the second factor (lost device): the user logs in again and enrols anew.

    The user's sessions end (they may have been opened with the lost device); API tokens
    stay, since automation does not use the device. Revoke them separately if needed.
    """
    async with engine.begin() as conn:
        row = await users.user_row(conn, username)
        if row is None:
            raise users.unknown_user(username)
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
        await users.revoke_all(conn, row.id, now, tokens=False)
    return await users.get_user(engine, username)
