"""Charger inventory and the remote command path."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import Select, func, insert, select
from sqlalchemy.exc import IntegrityError

from evota.api.approvals import AWAITING, awaiting
from evota.api.auditing import note
from evota.api.deps import (
    Principal,
    RuntimeDep,
    authorize_charger,
    has_tag,
    require,
    scope_filter,
)
from evota.api.leader_calls import tell
from evota.api.pages import fetch_page
from evota.api.params import ChargerId, Limit, Offset, text
from evota.api.problems import AUTHENTICATED, Problem, problems
from evota.api.schemas import (
    ChargerDetail,
    ChargerIn,
    ChargerOut,
    ChargerPatch,
    ConnectorOut,
    EventOut,
    Page,
    RegistrationStatus,
)
from evota.fleet import changes as charger_changes
from evota.fleet import security_profiles
from evota.fleet.credentials import hash_key
from evota.operators import four_eyes
from evota.operators.permissions import ChargerPlace, site_place
from evota.rollout.charger_facts import CHARGER_FACTS
from evota.runtime import Runtime
from evota.store.models import Charger, ChargerEvent, Connector, Site

router = APIRouter(prefix="/api/v1/chargers", tags=["chargers"], responses=AUTHENTICATED)

# Secrets never leave the database; the other omitted columns are not part of the API yet.
_OMITTED = {
    "auth_salt",
    "auth_hash",
    "iccid",
    "imsi",
    "meter_type",
    "meter_serial_number",
}
_PUBLIC_COLUMNS = [c for c in Charger.__table__.c if c.name not in _OMITTED]


def _audited(charger: dict[str, Any]) -> dict[str, Any]:
    """The fields an audit entry compares (not the live ones)."""
    return {k: v for k, v in charger.items() if k not in ("connected", "node", "last_seen")}


def _out(rt: Runtime, row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    # The gateway knows the truth about live connections; the database may lag by a flush.
    # In a cluster the claims in Redis do (evota.cluster.presence): any node's charger.
    data["connected"] = rt.is_connected(data["id"])
    data["node"] = rt.node_of(data["id"])
    return data


async def _site_must_exist(
    rt: Runtime, site_id: str | None, who: Principal, tags: frozenset[str]
) -> None:
    """422 for a site that does not exist or that ``who`` can neither see nor place this
    charger at (alike, so scopes do not reveal which sites exist)."""
    if site_id is None:
        return
    async with rt.engine.connect() as conn:
        row = (await conn.execute(select(Site.id, Site.region).where(Site.id == site_id))).first()
    if row is None or not (
        who.can("fleet.read", site_place(row.id, row.region))
        or who.can("charger.write", ChargerPlace("", row.id, row.region, tags))
    ):
        raise Problem(422, "Unknown site", f"no site with id {site_id!r}", "site_id")


@router.post("", status_code=201, response_model=ChargerOut, responses=problems(409))
async def create_charger(
    body: ChargerIn, request: Request, rt: RuntimeDep, who: Principal = require("charger.write")
) -> dict[str, Any]:
    """Register a charger and its AuthorizationKey (stored as a salted HMAC, never in clear)."""
    await _site_must_exist(rt, body.site_id, who, frozenset(body.tags))
    _profile_possible(rt, body.security_profile)
    region = await _region_of(rt, body.site_id)
    who.check("charger.write", ChargerPlace(body.id, body.site_id, region, frozenset(body.tags)))
    note(request, "charger", body.id)
    salt, digest = hash_key(body.auth_key)
    values = {
        "id": body.id,
        "auth_salt": salt,
        "auth_hash": digest,
        "security_profile": body.security_profile,
        "registration": body.registration,
        "site_id": body.site_id,
        "tags": body.tags,
        "connected": False,
        "created_at": rt.clock.now(),
    }
    try:
        async with rt.engine.begin() as conn:
            await conn.execute(insert(Charger).values(**values))
    except IntegrityError:
        raise Problem(
            409, "Charger exists", f"a charger with id {body.id!r} exists", "id"
        ) from None
    created = await _load(rt, body.id)
    note(request, "charger", body.id, None, {**_audited(created), "auth_key": body.auth_key})
    return created


def recent_events(charger_id: str, limit: int) -> Select[Any]:
    """A charger's newest events, newest first, by ``received_at`` (id breaks ties).

    Not by id alone: on PostgreSQL ``charger_events`` is partitioned by day (migration 0021),
    and ``ORDER BY id DESC`` makes the planner walk each partition's primary key backwards
    until it meets the charger — the whole table for a quiet charger (225 ms with 2 million
    rows in 98 partitions, docs/performance.md). Ordered by ``received_at``, each partition
    answers from its (charger_id, received_at) index in two pages (1 ms).
    """
    return (
        select(ChargerEvent)
        .where(ChargerEvent.charger_id == charger_id)
        .order_by(ChargerEvent.received_at.desc(), ChargerEvent.id.desc())
        .limit(limit)
    )


def _profile_possible(rt: Runtime, profile: int) -> None:
    """422 for a profile this evota cannot serve: it would lock the charger out."""
    tls = rt.gateway.tls
    if profile >= 2 and not (rt.ocpp_tls_port or rt.gateway.trusted_proxies):
        raise Problem(
            422,
            "Security profile not available",
            f"security profile {profile} needs the wss:// listener (EVOTA_OCPP_TLS_PORT) or "
            "a TLS proxy (EVOTA_OCPP_TRUSTED_PROXIES)",
            "security_profile",
        )
    if profile >= 3 and (tls is None or tls.trust is None):
        raise Problem(
            422,
            "Security profile not available",
            "security profile 3 needs the charger CA (EVOTA_OCPP_CHARGER_CA)",
            "security_profile",
        )


async def _region_of(rt: Runtime, site_id: str | None) -> str | None:
    if site_id is None:
        return None
    async with rt.engine.connect() as conn:
        return (await conn.execute(select(Site.region).where(Site.id == site_id))).scalar()


async def _profile_of(rt: Runtime, charger_id: str) -> int:
    async with rt.engine.connect() as conn:
        value = (
            await conn.execute(select(Charger.security_profile).where(Charger.id == charger_id))
        ).scalar()
    if value is None:
        raise Problem(404, "Unknown charger", f"no charger with id {charger_id!r}", "id")
    return int(value)


async def _load(rt: Runtime, charger_id: str) -> dict[str, Any]:
    async with rt.engine.connect() as conn:
        row = (await conn.execute(select(*_PUBLIC_COLUMNS).where(Charger.id == charger_id))).first()
    if row is None:
        raise Problem(404, "Unknown charger", f"no charger with id {charger_id!r}", "id")
    return _out(rt, row)


@router.get("", response_model=Page[ChargerOut])
async def list_chargers(
    rt: RuntimeDep,
    who: Principal = require("fleet.read"),
    site: str | None = text("site id"),
    vendor: str | None = text("exact vendor"),
    model: str | None = text("exact model"),
    firmware_version: str | None = text("exact firmware version"),
    connected: bool | None = None,
    registration: RegistrationStatus | None = None,
    tag: str | None = text("chargers with this tag", 64),
    q: str | None = text("id contains (case-insensitive)", 48),
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """The chargers the caller can see, by id."""
    query = scope_filter(who)(select(*_PUBLIC_COLUMNS))
    for column, value in (
        (Charger.site_id, site),
        (Charger.vendor, vendor),
        (Charger.model, model),
        (Charger.firmware_version, firmware_version),
        (Charger.registration, registration),
    ):
        if value is not None:
            query = query.where(column == value)
    if connected is not None:
        # The stored flag (written behind within EVOTA_WRITE_INTERVAL) scales to any fleet;
        # an IN list of every live identity would not.
        query = query.where(Charger.connected.is_(connected))
    if tag is not None:
        query = query.where(has_tag(tag))
    if q:
        query = query.where(func.lower(Charger.id).contains(q.lower(), autoescape=True))
    total, rows = await fetch_page(rt.engine, query, Charger.id, limit, offset)
    return {"items": [_out(rt, r) for r in rows], "total": total, "limit": limit, "offset": offset}


@router.get("/{charger_id}", response_model=ChargerDetail, responses=problems(404))
async def show_charger(
    charger_id: ChargerId, rt: RuntimeDep, who: Principal = require("fleet.read")
) -> dict[str, Any]:
    await authorize_charger(rt, who, "fleet.read", charger_id)
    data = await _load(rt, charger_id)
    async with rt.engine.connect() as conn:
        connectors = (
            await conn.execute(
                select(Connector)
                .where(Connector.charger_id == charger_id)
                .order_by(Connector.connector_id)
            )
        ).all()
        events = (await conn.execute(recent_events(charger_id, 25))).all()
    data["connectors"] = [ConnectorOut.model_validate(r._mapping) for r in connectors]
    data["recent_events"] = [EventOut.model_validate(r._mapping) for r in events]
    return data


@router.patch("/{charger_id}", response_model=ChargerOut, responses={**AWAITING, **problems(404)})
async def update_charger(
    charger_id: ChargerId,
    body: ChargerPatch,
    request: Request,
    rt: RuntimeDep,
    who: Principal = require("charger.write"),
) -> Any:
    """Accept or reject a charger, move it to a site, retag it, rotate its key, raise or
    lower its security profile or set its hardware revision (OCPP 1.6 reports none:
    docs/firmware.md).

    Taking a charger out of service (registration ``Rejected`` or ``Pending``) and rotating
    its key or lowering its security profile wait for a second operator (202) when
    ``charger.disable`` / ``charger.credentials`` need approval (the default); raising the
    profile needs the listener it asks for (422 otherwise).
    """
    place = await authorize_charger(rt, who, "charger.write", charger_id)
    changes = body.model_dump(exclude_unset=True)
    reason = changes.pop("reason", None)
    request.state.audit_reason = reason
    if "site_id" in changes:
        await _site_must_exist(rt, changes["site_id"], who, place.tags)
        region = await _region_of(rt, changes["site_id"])
        who.check("charger.write", ChargerPlace(charger_id, changes["site_id"], region, place.tags))
    key = changes.pop("auth_key", None)
    if key is not None:
        who.check("charger.credentials", place)
        changes["auth_salt"], changes["auth_hash"] = hash_key(key)
    lowered = False
    if "security_profile" in changes:
        current = await _profile_of(rt, charger_id)
        if changes["security_profile"] == current:
            del changes["security_profile"]
        elif security_profiles.lowers(current, changes["security_profile"]):
            # Weaker authentication: a credential change (permission and four eyes).
            who.check("charger.credentials", place)
            lowered = True
        else:
            _profile_possible(rt, changes["security_profile"])
    actions = four_eyes.charger_change_actions(changes)
    if lowered and "charger.credentials" not in actions:
        actions.append("charger.credentials")
    gated = [a for a in actions if rt.approvals.required(a)]
    if gated:
        shown = sorted(k for k in changes if k not in ("auth_salt", "auth_hash"))
        return await awaiting(
            rt,
            who,
            gated[0],
            f"change charger {charger_id}: {', '.join(shown + (['auth_key'] if key else []))}",
            {"charger_id": charger_id, "changes": changes},
            reason,
            charger_count=1,
        )
    old = await _load(rt, charger_id)
    await charger_changes.apply(rt.engine, rt.live_state, charger_id, changes, rt.charger_changed)
    if CHARGER_FACTS.intersection(changes):  # running campaigns read the charger again
        await tell(rt, "campaigns.facts", charger_ids=[charger_id])
    new = await _load(rt, charger_id)
    before, after = _audited(old), _audited(new)
    if key is not None:  # redacted by name: the entry says the key changed, never what to
        before["auth_key"], after["auth_key"] = "previous", key
    note(request, "charger", charger_id, before, after)
    return new
