"""What the campaign runner remembers of its campaigns' chargers, so an evaluation reads what
changed.

The engine needs a snapshot of every member charger on every evaluation. Reading them all
(20,000 rows, their sessions, 20,000 snapshots built) about once a second was a third of a
20,000-charger campaign leader's CPU. Most of a snapshot changes rarely: vendor, model and
firmware version at a boot, site and tags when an operator edits them, region and timezone
with the site. So they are remembered per campaign and re-read for a charger only after a
notice (:meth:`ChargerFacts.changed`, :meth:`ChargerFacts.site_changed`), while what changes
all the time is taken fresh on every evaluation:

- ``connected``, from the gateway (memory, no I/O);
- ``in_session``, one read of the sessions in progress;
- the vendor profile's limits, from the vendor store's memoised view (an edited profile
  applies at the next evaluation).

Notices come from the boots (the fleet service's boot listeners; relayed to the leader in a
cluster), the charger edit route and the site edit route (``campaigns.facts``, a leader
call in a cluster). A boot's fields are stored by the write-behind writer shortly after the
notice, so a noticed charger is read at the next evaluation and once more ``settle`` later. A
campaign is read whole on first sight and every ``full_every``: the safety net for writes
no notice names. ``last_seen`` is kept as read: the evaluation does not use it (creation and
dynamic joins, which do, read the fleet fresh).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from evota import metrics
from evota.fleet.vendors import VendorProfile
from evota.selection import ChargerSnapshot
from evota.store.models import Charger, ChargingSession, Site

_CHUNK = 500  # ids per IN (...) query, well under every driver's parameter limit
#: Members up to this many have their sessions read by id; a larger campaign reads every
#: session in progress once (one indexed query instead of many IN lists).
SESSIONS_BY_ID = 4 * _CHUNK
#: Noticed chargers remembered at most; beyond that every campaign is read whole instead.
MAX_NOTICES = 100_000

#: Stored columns a snapshot is made of: a change to one of them is a notice.
CHARGER_FACTS = frozenset(
    {"vendor", "model", "hardware_revision", "firmware_version", "site_id", "tags"}
)
SITE_FACTS = frozenset({"region", "timezone"})

ProfileFor = Callable[[str | None, str | None, str | None], VendorProfile]
Connected = Callable[[str], bool]

_QUERY = select(
    Charger.id,
    Charger.vendor,
    Charger.model,
    Charger.hardware_revision,
    Charger.firmware_version,
    Charger.site_id,
    Charger.tags,
    Charger.last_seen,
    Site.region,
    Site.timezone,
).join(Site, Site.id == Charger.site_id, isouter=True)


def chunks(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    """``ids`` in slices of at most ``_CHUNK``: one IN (...) list each."""
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


async def read_rows(conn: AsyncConnection, ids: Sequence[str] | None) -> list[Any]:
    """The stored facts of ``ids`` (every charger when None); unknown ids are left out."""
    if ids is None:
        rows = list((await conn.execute(_QUERY)).all())
    else:
        rows = []
        for chunk in chunks(ids):
            rows += (await conn.execute(_QUERY.where(Charger.id.in_(chunk)))).all()
    return rows


async def in_session(conn: AsyncConnection, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` have a charging session in progress."""
    active = select(ChargingSession.charger_id).where(ChargingSession.outcome == "active")
    if len(ids) > SESSIONS_BY_ID:
        wanted = set(ids)
        return {c for c in (await conn.execute(active.distinct())).scalars() if c in wanted}
    busy: set[str] = set()
    for chunk in chunks(ids):
        busy.update(
            (await conn.execute(active.where(ChargingSession.charger_id.in_(chunk)))).scalars()
        )
    return busy


def snapshot(r: Any, *, connected: bool, busy: bool, profile: VendorProfile) -> ChargerSnapshot:
    return ChargerSnapshot(
        id=r.id,
        vendor=r.vendor,
        model=r.model,
        hardware_revision=r.hardware_revision,
        firmware_version=r.firmware_version,
        site_id=r.site_id,
        region=r.region,
        tags=frozenset(r.tags or ()),
        timezone=r.timezone or "UTC",
        connected=connected,
        last_seen=r.last_seen,
        in_session=busy,
        max_per_site=profile.max_per_site,
        max_image_bytes=profile.max_image_bytes,
    )


def current(
    s: ChargerSnapshot, *, connected: bool, busy: bool, profile: VendorProfile
) -> ChargerSnapshot:
    """``s`` with what changes all the time as of now (the same object when none did)."""
    if (
        s.connected is connected
        and s.in_session is busy
        and s.max_per_site == profile.max_per_site
        and s.max_image_bytes == profile.max_image_bytes
    ):
        return s
    return replace(
        s,
        connected=connected,
        in_session=busy,
        max_per_site=profile.max_per_site,
        max_image_bytes=profile.max_image_bytes,
    )


