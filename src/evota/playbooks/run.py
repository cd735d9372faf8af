"""One run of a playbook, pure: its states, the transition table and the next action.

A run walks the playbook's steps on one charger. In ``running`` it takes step ``step``:
:func:`plan` says what (send a command, ask for approval, escalate, or finish). After a
command is accepted it ``waiting``s for the step's condition until ``wait_until``: the
condition met resolves the fault (``resolved``); the deadline moves to the next step, and
running out of steps after a wait escalates (an alert), so a fault nobody fixed is never
dropped silently. A command the charger refuses or does not answer ends the run
``failed``; a guard rail that closes during the run (kill switch, suspension, a session
that began, allowed hours) ends it before its next command (``suspended`` / ``refused``).
A dry run takes no step: it records the steps it would have taken and ends ``dry_run``.

Every move goes through :data:`TRANSITIONS` (like ``control.operation``'s): an event a
state does not allow raises :class:`RunError`, so no caller can skip a state.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from evota.playbooks.spec import Approval, Condition, ConditionKind, Escalation, Playbook, Step
from evota.playbooks.triggers import ChargerFacts

__all__ = [
    "ACTIVE",
    "MAX_LOG",
    "TERMINAL",
    "TRANSITIONS",
    "AskApproval",
    "Escalate",
    "Finish",
    "Run",
    "RunError",
    "RunEvent",
    "RunState",
    "Send",
    "apply",
    "condition_holds",
    "dry_run_log",
    "guarded",
    "logged",
    "plan",
    "step_params",
]

MAX_LOG = 50  # log entries kept per run (the latest; the first one says why it started)


class RunState(StrEnum):
    RUNNING = "running"  # about to take step ``step``
    WAITING = "waiting"  # step ``step``'s command accepted; its condition until wait_until
    AWAITING_APPROVAL = "awaiting_approval"  # step ``step`` waits for a second operator
    RESOLVED = "resolved"
    ESCALATED = "escalated"
    FAILED = "failed"
    REFUSED = "refused"
    SUSPENDED = "suspended"
    DRY_RUN = "dry_run"


ACTIVE = frozenset({RunState.RUNNING, RunState.WAITING, RunState.AWAITING_APPROVAL})
TERMINAL = frozenset(RunState) - ACTIVE


class RunEvent(StrEnum):
    SENT = "sent"  # the charger accepted the step's command
    SEND_FAILED = "send_failed"  # it refused it, or did not answer
    NEEDS_APPROVAL = "needs_approval"
    APPROVED = "approved"  # the approval's executor sent it (SENT follows)
    DENIED = "denied"  # rejected, expired or withdrawn
    MET = "met"  # the wait's condition holds
    DEADLINE = "deadline"  # the wait's deadline passed
    NEXT = "next"  # a step without a wait: on to the next one
    ESCALATED = "escalated"
    COMPLETED = "completed"  # out of steps after a command without a wait
    REFUSE = "refuse"  # a guard rail or the approval policy said no
    SUSPEND = "suspend"  # the kill switch or the playbook's suspension
    FAIL = "fail"  # evota could not go on (e.g. restarted while sending)
    SIMULATE = "simulate"  # a dry run recorded its steps


_S = RunState
_ANY_ACTIVE = {_S.RUNNING: None, _S.WAITING: None, _S.AWAITING_APPROVAL: None}
TRANSITIONS: Mapping[RunEvent, Mapping[RunState, RunState]] = {
    RunEvent.SENT: {_S.RUNNING: _S.WAITING},  # or RUNNING at the next step: see apply
    RunEvent.SEND_FAILED: {_S.RUNNING: _S.FAILED, _S.AWAITING_APPROVAL: _S.FAILED},
    RunEvent.NEEDS_APPROVAL: {_S.RUNNING: _S.AWAITING_APPROVAL},
    RunEvent.APPROVED: {_S.AWAITING_APPROVAL: _S.RUNNING},
    RunEvent.DENIED: {_S.AWAITING_APPROVAL: _S.REFUSED},
    RunEvent.MET: {_S.WAITING: _S.RESOLVED},
    RunEvent.DEADLINE: {_S.WAITING: _S.RUNNING},
    RunEvent.NEXT: {_S.RUNNING: _S.RUNNING},
    RunEvent.ESCALATED: {_S.RUNNING: _S.ESCALATED},
    RunEvent.COMPLETED: {_S.RUNNING: _S.RESOLVED},
    RunEvent.REFUSE: {_S.RUNNING: _S.REFUSED, _S.AWAITING_APPROVAL: _S.REFUSED},
    RunEvent.SUSPEND: dict.fromkeys(_ANY_ACTIVE, _S.SUSPENDED),
    RunEvent.FAIL: dict.fromkeys(_ANY_ACTIVE, _S.FAILED),
    RunEvent.SIMULATE: {_S.RUNNING: _S.DRY_RUN},
}


class RunError(ValueError):
    """An event the run's state does not allow."""


