"""Vendor and model profiles (evota.fleet.vendors): CRUD, what job histories suggest, and the
effective profile of one charger.

Profiles are fleet-wide definitions: reading them needs ``firmware.read``, changing them
``firmware.write`` (both on an unlimited grant). A charger's effective profile is read on the
charger object (``fleet.read`` in the charger's scope).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from evota.api.deps import Principal, RuntimeDep, require, require_charger
from evota.api.params import PRINTABLE, ChargerId, Instant, IntId, Limit, Offset, text
from evota.api.problems import AUTHENTICATED, Problem, problems
from evota.api.schemas import Page
from evota.audit.changes import diff
from evota.fleet import vendor_learning as learning
from evota.fleet import vendors
from evota.fleet.vendor_store import StoredProfile, VendorProfileError, VendorStore
from evota.runtime import Runtime

router = APIRouter(prefix="/api/v1", tags=["vendor profiles"], responses=AUTHENTICATED)

EXAMPLE: dict[str, Any] = {
    "vendor": "Acme",
    "model": "AC22",
    "signed_updates": False,
    "reboot_seconds": 240,
    "download_protocol": "ftp",
    "max_image_bytes": 16000000,
    "config_keys": {"HeartbeatInterval": "HeartBeatIntervalSec"},
    "max_per_site": 2,
    "notes": "1.6 only; FTP downloads",
}

Ident = Annotated[str, Field(min_length=1, max_length=vendors.MAX_IDENT, pattern=PRINTABLE)]
Seconds = Annotated[float, Field(gt=0, le=vendors.MAX_SECONDS, description="seconds")]
Trigger = Annotated[
    str, Field(max_length=64, description=", ".join(sorted(vendors.TRIGGER_MESSAGES)))
]
KeyName = Annotated[str, Field(min_length=1, max_length=vendors.MAX_TEXT, pattern=PRINTABLE)]


class ProfileFields(BaseModel):
    """The fields of a profile; see docs/vendor-profiles.md for each one's effect."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE]})
    vendor: Ident
    model: Ident | None = Field(None, description="null: every model of the vendor")
    firmware_min: Ident | None = Field(None, description="inclusive, version ordering")
    firmware_max: Ident | None = Field(None, description="inclusive")
    signed_updates: bool | None = Field(None, description="null: by the image's signature")
    installed_before_reboot: bool | None = None
    download_seconds: Seconds | None = Field(None, description="typical download time")
    install_seconds: Seconds | None = Field(None, description="typical install time")
    reboot_seconds: Seconds | None = Field(None, description="typical reboot time")
    download_protocol: Literal["http", "https", "ftp", "ftps"] = "http"
    max_image_bytes: int | None = Field(None, ge=1, le=2**53)
    config_keys: dict[KeyName, KeyName] = Field(
        default_factory=dict,
        max_length=vendors.MAX_CONFIG_KEYS,
        description="standard configuration key -> the vendor's name for it",
    )
    trigger_messages: list[Trigger] | None = Field(
        None, max_length=len(vendors.TRIGGER_MESSAGES), description="null: all supported"
    )
    max_per_site: int | None = Field(None, ge=1, le=100_000, description="safe updates per site")
    notes: str = Field("", max_length=vendors.MAX_NOTES)


class ProfileOut(ProfileFields):
    model_config = ConfigDict(extra="forbid")
    id: int
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime


class EffectiveOut(BaseModel):
    charger_id: str
    vendor: str | None
    model: str | None
    firmware_version: str | None
    profile_id: int | None = Field(description="the stored profile that applies; null: defaults")
    default: bool = Field(description="no profile matches: the documented defaults apply")
    profile: dict[str, Any]


class DurationsOut(BaseModel):
    n: int
    median: float | None
    p90: float | None


class InstalledOut(BaseModel):
    before: int = Field(description="jobs that reported Installed before the reboot")
    after: int


class SuggestionOut(BaseModel):
    vendor: str | None
    model: str | None
    jobs: int
    download_seconds: DurationsOut
    install_seconds: DurationsOut
    reboot_seconds: DurationsOut
    installed_before_reboot: InstalledOut
    suggested: dict[str, Any] = Field(description="profile field -> suggested value")
    profile_id: int | None = Field(description="the vendor+model profile applying would change")


class ApplyIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"vendor": "Acme", "model": "AC22"}]},
    )
    vendor: Ident
    model: Ident | None = None
    fields: list[Annotated[str, Field(max_length=64)]] | None = Field(
        None,
        max_length=len(learning.SUGGESTED),
        description="null: every suggested field; else some of " + ", ".join(learning.SUGGESTED),
    )
    since: Instant | None = Field(None, description="learn from jobs created since")


def store(rt: Runtime) -> VendorStore:
    found: VendorStore = rt.vendor_profiles
    return found


def _profile(data: dict[str, Any]) -> vendors.VendorProfile:
    try:
        return vendors.validate(data)
    except vendors.ProfileError as exc:
        raise Problem(422, "Invalid vendor profile", exc.message, exc.field) from None


def _problem(exc: VendorProfileError) -> Problem:
    if exc.kind == "not_found":
        return Problem(404, "Unknown vendor profile", str(exc), exc.field)
    return Problem(409, "Vendor profile exists", str(exc), exc.field)


async def _audit(
    rt: Runtime, request: Request, who: Principal, action: str, profile_id: int, detail: Any
) -> None:
    request.state.audited = True
    await rt.audit.record(
        who.actor,
        f"vendor_profile.{action}",
        "ok",
        target=str(profile_id),
        detail={"target_type": "vendor_profile", **detail},
    )


def _audited(stored: StoredProfile | None) -> dict[str, Any] | None:
    return None if stored is None else vendors.to_dict(stored.profile)


