"""Vendor profiles in the database, and the in-memory view every other service reads.

``for_charger`` is synchronous and does no I/O, so the job runner, campaigns, playbooks and
delivery can ask it on their hot paths.  It answers from two caches:

* the profiles (a small table), reloaded after every change made through this store;
* each charger's (vendor, model, firmware version), loaded at start and kept current by
  ``charger_booted``, which the fleet service calls on every BootNotification -- the only
  message that reports them -- so a charger that comes back with a new model or version is
  resolved against its new identity from that boot on.

Resolved profiles are memoised per distinct identity (fleets have few), and the identities
are interned, so 100,000 chargers cost one dict entry each.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.clock import Clock
from evota.fleet import vendor_learning as learning
from evota.fleet import vendors
from evota.fleet.vendors import VendorProfile
from evota.store.models import Charger, Job, JobEvent
from evota.store.models import VendorProfile as ProfileRow

__all__ = ["StoredProfile", "VendorProfileError", "VendorStore", "scope_key"]

Identity = tuple[str | None, str | None, str | None]  # vendor, model, firmware version
_UNKNOWN: Identity = (None, None, None)
#: Rows per fetch when reading job history for learning.
CHUNK = 5000
#: Distinct identities memoised: a charger controls the strings it boots with, so one that
#: reboots with a new firmware version each time must not grow memory without bound.
MAX_MEMO = 4096
#: Profiles are a handful per vendor; the cap keeps the table and the cache small.
MAX_PROFILES = 10_000


class VendorProfileError(Exception):
    """``kind`` is "not_found" or "conflict"; ``field`` names what the caller gave."""

    def __init__(self, kind: str, field: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.field = field


@dataclass(frozen=True, slots=True)
class StoredProfile:
    id: int
    profile: VendorProfile
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            **vendors.to_dict(self.profile),
            "created_by": self.created_by,
            "created_at": self.created_at,
            "updated_by": self.updated_by,
            "updated_at": self.updated_at,
        }


def scope_key(profile: VendorProfile) -> str:
    """What the profile applies to, canonical: two profiles for one scope are a conflict."""
    return json.dumps(
        [
            profile.vendor.casefold(),
            (profile.model or "").casefold(),
            profile.firmware_min or "",
            profile.firmware_max or "",
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def _stored(row: Any) -> StoredProfile:
    return StoredProfile(
        id=row.id,
        profile=vendors.validate(row.data),
        created_by=row.created_by,
        created_at=row.created_at,
        updated_by=row.updated_by,
        updated_at=row.updated_at,
    )


class VendorStore:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock
        self.stored: tuple[StoredProfile, ...] = ()
        self._profiles: tuple[VendorProfile, ...] = ()
        self._chargers: dict[str, Identity] = {}
        self._identities: dict[Identity, Identity] = {}  # interning
        self._resolved: dict[Identity, VendorProfile] = {}

    # -- the in-memory view -------------------------------------------------------------------
    async def load(self) -> None:
        """Read every profile and every charger's identity (at start)."""
        await self._reload_profiles()
        chargers: dict[str, Identity] = {}
        async with self._engine.connect() as conn:
            result = await conn.stream(
                select(Charger.id, Charger.vendor, Charger.model, Charger.firmware_version)
                .where(Charger.vendor.is_not(None))
                .execution_options(yield_per=CHUNK)
            )
            async for row in result:
                chargers[row.id] = self._intern((row.vendor, row.model, row.firmware_version))
        self._chargers = chargers

    def _intern(self, identity: Identity) -> Identity:
        if len(self._identities) >= MAX_MEMO and identity not in self._identities:
            self._identities = {}  # chargers keep their tuples; only sharing starts over
        return self._identities.setdefault(identity, identity)

    def charger_booted(
        self, charger_id: str, vendor: str | None, model: str | None, firmware: str | None
    ) -> None:
        """A BootNotification's identity (a missing firmware version keeps the last one)."""
        if firmware is None:
            firmware = self._chargers.get(charger_id, _UNKNOWN)[2]
        self._chargers[charger_id] = self._intern((vendor, model, firmware))

    def for_identity(
        self, vendor: str | None, model: str | None, firmware_version: str | None
    ) -> VendorProfile:
        """The effective profile of a charger with this identity (memoised)."""
        identity = (vendor, model, firmware_version)
        found = self._resolved.get(identity)
        if found is None:
            found = vendors.resolve(self._profiles, vendor, model, firmware_version)
            if len(self._resolved) >= MAX_MEMO:
                self._resolved = {}
            self._resolved[identity] = found
        return found

    def for_charger(self, charger_id: str) -> VendorProfile:
        """The effective profile of a charger; ``vendors.DEFAULT`` if it never booted."""
        return self.for_identity(*self._chargers.get(charger_id, _UNKNOWN))

    def identity(self, charger_id: str) -> Identity:
        return self._chargers.get(charger_id, _UNKNOWN)

    def stored_for(self, profile: VendorProfile) -> StoredProfile | None:
        """The stored row an effective profile came from (None for the default)."""
        return next((s for s in self.stored if s.profile is profile), None)

    async def _reload_profiles(self) -> None:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(ProfileRow).order_by(ProfileRow.id))).all()
        self.stored = tuple(_stored(r) for r in rows)
        self._profiles = tuple(s.profile for s in self.stored)
        self._resolved = {}

    # -- changes ------------------------------------------------------------------------------
    def get(self, profile_id: int) -> StoredProfile:
        found = next((s for s in self.stored if s.id == profile_id), None)
        if found is None:
            raise VendorProfileError("not_found", "profile_id", f"no vendor profile {profile_id}")
        return found

    def find(self, profile: VendorProfile) -> StoredProfile | None:
        """The stored profile with the same scope (vendor, model, range), if any."""
        key = scope_key(profile)
        return next((s for s in self.stored if scope_key(s.profile) == key), None)

    async def create(self, profile: VendorProfile, by: str) -> StoredProfile:
        if len(self.stored) >= MAX_PROFILES:
            raise VendorProfileError(
                "conflict", "vendor", f"at most {MAX_PROFILES} vendor profiles: delete one first"
            )
        now = self._clock.now()
        try:
            async with self._engine.begin() as conn:
                new_id = (
                    await conn.execute(
                        insert(ProfileRow)
                        .values(
                            **_columns(profile),
                            created_by=by,
                            created_at=now,
                            updated_by=by,
                            updated_at=now,
                        )
                        .returning(ProfileRow.id)
                    )
                ).scalar_one()
        except IntegrityError:
            raise _conflict(profile) from None
        finally:
            await self._reload_profiles()
        return self.get(int(new_id))

    async def replace(self, profile_id: int, profile: VendorProfile, by: str) -> StoredProfile:
        self.get(profile_id)
        try:
            async with self._engine.begin() as conn:
                result = await conn.execute(
                    update(ProfileRow)
                    .where(ProfileRow.id == profile_id)
                    .values(**_columns(profile), updated_by=by, updated_at=self._clock.now())
                )
        except IntegrityError:
            raise _conflict(profile) from None
        finally:
            await self._reload_profiles()
        if result.rowcount == 0:
            raise VendorProfileError("not_found", "profile_id", f"no vendor profile {profile_id}")
        return self.get(profile_id)

    async def delete(self, profile_id: int) -> StoredProfile:
        old = self.get(profile_id)
        async with self._engine.begin() as conn:
            await conn.execute(delete(ProfileRow).where(ProfileRow.id == profile_id))
        await self._reload_profiles()
        return old

    # -- learning -----------------------------------------------------------------------------
    async def observations(
        self, *, vendor: str | None = None, model: str | None = None, since: datetime | None = None
    ) -> list[learning.Observation]:
        """What job histories say per (vendor, model): one read, streamed in chunks."""
        learner = learning.Learner()
        async for fact in self._history(vendor, model, since):
            learner.add(fact)
        return learner.observations()

    async def _history(
        self, vendor: str | None, model: str | None, since: datetime | None
    ) -> AsyncIterator[learning.EventFact]:
        query = (
            select(
                JobEvent.job_id,
                Charger.vendor,
                Charger.model,
                JobEvent.at,
                JobEvent.event,
                JobEvent.state,
                # only the status: decoding every event's JSON would cost more than the rest
                JobEvent.detail["status"].as_string().label("status"),
            )
            .join(Job, Job.id == JobEvent.job_id)
            .join(Charger, Charger.id == Job.charger_id)
            .where(
                Job.kind == "update",
                JobEvent.event.in_(sorted(learning.EVENTS))
                | JobEvent.state.in_(sorted(learning.STATES)),
            )
            .order_by(JobEvent.job_id, JobEvent.at, JobEvent.id)
            .execution_options(yield_per=CHUNK)
        )
        if vendor is not None:
            query = query.where(Charger.vendor == vendor)
        if model is not None:
            query = query.where(Charger.model == model)
        if since is not None:
            query = query.where(Job.created_at >= since)
        async with self._engine.connect() as conn:
            result = await conn.stream(query)
            async for chunk in result.partitions(CHUNK):  # one hand-over per chunk, not per row
                for row in chunk:
                    yield learning.EventFact(
                        job_id=row.job_id,
                        vendor=row.vendor,
                        model=row.model,
                        at=row.at,
                        event=row.event,
                        state=row.state,
                        status=row.status,
                    )


def _columns(profile: VendorProfile) -> dict[str, Any]:
    return {
        "scope_key": scope_key(profile),
        "vendor": profile.vendor,
        "model": profile.model,
        "firmware_min": profile.firmware_min,
        "firmware_max": profile.firmware_max,
        "data": vendors.to_dict(profile),
    }


def _conflict(profile: VendorProfile) -> VendorProfileError:
    scope = profile.vendor + (f" {profile.model}" if profile.model else "")
    if profile.firmware_min or profile.firmware_max:
        scope += f" firmware {profile.firmware_min or '…'}..{profile.firmware_max or '…'}"
    return VendorProfileError("conflict", "vendor", f"a profile for {scope} exists")