@dataclass(frozen=True, slots=True)
class Run:
    """A run as the engine reads it (the ``playbook_runs`` row, less the bookkeeping)."""

    id: str
    playbook: str
    version: int
    charger_id: str
    connector_id: int | None
    fault_key: str
    started_at: datetime
    state: RunState = RunState.RUNNING
    step: int = 0
    wait_until: datetime | None = None
    sent_at: datetime | None = None  # when the step being waited on was accepted
    dry_run: bool = False
    site_id: str | None = None
    reason: str | None = None
    approval_id: str | None = None
    log: tuple[Mapping[str, Any], ...] = ()

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


# -- what to do next ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Send:
    step: int
    command: str
    params: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class AskApproval:
    step: int
    command: str
    params: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Escalate:
    step: int
    escalation: Escalation
    implicit: bool = False  # the last wait ran out and no step said what next


@dataclass(frozen=True, slots=True)
class Finish:
    event: RunEvent
    reason: str


Action = Send | AskApproval | Escalate | Finish


def step_params(step: Step, connector_id: int | None) -> dict[str, Any]:
    """The step's parameters, ``"{connector}"`` replaced by the triggering connector."""
    out: dict[str, Any] = {}
    for key, value in step.params.items():
        if value == "{connector}":
            out[key] = connector_id if connector_id is not None else 0
        else:
            out[key] = value
    return out


#: What a playbook is for: steps the approval policy never holds back (a soft reset reboots
#: without cutting power; unlocking frees a stuck cable). Other critical commands are held.
HEALING = frozenset({("reset", "Soft"), ("reset", "OnIdle"), ("unlock-connector", None)})


def guarded(command: str, params: Mapping[str, Any], critical: bool) -> bool:
    """Whether a step waits for four eyes when ``playbook.step`` is an approval action: a
    critical catalog command (hard reset, availability, configuration ...), except the
    healing steps (:data:`HEALING`)."""
    if not critical:
        return False
    kind = params.get("type", "Soft") if command == "reset" else None
    return (command, kind) not in HEALING


def plan(
    playbook: Playbook, run: Run, needs_approval: Callable[[str, Mapping[str, Any]], bool]
) -> Action:
    """What a ``running`` run does at its step. ``needs_approval(command, params)``: whether
    the approval policy guards that step (then the playbook's ``guards.approval`` decides:
    wait for it or refuse the run)."""
    if run.state is not RunState.RUNNING:
        raise RunError(f"run is {run.state}: nothing to plan")
    if run.dry_run:  # a dry run records its steps (dry_run_log) and takes none
        return Finish(RunEvent.SIMULATE, "dry run: nothing sent")
    steps = playbook.steps
    if run.step >= len(steps):
        previous = steps[-1] if steps else None
        if previous is not None and previous.wait is not None:
            return Escalate(run.step, Escalation(), implicit=True)
        return Finish(RunEvent.COMPLETED, "all steps taken")
    step = steps[run.step]
    if step.escalate is not None:
        return Escalate(run.step, step.escalate)
    if step.command is None:  # parse never lets such a step through; be safe anyway
        return Finish(RunEvent.FAIL, f"step {run.step} has neither a command nor escalate")
    params = step_params(step, run.connector_id)
    if needs_approval(step.command, params):
        if playbook.guards.approval is Approval.REFUSE:
            return Finish(RunEvent.REFUSE, f"{step.command} needs approval: refused by policy")
        return AskApproval(run.step, step.command, params)
    return Send(run.step, step.command, params)


