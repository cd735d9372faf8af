"""Roles, the permissions they carry, and scope checks. Pure: the API and CLI ask here.

A user holds grants; each grant is one role, optionally limited to sites, regions or charger
tags (a grant with no limits covers the whole fleet). A charger-level action is allowed when
some grant carries the permission *and* covers that charger. Fleet-wide actions (firmware,
users, audit) need a grant without limits.

``admin`` is the bootstrap token's role (break-glass, every permission); it cannot be granted
to users, who get the five operator roles below.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

READ = frozenset(
    {
        "fleet.read",
        "firmware.read",
        "campaign.read",
        "job.read",
        "operation.read",
        "alert.read",
        "playbook.read",
    }
)

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": READ,
    "operator": READ
    | {
        "command.send",
        "operation.write",
        "config.write",
        "approval.decide",
        "alert.ack",
        "idtoken.read",
        "idtoken.write",
        "playbook.write",
        "playbook.killswitch",
    },
    "firmware_manager": READ
    | {"firmware.write", "campaign.write", "job.write", "approval.decide", "alert.ack"},
    "security_admin": READ
    | {
        "user.admin",
        "charger.write",
        "charger.credentials",
        "firmware.trust",
        "approval.decide",
        "alert.ack",
        "audit.read",
        "idtoken.read",
        "idtoken.write",
        "playbook.killswitch",
    },
    "auditor": READ | {"audit.read", "idtoken.read"},
}
ROLES = tuple(ROLE_PERMISSIONS)
READ_ONLY = READ | {"audit.read", "idtoken.read"}
# Permissions checked per charger against grant scopes; the rest need an unlimited grant.
CHARGER_LEVEL = frozenset(
    {
        "fleet.read",
        "job.read",
        "command.send",
        "operation.write",
        "config.write",
        "job.write",
        "charger.write",
        "charger.credentials",
        "approval.decide",
        # a playbook's target must stay inside the grant's scope (api/playbooks.py)
        "playbook.read",
        "playbook.write",
    }
)
ALL_PERMISSIONS = frozenset().union(*ROLE_PERMISSIONS.values())
ADMIN = "admin"

# Roles that can change something: MFA is required for them (EVOTA_MFA_REQUIRED_ROLES).
CHANGING_ROLES = frozenset(r for r, p in ROLE_PERMISSIONS.items() if p - READ_ONLY)


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a grant applies; all empty means everywhere."""

    sites: frozenset[str] = frozenset()
    regions: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()

    @property
    def unlimited(self) -> bool:
        return not (self.sites or self.regions or self.tags)

    def covers(self, charger: ChargerPlace) -> bool:
        if self.unlimited:
            return True
        return (
            (charger.site_id is not None and charger.site_id in self.sites)
            or (charger.region is not None and charger.region in self.regions)
            or bool(self.tags & charger.tags)
        )


@dataclass(frozen=True, slots=True)
class ChargerPlace:
    """The facts about a charger that scopes look at."""

    id: str
    site_id: str | None = None
    region: str | None = None
    tags: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class RoleGrant:
    role: str
    scope: Scope = field(default_factory=Scope)

    @property
    def permissions(self) -> frozenset[str]:
        if self.role == ADMIN:
            return ALL_PERMISSIONS
        return ROLE_PERMISSIONS.get(self.role, frozenset())


def allowed(
    grants: Iterable[RoleGrant],
    permission: str,
    charger: ChargerPlace | None,
    site_limit: frozenset[str] = frozenset(),
) -> bool:
    """Whether ``permission`` is held for ``charger`` (None: fleet-wide, needs no limits).

    ``site_limit`` is an API token's own site restriction, on top of its user's grants: it
    admits only chargers at those sites and no fleet-wide action.
    """
    if site_limit and (charger is None or charger.site_id not in site_limit):
        return False
    for grant in grants:
        if permission not in grant.permissions:
            continue
        if charger is None:
            if grant.scope.unlimited:
                return True
        elif grant.scope.covers(charger):
            return True
    return False


def site_place(site_id: str, region: str | None) -> ChargerPlace:
    """A site, as scopes see it: covered exactly where a charger without tags standing at it
    would be (by its id or its region; tag scopes cover chargers, never a whole site)."""
    return ChargerPlace(f"site:{site_id}", site_id, region)


def site_change_allowed(
    grants: Iterable[RoleGrant],
    permission: str,
    before: ChargerPlace,
    after: ChargerPlace,
    site_limit: frozenset[str] = frozenset(),
) -> bool:
    """Changing a site needs ``permission`` where it is and where it ends up: moving a site
    into another region moves its chargers, so scope over both is required (otherwise a
    region-scoped admin could pull any site, and its chargers, into their region)."""
    grants = tuple(grants)
    return allowed(grants, permission, before, site_limit) and allowed(
        grants, permission, after, site_limit
    )


def target_confined(
    grants: Iterable[RoleGrant],
    permission: str,
    *,
    sites: Iterable[ChargerPlace] = (),
    regions: Iterable[str] = (),
    tags: Iterable[str] = (),
    chargers: Iterable[ChargerPlace] = (),
    site_limit: frozenset[str] = frozenset(),
) -> bool:
    """Whether a stored charger query (a configuration profile's target) stays inside where
    ``permission`` is held, so a scoped operator may define or change it.

    The query's filters combine with AND, so one dimension confining it is enough: every
    named site, or every named region, or every named tag, or every named charger covered.
    A query naming none of them (say, by vendor) reaches the whole fleet: it needs the
    permission fleet-wide."""
    grants = tuple(grants)
    if allowed(grants, permission, None, site_limit):
        return True
    dimensions = [
        list(sites),
        [ChargerPlace(f"region:{r}", None, r) for r in regions],
        [ChargerPlace(f"tag:{t}", None, None, frozenset({t})) for t in tags],
        list(chargers),
    ]
    return any(
        places and all(allowed(grants, permission, p, site_limit) for p in places)
        for places in dimensions
    )


def holds_anywhere(grants: Iterable[RoleGrant], permission: str) -> bool:
    """Whether some grant carries ``permission`` at all (lists are then filtered by scope)."""
    return any(permission in g.permissions for g in grants)


def needs_mfa(roles: Iterable[str], required_roles: Iterable[str]) -> bool:
    required = set(required_roles)
    return any(r in required for r in roles)
