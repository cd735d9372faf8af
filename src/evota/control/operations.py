"""The imperative shell of bulk operations: rows, tasks, sends, audit entries.

Every decision (which chargers next, stage advance, stop at the failure threshold, pacing)
comes from :func:`evota.control.operation.decide`. This module keeps one asyncio task per
running operation that feeds it the answers so far and carries out what it says.

Intent before side effect: a charger's result row turns ``sent`` *before* its command goes
out, so after a crash a ``sent`` row without an answer is known to be in doubt; on start it
becomes ``failed`` (``interrupted``) and is never sent again — a reset is not repeated
because evota restarted. Running operations resume where they were.

Operations on more chargers than ``EVOTA_APPROVAL_CHARGER_THRESHOLD`` wait for a second
operator (action ``operation.start``); the approval executor registered in :meth:`start`
starts them, and a rejection or expiry ends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from pydantic import ValidationError
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Select

from evota.audit.log import SYSTEM, Actor, AuditLog
from evota.clock import Clock
from evota.control import catalog
from evota.control import operation as op
from evota.control.catalog import CommandSpec, Params
from evota.control.commands import CommandError, CommandResult
from evota.control.operation import OperationEvent, OperationState, ResultState
from evota.operators.four_eyes import ApprovalState
from evota.selection import ChargerSnapshot
from evota.store.models import Charger, Operation, OperationResult, Site

log = structlog.get_logger("evota.operations")

ACTION = "operation.start"  # the approval action
_CHUNK = 500

SendFn = Callable[[Actor, str, CommandSpec, Params, str | None], Awaitable[CommandResult]]


class ApprovalsLike(Protocol):
    def required(self, action: str, charger_count: int = 0) -> bool: ...

    async def request(
        self,
        actor: Actor,
        action: str,
        summary: str,
        payload: Any,
        reason: str,
        charger_count: int = 0,
    ) -> str: ...

    def register(self, action: str, execute: Any, cancel: Any = None) -> None: ...

    async def withdraw(self, approval_id: str, actor: Actor, reason: str | None) -> bool: ...


class OperationConflict(Exception):
    """A request that does not fit the operation's state: a conflict (the API maps it)."""


@dataclass(frozen=True, slots=True)
class Info:
    """What a per-charger step needs to know about its operation."""

    id: str
    command: str
    params: dict[str, Any]
    reason: str
    created_by: str
    profile_id: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """One charger's result: ``ok`` decides succeeded/failed; ``status`` is its answer."""

    ok: bool
    status: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


Step = Callable[[Info, Actor, str], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class _Draft:
    """An operation request after its checks, before anything is stored."""

    command: str
    params: dict[str, Any]  # as stored and sent
    audited: dict[str, Any]  # as the audit log shows them (secrets left out)
    charger_ids: list[str]  # without duplicates, in the given order
    sizes: tuple[int, ...]  # the stages' sizes
    reason: str
    target: dict[str, Any]
    max_failure_rate: float
    rate_per_second: float
    profile_id: str | None

    @property
    def summary(self) -> str:
        """What the second operator is asked to approve."""
        return (
            f"{self.command} on {len(self.charger_ids)} chargers in {len(self.sizes)} stages "
            f"({', '.join(map(str, self.sizes))})"
        )


@dataclass
class _Live:
    id: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False
    task: asyncio.Task[None] | None = None
    sends: set[asyncio.Task[None]] = field(default_factory=set)


def _chunks(ids: Sequence[str]) -> list[Sequence[str]]:
    return [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)]


def _jsonable(value: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(value, default=str))
    return out


def validate_params(command: str, params: dict[str, Any]) -> Params:
    """The catalog command's parameters, or an OperationError naming ``params.<field>``."""
    spec = catalog.get(command)
    if spec is None:
        raise op.OperationError("command", f"unknown command {command!r}")
    try:
        return spec.params.model_validate(params)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        raise op.OperationError(f"params.{where}" if where else "params", message) from None


