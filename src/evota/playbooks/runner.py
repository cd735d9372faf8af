"""The playbook engine's shell: it hears the fleet, starts runs, sends their commands.

One worker task owns every decision: observations from the fleet service (a bounded queue,
so a charger's bytes can neither block the gateway nor grow memory), ticks (condition
triggers and wait deadlines, on the injected clock), command answers, approvals and
operator switches all arrive as items, so a run's moves never race. The decisions are the
pure modules' (``triggers``, ``guards``, ``run``); this module gathers the facts they need,
persists every move of a run in ``playbook_runs`` before acting on it, sends commands
through :func:`evota.control.dispatch.send_command` (one audit entry each, the playbook
``name@version`` as the actor and the trigger as the reason) and escalates (an alert, an
optional webhook). A run in progress survives a restart: a wait goes on to its deadline, a
step that was being sent is closed as failed (not resent: the charger may have it).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from pydantic import ValidationError
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.audit import anomalies
from evota.audit.alerts import AlertMonitor
from evota.audit.log import SYSTEM, Actor, AuditLog
from evota.clock import Clock
from evota.control import catalog
from evota.control.catalog import CommandSpec, Params
from evota.control.commands import CommandError, CommandResult
from evota.firmware.importer import FetchError, FetchPolicy, post_json
from evota.operators.approvals import Approvals
from evota.periodic import raise_if_cancelled
from evota.playbooks import guards as g
from evota.playbooks import run as r
from evota.playbooks import store
from evota.playbooks import triggers as t
from evota.playbooks.spec import Escalation, Playbook, TriggerKind
from evota.playbooks.store import load_enabled
from evota.rollout.job import TERMINAL as JOB_TERMINAL
from evota.rollout.policy import PolicyError, Window, windows_from_list
from evota.selection import ChargerSnapshot, matches
from evota.store.models import (
    Charger,
    ChargerDay,
    ChargingSession,
    Connector,
    Job,
    PlaybookRun,
    Site,
)

log = structlog.get_logger("evota.playbooks")

SendCommand = Callable[[Actor, str, CommandSpec, Params, str | None], Awaitable[CommandResult]]

#: The four-eyes action that guards a playbook's critical steps (EVOTA_APPROVAL_ACTIONS).
APPROVAL_ACTION = "playbook.step"
ESCALATION_RULE = "playbook_escalation"
SUSPENSION_RULE = "playbook_suspended"
#: Charger answers that mean "not done": the run fails (a CALLERROR or no answer too).
REFUSED_ANSWERS = frozenset({"Rejected"})
QUEUE_MAX = 10_000
_HISTORY = 1_000  # trigger and start times kept per playbook (the breaker needs an hour's)
_KINDS = {k.value: k for k in t.ObservationKind}
_MAX_JOBS = 10_000  # unfinished jobs read per tick (a job_stuck playbook's view)
_SESSION_MAX_AGE = timedelta(hours=24)  # an "active" session older than this is stale


@dataclass(frozen=True, slots=True)
class _Answered:
    run_id: str
    step: int
    result: CommandResult | CommandError
    done: asyncio.Future[dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class _Approved:
    run_id: str
    step: int
    approver: str
    done: asyncio.Future[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class _Denied:
    run_id: str
    why: str


@dataclass(frozen=True, slots=True)
class _KpisRolled:
    """The daily KPI rollup ran: ``kpi_threshold`` playbooks read yesterday's rows."""

    now: datetime


@dataclass(frozen=True, slots=True)
class _Call:
    """Run ``fn`` in the worker (operator switches, reload) and hand back its result."""

    fn: Callable[[], Awaitable[Any]]
    done: asyncio.Future[Any]


@dataclass(frozen=True, slots=True)
class _Place:
    """What the guard rails read about a charger's record and site."""

    snapshot: ChargerSnapshot
    hours: tuple[Window, ...]