class ChargerFacts:
    def __init__(
        self,
        connected: Connected,
        profile_for: ProfileFor,
        *,
        full_every: timedelta = timedelta(minutes=5),
        settle: timedelta = timedelta(seconds=10),
    ) -> None:
        self._connected = connected
        self._profile_for = profile_for
        self.full_every = full_every
        self.settle = settle
        self._views: dict[str, dict[str, ChargerSnapshot]] = {}  # campaign -> charger -> view
        self._read_at: dict[str, datetime] = {}  # campaign -> when it was last read
        self._whole_at: dict[str, datetime] = {}  # campaign -> when it was last read whole
        self._noticed: dict[str, datetime] = {}  # charger id -> its latest notice
        self._sites: dict[str, datetime] = {}  # site id -> its latest notice

    # -- notices (on the event loop, never blocking) -------------------------------------------
    def changed(self, charger_id: str, now: datetime) -> None:
        """The charger's stored facts changed (a boot, an operator's edit)."""
        if len(self._noticed) >= MAX_NOTICES:
            self._forget_notices(now)
            if len(self._noticed) >= MAX_NOTICES:  # a flood: read every campaign whole
                self._noticed.clear()
                self._whole_at.clear()
                return
        self._noticed[charger_id] = now

    def site_changed(self, site_id: str, now: datetime) -> None:
        """The site's region or timezone changed: its chargers are read again."""
        if len(self._sites) >= MAX_NOTICES:
            self._sites.clear()
            self._whole_at.clear()
            return
        self._sites[site_id] = now

    def retain(self, campaign_ids: Sequence[str]) -> None:
        """Forget campaigns no longer evaluated: memory follows the active ones."""
        keep = set(campaign_ids)
        for campaign_id in [c for c in self._views if c not in keep]:
            del self._views[campaign_id]
            self._read_at.pop(campaign_id, None)
            self._whole_at.pop(campaign_id, None)

    # -- reading --------------------------------------------------------------------------------
    async def read(
        self, conn: AsyncConnection, campaign_id: str, members: Sequence[str], now: datetime
    ) -> dict[str, ChargerSnapshot]:
        """The members' snapshots as of now: remembered facts, re-read where noticed."""
        views = self._views.get(campaign_id)
        whole_at = self._whole_at.get(campaign_id)
        if views is None or whole_at is None or now - whole_at >= self.full_every:
            rows = await read_rows(conn, members)
            metrics.CAMPAIGN_CHARGER_ROWS_READ.inc(len(rows))
            views = {r.id: self._snapshot(r) for r in rows}
            self._views[campaign_id] = views
            self._whole_at[campaign_id] = now
        else:
            stale = self._stale(views, members, self._read_at.get(campaign_id, whole_at), now)
            for cid in stale:  # a charger gone from the database since is left out
                views.pop(cid, None)
            rows = await read_rows(conn, stale)
            metrics.CAMPAIGN_CHARGER_ROWS_READ.inc(len(rows))
            for r in rows:
                views[r.id] = self._snapshot(r)
        self._read_at[campaign_id] = now
        self._forget_notices(now)
        busy = await in_session(conn, list(views))
        fleet: dict[str, ChargerSnapshot] = {}
        for cid, s in views.items():
            fresh = current(
                s,
                connected=self._connected(cid),
                busy=cid in busy,
                profile=self._profile_for(s.vendor, s.model, s.firmware_version),
            )
            if fresh is not s:
                views[cid] = fresh
            fleet[cid] = fresh
        return fleet

    def _stale(
        self,
        views: dict[str, ChargerSnapshot],
        members: Sequence[str],
        previous: datetime,
        now: datetime,
    ) -> list[str]:
        """Members never read (joined since), or with a notice to read: one the previous
        read may not have seen, or one whose ``settle`` ended since (the write behind it
        is stored by then). So a notice costs two reads, not one per evaluation."""

        def due(at: datetime | None) -> bool:
            return at is not None and (at >= previous or previous < at + self.settle <= now)

        sites = {site for site, at in self._sites.items() if due(at)}
        return [
            cid
            for cid in members
            if (view := views.get(cid)) is None
            or due(self._noticed.get(cid))
            or (view.site_id is not None and view.site_id in sites)
        ]

    def _snapshot(self, r: Any) -> ChargerSnapshot:
        return snapshot(
            r,
            connected=self._connected(r.id),
            busy=False,
            profile=self._profile_for(r.vendor, r.model, r.firmware_version),
        )

    def _forget_notices(self, now: datetime) -> None:
        """A notice older than ``settle`` and ``full_every`` has been read by every campaign
        (or its campaign reads whole next)."""
        horizon = now - self.settle - self.full_every
        for store in (self._noticed, self._sites):
            old = [k for k, at in store.items() if at < horizon]
            for k in old:
                del store[k]