@router.get("/vendor-profiles", response_model=Page[ProfileOut])
async def list_profiles(
    rt: RuntimeDep,
    _who: Principal = require("firmware.read"),
    vendor: str | None = text("vendor (case-insensitive)", max_length=vendors.MAX_IDENT),
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Profiles by vendor, model and firmware range."""
    items = sorted(
        store(rt).stored,
        key=lambda s: (
            s.profile.vendor.casefold(),
            (s.profile.model or "").casefold(),
            s.profile.firmware_min or "",
            s.id,
        ),
    )
    if vendor:
        items = [s for s in items if s.profile.vendor.casefold() == vendor.casefold()]
    page = [s.to_dict() for s in items[offset : offset + limit]]
    return {"items": page, "total": len(items), "limit": limit, "offset": offset}


@router.post(
    "/vendor-profiles", status_code=201, response_model=ProfileOut, responses=problems(409)
)
async def create_profile(
    body: ProfileFields,
    request: Request,
    rt: RuntimeDep,
    who: Principal = require("firmware.write"),
) -> dict[str, Any]:
    """A profile for a vendor, optionally one model and firmware range (one per scope)."""
    profile = _profile(body.model_dump())
    try:
        created = await store(rt).create(profile, who.name)
    except VendorProfileError as exc:
        raise _problem(exc) from None
    await _audit(
        rt, request, who, "created", created.id, {"changes": diff(None, _audited(created))}
    )
    return created.to_dict()


@router.get(
    "/vendor-profiles/suggestions", response_model=list[SuggestionOut], responses=problems(422)
)
async def suggestions(
    rt: RuntimeDep,
    _who: Principal = require("firmware.read"),
    vendor: str | None = text("exact vendor", max_length=vendors.MAX_IDENT),
    model: str | None = text("exact model", max_length=vendors.MAX_IDENT),
    since: Annotated[Instant | None, Query(description="jobs created since")] = None,
) -> list[dict[str, Any]]:
    """What firmware jobs showed per vendor and model (median, p90, n) and the profile values
    they suggest; nothing is applied until an operator applies it."""
    vs = store(rt)
    found = await vs.observations(vendor=vendor, model=model, since=since)
    return [_suggestion(vs, o) for o in found]


def _suggestion(vs: VendorStore, o: learning.Observation) -> dict[str, Any]:
    current = vs.find(vendors.VendorProfile(vendor=o.vendor or "", model=o.model))
    return {**o.to_dict(), "profile_id": current.id if current and o.vendor else None}


@router.post(
    "/vendor-profiles/suggestions/apply",
    response_model=ProfileOut,
    responses=problems(409, 422),
)
async def apply_suggestion(
    body: ApplyIn, request: Request, rt: RuntimeDep, who: Principal = require("firmware.write")
) -> dict[str, Any]:
    """Write the suggested values into the vendor+model profile (created if missing)."""
    unknown = [f for f in body.fields or () if f not in learning.SUGGESTED]
    if unknown:
        raise Problem(
            422, "Invalid request", f"{unknown[0]!r} is not a field evota suggests", "fields"
        )
    vs = store(rt)
    found = await vs.observations(vendor=body.vendor, model=body.model, since=body.since)
    match = next((o for o in found if o.model == body.model), None)
    if match is None or not match.suggested:
        raise Problem(
            409,
            "Nothing to suggest",
            f"no suggestion for {body.vendor} {body.model or '(any model)'} yet: "
            f"each value needs {learning.MIN_SAMPLES} observed jobs",
            "vendor",
        )
    try:
        values = learning.suggestion_fields(match, body.fields)
    except KeyError as exc:
        raise Problem(
            409, "Nothing to suggest", f"no suggested value for {exc}", "fields"
        ) from None
    scope = vendors.VendorProfile(vendor=body.vendor, model=body.model)
    current = vs.find(scope)
    base = vendors.to_dict(current.profile if current is not None else scope)
    profile = _profile({**base, **values})
    try:
        if current is None:
            saved = await vs.create(profile, who.name)
        else:
            saved = await vs.replace(current.id, profile, who.name)
    except VendorProfileError as exc:
        raise _problem(exc) from None
    detail = {
        "applied": values,
        "jobs": match.jobs,
        "changes": diff(_audited(current), _audited(saved)),
    }
    await _audit(rt, request, who, "suggestion_applied", saved.id, detail)
    return saved.to_dict()


@router.get(
    "/vendor-profiles/{vendor_profile_id}", response_model=ProfileOut, responses=problems(404)
)
async def get_profile(
    vendor_profile_id: IntId, rt: RuntimeDep, _who: Principal = require("firmware.read")
) -> dict[str, Any]:
    try:
        return store(rt).get(vendor_profile_id).to_dict()
    except VendorProfileError as exc:
        raise _problem(exc) from None


@router.put(
    "/vendor-profiles/{vendor_profile_id}",
    response_model=ProfileOut,
    responses=problems(404, 409),
)
async def replace_profile(
    vendor_profile_id: IntId,
    body: ProfileFields,
    request: Request,
    rt: RuntimeDep,
    who: Principal = require("firmware.write"),
) -> dict[str, Any]:
    """Replace every field of a profile (its scope may change too)."""
    profile = _profile(body.model_dump())
    vs = store(rt)
    try:
        old = vs.get(vendor_profile_id)
        new = await vs.replace(vendor_profile_id, profile, who.name)
    except VendorProfileError as exc:
        raise _problem(exc) from None
    detail = {"changes": diff(_audited(old), _audited(new))}
    await _audit(rt, request, who, "updated", new.id, detail)
    return new.to_dict()


@router.delete(
    "/vendor-profiles/{vendor_profile_id}",
    status_code=204,
    response_class=Response,
    responses=problems(404),
)
async def delete_profile(
    vendor_profile_id: IntId,
    request: Request,
    rt: RuntimeDep,
    who: Principal = require("firmware.write"),
) -> Response:
    try:
        old = await store(rt).delete(vendor_profile_id)
    except VendorProfileError as exc:
        raise _problem(exc) from None
    await _audit(rt, request, who, "deleted", old.id, {"changes": diff(_audited(old), None)})
    return Response(status_code=204)


@router.get(
    "/chargers/{charger_id}/vendor-profile",
    response_model=EffectiveOut,
    responses=problems(404),
)
async def effective_profile(
    charger_id: ChargerId, rt: RuntimeDep, _who: Principal = require_charger("fleet.read")
) -> dict[str, Any]:
    """The profile evota applies to this charger (the most specific match, or the defaults),
    for the vendor, model and firmware version it last booted with."""
    vs = store(rt)
    vendor, model, version = vs.identity(charger_id)
    profile = vs.for_charger(charger_id)
    stored = vs.stored_for(profile)
    return {
        "charger_id": charger_id,
        "vendor": vendor,
        "model": model,
        "firmware_version": version,
        "profile_id": stored.id if stored is not None else None,
        "default": profile.is_default,
        "profile": vendors.to_dict(profile),
    }
