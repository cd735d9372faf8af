"""A user's API tokens in the database: create (the secret shown once), list, revoke.

Only the token's hash is stored (:func:`evota.operators.credentials.token_hash`); a token's
roles are fixed at creation and never exceed the user's.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.operators import credentials as cr
from evota.operators import users
from evota.store.models import ApiToken, Site, User

TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
TOKEN_PREFIX = "evota_"


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
        raise users.UserError(
            users.INVALID,
            "Invalid name",
            "1-32 characters: letters, digits and . _ - (not first)",
            "name",
        )
    user = await users.user_by_id(engine, user_id)
    held = user.roles
    wanted = list(dict.fromkeys(roles)) if roles else held
    if extra := [r for r in wanted if r not in held]:
        raise users.UserError(
            users.INVALID,
            "Roles not held",
            f"{', '.join(extra)}: not among your roles ({held})",
            "roles",
        )
    if not wanted:
        raise users.UserError(
            users.INVALID, "No roles", "the user holds no role to give the token", "roles"
        )
    site_ids = sorted(set(sites))
    async with engine.connect() as conn:
        known = set((await conn.execute(select(Site.id).where(Site.id.in_(site_ids)))).scalars())
    if missing := [s for s in site_ids if s not in known]:
        raise users.UserError(
            users.INVALID, "Unknown site", f"no site with id {missing[0]!r}", "sites"
        )
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
        raise users.UserError(
            users.CONFLICT, "Token exists", f"you have a token named {name!r}", "name"
        ) from None
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
            raise users.UserError(
                users.NOT_FOUND, "Unknown token", f"no token {token_id} of yours", "id"
            )
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