class OperationRunner:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        send: SendFn,
        audit: AuditLog,
        *,
        approvals: ApprovalsLike | None = None,
        connected: Callable[[str], bool] = lambda _cid: False,
        min_sample: int = 5,
        max_in_flight: int = 20,
        resume_delay: float = 30.0,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._send = send
        self._audit = audit
        self._approvals = approvals
        self._connected = connected
        self.min_sample = min_sample
        self.max_in_flight = max_in_flight
        self.resume_delay = resume_delay  # after a restart, chargers need time to reconnect
        self._steps: dict[str, Step] = {}
        self._live: dict[str, _Live] = {}
        self._lock = asyncio.Lock()  # state changes and marking ``sent`` never interleave

    # -- lifecycle ------------------------------------------------------------------------------
    def add_step(self, command: str, step: Step) -> None:
        """An internal command (not in the catalog), e.g. ``apply-config-profile``."""
        self._steps[command] = step

    def internal(self, command: str) -> bool:
        return command in self._steps

    async def start(self) -> None:
        if self._approvals is not None:
            self._approvals.register(ACTION, self._approved, self._approval_ended)
        now = self._clock.now()
        async with self._engine.begin() as conn:
            running = select(Operation.id).where(Operation.state == OperationState.RUNNING)
            ids = list((await conn.execute(running)).scalars().all())
            interrupted: dict[str, int] = {}
            for op_id in ids:
                changed = await conn.execute(
                    update(OperationResult)
                    .where(
                        OperationResult.operation_id == op_id,
                        OperationResult.state == ResultState.SENT,
                    )
                    .values(
                        state=ResultState.FAILED,
                        detail={
                            "reason": "interrupted",
                            "message": "evota stopped before the charger answered; not resent",
                        },
                        at=now,
                    )
                )
                interrupted[op_id] = changed.rowcount or 0
        for op_id in ids:
            await self._audit.record(
                SYSTEM,
                "operation.resumed",
                OperationState.RUNNING,
                target=op_id,
                detail={"interrupted": interrupted[op_id]},
            )
            self._launch(op_id, delay=self.resume_delay)
        if ids:
            log.info("operations resumed", count=len(ids))

    async def stop(self) -> None:
        lives = list(self._live.values())
        for live in lives:
            for task in (live.task, *live.sends):
                if task is not None:
                    task.cancel()
        for live in lives:
            for task in (live.task, *live.sends):
                if task is not None:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        self._live.clear()

    async def idle(self, op_id: str) -> None:
        """Wait until the operation's task (if any) has finished, answers included."""
        live = self._live.get(op_id)
        if live is not None and live.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(live.task)

    # -- which chargers -------------------------------------------------------------------------
    async def snapshots(
        self, conn: AsyncConnection, narrow: Callable[[Select[Any]], Select[Any]] | None = None
    ) -> list[ChargerSnapshot]:
        query: Any = select(
            Charger.id,
            Charger.vendor,
            Charger.model,
            Charger.hardware_revision,
            Charger.firmware_version,
            Charger.site_id,
            Charger.tags,
            Charger.last_seen,
            Site.region,
        ).join(Site, Site.id == Charger.site_id, isouter=True)
        if narrow is not None:
            query = narrow(query)
        rows = (await conn.execute(query.order_by(Charger.id))).all()
        return [
            ChargerSnapshot(
                id=r.id,
                vendor=r.vendor,
                model=r.model,
                hardware_revision=r.hardware_revision,
                firmware_version=r.firmware_version,
                site_id=r.site_id,
                region=r.region,
                tags=frozenset(r.tags or ()),
                connected=self._connected(r.id),
                last_seen=r.last_seen,
            )
            for r in rows
        ]

    async def resolve(
        self, query: op.Query, narrow: Callable[[Select[Any]], Select[Any]] | None = None
    ) -> tuple[list[str], list[str]]:
        """(selected ids, explicitly named ids that are unknown or outside ``narrow``)."""
        async with self._engine.connect() as conn:
            fleet = await self.snapshots(conn, narrow)
        selected = op.select_chargers(query, fleet)
        known = {c.id for c in fleet}
        missing = [cid for cid in query.charger_ids if cid not in known]
        return selected, missing

    # -- creating -------------------------------------------------------------------------------
    async def create(
        self,
        *,
        actor: Actor,
        command: str,
        params: dict[str, Any],
        charger_ids: Sequence[str],
        reason: str,
        target: dict[str, Any] | None = None,
        stages: Sequence[Any] | None = None,
        max_failure_rate: float = 0.2,
        rate_per_second: float = 10.0,
        profile_id: str | None = None,
        approved: bool = False,
    ) -> dict[str, Any]:
        """Store the operation and start it, or ask for approval; raises OperationError.
        ``approved``: a second operator already approved what this operation is part of
        (a CSMS root rotation's start), so it is not asked again."""
        draft = self._draft(
            command=command,
            params=params,
            charger_ids=charger_ids,
            reason=reason,
            target=target,
            stages=stages,
            max_failure_rate=max_failure_rate,
            rate_per_second=rate_per_second,
            profile_id=profile_id,
        )
        op_id = str(uuid.uuid4())
        needs = not approved and self._needs_approval(draft)
        state = OperationState.AWAITING_APPROVAL if needs else OperationState.RUNNING
        await self._insert(op_id, draft, state, actor)
        await self._audit_created(op_id, draft, state, actor)
        out: dict[str, Any] = {"id": op_id, "state": state}
        if needs:
            out["approval_id"] = await self._request_approval(op_id, draft, actor)
        else:
            self._launch(op_id)
        return out

    def _draft(
        self,
        *,
        command: str,
        params: dict[str, Any],
        charger_ids: Sequence[str],
        reason: str,
        target: dict[str, Any] | None,
        stages: Sequence[Any] | None,
        max_failure_rate: float,
        rate_per_second: float,
        profile_id: str | None,
    ) -> _Draft:
        """Check the request before anything is stored; raises OperationError naming the field."""
        if not reason or not reason.strip():
            raise op.OperationError("reason", "a reason is required")
        ids = list(dict.fromkeys(charger_ids))
        if not ids:
            raise op.OperationError("target", "the target matches no chargers")
        audited: dict[str, Any] = dict(params)
        if not self.internal(command):
            checked = validate_params(command, params)
            params = checked.model_dump(mode="json")
            audited = checked.audited()
        op.Limits(max_failure_rate, self.min_sample, rate_per_second, self.max_in_flight)
        return _Draft(
            command=command,
            params=params,
            audited=audited,
            charger_ids=ids,
            sizes=op.plan_stages(len(ids), stages),
            reason=reason,
            target=target or {},
            max_failure_rate=max_failure_rate,
            rate_per_second=rate_per_second,
            profile_id=profile_id,
        )

    def _needs_approval(self, draft: _Draft) -> bool:
        return self._approvals is not None and self._approvals.required(
            ACTION, len(draft.charger_ids)
        )

    async def _insert(self, op_id: str, draft: _Draft, state: OperationState, actor: Actor) -> None:
        """The operation row and one ``pending`` result row per charger, in one transaction."""
        now = self._clock.now()
        ids = draft.charger_ids
        stage_of = {
            cid: i for i, members in enumerate(op.split(ids, draft.sizes)) for cid in members
        }
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(Operation).values(
                    id=op_id,
                    command=draft.command,
                    params=draft.params,
                    target=draft.target,
                    charger_ids=ids,
                    stages=list(draft.sizes),
                    max_failure_rate=draft.max_failure_rate,
                    rate_per_second=draft.rate_per_second,
                    state=state,
                    current_stage=0,
                    reason=draft.reason,
                    profile_id=draft.profile_id,
                    created_by=actor.name,
                    created_at=now,
                    updated_at=now,
                    started_at=now if state == OperationState.RUNNING else None,
                )
            )
            for chunk in _chunks(ids):
                await conn.execute(
                    insert(OperationResult),
                    [
                        {
                            "operation_id": op_id,
                            "charger_id": cid,
                            "stage": stage_of[cid],
                            "state": ResultState.PENDING,
                            "detail": {},
                        }
                        for cid in chunk
                    ],
                )

    async def _audit_created(
        self, op_id: str, draft: _Draft, state: OperationState, actor: Actor
    ) -> None:
        await self._audit.record(
            actor,
            "operation.created",
            state,
            target=op_id,
            chargers=draft.charger_ids,
            reason=draft.reason,
            detail={
                "command": draft.command,
                "params": draft.audited,
                "stages": list(draft.sizes),
                "max_failure_rate": draft.max_failure_rate,
                "rate_per_second": draft.rate_per_second,
                **({"profile_id": draft.profile_id} if draft.profile_id else {}),
            },
        )

    async def _request_approval(self, op_id: str, draft: _Draft, actor: Actor) -> str:
        """Ask a second operator; the approval's id is kept on the operation (to withdraw it)."""
        assert self._approvals is not None
        approval_id = await self._approvals.request(
            actor,
            ACTION,
            draft.summary,
            {"operation_id": op_id},
            draft.reason,
            len(draft.charger_ids),
        )
        async with self._engine.begin() as conn:
            await conn.execute(
                update(Operation)
                .where(Operation.id == op_id)
                .values(approval_id=approval_id, updated_at=self._clock.now())
            )
        return approval_id

    # -- approvals ------------------------------------------------------------------------------
    async def _approved(self, payload: dict[str, Any], approver: Actor) -> dict[str, Any]:
        op_id = str(payload.get("operation_id"))
        now = self._clock.now()
        async with self._lock:
            async with self._engine.begin() as conn:
                changed = await conn.execute(
                    update(Operation)
                    .where(
                        Operation.id == op_id,
                        Operation.state == OperationState.AWAITING_APPROVAL,
                    )
                    .values(state=OperationState.RUNNING, started_at=now, updated_at=now)
                )
            if changed.rowcount != 1:
                state = await self._state(op_id)
                raise OperationConflict(f"operation {op_id} is {state or 'unknown'}")
        await self._audit.record(
            approver,
            "operation.started",
            OperationState.RUNNING,
            target=op_id,
            detail={"approved": True},
        )
        self._launch(op_id)
        return {"operation_id": op_id, "state": OperationState.RUNNING}

    async def _approval_ended(self, payload: dict[str, Any], why: str) -> None:
        event = OperationEvent.EXPIRE if why == ApprovalState.EXPIRED else OperationEvent.REJECT
        op_id = str(payload.get("operation_id"))
        await self._end(op_id, event, SYSTEM, f"approval {why}")

    # -- cancelling and ending ------------------------------------------------------------------
    async def cancel(self, op_id: str, actor: Actor, reason: str) -> str:
        """Cancel an operation waiting for approval or running; answers already on their way
        are still recorded. Raises LookupError or OperationConflict."""
        return await self._end(op_id, OperationEvent.CANCEL, actor, reason)

    async def _end(
        self, op_id: str, event: OperationEvent, actor: Actor, reason: str | None
    ) -> OperationState:
        async with self._lock:
            state = await self._state(op_id)
            if state is None:
                raise LookupError(op_id)
            new = op.transition(state, event)
            if new is None:
                raise OperationConflict(f"operation is {state}")
            if not await self._set_final(op_id, state, new, reason):
                raise OperationConflict("operation changed state concurrently")
            live = self._live.get(op_id)
            if live is not None:
                live.stopping = True
                live.wake.set()
        await self._audit.record(
            actor, f"operation.{new}", new, target=op_id, reason=reason, detail={"was": state}
        )
        if state == OperationState.AWAITING_APPROVAL and self._approvals is not None:
            async with self._engine.connect() as conn:
                approval_id = (
                    await conn.execute(select(Operation.approval_id).where(Operation.id == op_id))
                ).scalar()
            if approval_id:
                await self._approvals.withdraw(approval_id, actor, f"operation {new}")
        return new

    async def _set_final(
        self, op_id: str, was: str, state: OperationState, reason: str | None
    ) -> bool:
        """``was`` -> ``state`` if still ``was``; chargers not yet sent are skipped."""
        now = self._clock.now()
        async with self._engine.begin() as conn:
            changed = await conn.execute(
                update(Operation)
                .where(Operation.id == op_id, Operation.state == was)
                .values(state=state, state_reason=reason, updated_at=now, finished_at=now)
            )
            if changed.rowcount != 1:
                return False
            await conn.execute(
                update(OperationResult)
                .where(
                    OperationResult.operation_id == op_id,
                    OperationResult.state == ResultState.PENDING,
                )
                .values(state=ResultState.SKIPPED, detail={"reason": state}, at=now)
            )
        return True

    async def _state(self, op_id: str) -> str | None:
        async with self._engine.connect() as conn:
            state = (
                await conn.execute(select(Operation.state).where(Operation.id == op_id))
            ).scalar()
        return None if state is None else str(state)

    # -- running --------------------------------------------------------------------------------
    def _launch(self, op_id: str, delay: float = 0.0) -> None:
        if op_id in self._live:
            return
        live = _Live(op_id)
        self._live[op_id] = live
        live.task = asyncio.create_task(self._run(live, delay), name=f"operation-{op_id}")

    async def _run(self, live: _Live, delay: float = 0.0) -> None:
        try:
            if delay > 0:  # a cancel meanwhile wakes this early
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(live.wake.wait(), delay)
            if not live.stopping:
                await self._drive(live)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # evota's own failure: say so on the operation
            log.exception("operation failed", operation_id=live.id)
            live.stopping = True
            async with self._lock:
                ended = await self._set_final(
                    live.id, OperationState.RUNNING, OperationState.FAILED, str(exc)[:500]
                )
            if ended:
                await self._audit.record(
                    SYSTEM,
                    "operation.failed",
                    OperationState.FAILED,
                    target=live.id,
                    reason=str(exc)[:500],
                )
        finally:
            if live.sends:
                await asyncio.gather(*live.sends, return_exceptions=True)
            if self._live.get(live.id) is live:
                del self._live[live.id]

    async def _drive(self, live: _Live) -> None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(Operation).where(Operation.id == live.id))).one()
            results: dict[str, str] = {
                r.charger_id: r.state
                for r in (
                    await conn.execute(
                        select(OperationResult.charger_id, OperationResult.state).where(
                            OperationResult.operation_id == live.id
                        )
                    )
                ).all()
            }
        if row.state != OperationState.RUNNING:
            return
        step_fn = self._steps.get(row.command) or (
            self._command if catalog.get(row.command) else None
        )
        if step_fn is None:
            raise RuntimeError(f"command {row.command!r} is no longer known")
        info = Info(
            row.id, row.command, dict(row.params), row.reason, row.created_by, row.profile_id
        )
        # Commands sent by an operation are audited as its creator's, tagged with the operation.
        actor = Actor(row.created_by, ("operation",), f"operation:{row.id}")
        limits = op.Limits(
            row.max_failure_rate, self.min_sample, row.rate_per_second, self.max_in_flight
        )
        plan = op.Plan(op.split(list(row.charger_ids), list(row.stages)), limits)
        stage = row.current_stage
        sends: deque[float] = deque(maxlen=limits.burst)
        while not live.stopping:
            live.wake.clear()
            step = op.decide(
                plan,
                op.Progress(OperationState.RUNNING, stage, results, tuple(sends)),
                self._clock.monotonic(),
            )
            if step.stage != stage:
                stage = step.stage
                await self._advance(live.id, stage, len(plan.stages[stage]))
            if step.finish is not None:
                await self._complete(live, step.finish, step.reason, results)
                return
            if step.send:
                async with self._lock:
                    if live.stopping:
                        return
                    await self._mark_sent(live.id, step.send)
                at = self._clock.monotonic()
                for cid in step.send:
                    results[cid] = ResultState.SENT
                    sends.append(at)
                    task = asyncio.create_task(self._one(live, info, actor, cid, step_fn, results))
                    live.sends.add(task)
                    task.add_done_callback(live.sends.discard)
                continue
            timeout = (
                None if step.wake_at is None else max(0.0, step.wake_at - self._clock.monotonic())
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(live.wake.wait(), timeout)

    async def _advance(self, op_id: str, stage: int, size: int) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(Operation)
                .where(Operation.id == op_id)
                .values(current_stage=stage, updated_at=self._clock.now())
            )
        await self._audit.record(
            SYSTEM,
            "operation.stage",
            OperationState.RUNNING,
            target=op_id,
            detail={"stage": stage + 1, "size": size},
        )

    async def _complete(
        self, live: _Live, state: OperationState, reason: str | None, results: dict[str, str]
    ) -> None:
        live.stopping = True
        async with self._lock:
            ended = await self._set_final(live.id, OperationState.RUNNING, state, reason)
        if not ended:
            return  # cancelled meanwhile: that entry is written
        counts: dict[str, int] = {}
        for s in results.values():
            counts[s] = counts.get(s, 0) + 1
        failed = [cid for cid, s in results.items() if s == ResultState.FAILED]
        await self._audit.record(
            SYSTEM,
            f"operation.{state}",
            state,
            target=live.id,
            chargers=failed[:1000],
            reason=reason,
            detail={"results": counts},
        )

    async def _mark_sent(self, op_id: str, ids: Sequence[str]) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(OperationResult)
                .where(
                    OperationResult.operation_id == op_id,
                    OperationResult.charger_id.in_(list(ids)),
                    OperationResult.state == ResultState.PENDING,
                )
                .values(state=ResultState.SENT, at=self._clock.now())
            )

    async def _one(
        self,
        live: _Live,
        info: Info,
        actor: Actor,
        cid: str,
        step_fn: Step,
        results: dict[str, str],
    ) -> None:
        try:
            outcome = await step_fn(info, actor, cid)
        except CommandError as exc:
            outcome = Outcome(False, None, {"reason": exc.reason, "message": exc.message})
        except asyncio.CancelledError:
            raise  # evota is stopping: the row stays ``sent`` and is settled on the next start
        except Exception as exc:
            log.exception("operation step failed", operation_id=info.id, charger_id=cid)
            outcome = Outcome(False, None, {"reason": "error", "message": str(exc)[:500]})
        state = ResultState.SUCCEEDED if outcome.ok else ResultState.FAILED
        results[cid] = state
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(OperationResult)
                    .where(
                        OperationResult.operation_id == info.id,
                        OperationResult.charger_id == cid,
                        OperationResult.state == ResultState.SENT,
                    )
                    .values(
                        state=state,
                        status=outcome.status,
                        detail=_jsonable(outcome.detail),
                        at=self._clock.now(),
                    )
                )
        finally:
            live.wake.set()

    async def _command(self, info: Info, actor: Actor, cid: str) -> Outcome:
        spec = catalog.get(info.command)
        assert spec is not None
        params = spec.params.model_validate(info.params)
        result = await self._send(actor, cid, spec, params, info.reason)
        return Outcome(result.accepted, result.status, dict(result.details))

    # -- reading --------------------------------------------------------------------------------
    async def describe(
        self,
        op_id: str,
        *,
        result_state: str | None = None,
        limit: int = 500,
        offset: int = 0,
    ) -> dict[str, Any] | None:
        """The operation with progress per state and stage, and a page of per-charger results."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(Operation).where(Operation.id == op_id))).first()
            if row is None:
                return None
            states = {
                r.charger_id: r.state
                for r in (
                    await conn.execute(
                        select(OperationResult.charger_id, OperationResult.state).where(
                            OperationResult.operation_id == op_id
                        )
                    )
                ).all()
            }
            query = select(
                OperationResult.charger_id,
                OperationResult.stage,
                OperationResult.state,
                OperationResult.status,
                OperationResult.detail,
                OperationResult.at,
            ).where(OperationResult.operation_id == op_id)
            if result_state:
                query = query.where(OperationResult.state == result_state)
            page = (
                await conn.execute(
                    query.order_by(OperationResult.stage, OperationResult.charger_id)
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
        progress = op.summarize(
            op.split(list(row.charger_ids), list(row.stages)), states, row.current_stage, row.state
        )
        return {
            **public(row),
            "progress": progress["results"],
            "stages": progress["stages"],
            "results": [dict(r._mapping) for r in page],
            "results_total": (
                sum(1 for s in states.values() if s == result_state)
                if result_state
                else len(states)
            ),
        }


def public(row: Any) -> dict[str, Any]:
    """An operation row as the API shows it (secrets in parameters left out)."""
    params = dict(row.params or {})
    spec = catalog.get(row.command)
    if spec is not None:
        with contextlib.suppress(ValidationError):
            params = spec.params.model_validate(params).audited()
    return {
        "id": row.id,
        "command": row.command,
        "params": params,
        "target": row.target,
        "chargers": len(row.charger_ids or ()),
        "stage_sizes": list(row.stages or ()),
        "current_stage": row.current_stage,
        "max_failure_rate": row.max_failure_rate,
        "rate_per_second": row.rate_per_second,
        "state": row.state,
        "state_reason": row.state_reason,
        "reason": row.reason,
        "approval_id": row.approval_id,
        "profile_id": row.profile_id,
        "created_by": row.created_by,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
    }
