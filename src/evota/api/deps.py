"""Request dependencies: the runtime, a database connection and the bearer-token check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from evota.api.problems import Problem
from evota.runtime import Runtime, token_hash
from evota.store.models import ApiToken

_bearer = HTTPBearer(auto_error=False, description="An evota API token")


@dataclass(frozen=True)
class Principal:
    name: str
    role: str


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem(
            401,
            "Authentication required",
            "send Authorization: Bearer <token>",
            field="Authorization",
        )
    rt = runtime(request)
    now = rt.clock.now()
    async with rt.engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    ApiToken.name, ApiToken.role, ApiToken.expires_at, ApiToken.revoked_at
                ).where(ApiToken.token_hash == token_hash(credentials.credentials))
            )
        ).first()
    if (
        row is None
        or row.revoked_at is not None
        or (row.expires_at is not None and row.expires_at <= now)
    ):
        raise Problem(401, "Invalid or expired token", field="Authorization")
    return Principal(row.name, row.role)


RuntimeDep = Annotated[Runtime, Depends(runtime)]
PrincipalDep = Annotated[Principal, Depends(principal)]
