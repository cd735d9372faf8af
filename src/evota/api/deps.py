"""Request dependencies: the runtime, who is calling, and what they may do.

A caller is identified by ``Authorization: Bearer`` (an API token or the token
``/auth/login`` returns) or by the console's session cookie, which must come with the
``X-CSRF-Token`` header on every state-changing request. Every route declares the
permission it needs with :func:`require`; charger-level routes then check the charger is in
the caller's scope with :func:`authorize_charger` (out of scope reads as 404, so scopes do
not reveal which chargers exist).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import false, or_, select, true, update
from sqlalchemy.sql import Select

from evota.api.params import ChargerId
from evota.api.problems import Problem
from evota.audit.log import Actor
from evota.operators import permissions as perms
from evota.operators.credentials import token_hash
from evota.runtime import Runtime
from evota.store.jsonlist import json_list_has
from evota.store.models import ApiToken, Charger, Grant, LoginSession, Site, User

_bearer = HTTPBearer(auto_error=False, description="An evota API token or login token")
SESSION_COOKIE = "evota_session"
CSRF_HEADER = "X-CSRF-Token"
MFA_REQUIRED = "https://evota.dev/problems/mfa-required"
MFA_ENROLMENT_REQUIRED = "https://evota.dev/problems/mfa-enrolment-required"
FORBIDDEN = "https://evota.dev/problems/forbidden"
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller and everything needed to decide what it may do."""

    name: str
    grants: tuple[perms.RoleGrant, ...]
    kind: str = "token"  # token | session | admin
    user_id: str | None = None
    mfa: bool = True  # second factor given (or not needed for this credential)
    mfa_required: bool = False
    site_limit: frozenset[str] = frozenset()
    session_hash: str | None = None
    request_id: str | None = None
    roles: tuple[str, ...] = field(default=())

    @property
    def role(self) -> str:  # kept for older callers: the roles, comma-separated
        return ",".join(self.roles)

    @property
    def actor(self) -> Actor:
        return Actor(self.name, self.roles, self.request_id)

    def can(self, permission: str, charger: perms.ChargerPlace | None = None) -> bool:
        if self._blocked_by_mfa(permission):
            return False
        return perms.allowed(self.grants, permission, charger, self.site_limit)

    def _blocked_by_mfa(self, permission: str) -> bool:
        return self.mfa_required and not self.mfa and permission not in perms.READ_ONLY

    def check_any(self, permission: str) -> None:
        """Raise 403 unless ``permission`` is held for at least some chargers."""
        self._check_mfa(permission)
        if not perms.holds_anywhere(self.grants, permission):
            raise self._forbidden(permission, "")

    def _forbidden(self, permission: str, where: str) -> Problem:
        return Problem(
            403,
            "Forbidden",
            f"{permission} is not granted to {self.name}{where}",
            type_=FORBIDDEN,
            permission=permission,
        )

    def _check_mfa(self, permission: str) -> None:
        if self._blocked_by_mfa(permission):
            raise Problem(
                403,
                "MFA enrolment required",
                "enrol a second factor (POST /api/v1/auth/mfa/enroll, then confirm) before "
                "changing anything",
                type_=MFA_ENROLMENT_REQUIRED,
                permission=permission,
            )

    def check(self, permission: str, charger: perms.ChargerPlace | None = None) -> None:
        """Raise the right 403 when ``permission`` is not held here."""
        self._check_mfa(permission)
        if not perms.allowed(self.grants, permission, charger, self.site_limit):
            raise self._forbidden(permission, f" for charger {charger.id}" if charger else "")


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def _unauthenticated(detail: str = "send Authorization: Bearer <token>") -> Problem:
    return Problem(401, "Authentication required", detail, field="Authorization")


async def _grants_of(conn: Any, user_id: str) -> tuple[perms.RoleGrant, ...]:
    rows = (await conn.execute(select(Grant).where(Grant.user_id == user_id))).all()
    return tuple(
        perms.RoleGrant(
            r.role,
            perms.Scope(
                frozenset(r.sites or ()), frozenset(r.regions or ()), frozenset(r.tags or ())
            ),
        )
        for r in rows
    )


