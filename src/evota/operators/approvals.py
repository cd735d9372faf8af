"""The approvals shell: requests in the database, executors per action, expiry.

Subsystems register what runs when a request of their action is approved
(``register("campaign.start", execute, cancel)``); the API and the CLI only create and
decide requests. An executor runs once, after the decision is committed; its result (or
error) is stored on the request and audited, so an approved-but-failed change is visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.audit.log import SYSTEM, Actor, AuditLog
from evota.clock import Clock
from evota.operators import four_eyes
from evota.operators.four_eyes import ApprovalState, transition
from evota.periodic import raise_if_cancelled
from evota.store.models import Approval

log = structlog.get_logger("evota.approvals")

Execute = Callable[[dict[str, Any], Actor], Awaitable[dict[str, Any]]]
Cancel = Callable[[dict[str, Any], str], Awaitable[None]]


class ApprovalError(Exception):
    """A decision that is not allowed: ``reason`` is self_approval, expired, approved, ..."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Handlers:
    execute: Execute
    cancel: Cancel | None


def _pending(row: Any) -> four_eyes.Pending:
    about_user = row.action in four_eyes.ABOUT_A_USER
    subject = (row.payload or {}).get("username") if about_user else None
    return four_eyes.Pending(
        row.id, row.action, row.requested_by, ApprovalState(row.state), row.expires_at, subject
    )