class PlaybookRunner:
    """Starts and drives playbook runs (``runtime.playbooks``)."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        *,
        send: SendCommand,
        alerts: AlertMonitor,
        audit: AuditLog,
        approvals: Approvals,
        enabled: bool = True,
        tick_seconds: float = 5.0,
        webhook_timeout: float = 5.0,
        webhook_policy: FetchPolicy | None = None,
        load: Callable[[AsyncEngine], Awaitable[list[Playbook]]] = load_enabled,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._send = send
        self._alerts = alerts
        self._audit = audit
        self._approvals = approvals
        self._kill = self._off_at_start = not enabled  # EVOTA_PLAYBOOKS_ENABLED=false
        self.tick_seconds = tick_seconds
        self.webhook_timeout = webhook_timeout
        # Where a webhook may go: the firmware import's address rules (no private,
        # loopback or link-local address unless allowed), pinned to the checked address.
        self.webhook_policy = webhook_policy or FetchPolicy(max_bytes=0, timeout=webhook_timeout)
        self._load = load
        self._queue: asyncio.Queue[Any] = asyncio.Queue(QUEUE_MAX)
        self._task: asyncio.Task[None] | None = None
        self.playbooks: dict[str, Playbook] = {}  # enabled, not suspended, by name
        self._versions: dict[tuple[str, int], Playbook] = {}  # what active runs follow
        self._facts: dict[str, t.ChargerFacts] = {}
        self.runs: dict[str, r.Run] = {}  # active runs by id
        self._sending: set[str] = set()
        self._fired: dict[tuple[str, str, str], datetime] = {}  # episodes already started
        self._counted: set[tuple[tuple[str, str, str], datetime]] = set()  # firings seen
        self._kpi_seen: dict[str, tuple[int, set[str]]] = {}  # playbook -> (day, chargers)
        self._faulted: set[str] = set()  # chargers with a Faulted connector (ticks read these)
        self._triggers: dict[str, deque[datetime]] = {}
        self._starts: dict[str, deque[datetime]] = {}
        self._outcomes: dict[str, deque[tuple[datetime, str]]] = {}
        self.dropped = 0  # observations dropped on a full queue
        self._background: set[asyncio.Task[Any]] = set()
        self._resync = False
        self.ticks = 0  # ticks done (a test waits for one to know the engine looked)

    # -- operator switches -------------------------------------------------------------------
    @property
    def kill_switch(self) -> bool:
        """True: no run starts and runs in progress send nothing more (they end suspended)."""
        return self._kill

    @kill_switch.setter
    def kill_switch(self, engaged: bool) -> None:
        self._kill = bool(engaged)
        log.warning("playbook kill switch", engaged=self._kill)

    async def read_switch(self) -> bool:
        """The kill switch as stored (evota.playbooks.store), applied here: at start, and
        when an operator flips it through any node. ``EVOTA_PLAYBOOKS_ENABLED=false``
        stores it engaged at start; an operator may flip it from there."""
        if self._off_at_start:
            self._off_at_start = False
            at = self._clock.now()
            await store.set_kill_switch(self._engine, True, "EVOTA_PLAYBOOKS_ENABLED", at)
        engaged = await store.kill_switch(self._engine)
        if engaged != self._kill:
            self.kill_switch = engaged
        return self._kill

    async def reload(self) -> None:
        """Read the enabled playbooks again (the API calls this after every change)."""
        await self._in_worker(self._reload)

    async def suspend(self, name: str, reason: str = "suspended by an operator") -> None:
        """Suspend a playbook: no new runs; its runs in progress end before their next command."""
        await self._in_worker(lambda: self._suspend(name, reason, SYSTEM))

    async def resume(self, name: str) -> None:
        """Lift a suspension (the breaker's or an operator's); the breaker's memory is reset."""

        async def lift() -> None:
            await store.resume(self._engine, name)
            self._triggers.pop(name, None)
            self._outcomes.pop(name, None)
            await self._reload()

        await self._in_worker(lift)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """A command on its way or a webhook: kept until done, cancelled by stop()."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _in_worker(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        if self._task is None or self._task.done():
            return await fn()
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Call(fn, done))
        return await done

    def facts(self, charger_id: str) -> t.ChargerFacts | None:
        """What the engine has heard of a charger (None: nothing yet)."""
        return self._facts.get(charger_id)

    # -- the fleet's hook ----------------------------------------------------------------------
    def charger_event(
        self,
        charger_id: str,
        kind: str,
        connector_id: int = 0,
        status: str | None = None,
        error_code: str | None = None,
    ) -> None:
        """Called by the fleet service (synchronously, on the hot path): queue a plain tuple
        (the worker makes it an Observed), never block, never raise."""
        what = _KINDS.get(kind)
        if what is None:
            return  # a kind no trigger or condition reads
        try:
            self._queue.put_nowait(
                (charger_id, what, self._clock.now(), connector_id, status, error_code)
            )
        except asyncio.QueueFull:
            self.dropped += 1
            self._resync = True  # the next tick reads the connectors' statuses again
            if self.dropped % 1000 == 1:
                log.warning("playbook queue full: observations dropped", dropped=self.dropped)

    async def kpis_rolled(self, now: datetime) -> None:
        """Called after each KPI rollup (evota.evidence.rollup's ``after_run``)."""
        if any(p.trigger.kind is TriggerKind.KPI_THRESHOLD for p in self.playbooks.values()):
            await self._queue.put(_KpisRolled(now))

    async def _kpis(self, now: datetime) -> None:
        """Yesterday's complete charger-days against every ``kpi_threshold`` playbook; a
        charger-day is judged once per playbook (the rollup runs many times a day)."""
        wanted = [p for p in self.playbooks.values() if p.trigger.kind is TriggerKind.KPI_THRESHOLD]
        if not wanted:
            return
        day = (now.astimezone(UTC).date() - date(1970, 1, 1)).days - 1
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(ChargerDay)
                    .where(ChargerDay.day == day, ChargerDay.complete.is_(True))
                    .order_by(ChargerDay.charger_id)
                )
            ).all()
        for playbook in wanted:
            seen_day, seen = self._kpi_seen.get(playbook.name, (day, set()))
            if seen_day != day:
                seen = set()
            fresh = [
                t.KpiDay(
                    r.charger_id,
                    r.day,
                    r.observed_s,
                    r.connected_s,
                    r.available_s,
                    r.sessions,
                    r.failed_sessions,
                    r.faults,
                    r.offline_episodes,
                    r.reconnects,
                )
                for r in rows
                if r.charger_id not in seen
            ]
            seen |= {d.charger_id for d in fresh}
            self._kpi_seen[playbook.name] = (day, seen)
            for firing in t.kpi_firings(playbook.trigger, fresh):
                await self._fire(playbook, firing, event=True)

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self._approvals.register(APPROVAL_ACTION, self._approved, self._approval_ended)
        await self.read_switch()
        await self._reload()
        await self._seed()
        await self._restore()
        self._task = asyncio.create_task(self._work(), name="playbooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        pending = list(self._background)  # a run being sent stays "running": failed at restart
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            item = None
            with contextlib.suppress(TimeoutError):
                item = await asyncio.wait_for(self._queue.get(), max(0.0, next_tick - loop.time()))
            try:
                if item is None:
                    next_tick = loop.time() + self.tick_seconds
                    await self._tick()
                    self.ticks += 1
                else:
                    await self._handle(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # nothing a charger sends may end the engine
                raise_if_cancelled()
                log.exception("playbook engine step failed", item=type(item).__name__)
                if isinstance(item, _Call | _Approved) and not item.done.done():
                    item.done.set_exception(exc)

    async def _handle(self, item: Any) -> None:
        match item:
            case tuple():
                await self._observed(t.Observed(*item))
            case _Answered():
                await self._answered(item)
            case _Approved():
                await self._approved_in_worker(item)
            case _Denied():
                run = self.runs.get(item.run_id)
                if run is not None and run.state is r.RunState.AWAITING_APPROVAL:
                    await self._move(run, r.RunEvent.DENIED, reason=f"approval {item.why}")
            case _KpisRolled():
                await self._kpis(item.now)
            case _Call():
                result = await item.fn()
                if not item.done.done():
                    item.done.set_result(result)

    # -- loading and restoring ----------------------------------------------------------------
    async def _reload(self) -> None:
        loaded = await self._load(self._engine)
        self.playbooks = {p.name: p for p in loaded}
        for p in loaded:
            self._versions[(p.name, p.version)] = p
        active = {(run.playbook, run.version) for run in self.runs.values()}
        self._versions = {
            k: v for k, v in self._versions.items() if k in active or k[0] in self.playbooks
        }
        log.info("playbooks loaded", enabled=sorted(self.playbooks))

    async def _restore(self) -> None:
        """Runs in progress at the last stop: waits and approvals go on; a step that was being
        sent is closed as failed (it is not resent: the charger may have received it)."""
        now = self._clock.now()
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(PlaybookRun).where(PlaybookRun.state.in_([s.value for s in r.ACTIVE]))
                )
            ).all()
            since = now - timedelta(days=1)
            finished = (
                await conn.execute(
                    select(PlaybookRun.playbook, PlaybookRun.ended_at, PlaybookRun.outcome)
                    .where(
                        PlaybookRun.ended_at >= since,
                        PlaybookRun.dry_run.is_(False),
                        PlaybookRun.outcome.in_(["resolved", "escalated", "failed"]),
                    )
                    .order_by(PlaybookRun.ended_at)
                )
            ).all()
            starts = (
                await conn.execute(
                    select(PlaybookRun.playbook, PlaybookRun.started_at).where(
                        PlaybookRun.started_at >= now - timedelta(hours=1),
                        PlaybookRun.state != r.RunState.REFUSED.value,
                    )
                )
            ).all()
        for f in finished:
            self._history(self._outcomes, f.playbook, 20).append((_aware(f.ended_at), f.outcome))
        for s in sorted(starts, key=lambda s: _aware(s.started_at)):
            self._history(self._starts, s.playbook).append(_aware(s.started_at))
        for row in rows:
            run = _run_of(row)
            self.runs[run.id] = run
            playbook = self._versions.get((run.playbook, run.version))
            if playbook is None:
                await self._move(
                    run, r.RunEvent.SUSPEND, reason="the playbook changed or was disabled"
                )
            elif run.state is r.RunState.RUNNING:
                await self._move(
                    run,
                    r.RunEvent.FAIL,
                    reason=f"evota restarted while sending step {run.step}; not resent",
                )
        if rows:
            log.info("playbook runs restored", active=len(self.runs))

    @staticmethod
    def _history(store: dict[str, deque[Any]], name: str, size: int = _HISTORY) -> deque[Any]:
        return store.setdefault(name, deque(maxlen=size))

    # -- observations and ticks ---------------------------------------------------------------
    async def _observed(self, o: t.Observed) -> None:
        before = self._note(o)
        for playbook in list(self.playbooks.values()):
            firing = t.on_event(playbook.trigger, before, o)
            if firing is not None:
                await self._fire(playbook, firing, event=True)
        await self._check_conditions(o.charger_id)

    async def _seed(self) -> None:
        """Every connector's last status as the fleet writer stored it (with the time it
        changed): what the engine knows at start, before its first observation, and again
        after its queue overflowed (observations were lost)."""
        self._resync = False
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        Connector.charger_id,
                        Connector.connector_id,
                        Connector.status,
                        Connector.error_code,
                        Connector.updated_at,
                    )
                )
            ).all()
        for i, row in enumerate(rows):
            if i and i % 5000 == 0:
                await asyncio.sleep(0)  # 100,000 chargers take about a second: let the gateway in
            o = t.Observed(
                row.charger_id,
                t.ObservationKind.STATUS,
                _aware(row.updated_at),
                row.connector_id,
                row.status,
                row.error_code,
            )
            self._note(o)

    def _note(self, o: t.Observed) -> t.ChargerFacts:
        """Fold an observation into the charger's facts; returns the facts before it."""
        before = self._facts.get(o.charger_id, t.ChargerFacts())
        after = t.observe(before, o)
        self._facts[o.charger_id] = after
        if any(f.status == "Faulted" for f in after.connectors.values()):
            self._faulted.add(o.charger_id)
        else:
            self._faulted.discard(o.charger_id)
        return before

    async def _tick(self) -> None:
        if self._resync:
            await self._seed()
        now = self._clock.now()
        for run in list(self.runs.values()):
            if (
                run.state is r.RunState.WAITING
                and run.wait_until is not None
                and now >= run.wait_until
            ):
                await self._check_conditions(run.charger_id)  # met just in time?
                current = self.runs.get(run.id)
                if current is not None and current.state is r.RunState.WAITING:
                    await self._move(current, r.RunEvent.DEADLINE)
        live: set[tuple[tuple[str, str, str], datetime]] = set()  # conditions that hold
        jobs = await self._unfinished_jobs()
        for playbook in list(self.playbooks.values()):
            firings: list[t.Firing] = []
            if playbook.trigger.kind is TriggerKind.CONNECTOR_FAULTED:
                for charger_id in sorted(self._faulted):
                    firings += t.due(playbook.trigger, charger_id, self._facts[charger_id], now)
            elif playbook.trigger.kind is TriggerKind.JOB_STUCK and jobs is not None:
                firings = t.stuck_jobs(playbook.trigger, jobs, now)
            for firing in firings:
                live.add(((playbook.name, firing.charger_id, firing.fault_key), firing.since))
                await self._fire(playbook, firing, event=False)
        # forget episodes that ended (the connector left Faulted, the job moved): bounded by
        # the conditions that hold now. A charger that is offline (rebooting after the run's
        # own reset, say) is not judged, so its episodes are kept until it is back: forgotten,
        # the same fault would start a second run once the first one ended.
        self._fired = {k: v for k, v in self._fired.items() if (k, v) in live or self._away(k[1])}

    def _away(self, charger_id: str) -> bool:
        facts = self._facts.get(charger_id)
        return facts is not None and not facts.connected

    async def _unfinished_jobs(self) -> list[t.JobFact] | None:
        """Firmware jobs not finished (None: no playbook asks, nothing read)."""
        kinds = {p.trigger.kind for p in self.playbooks.values()}
        if TriggerKind.JOB_STUCK not in kinds:
            return None
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(Job.id, Job.charger_id, Job.state, Job.updated_at, Job.campaign_id)
                    .where(Job.state.not_in([s.value for s in JOB_TERMINAL]))
                    .order_by(Job.id)
                    .limit(_MAX_JOBS)
                )
            ).all()
        return [
            t.JobFact(j.id, j.charger_id, j.state, _aware(j.updated_at), j.campaign_id)
            for j in rows
        ]

    async def _check_conditions(self, charger_id: str) -> None:
        facts = self._facts.get(charger_id)
        if facts is None:
            return
        for run in [x for x in self.runs.values() if x.charger_id == charger_id]:
            if run.state is not r.RunState.WAITING or run.sent_at is None:
                continue
            playbook = self._versions.get((run.playbook, run.version))
            step = playbook.steps[run.step] if playbook else None
            if step is None or step.wait is None:
                continue
            if r.condition_holds(step.wait, facts, run.connector_id, run.sent_at):
                await self._move(
                    run, r.RunEvent.MET, reason=f"{step.wait.kind} after step {run.step}"
                )

    # -- starting a run -------------------------------------------------------------------------
    async def _fire(self, playbook: Playbook, firing: t.Firing, *, event: bool) -> None:
        key = (playbook.name, firing.charger_id, firing.fault_key)
        if not event and self._fired.get(key) == firing.since:
            return  # this episode already started a run (or was refused for good)
        if self._kill or self.playbooks.get(playbook.name) is not playbook:
            return  # switched off, or suspended by an earlier firing of this very tick
        place = await self._place(firing.charger_id)
        if place is None or not matches(playbook.target, place.snapshot):
            return
        now = self._clock.now()
        triggers = self._history(self._triggers, playbook.name)
        if (key, firing.since) not in self._counted:  # the breaker counts each firing once
            triggers.append(now)
            if len(self._counted) >= 10 * _HISTORY:
                self._counted.clear()
            self._counted.add((key, firing.since))
        site = place.snapshot.site_id
        active = [x for x in self.runs.values() if x.playbook == playbook.name]
        situation = g.Situation(
            now=now,
            kill_switch=self._kill,
            in_session=await self._in_session(firing.charger_id),
            site_hours=place.hours,
            site_tz=place.snapshot.timezone,
            runs_today=await self._runs_today(playbook, firing, place.snapshot.timezone, now),
            already_running=any(
                x.charger_id == firing.charger_id and x.fault_key == firing.fault_key
                for x in active
            ),
            active_total=len(active),
            active_in_site=sum(
                1
                for x in active
                if (x.site_id == site if site is not None else x.charger_id == firing.charger_id)
            ),
            recent_starts=tuple(self._starts.get(playbook.name, ())),
            recent_triggers=tuple(triggers),
            recent_outcomes=tuple(self._outcomes.get(playbook.name, ())),
        )
        verdict = g.admit(playbook.guards, situation)
        if verdict.suspend:
            assert verdict.refusal is not None
            await self._suspend(playbook.name, _breaker_reason(verdict.refusal, playbook), SYSTEM)
            return
        if verdict.refusal is g.Refusal.ALREADY_RUNNING:
            return
        if verdict.refusal in g.TRANSIENT and not event:
            return  # a condition trigger: the next tick asks again
        self._fired[key] = firing.since
        run = r.Run(
            id=str(uuid.uuid4()),
            playbook=playbook.name,
            version=playbook.version,
            charger_id=firing.charger_id,
            connector_id=firing.connector_id,
            fault_key=firing.fault_key,
            started_at=now,
            dry_run=playbook.dry_run,
            site_id=site,
            reason=firing.reason,
        )
        run = r.logged(run, now, "triggered", reason=firing.reason)
        await self._insert(run, playbook, firing)
        self._versions[(playbook.name, playbook.version)] = playbook
        self.runs[run.id] = run
        if verdict.refusal is not None:
            await self._move(run, r.RunEvent.REFUSE, reason=verdict.refusal.value)
            return
        self._history(self._starts, playbook.name).append(now)
        if playbook.dry_run:
            for line in r.dry_run_log(playbook, firing.connector_id):
                run = r.logged(run, now, "would", detail=line)
            self.runs[run.id] = run
        await self._advance(run)

    async def _place(self, charger_id: str) -> _Place | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        Charger.id,
                        Charger.vendor,
                        Charger.model,
                        Charger.hardware_revision,
                        Charger.firmware_version,
                        Charger.site_id,
                        Charger.tags,
                        Site.region,
                        Site.timezone,
                        Site.allowed_hours,
                    )
                    .join(Site, Site.id == Charger.site_id, isouter=True)
                    .where(Charger.id == charger_id)
                )
            ).first()
        if row is None:
            return None
        snapshot = ChargerSnapshot(
            id=row.id,
            vendor=row.vendor,
            model=row.model,
            hardware_revision=row.hardware_revision,
            firmware_version=row.firmware_version,
            site_id=row.site_id,
            region=row.region,
            tags=frozenset(row.tags or ()),
            timezone=row.timezone or "UTC",
            connected=True,
        )
        try:
            hours = windows_from_list(row.allowed_hours, "allowed_hours")
        except PolicyError:
            log.error("site allowed_hours unreadable: treated as closed", site_id=row.site_id)
            hours = _NEVER
        return _Place(snapshot, hours)

    async def _in_session(self, charger_id: str) -> bool:
        facts = self._facts.get(charger_id)
        if facts is not None and t.in_session(facts):
            return True
        since = self._clock.now() - _SESSION_MAX_AGE
        async with self._engine.connect() as conn:
            open_sessions = (
                await conn.execute(
                    select(func.count())
                    .select_from(ChargingSession)
                    .where(
                        ChargingSession.charger_id == charger_id,
                        ChargingSession.stopped_at.is_(None),
                        ChargingSession.started_at >= since,
                    )
                )
            ).scalar()
        return bool(open_sessions)

    async def _runs_today(
        self, playbook: Playbook, firing: t.Firing, tz: str, now: datetime
    ) -> int:
        """Runs of this playbook for this (charger, fault) since the site's local midnight
        (refused ones do not count: they did nothing)."""
        try:
            zone = ZoneInfo(tz)
        except (ValueError, KeyError):
            zone = ZoneInfo("UTC")
        local = now.astimezone(zone)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
        async with self._engine.connect() as conn:
            count = (
                await conn.execute(
                    select(func.count())
                    .select_from(PlaybookRun)
                    .where(
                        PlaybookRun.playbook == playbook.name,
                        PlaybookRun.charger_id == firing.charger_id,
                        PlaybookRun.fault_key == firing.fault_key,
                        PlaybookRun.started_at >= midnight,
                        PlaybookRun.state != r.RunState.REFUSED.value,
                        PlaybookRun.dry_run.is_(playbook.dry_run),
                    )
                )
            ).scalar()
        return int(count or 0)

    # -- driving a run --------------------------------------------------------------------------
    def _needs_approval(self, command: str, params: Mapping[str, Any]) -> bool:
        spec = catalog.get(command)
        critical = spec is None or spec.critical
        return self._approvals.required(APPROVAL_ACTION) and r.guarded(command, params, critical)

    async def _send_refusal(self, run: r.Run) -> g.Refusal | None:
        place = await self._place(run.charger_id)
        return g.may_send(
            now=self._clock.now(),
            kill_switch=self._kill,
            suspended=run.playbook not in self.playbooks,  # disabled, suspended or deleted
            in_session=await self._in_session(run.charger_id),
            site_hours=place.hours if place else (),
            site_tz=place.snapshot.timezone if place else "UTC",
        )

    async def _advance(self, run: r.Run) -> None:
        """Take ``running`` steps until the run waits, sends or ends."""
        while run.state is r.RunState.RUNNING and run.id not in self._sending:
            playbook = self._versions.get((run.playbook, run.version))
            if playbook is None:
                run = await self._move(run, r.RunEvent.SUSPEND, reason="playbook gone")
                return
            action = r.plan(playbook, run, self._needs_approval)
            match action:
                case r.Send() | r.AskApproval():
                    refusal = await self._send_refusal(run)
                    if refusal in (g.Refusal.KILL_SWITCH, g.Refusal.SUSPENDED):
                        await self._move(run, r.RunEvent.SUSPEND, reason=refusal.value)
                        return
                    if refusal is not None:
                        await self._move(run, r.RunEvent.REFUSE, reason=refusal.value)
                        return
                    if isinstance(action, r.AskApproval):
                        await self._ask_approval(playbook, run, action)
                    else:
                        await self._start_send(playbook, run, action)
                    return
                case r.Escalate():
                    await self._escalate(playbook, run, action.escalation, action.implicit)
                    await self._move(
                        run,
                        r.RunEvent.ESCALATED,
                        reason="no step resolved the fault" if action.implicit else "escalated",
                    )
                    return
                case r.Finish():
                    run = await self._move(run, action.event, reason=action.reason)

    async def _start_send(
        self,
        playbook: Playbook,
        run: r.Run,
        action: r.Send | r.AskApproval,
        done: asyncio.Future[dict[str, Any]] | None = None,
        approver: str | None = None,
    ) -> None:
        spec = catalog.get(action.command)
        try:
            if spec is None:
                raise ValueError(f"{action.command} is not a command evota knows")
            params = spec.params.model_validate(dict(action.params))
        except (ValueError, ValidationError) as exc:
            await self._move(run, r.RunEvent.FAIL, reason=f"step {action.step}: {exc}"[:500])
            if done is not None and not done.done():
                done.set_result({"sent": False, "reason": "invalid step"})
            return
        run = r.logged(run, self._clock.now(), "sending", step=action.step, command=spec.name)
        await self._save(run)  # the outbox: written before the charger can act on it
        self.runs[run.id] = run
        self._sending.add(run.id)
        reason = (run.reason or playbook.name)[:900]
        if approver:
            reason = f"{reason} (approved by {approver})"
        actor = Actor(playbook.actor, ("playbook",), request_id=f"playbook-run:{run.id}")

        async def send() -> None:
            result: CommandResult | CommandError
            try:
                result = await self._send(actor, run.charger_id, spec, params, reason)
            except CommandError as exc:
                result = exc
            except Exception as exc:  # the audit log or the path failed: the run fails
                log.exception("playbook command failed", run_id=run.id)
                result = CommandError(run.charger_id, f"internal error: {type(exc).__name__}")
            await self._queue.put(_Answered(run.id, action.step, result, done))

        self._spawn(send())

    async def _answered(self, a: _Answered) -> None:
        self._sending.discard(a.run_id)
        run = self.runs.get(a.run_id)
        answer: dict[str, Any]
        if isinstance(a.result, CommandError):
            answer = {"sent": True, "error": a.result.reason, "message": str(a.result)[:200]}
        else:
            answer = {"sent": True, "status": a.result.status}
        if a.done is not None and not a.done.done():
            a.done.set_result(answer)
        if run is None or run.state is not r.RunState.RUNNING or run.step != a.step:
            return
        if isinstance(a.result, CommandError):
            reason = f"step {a.step}: {a.result.reason}: {a.result}"[:500]
            await self._move(run, r.RunEvent.SEND_FAILED, reason=reason)
            return
        if a.result.status in REFUSED_ANSWERS:
            reason = f"step {a.step}: the charger answered {a.result.status}"
            await self._move(run, r.RunEvent.SEND_FAILED, reason=reason)
            return
        run = await self._move(run, r.RunEvent.SENT, answer=a.result.status)
        if run.state is r.RunState.WAITING:
            await self._check_conditions(run.charger_id)
        else:
            await self._advance(run)

    # -- approvals --------------------------------------------------------------------------------
    async def _ask_approval(self, playbook: Playbook, run: r.Run, action: r.AskApproval) -> None:
        actor = Actor(playbook.actor, ("playbook",), request_id=f"playbook-run:{run.id}")
        summary = f"{playbook.actor}: {action.command} on {run.charger_id} (step {action.step})"
        approval_id = await self._approvals.request(
            actor,
            APPROVAL_ACTION,
            summary,
            {
                "run_id": run.id,
                "step": action.step,
                "command": action.command,
                "params": dict(action.params),
                "charger_id": run.charger_id,
                "playbook": playbook.name,
                "version": playbook.version,
            },
            (run.reason or "playbook step")[:1000],
            1,
        )
        run = replace(run, approval_id=approval_id)
        await self._move(run, r.RunEvent.NEEDS_APPROVAL, approval_id=approval_id)

    async def _approved(self, payload: dict[str, Any], actor: Actor) -> dict[str, Any]:
        """The ``playbook.step`` executor: send the approved step (from the worker)."""
        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        item = _Approved(str(payload.get("run_id")), int(payload.get("step", -1)), actor.name, done)
        if self._task is None or self._task.done():
            return {"sent": False, "reason": "the playbook engine is not running"}
        await self._queue.put(item)
        return await done

    async def _approval_ended(self, payload: dict[str, Any], why: str) -> None:
        await self._queue.put(_Denied(str(payload.get("run_id")), why))

    async def _approved_in_worker(self, a: _Approved) -> None:
        run = self.runs.get(a.run_id)
        if run is None or run.state is not r.RunState.AWAITING_APPROVAL or run.step != a.step:
            a.done.set_result({"sent": False, "reason": "the run no longer waits for this step"})
            return
        playbook = self._versions.get((run.playbook, run.version))
        refusal = await self._send_refusal(run)
        if playbook is None or refusal is not None:
            why = refusal.value if refusal else "playbook gone"
            event = (
                r.RunEvent.SUSPEND
                if refusal in (None, g.Refusal.KILL_SWITCH, g.Refusal.SUSPENDED)
                else r.RunEvent.REFUSE
            )
            await self._move(run, event, reason=why)
            a.done.set_result({"sent": False, "reason": why})
            return
        run = await self._move(run, r.RunEvent.APPROVED, approver=a.approver)
        step = playbook.steps[run.step]
        assert step.command is not None
        action = r.Send(run.step, step.command, r.step_params(step, run.connector_id))
        await self._start_send(playbook, run, action, a.done, a.approver)

    # -- escalation and suspension ------------------------------------------------------------
    async def _escalate(
        self, playbook: Playbook, run: r.Run, esc: Escalation, implicit: bool
    ) -> None:
        message = esc.message or (
            f"{playbook.name}: {run.reason or run.fault_key} on {run.charger_id} "
            f"{'was not resolved by its steps' if implicit else 'needs a person'}"
        )
        detail = {
            "playbook": playbook.name,
            "version": playbook.version,
            "run_id": run.id,
            "fault_key": run.fault_key,
            "connector_id": run.connector_id,
        }
        if esc.alert or implicit:
            await self._alerts.raise_alert(
                anomalies.Alert(
                    ESCALATION_RULE,
                    run.charger_id[: anomalies.SUBJECT_MAX],
                    self._clock.now(),
                    message,
                    chargers=(run.charger_id,),
                    detail=detail,
                )
            )
        if esc.webhook_url:
            body = {**detail, "charger_id": run.charger_id, "message": message}
            self._spawn(_post_webhook(esc.webhook_url, body, self.webhook_policy, run.id))

    async def _suspend(self, name: str, reason: str, actor: Actor) -> None:
        if self.playbooks.pop(name, None) is None:
            return  # not running (already suspended, disabled or unknown)
        now = self._clock.now()
        await store.suspend(self._engine, name, reason, now)
        log.warning("playbook suspended", playbook=name, reason=reason)
        await self._audit.record(
            actor, "playbook.suspended", "suspended", target=name, reason=reason[:1000]
        )
        await self._alerts.raise_alert(
            anomalies.Alert(SUSPENSION_RULE, name, now, f"playbook {name} suspended: {reason}")
        )

    # -- persistence ------------------------------------------------------------------------------
    async def _move(self, run: r.Run, event: r.RunEvent, **detail: Any) -> r.Run:
        """Apply ``event``, persist it, and keep or drop the run from the active ones."""
        playbook = self._versions.get((run.playbook, run.version))
        moved = r.apply(playbook, run, event, self._clock.now(), **detail)
        await self._save(moved)
        if moved.active:
            self.runs[moved.id] = moved
            if event in (r.RunEvent.DEADLINE, r.RunEvent.NEXT):
                await self._advance(moved)
                return self.runs.get(moved.id, moved)
            return moved
        self.runs.pop(moved.id, None)
        self._sending.discard(moved.id)
        if not moved.dry_run and moved.state.value in ("resolved", "escalated", "failed"):
            self._history(self._outcomes, moved.playbook, 20).append(
                (self._clock.now(), moved.state.value)
            )
        actor = Actor(f"playbook:{moved.playbook}@{moved.version}", ("playbook",))
        await self._audit.record(
            replace(actor, request_id=f"playbook-run:{moved.id}"),
            "playbook.run",
            moved.state.value,
            target=moved.id,
            chargers=[moved.charger_id],
            reason=(moved.reason or "")[:1000] or None,
            detail={"fault_key": moved.fault_key, "dry_run": moved.dry_run, "step": moved.step},
        )
        return moved

    async def _insert(self, run: r.Run, playbook: Playbook, firing: t.Firing) -> None:
        trigger = {
            "kind": playbook.trigger.kind.value,
            "reason": firing.reason,
            "since": firing.since.isoformat(),
            "error_code": firing.error_code,
        }
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(PlaybookRun).values(
                    id=run.id,
                    playbook=run.playbook,
                    playbook_version=run.version,
                    charger_id=run.charger_id,
                    connector_id=run.connector_id,
                    site_id=run.site_id,
                    fault_key=run.fault_key[:200],
                    trigger=trigger,
                    state=run.state.value,
                    step_index=run.step,
                    outcome=None,
                    reason=(run.reason or "")[:500] or None,
                    dry_run=run.dry_run,
                    started_at=run.started_at,
                    updated_at=run.started_at,
                    log=list(run.log),
                )
            )

    async def _save(self, run: r.Run) -> None:
        now = self._clock.now()
        terminal = run.state in r.TERMINAL
        async with self._engine.begin() as conn:
            await conn.execute(
                update(PlaybookRun)
                .where(PlaybookRun.id == run.id)
                .values(
                    state=run.state.value,
                    step_index=run.step,
                    outcome=run.state.value if terminal else None,
                    reason=(run.reason or "")[:500] or None,
                    wait_until=run.wait_until,
                    approval_id=run.approval_id,
                    updated_at=now,
                    ended_at=now if terminal else None,
                    log=[dict(e) for e in run.log],
                )
            )