POLL_HEADER = "X-Evota-Poll"


async def authenticate(
    rt: Runtime, token: str, *, cookie: bool = False, touch: bool = True
) -> Principal:
    """The principal behind a bearer token or session cookie value (401 if none).

    ``touch=False`` (the console's background refreshes, marked with ``X-Evota-Poll``)
    checks the session without renewing it, so an open tab nobody uses still times out.
    """
    now = rt.clock.now()
    digest = token_hash(token)
    s = rt.settings
    async with rt.engine.begin() as conn:
        if not cookie:
            api = (
                await conn.execute(select(ApiToken).where(ApiToken.token_hash == digest))
            ).first()
            if api is not None:
                if api.revoked_at is not None or (
                    api.expires_at is not None and api.expires_at <= now
                ):
                    raise Problem(401, "Invalid or expired token", field="Authorization")
                if api.user_id is None:  # the bootstrap (break-glass) token
                    return Principal(
                        api.name, (perms.RoleGrant(perms.ADMIN),), kind="admin", roles=("admin",)
                    )
                user = (await conn.execute(select(User).where(User.id == api.user_id))).first()
                if user is None or user.disabled:
                    raise Problem(401, "Invalid or expired token", field="Authorization")
                grants = await _grants_of(conn, user.id)
                if api.roles:
                    grants = tuple(g for g in grants if g.role in set(api.roles))
                if api.last_used_at is None or now - api.last_used_at > timedelta(minutes=1):
                    await conn.execute(
                        update(ApiToken).where(ApiToken.id == api.id).values(last_used_at=now)
                    )
                roles = tuple(dict.fromkeys(g.role for g in grants))
                return Principal(
                    f"{user.username}",
                    grants,
                    kind="token",
                    user_id=user.id,
                    mfa=True,  # tokens are only issued to a session that gave its second factor
                    site_limit=frozenset(api.sites or ()),
                    roles=roles,
                )
        session = (
            await conn.execute(select(LoginSession).where(LoginSession.token_hash == digest))
        ).first()
        if (
            session is None
            or session.revoked_at is not None
            or session.expires_at <= now
            or now - session.last_seen_at > timedelta(minutes=s.session_idle_minutes)
        ):
            raise Problem(
                401, "Session expired", "log in again (POST /api/v1/auth/login)", "Authorization"
            )
        user = (await conn.execute(select(User).where(User.id == session.user_id))).first()
        if user is None or user.disabled:
            raise Problem(401, "Session expired", "log in again", "Authorization")
        if touch:
            await conn.execute(
                update(LoginSession)
                .where(LoginSession.token_hash == digest)
                .values(last_seen_at=now)
            )
        grants = await _grants_of(conn, user.id)
    roles = tuple(dict.fromkeys(g.role for g in grants))
    return Principal(
        user.username,
        grants,
        kind="session",
        user_id=user.id,
        mfa=bool(session.mfa),
        mfa_required=perms.needs_mfa(roles, s.mfa_required_roles),
        session_hash=digest,
        roles=roles,
    )


async def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    rt = runtime(request)
    request_id = getattr(request.state, "request_id", None)
    touch = request.headers.get(POLL_HEADER) != "1"
    if credentials is not None and credentials.scheme.lower() == "bearer":
        who = await authenticate(rt, credentials.credentials, touch=touch)
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            raise _unauthenticated()
        who = await authenticate(rt, cookie, cookie=True, touch=touch)
        if request.method in _UNSAFE:
            await _check_csrf(rt, request, who)
    who = replace(who, request_id=request_id)
    request.state.principal = who
    return who


