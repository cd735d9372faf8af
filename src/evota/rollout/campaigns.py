"""The imperative shell of campaigns: load views, call the pure engine, apply its decisions.

Everything a campaign decides lives in :func:`evota.rollout.engine.decide`; this module only
reads the database and the gateway into the engine's views, writes what it decided (state
changes with reasons, gate evaluations with their numbers, wave advances) and creates jobs
through the :class:`~evota.rollout.runner.JobRunner`. The engine is called again on every
tick, so after a crash nothing is lost: jobs, waves and timestamps are all in the database,
and a charger that already has a job in the campaign is never given a second one unless the
engine asks for a retry or a rollback.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from evota.clock import Clock
from evota.firmware.lifecycle import FirmwareState
from evota.firmware.updates import image_facts
from evota.fleet import vendors
from evota.fleet.vendors import VendorProfile
from evota.periodic import raise_if_cancelled
from evota.rollout import charger_facts as facts
from evota.rollout import engine as eng
from evota.rollout.campaign import (
    ACTIVE,
    TERMINAL,
    CampaignAction,
    CampaignError,
    CampaignErrorKind,
    CampaignState,
    CampaignView,
    JobView,
    refusal,
    transition,
)
from evota.rollout.campaign_jobs import CampaignJobs
from evota.rollout.gate import Health, StatusReport, health_after_boot
from evota.rollout.job import TERMINAL as JOB_TERMINAL
from evota.rollout.job import JobState
from evota.rollout.policy import (
    FrozenMap,
    parse_ramp,
    policy_from_dict,
    policy_to_dict,
    target_from_dict,
    target_to_dict,
    waves_from_list,
    waves_to_list,
)
from evota.rollout.runner import JobConflict, JobRunner
from evota.rollout.target import nothing_to_update, plan_eligibility
from evota.rollout.waves import exponential, plan_waves
from evota.selection import ChargerSnapshot
from evota.store.models import (
    Campaign,
    CampaignEvent,
    Charger,
    ChargerEvent,
    ChargingSession,
    Connector,
    ConnectorStatus,
    Firmware,
    GateEvaluation,
    Job,
)

log = structlog.get_logger("evota.campaigns")

# Campaigns the loop evaluates (an aborted one while its rollbacks run).
_EVALUATED = (CampaignState.RUNNING, CampaignState.PAUSED, CampaignState.ABORTED)


async def _refuse_empty(conn: AsyncConnection, campaign_id: str) -> None:
    """A start needs something to update (the waves and exclusions are read for it only)."""
    plan = (
        await conn.execute(
            select(Campaign.waves, Campaign.excluded).where(Campaign.id == campaign_id)
        )
    ).one()
    empty = nothing_to_update(sum(map(len, plan.waves)), plan.excluded or [])
    if empty is not None:
        raise CampaignError(CampaignErrorKind.CONFLICT, empty, "target")


class CampaignRunner:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        jobs: JobRunner,
        *,
        connected: Callable[[str], bool],
        tick_interval: float = 1.0,
        join_interval: float = 30.0,
        profile_for: Callable[[str | None, str | None, str | None], VendorProfile] | None = None,
    ) -> None:
        self._engine = engine
        # The effective vendor profile of a (vendor, model, firmware version): its safe
        # concurrency per site and largest image (evota.fleet.vendor_store.for_identity).
        self._profile_for = profile_for or (lambda _vendor, _model, _version: vendors.DEFAULT)
        self._clock = clock
        self._jobs = jobs
        self._connected = connected
        self._tick_interval = tick_interval
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.notes: dict[str, tuple[str, ...]] = {}  # campaign id -> why chargers wait
        self.join_interval = join_interval
        self._joined_at: dict[str, datetime] = {}
        # A tick reads the jobs that changed, not every job of the campaign (campaign_jobs).
        self.jobs_read = CampaignJobs()
        jobs.change_listeners.append(self.jobs_read.changed)
        # Nor every member charger: their facts are kept and re-read when noticed.
        self.facts = facts.ChargerFacts(connected, self._profile_for)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="campaigns")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- creating -----------------------------------------------------------------------------
    async def snapshots(
        self, conn: AsyncConnection, ids: Sequence[str] | None = None
    ) -> dict[str, ChargerSnapshot]:
        """The engine's view of chargers, read now (all of them when ``ids`` is None)."""
        rows = await facts.read_rows(conn, None if ids is None else list(ids))
        busy = await facts.in_session(conn, [r.id for r in rows])
        return {
            r.id: facts.snapshot(
                r,
                connected=self._connected(r.id),
                busy=r.id in busy,
                profile=self._profile_for(r.vendor, r.model, r.firmware_version),
            )
            for r in rows
        }

    async def create(
        self,
        *,
        name: str,
        firmware: Any,
        target: dict[str, Any],
        waves: list[Any] | dict[str, Any],
        pilot: Sequence[str],
        policy: dict[str, Any],
        created_by: str | None,
    ) -> dict[str, Any]:
        """Validate, compute the eligible set with a reason for every exclusion, plan waves."""
        t = target_from_dict(target)
        ramp = parse_ramp(waves)
        w = waves_from_list(waves) if ramp is None and isinstance(waves, list) else ()
        p = policy_from_dict(policy)
        now = self._clock.now()
        async with self._engine.connect() as conn:
            fleet = await self.snapshots(conn)
            busy = await self._in_other_campaigns(conn)
        fleet = {
            cid: _with_campaign(s, busy.get(cid)) if cid in busy else s for cid, s in fleet.items()
        }
        eligibility = plan_eligibility(t, image_facts(firmware), list(fleet.values()), now)
        eligible = [fleet[c] for c in eligibility.eligible]
        if ramp is not None:  # an exponential ramp is sized once the eligible set is known
            w = exponential(ramp[0], ramp[1], len(eligible)) or waves_from_list([{"percent": 100}])
        unknown = [c for c in pilot if c not in eligibility.eligible]
        if unknown:
            raise CampaignError(
                CampaignErrorKind.INVALID,
                f"pilot chargers are not eligible: {', '.join(unknown[:10])}",
                "pilot",
            )
        planned = plan_waves(eligible, w, pilot=pilot, seed=name)
        campaign_id = str(uuid.uuid4())
        excluded = [
            {"charger_id": e.charger_id, "reason": e.reason, "detail": e.detail}
            for e in eligibility.excluded
        ]
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(Campaign).values(
                    id=campaign_id,
                    name=name,
                    firmware_id=firmware.id,
                    state=CampaignState.DRAFT,
                    target=target_to_dict(t),
                    wave_specs=waves_to_list(w),
                    policy=policy_to_dict(p),
                    waves=[list(wave) for wave in planned],
                    excluded=excluded,
                    current_wave=0,
                    gate_go=False,
                    rollback=False,
                    created_by=created_by,
                    created_at=now,
                    updated_at=now,
                )
            )
            await _event(conn, campaign_id, now, "created", CampaignState.DRAFT, {"by": created_by})
        return {"id": campaign_id, "state": CampaignState.DRAFT}

    async def _in_other_campaigns(self, conn: AsyncConnection) -> dict[str, str]:
        rows = (
            await conn.execute(
                select(Campaign.id, Campaign.waves).where(Campaign.state.in_(ACTIVE))
            )
        ).all()
        return {cid: r.id for r in rows for wave in r.waves for cid in wave}

    # -- operator actions ---------------------------------------------------------------------
    async def act(
        self,
        campaign_id: str,
        action: str,
        reason: str,
        *,
        rollback: bool = False,
        at: datetime | None = None,
    ) -> CampaignState:
        """Apply an operator action (``CampaignError`` of kind CONFLICT when it does not
        apply in the campaign's state, ``LookupError`` for an unknown campaign)."""
        async with self._lock:
            now = self._clock.now()
            async with self._engine.begin() as conn:
                row = (
                    await conn.execute(
                        select(Campaign.state, Campaign.gate_go).where(Campaign.id == campaign_id)
                    )
                ).first()
                if row is None:
                    raise LookupError(campaign_id)
                new = transition(row.state, action)
                if new is None:
                    why = refusal(row.state, action) or ""
                    raise CampaignError(CampaignErrorKind.CONFLICT, why, "state")
                if action == CampaignAction.START:
                    await _refuse_empty(conn, campaign_id)
                values: dict[str, Any] = {"state": new}
                if action == CampaignAction.GO:
                    values.update(gate_go=True, stop_counting_from=now)
                elif action == CampaignAction.START and at is not None and at > now:
                    new = CampaignState.SCHEDULED  # the loop starts it at ``at``
                    values = {"state": new, "start_at": at}
                elif action == CampaignAction.START:
                    values["started_at"] = now
                    values["wave_started_at"] = now
                if action == CampaignAction.ABORT:
                    values["finished_at"] = now
                    values["rollback"] = rollback
                values.update(state_reason=reason, updated_at=now)
                await conn.execute(
                    update(Campaign).where(Campaign.id == campaign_id).values(**values)
                )
                await _event(
                    conn, campaign_id, now, action, new, {"reason": reason, "rollback": rollback}
                )
        self._wake.set()
        return new

    async def firmware_revoked(self, firmware_id: str) -> list[str]:
        """Revoking an image stops every campaign rolling it out."""
        async with self._engine.connect() as conn:
            ids = (
                await conn.execute(
                    select(Campaign.id).where(
                        Campaign.firmware_id == firmware_id, Campaign.state.in_(ACTIVE)
                    )
                )
            ).scalars()
            stopped = list(ids)
        for cid in stopped:
            with contextlib.suppress(CampaignError, LookupError):
                await self.act(cid, CampaignAction.ABORT, "firmware revoked")
        return stopped

    # -- notices ------------------------------------------------------------------------------
    def charger_booted(self, charger_id: str, *_identity: str | None) -> None:
        """A boot reports vendor, model and firmware version (a fleet boot listener)."""
        self.facts.changed(charger_id, self._clock.now())

    def facts_changed(self, charger_ids: Sequence[str] = (), site_id: str | None = None) -> None:
        """An operator changed chargers' site or tags, or a site's region or timezone."""
        now = self._clock.now()
        for charger_id in charger_ids:
            self.facts.changed(charger_id, now)
        if site_id is not None:
            self.facts.site_changed(site_id, now)

    # -- the loop -----------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._tick_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                async with self._engine.connect() as conn:
                    ids = list(
                        (
                            await conn.execute(
                                select(Campaign.id)
                                .where(Campaign.state.in_(_EVALUATED))
                                .where(Campaign.finished_at.is_(None) | Campaign.rollback)
                            )
                        ).scalars()
                    )
                    due = list(
                        (
                            await conn.execute(
                                select(Campaign.id).where(
                                    Campaign.state == CampaignState.SCHEDULED,
                                    Campaign.start_at <= self._clock.now(),
                                )
                            )
                        ).scalars()
                    )
                self.jobs_read.retain(ids)
                self.facts.retain(ids)
                for cid in due:
                    await self.act(cid, CampaignAction.START, "scheduled start")
                for cid in ids:
                    async with self._lock:
                        await self._join_newcomers(cid)
                        await self.evaluate(cid)
            except Exception:  # one bad evaluation must not stop every campaign
                raise_if_cancelled()
                log.exception("campaign evaluation failed")

    async def evaluate(self, campaign_id: str) -> eng.Decision | None:
        """One engine call for one campaign, applied."""
        now = self._clock.now()
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(Campaign).where(Campaign.id == campaign_id))).first()
            if row is None:
                return None
            fw = (
                await conn.execute(select(Firmware).where(Firmware.id == row.firmware_id))
            ).first()
            if fw is None:
                return None
            jobs = await self.jobs_read.read(conn, campaign_id, now)
            members = [c for wave in row.waves for c in wave]
            fleet = await self.facts.read(conn, campaign_id, members, now)
            aborted = row.state == CampaignState.ABORTED
            view = CampaignView(
                id=row.id,
                # An aborted campaign's rollbacks run under the rules of a running one.
                state=CampaignState.RUNNING if aborted else CampaignState(row.state),
                waves=tuple(tuple(w) for w in row.waves),
                current_wave=row.current_wave,
                policy=policy_from_dict(row.policy),
                target_version=fw.version,
                wave_started_at=row.wave_started_at,
                wave_done_at=row.wave_done_at,
                gate_go=row.gate_go,
                rollback=row.rollback,
                stop_counting_from=row.stop_counting_from,
                held=FrozenMap(row.held_groups or {}),
            )
            health: dict[str, Health] = {}
            if eng.gate_due(view, now):  # the gate judges every charger updated so far
                members_so_far = [c for wave in row.waves[: row.current_wave + 1] for c in wave]
                health = await self._health(conn, view.policy, members_so_far, jobs, now)
        decision = eng.decide(view, jobs, fleet, health, now)
        if aborted and not row.rollback:
            return decision
        await self._apply(row, fw, fleet, decision, now, aborted=aborted)
        return decision

    async def _join_newcomers(self, campaign_id: str) -> None:
        """Dynamic targets: chargers that match now (new, or back online) join the last wave.

        Checked every ``join_interval`` seconds per campaign, since it reads the whole fleet.
        """
        now = self._clock.now()
        last = self._joined_at.get(campaign_id)
        if last is not None and (now - last).total_seconds() < self.join_interval:
            return
        self._joined_at[campaign_id] = now
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        Campaign.target, Campaign.waves, Campaign.state, Campaign.firmware_id
                    ).where(Campaign.id == campaign_id)
                )
            ).first()
            if row is None or row.state != CampaignState.RUNNING or not row.target.get("dynamic"):
                return
            fw = (
                await conn.execute(select(Firmware).where(Firmware.id == row.firmware_id))
            ).first()
            fleet = await self.snapshots(conn)
            busy = await self._in_other_campaigns(conn)
        members = {c for wave in row.waves for c in wave}
        candidates = [s for cid, s in fleet.items() if cid not in members and cid not in busy]
        if fw is None or not candidates:
            return
        eligible = plan_eligibility(
            target_from_dict(row.target), image_facts(fw), candidates, now
        ).eligible
        if not eligible:
            return
        waves = [list(w) for w in row.waves]
        waves[-1].extend(eligible)
        async with self._engine.begin() as conn:
            await conn.execute(
                update(Campaign).where(Campaign.id == campaign_id).values(waves=waves)
            )
            await _event(
                conn,
                campaign_id,
                now,
                "joined",
                CampaignState.RUNNING,
                {"chargers": list(eligible)[:100]},
            )
        log.info("chargers joined campaign", campaign_id=campaign_id, count=len(eligible))

    async def _health(
        self,
        conn: AsyncConnection,
        policy: Any,
        wave: Sequence[str],
        jobs: dict[str, list[JobView]],
        now: datetime,
    ) -> dict[str, Health]:
        """Each updated charger against its own baseline: the same window before its job;
        and its connectors after the boot with the new version (:func:`health_after_boot`)."""
        window = timedelta(seconds=policy.health_window_seconds)
        within = timedelta(seconds=policy.available_within_seconds)
        spans = _update_spans(wave, jobs)
        if not spans:
            return {}
        first_job = min(span.started for span in spans.values())
        seen = await _observe(conn, list(spans), since=first_job - window, booted_since=first_job)
        return {
            cid: _charger_health(span, seen.get(cid, _Observed()), window, within, now)
            for cid, span in spans.items()
        }

    async def _apply(
        self,
        row: Any,
        fw: Any,
        fleet: dict[str, ChargerSnapshot],
        d: eng.Decision,
        now: datetime,
        *,
        aborted: bool,
    ) -> None:
        cid = row.id
        self.notes[cid] = d.notes
        # A stopped campaign only rolls chargers back; it starts no new updates.
        held = aborted or row.state == CampaignState.PAUSED
        starts = [s for s in d.start if not held or s.kind == "rollback"]
        for start in starts:
            await self._start_job(row, fw, fleet, start)
        values: dict[str, Any] = {}
        events: list[tuple[str, str, dict[str, Any]]] = []
        state = row.state
        if aborted and not starts and not await self._has_active_jobs(cid):
            values["rollback"] = False  # every rollback has been sent and finished
            events.append(("rollback_done", state, {}))
        if d.wave_done_at is not None and row.wave_done_at is None:
            values["wave_done_at"] = d.wave_done_at
            events.append(("wave_done", state, {"wave": row.current_wave}))
        if d.gate is not None:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(GateEvaluation).values(
                        campaign_id=cid,
                        wave=d.gate.wave,
                        at=now,
                        passed=d.gate.passed,
                        result=d.gate.to_dict(),
                    )
                )
        if d.hold:
            values["held_groups"] = {**(row.held_groups or {}), **d.hold}
            events.append(("group_held", state, {"groups": dict(d.hold)}))
        if d.advance_to is not None and not held:
            values.update(
                current_wave=d.advance_to, wave_started_at=now, wave_done_at=None, gate_go=False
            )
            events.append(("advanced", state, {"wave": d.advance_to}))
        if d.state is not None and d.state != state and not held:
            state = d.state
            values.update(state=state, state_reason=d.reason)
            if state in TERMINAL:
                values["finished_at"] = now
            if d.rollback:
                values["rollback"] = True
            events.append((state, state, {"reason": d.reason}))
        if not values:
            return
        values["updated_at"] = now
        async with self._engine.begin() as conn:
            await conn.execute(update(Campaign).where(Campaign.id == cid).values(**values))
            for name, st, detail in events:
                await _event(conn, cid, now, name, st, detail)
        for name, _, detail in events:
            log.info("campaign " + name, campaign_id=cid, **detail)

    async def _has_active_jobs(self, campaign_id: str) -> bool:
        async with self._engine.connect() as conn:
            active = (
                await conn.execute(
                    select(func.count())
                    .select_from(Job)
                    .where(
                        Job.campaign_id == campaign_id,
                        Job.state.not_in(list(JOB_TERMINAL)),
                    )
                )
            ).scalar()
        return bool(active)

    async def _start_job(
        self, row: Any, fw: Any, fleet: dict[str, ChargerSnapshot], start: eng.StartJob
    ) -> None:
        charger = fleet.get(start.charger_id)
        if charger is None:
            return
        image = fw
        if start.kind == "rollback" or start.to_version != fw.version:
            async with self._engine.connect() as conn:
                image = (
                    await conn.execute(
                        select(Firmware).where(
                            func.lower(Firmware.vendor) == fw.vendor.lower(),
                            Firmware.version == start.to_version,
                            Firmware.state != FirmwareState.REVOKED,
                        )
                    )
                ).first()
            if image is None:
                log.warning(
                    "no image to roll back to",
                    campaign_id=row.id,
                    charger_id=start.charger_id,
                    version=start.to_version,
                )
                return
        async with self._engine.connect() as conn:
            learned = (
                await conn.execute(
                    select(Charger.firmware_delivery).where(Charger.id == start.charger_id)
                )
            ).scalar()
        # A job outside the campaign may hold the charger: the engine asks again next time.
        with contextlib.suppress(JobConflict):
            await self._jobs.create(
                charger_id=start.charger_id,
                firmware=image,
                previous_version=charger.firmware_version,
                learned_method=learned,
                retrieve_at=start.retrieve_at,
                allow_downgrade=start.kind == "rollback",
                created_by=f"campaign:{row.id}",
                kind=start.kind,
                campaign_id=row.id,
            )