class Approvals:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        audit: AuditLog,
        policy: four_eyes.Policy,
        ttl: timedelta,
        sweep_seconds: float = 30.0,
        decisions_engine: AsyncEngine | None = None,
    ) -> None:
        self.engine = engine  # requests: made through any node's API
        # Decisions, outcomes and expiry: the runner leader's (leader call approvals.decide,
        # the sweep), fenced in a cluster (evota.cluster.fence) so a deposed leader's fail.
        self._decisions = decisions_engine or engine
        self.clock = clock
        self.audit = audit
        self.policy = policy
        self.ttl = ttl
        self.sweep_seconds = sweep_seconds
        self._handlers: dict[str, _Handlers] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def register(self, action: str, execute: Execute, cancel: Cancel | None = None) -> None:
        self._handlers[action] = _Handlers(execute, cancel)

    def required(self, action: str, charger_count: int = 0) -> bool:
        return four_eyes.required(self.policy, action, charger_count)

    async def request(
        self,
        actor: Actor,
        action: str,
        summary: str,
        payload: Mapping[str, Any],
        reason: str,
        charger_count: int = 0,
    ) -> str:
        approval_id = str(uuid.uuid4())
        now = self.clock.now()
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(Approval).values(
                    id=approval_id,
                    action=action,
                    summary=summary[:500],
                    payload=dict(payload),
                    charger_count=charger_count,
                    state=ApprovalState.PENDING,
                    requested_by=actor.name,
                    reason=reason,
                    created_at=now,
                    expires_at=now + self.ttl,
                    result={},
                )
            )
        await self.audit.record(
            actor,
            "approval.requested",
            ApprovalState.PENDING,
            target=approval_id,
            reason=reason,
            detail={"action": action, "summary": summary, "charger_count": charger_count},
        )
        return approval_id

    async def get(self, approval_id: str) -> Any:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(Approval).where(Approval.id == approval_id))).first()

    async def decide(
        self, approval_id: str, decider: Actor, approve: bool, note: str | None = None
    ) -> dict[str, Any]:
        """Approve (and run) or reject a pending request; raises ApprovalError."""
        async with self._lock:
            row = await self.get(approval_id)
            if row is None:
                raise ApprovalError("unknown", f"no approval request {approval_id!r}")
            now = self.clock.now()
            problem = four_eyes.decision_problem(_pending(row), decider.name, now)
            if problem == ApprovalState.EXPIRED and row.state == ApprovalState.PENDING:
                await self._expire(row)
            if problem is not None:
                raise ApprovalError(problem, _MESSAGES.get(problem, f"request is {problem}"))
            state = transition(ApprovalState.PENDING, "approve" if approve else "reject")
            async with self._decisions.begin() as conn:
                changed = await conn.execute(
                    update(Approval)
                    .where(Approval.id == approval_id, Approval.state == ApprovalState.PENDING)
                    .values(
                        state=state, decided_by=decider.name, decided_at=now, decision_note=note
                    )
                )
                if changed.rowcount != 1:
                    raise ApprovalError("decided", "request was decided concurrently")
        await self.audit.record(
            decider,
            f"approval.{state}",
            state,
            target=approval_id,
            reason=note,
            detail={"action": row.action, "requested_by": row.requested_by},
        )
        handlers = self._handlers.get(row.action)
        if not approve:
            if handlers and handlers.cancel:
                await handlers.cancel(dict(row.payload), ApprovalState.REJECTED)
            return {"state": ApprovalState.REJECTED}
        if handlers is None:
            return await self._finish(row, "failed", {"error": f"no executor for {row.action}"})
        try:
            result = await handlers.execute(dict(row.payload), decider)
        except Exception as exc:  # the decision stands; the failure is recorded and audited
            log.exception("approved action failed", action=row.action, approval_id=approval_id)
            return await self._finish(row, "failed", {"error": str(exc) or type(exc).__name__})
        return await self._finish(row, "executed", result)

    async def withdraw(self, approval_id: str, actor: Actor, reason: str | None) -> bool:
        """The work a pending request was for went away (e.g. its operation was cancelled):
        close the request so nobody approves a stale change. False if not pending."""
        async with self._decisions.begin() as conn:
            changed = await conn.execute(
                update(Approval)
                .where(Approval.id == approval_id, Approval.state == ApprovalState.PENDING)
                .values(
                    state=transition(ApprovalState.PENDING, "withdraw"),
                    decided_by=actor.name,
                    decided_at=self.clock.now(),
                    decision_note=reason,
                )
            )
        if changed.rowcount != 1:
            return False
        await self.audit.record(
            actor,
            "approval.withdrawn",
            ApprovalState.WITHDRAWN,
            target=approval_id,
            reason=reason,
        )
        return True

    async def _finish(self, row: Any, outcome: str, result: dict[str, Any]) -> dict[str, Any]:
        """Record how the approved action went (``outcome``: executed or failed)."""
        state = transition(ApprovalState.APPROVED, outcome)
        async with self._decisions.begin() as conn:
            await conn.execute(
                update(Approval).where(Approval.id == row.id).values(state=state, result=result)
            )
        await self.audit.record(
            SYSTEM,
            f"approval.{state}",
            state,
            target=row.id,
            detail={"action": row.action, "result": result},
        )
        return {"state": state, "result": result}

    async def _expire(self, row: Any) -> None:
        async with self._decisions.begin() as conn:
            changed = await conn.execute(
                update(Approval)
                .where(Approval.id == row.id, Approval.state == ApprovalState.PENDING)
                .values(state=transition(ApprovalState.PENDING, "expire"))
            )
        if changed.rowcount != 1:
            return
        await self.audit.record(
            SYSTEM,
            "approval.expired",
            ApprovalState.EXPIRED,
            target=row.id,
            detail={"action": row.action},
        )
        handlers = self._handlers.get(row.action)
        if handlers and handlers.cancel:
            try:
                await handlers.cancel(dict(row.payload), ApprovalState.EXPIRED)
            except Exception:
                log.exception("cancel after expiry failed", approval_id=row.id)

    async def sweep(self) -> int:
        """Expire every pending request past its time; returns how many."""
        now = self.clock.now()
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(Approval).where(
                        Approval.state == ApprovalState.PENDING, Approval.expires_at <= now
                    )
                )
            ).all()
        async with self._lock:
            for row in rows:
                await self._expire(row)
        return len(rows)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="approvals")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                raise_if_cancelled()
                log.exception("approval sweep failed")
            await asyncio.sleep(self.sweep_seconds)


_MESSAGES = {
    "self_approval": "the requester cannot decide their own request; a second operator must",
    "expired": "the request expired; ask again",
    "approved": "the request was already approved",
    "rejected": "the request was already rejected",
    "executed": "the request was already approved and executed",
    "failed": "the request was already approved (its action failed)",
    "withdrawn": "the request was withdrawn (the change it was for was cancelled)",
}