# -- helpers ---------------------------------------------------------------------------------------
#: What a site whose stored allowed hours no longer parse gets: a one-microsecond window a
#: day, closed in practice (failing closed: playbooks keep off its chargers).
_NEVER = (Window(frozenset(range(7)), time(0, 0), time(0, 0, 0, 1)),)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _run_of(row: Any) -> r.Run:
    log_entries = tuple(row.log or ())
    sent_at = None
    for entry in reversed(log_entries):
        if entry.get("event") == r.RunEvent.SENT.value:
            try:
                sent_at = datetime.fromisoformat(entry["at"])
            except (KeyError, TypeError, ValueError):
                sent_at = None
            break
    return r.Run(
        id=row.id,
        playbook=row.playbook,
        version=row.playbook_version,
        charger_id=row.charger_id,
        connector_id=row.connector_id,
        fault_key=row.fault_key,
        started_at=_aware(row.started_at),
        state=r.RunState(row.state),
        step=row.step_index,
        wait_until=_aware(row.wait_until) if row.wait_until else None,
        sent_at=sent_at,
        dry_run=row.dry_run,
        site_id=row.site_id,
        reason=row.reason,
        approval_id=row.approval_id,
        log=log_entries,
    )


def _breaker_reason(refusal: g.Refusal, playbook: Playbook) -> str:
    gd = playbook.guards
    if refusal is g.Refusal.BREAKER_TRIGGER_VOLUME:
        return (
            f"circuit breaker: more than {gd.breaker_triggers_per_hour} triggers within an "
            "hour (a fleet-wide fault?)"
        )
    return (
        f"circuit breaker: at least {gd.breaker_failure_rate:.0%} of the latest "
        f"{gd.breaker_min_runs}+ runs did not resolve their fault"
    )


async def _post_webhook(url: str, body: dict[str, Any], policy: FetchPolicy, run_id: str) -> None:
    """POST the escalation to an address the policy allows; never follows redirects, errors
    are logged, never raised."""
    try:
        status = await asyncio.wait_for(post_json(url, body, policy), policy.timeout * 2)
        if status >= 300:
            log.warning("escalation webhook refused", run_id=run_id, status=status)
    except FetchError as exc:
        log.warning("escalation webhook not sent", run_id=run_id, problem=str(exc.problem))
    except Exception as exc:
        log.warning("escalation webhook failed", run_id=run_id, error=type(exc).__name__)