@dataclass(frozen=True, slots=True)
class _Span:
    """A charger's successful update job: when it ran and the version it installed."""

    started: datetime
    finished: datetime
    version: str


def _update_spans(wave: Sequence[str], jobs: dict[str, list[JobView]]) -> dict[str, _Span]:
    """The wave's chargers whose latest successful update has finished, with its span."""
    spans: dict[str, _Span] = {}
    for cid in wave:
        done = [
            j for j in jobs.get(cid, ()) if j.kind == "update" and j.state == JobState.SUCCEEDED
        ]
        if done and done[-1].finished_at is not None:
            spans[cid] = _Span(done[-1].created_at, done[-1].finished_at, done[-1].target_version)
    return spans


@dataclass(slots=True)
class _Observed:
    """What the database holds about one charger around its update."""

    sessions: list[tuple[datetime, str]] = field(default_factory=list)  # (started, outcome)
    connects: list[datetime] = field(default_factory=list)
    boots: list[tuple[datetime, Any]] = field(default_factory=list)  # (at, version reported)
    reports: list[StatusReport] = field(default_factory=list)  # in the order received
    connectors: list[int] = field(default_factory=list)


async def _observe(
    conn: AsyncConnection, ids: Sequence[str], *, since: datetime, booted_since: datetime
) -> dict[str, _Observed]:
    """Sessions and connects since ``since`` (the earliest baseline window), boots and
    connector statuses since ``booted_since`` (the first job), and the known connectors."""
    seen: defaultdict[str, _Observed] = defaultdict(_Observed)
    for chunk in facts.chunks(ids):
        sessions = await conn.execute(
            select(
                ChargingSession.charger_id, ChargingSession.started_at, ChargingSession.outcome
            ).where(ChargingSession.charger_id.in_(chunk), ChargingSession.started_at >= since)
        )
        for s in sessions:
            seen[s.charger_id].sessions.append((s.started_at, s.outcome))
        connects = await conn.execute(
            select(ChargerEvent.charger_id, ChargerEvent.received_at).where(
                ChargerEvent.kind == "connected",
                ChargerEvent.charger_id.in_(chunk),
                ChargerEvent.received_at >= since,
            )
        )
        for c in connects:
            seen[c.charger_id].connects.append(c.received_at)
        boots = await conn.execute(
            select(ChargerEvent.charger_id, ChargerEvent.received_at, ChargerEvent.data).where(
                ChargerEvent.kind == "boot",
                ChargerEvent.charger_id.in_(chunk),
                ChargerEvent.received_at >= booted_since,
            )
        )
        for b in boots:
            version = (b.data or {}).get("firmware_version")
            seen[b.charger_id].boots.append((b.received_at, version))
        statuses = await conn.execute(
            select(
                ConnectorStatus.charger_id,
                ConnectorStatus.connector_id,
                ConnectorStatus.status,
                ConnectorStatus.received_at,
            )
            .where(
                ConnectorStatus.charger_id.in_(chunk),
                ConnectorStatus.received_at >= booted_since,
            )
            .order_by(ConnectorStatus.id)
        )
        for st in statuses:
            report = StatusReport(st.connector_id, st.status, st.received_at)
            seen[st.charger_id].reports.append(report)
        connectors = await conn.execute(
            select(Connector.charger_id, Connector.connector_id).where(
                Connector.charger_id.in_(chunk)
            )
        )
        for k in connectors:
            seen[k.charger_id].connectors.append(k.connector_id)
    return dict(seen)