def _entry(now: datetime, event: str, **detail: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"at": now.isoformat(), "event": event}
    entry.update({k: v for k, v in detail.items() if v is not None})
    return entry


def logged(run: Run, now: datetime, event: str, **detail: Any) -> Run:
    """``run`` with one more log entry (the log keeps its first and latest entries)."""
    log = (*run.log, _entry(now, event, **detail))
    if len(log) > MAX_LOG:
        log = (log[0], *log[-(MAX_LOG - 1) :])
    return replace(run, log=log)


def apply(
    playbook: Playbook | None, run: Run, event: RunEvent, now: datetime, **detail: Any
) -> Run:
    """``run`` after ``event`` at ``now``, logged with ``detail``; RunError if not allowed.
    ``playbook`` (the run's version) is needed for ``sent`` only: it says whether to wait."""
    target = TRANSITIONS.get(event, {}).get(run.state)
    if target is None:
        raise RunError(f"run is {run.state}: cannot {event}")
    changes: dict[str, Any] = {"state": target}
    if event is RunEvent.SENT:
        if playbook is None or run.step >= len(playbook.steps):
            raise RunError(f"step {run.step} of {run.playbook}@{run.version} is unknown")
        step = playbook.steps[run.step]
        if step.wait is not None:
            changes.update(wait_until=now + timedelta(minutes=step.wait.minutes), sent_at=now)
        else:
            changes.update(state=RunState.RUNNING, step=run.step + 1, wait_until=None)
    elif event in (RunEvent.DEADLINE, RunEvent.NEXT):
        changes.update(step=run.step + 1, wait_until=None)
    elif target in TERMINAL:
        changes.update(wait_until=None, reason=detail.get("reason") or run.reason)
    moved = replace(run, **changes)
    return logged(moved, now, event.value, step=run.step, **detail)


#: Connector statuses that count as "operative again" (a vehicle may have come meanwhile).
_OPERATIVE = frozenset(
    {"Available", "Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing"}
    | {"Occupied", "Reserved"}
)


def condition_holds(
    condition: Condition, facts: ChargerFacts, connector_id: int | None, sent_at: datetime
) -> bool:
    """Whether a wait's condition holds, judged from what the charger reported."""
    match condition.kind:
        case ConditionKind.CONNECTOR_AVAILABLE:
            if connector_id:
                fact = facts.connectors.get(connector_id)
                return fact is not None and fact.status in _OPERATIVE
            evses = [f for c, f in facts.connectors.items() if c != 0]
            return bool(evses) and all(f.status in _OPERATIVE for f in evses)
        case ConditionKind.NO_FAULT:
            return bool(facts.connectors) and all(
                f.status != "Faulted" for f in facts.connectors.values()
            )
        case ConditionKind.RECONNECTED:
            return facts.connected and facts.last_boot is not None and facts.last_boot >= sent_at
        case ConditionKind.SESSION_STARTED:
            return any(
                f.status == "Charging" and f.since >= sent_at for f in facts.connectors.values()
            )
    return False


def dry_run_log(playbook: Playbook, connector_id: int | None) -> list[str]:
    """What a run would do, step by step, in words (a dry run's record)."""
    out = []
    for i, step in enumerate(playbook.steps):
        if step.escalate is not None:
            target = "alert and webhook" if step.escalate.webhook_url else "alert"
            out.append(f"step {i}: would escalate ({target})")
            continue
        params = json.dumps(step_params(step, connector_id), sort_keys=True, default=str)
        out.append(f"step {i}: would send {step.command} {params}")
        if step.wait is not None:
            out.append(f"step {i}: would wait up to {step.wait.minutes:g} min for {step.wait.kind}")
    return out
