"""A playbook as data: what starts a run, which chargers, the steps and the guard rails.

Pure. The shared vocabulary of the playbook package: the API, the CLI and the console parse
operators' JSON/YAML into these types (``parse``, with :class:`SpecError` naming the field),
and the engine (triggers, guards, runs) reads nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from evota.rollout.policy import Window
from evota.selection import Selector

__all__ = [
    "Approval",
    "Condition",
    "ConditionKind",
    "Escalation",
    "Guards",
    "Playbook",
    "SpecError",
    "Step",
    "Trigger",
    "TriggerKind",
]


class SpecError(ValueError):
    """A playbook that cannot be used; ``field`` is the dotted path (``steps[1].wait.minutes``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class TriggerKind(StrEnum):
    CONNECTOR_FAULTED = "connector_faulted"  # a connector Faulted (error_codes) >= for_minutes
    OFFLINE_THEN_BACK = "offline_then_back"  # offline > offline_minutes, then connected again
    JOB_STUCK = "job_stuck"  # a firmware job in one non-terminal state >= for_minutes
    FIRMWARE_STATUS = "firmware_status"  # a firmware status notification in statuses
    SECURITY_EVENT = "security_event"  # a security event whose type is in event_types
    REPEATED_BOOTS = "repeated_boots"  # >= count BootNotifications within within_minutes
    KPI_THRESHOLD = "kpi_threshold"  # yesterday's daily KPI below/above a threshold


@dataclass(frozen=True, slots=True)
class Trigger:
    """What starts a run on one charger. Only the fields of ``kind`` are meaningful; an empty
    set means "any" (any error code, any status, any event type)."""

    kind: TriggerKind
    error_codes: frozenset[str] = frozenset()
    for_minutes: float = 0.0
    offline_minutes: float = 0.0
    statuses: frozenset[str] = frozenset()
    event_types: frozenset[str] = frozenset()
    count: int = 0
    within_minutes: float = 0.0
    kpi: str | None = None  # e.g. "availability", "session_success"
    below: float | None = None
    above: float | None = None


class ConditionKind(StrEnum):
    CONNECTOR_AVAILABLE = "connector_available"  # the triggering connector (or all) operative
    NO_FAULT = "no_fault"  # no connector of the charger Faulted
    RECONNECTED = "reconnected"  # the charger connected (and booted) after the step
    SESSION_STARTED = "session_started"


@dataclass(frozen=True, slots=True)
class Condition:
    """Wait until ``kind`` holds, at most ``minutes``; then the run goes on (success) or,
    on the deadline, to the next step (or escalates if it was the last command)."""

    kind: ConditionKind
    minutes: float


@dataclass(frozen=True, slots=True)
class Escalation:
    """Hand the fault to people: an alert and/or a webhook to a ticketing system."""

    alert: bool = True
    webhook_url: str | None = None
    message: str | None = None


class Approval(StrEnum):
    """What a step that the approval policy guards does: wait for a second operator's
    approval (``wait``) or end the run as refused (``refuse``)."""

    WAIT = "wait"
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class Step:
    """One step: exactly one of ``command`` (a :mod:`evota.control.catalog` name, with
    ``params``; ``"{connector}"`` in a value is the triggering connector) or ``escalate``.
    ``wait`` applies after a command; without it the run goes straight to the next step."""

    command: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    wait: Condition | None = None
    escalate: Escalation | None = None


@dataclass(frozen=True, slots=True)
class Guards:
    """The guard rails; every one is enforced by the engine (docs/playbooks.md)."""

    max_runs_per_charger_per_day: int = 3  # per (charger, fault) and per local day
    max_concurrent: int = 10  # runs in progress fleet-wide for this playbook
    max_concurrent_per_site: int = 1
    max_starts_per_hour: int = 30  # fleet-wide start rate
    breaker_failure_rate: float = 0.5  # suspend when this share of recent runs failed ...
    breaker_min_runs: int = 5  # ... over at least this many finished runs
    breaker_triggers_per_hour: int = 50  # suspend when triggers arrive faster than this
    approval: Approval = Approval.WAIT


@dataclass(frozen=True, slots=True)
class Playbook:
    """One version of a playbook. ``version`` grows by one on every change; runs and audit
    entries name ``name@version``."""

    name: str
    version: int
    trigger: Trigger
    steps: tuple[Step, ...]
    target: Selector = field(default_factory=Selector)
    guards: Guards = field(default_factory=Guards)
    description: str = ""
    enabled: bool = False
    dry_run: bool = False

    @property
    def actor(self) -> str:
        """The audit actor of every action this version takes."""
        return f"playbook:{self.name}@{self.version}"


# Site windows (the "allowed hours" guard) reuse the campaigns' maintenance windows.
SiteHours = tuple[Window, ...]