def _charger_health(
    span: _Span, seen: _Observed, window: timedelta, within: timedelta, now: datetime
) -> Health:
    """One charger's health: sessions and reconnects in the window before its job and in the
    window after it succeeded (so the update's own reboot is not counted), and what its
    connectors reported after the boot with the new version."""
    before = (span.started - window, span.started)
    after = (span.finished, span.finished + window)
    boot = _boot_time(seen.boots, seen.connects, span.started, span.finished, span.version)
    verdict = health_after_boot(boot, seen.reports, seen.connectors, now, within, window)
    hours = window.total_seconds() / 3600
    return Health(
        sessions_before=sum(_inside(at, before) for at, _ in seen.sessions),
        sessions_failed_before=sum(
            _inside(at, before) and outcome == "interrupted" for at, outcome in seen.sessions
        ),
        reconnects_before=sum(_inside(at, before) for at in seen.connects),
        hours_before=hours,
        sessions_after=sum(_inside(at, after) for at, _ in seen.sessions),
        sessions_failed_after=sum(
            _inside(at, after) and outcome == "interrupted" for at, outcome in seen.sessions
        ),
        reconnects_after=sum(_inside(at, after) for at in seen.connects),
        hours_after=hours,
        faulted_after=verdict.faulted,
        available_after=verdict.available,
        problem=verdict.problem,
    )


def _inside(at: datetime, span: tuple[datetime, datetime]) -> bool:
    return span[0] <= at < span[1]


def _boot_time(
    boots: Sequence[tuple[datetime, Any]],
    connects: Sequence[datetime],
    started: datetime,
    finished: datetime,
    version: str,
) -> datetime:
    """When the charger came up on ``version`` during its job: its last boot reporting that
    version; else (a 2.0.1 reconnect without a BootNotification) its last connect; else the
    job's end, when evota knew it runs the version."""
    during = [at for at, v in boots if started <= at <= finished and v == version]
    if not during:
        during = [at for at in connects if started <= at <= finished]
    return max(during, default=finished)


def _with_campaign(s: ChargerSnapshot, campaign_id: str | None) -> ChargerSnapshot:
    return replace(s, other_campaign=campaign_id)


async def _event(
    conn: AsyncConnection, campaign_id: str, at: datetime, event: str, state: str, detail: Any
) -> None:
    await conn.execute(
        insert(CampaignEvent).values(
            campaign_id=campaign_id, at=at, event=event, state=state, detail=detail
        )
    )