async def _check_csrf(rt: Runtime, request: Request, who: Principal) -> None:
    sent = request.headers.get(CSRF_HEADER, "")
    async with rt.engine.connect() as conn:
        expected = (
            await conn.execute(
                select(LoginSession.csrf_token).where(LoginSession.token_hash == who.session_hash)
            )
        ).scalar()
    if not sent or expected is None or not secrets.compare_digest(sent, expected):
        raise Problem(403, "CSRF check failed", f"send the {CSRF_HEADER} header", CSRF_HEADER)


def require(permission: str) -> Any:
    """A dependency: the caller, who must hold ``permission`` somewhere.

    Fleet-wide permissions are checked here in full; charger-level ones are checked against
    the charger with :func:`authorize_charger` (or by filtering lists with
    :func:`scope_filter`).
    """

    async def dependency(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if permission in perms.CHARGER_LEVEL:
            who.check_any(permission)
        else:
            who.check(permission)
        return who

    dependency.__name__ = f"require_{permission.replace('.', '_')}"
    return Depends(dependency)


def require_charger(permission: str) -> Any:
    """A dependency: :func:`require` and the ``{charger_id}`` of the path in scope for
    ``permission`` (404 out of scope), decided before the request body is even parsed, so an
    out-of-scope charger reads as unknown whatever the body says."""

    async def scoped_charger(
        charger_id: ChargerId,
        request: Request,
        who: Principal = require(permission),
    ) -> Principal:
        await authorize_charger(runtime(request), who, permission, charger_id)
        return who

    return Depends(scoped_charger)


async def charger_place(rt: Runtime, charger_id: str) -> perms.ChargerPlace | None:
    async with rt.engine.connect() as conn:
        row = (
            await conn.execute(
                select(Charger.id, Charger.site_id, Charger.tags, Site.region)
                .outerjoin(Site, Site.id == Charger.site_id)
                .where(Charger.id == charger_id)
            )
        ).first()
    if row is None:
        return None
    return perms.ChargerPlace(row.id, row.site_id, row.region, frozenset(row.tags or ()))


async def authorize_charger(
    rt: Runtime, who: Principal, permission: str, charger_id: str, field: str = "id"
) -> perms.ChargerPlace:
    """The charger's place if ``who`` may apply ``permission`` to it; 404 if it does not
    exist or is outside every scope that could read it, 403 if readable but not allowed."""
    place = await charger_place(rt, charger_id)
    if place is None or not who.can("fleet.read", place):
        raise Problem(404, "Unknown charger", f"no charger with id {charger_id!r}", field)
    who.check(permission, place)
    return place


async def charger_places(rt: Runtime, charger_ids: Iterable[str]) -> dict[str, perms.ChargerPlace]:
    """The places of those of ``charger_ids`` that exist."""
    ids = list(dict.fromkeys(charger_ids))
    found: dict[str, perms.ChargerPlace] = {}
    async with rt.engine.connect() as conn:
        for i in range(0, len(ids), 500):
            rows = (
                await conn.execute(
                    select(Charger.id, Charger.site_id, Charger.tags, Site.region)
                    .outerjoin(Site, Site.id == Charger.site_id)
                    .where(Charger.id.in_(ids[i : i + 500]))
                )
            ).all()
            for r in rows:
                found[r.id] = perms.ChargerPlace(r.id, r.site_id, r.region, frozenset(r.tags or ()))
    return found


async def authorize_chargers(
    rt: Runtime, who: Principal, permission: str, charger_ids: Iterable[str]
) -> list[str]:
    """The ids in ``charger_ids`` that ``who`` may not apply ``permission`` to."""
    ids = list(dict.fromkeys(charger_ids))
    if not ids:
        return []
    denied: list[str] = []
    found = await charger_places(rt, ids)
    for cid in ids:
        place = found.get(cid)
        if place is None or not who.can(permission, place):
            denied.append(cid)
    return denied


def scope_filter(
    who: Principal, permission: str = "fleet.read"
) -> Callable[[Select[Any]], Select[Any]]:
    """Narrow a query over ``chargers`` (joined to ``sites`` where regions matter) to the
    chargers ``who`` may see; the identity function for an unlimited caller."""
    grants = [g for g in who.grants if permission in g.permissions]
    limit: Any = Charger.site_id.in_(sorted(who.site_limit)) if who.site_limit else true()
    if any(g.scope.unlimited for g in grants):
        return lambda q: q.where(limit) if who.site_limit else q
    clauses = []
    for g in grants:
        if g.scope.sites:
            clauses.append(Charger.site_id.in_(sorted(g.scope.sites)))
        if g.scope.regions:
            clauses.append(
                Charger.site_id.in_(select(Site.id).where(Site.region.in_(sorted(g.scope.regions))))
            )
        for tag in sorted(g.scope.tags):
            clauses.append(has_tag(tag))
    cond = or_(*clauses) if clauses else false()
    return lambda q: q.where(cond).where(limit)


async def authorize_site(
    rt: Runtime, who: Principal, permission: str, site_id: str, field: str = "site_id"
) -> perms.ChargerPlace:
    """The site's place if ``who`` may apply ``permission`` to it; 404 if it does not exist
    or is outside every scope that could read it (as for chargers), 403 if readable but not
    allowed."""
    async with rt.engine.connect() as conn:
        row = (await conn.execute(select(Site.id, Site.region).where(Site.id == site_id))).first()
    place = perms.site_place(row.id, row.region) if row is not None else None
    if place is None or not who.can("fleet.read", place):
        raise Problem(404, "Unknown site", f"no site with id {site_id!r}", field)
    check_site(who, permission, place)
    return place


def check_site(who: Principal, permission: str, place: perms.ChargerPlace) -> None:
    """403 unless ``who`` holds ``permission`` on the site ``place``."""
    who._check_mfa(permission)
    if not who.can(permission, place):
        raise who._forbidden(permission, f" for site {place.site_id}")


def site_filter(who: Principal, permission: str = "fleet.read") -> Any:
    """A condition on ``sites`` admitting the sites ``who`` holds ``permission`` on (by site
    id or region; tag scopes cover no site)."""
    grants = [g for g in who.grants if permission in g.permissions]
    limit: Any = Site.id.in_(sorted(who.site_limit)) if who.site_limit else true()
    if any(g.scope.unlimited for g in grants):
        return limit
    clauses = []
    for g in grants:
        if g.scope.sites:
            clauses.append(Site.id.in_(sorted(g.scope.sites)))
        if g.scope.regions:
            clauses.append(Site.region.in_(sorted(g.scope.regions)))
    return (or_(*clauses) if clauses else false()) & limit


async def target_allowed(
    rt: Runtime, who: Principal, permission: str, target: dict[str, Any]
) -> bool:
    """Whether a stored charger query (``{"sites", "regions", "tags", "charger_ids", ...}``)
    stays inside where ``who`` holds ``permission`` (see :func:`perms.target_confined`)."""
    if who._blocked_by_mfa(permission):
        return False
    site_ids = [str(s) for s in target.get("sites") or ()]
    async with rt.engine.connect() as conn:
        regions = dict(
            (await conn.execute(select(Site.id, Site.region).where(Site.id.in_(site_ids)))).all()
        )
    charger_ids = [str(c) for c in target.get("charger_ids") or ()]
    places = await charger_places(rt, charger_ids)
    return perms.target_confined(
        who.grants,
        permission,
        sites=[perms.site_place(s, regions.get(s)) for s in site_ids],
        regions=[str(r) for r in target.get("regions") or ()],
        tags=[str(t) for t in target.get("tags") or ()],
        # a charger that does not exist confines nothing (no scope covers a bare id)
        chargers=[places.get(c, perms.ChargerPlace(c)) for c in charger_ids],
        site_limit=who.site_limit,
    )


def has_tag(tag: str) -> Any:
    """The charger carries exactly ``tag`` (no LIKE: ``_`` and ``%`` are not wildcards)."""
    return json_list_has(Charger.tags, tag)


RuntimeDep = Annotated[Runtime, Depends(runtime)]
PrincipalDep = Annotated[Principal, Depends(principal)]
