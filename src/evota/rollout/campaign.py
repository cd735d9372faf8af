"""A campaign's vocabulary, pure: its states, the operator actions between them, and the
views the engine and the gate read.

The shell (:mod:`evota.rollout.campaigns`) stores states and asks :func:`transition` whether
an operator action applies; the engine (:func:`evota.rollout.engine.decide`) reads a
:class:`CampaignView` and the campaign's :class:`JobView` s. Everything else (the API, the
console, the CLI) imports the states from here instead of spelling them again.

Besides the operator actions, the engine moves a running campaign to ``paused`` (a gate
failed, an auto-stop rule, or ``pause_at_gate``), ``aborted`` (an auto-stop rule) or
``completed`` (the last gate passed); the shell starts a ``scheduled`` campaign at its time.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from evota.rollout.job import JobState
from evota.rollout.policy import FrozenMap, Policy

__all__ = [
    "ACTIVE",
    "EXECUTED",
    "TERMINAL",
    "TRANSITIONS",
    "CampaignAction",
    "CampaignError",
    "CampaignErrorKind",
    "CampaignState",
    "CampaignView",
    "JobView",
    "refusal",
    "transition",
]


class CampaignState(enum.StrEnum):
    """A campaign's state (stored as its value)."""

    DRAFT = "draft"
    SCHEDULED = "scheduled"  # started with a future start time: the shell starts it then
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    ABORTED = "aborted"  # final, but rollbacks it asked for may still be running


class CampaignAction(enum.StrEnum):
    """What an operator (or the scheduler, for ``start``) asks of a campaign."""

    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    GO = "go"  # the operator's go at a gate: resumes a paused campaign past a failed gate


_S = CampaignState
ACTIVE: Final = (_S.SCHEDULED, _S.RUNNING, _S.PAUSED, _S.AWAITING_APPROVAL)
"""States in which a campaign holds its chargers (no other campaign may take them)."""
TERMINAL: Final = (_S.COMPLETED, _S.ABORTED)
"""States no action leaves."""

TRANSITIONS: Final[Mapping[str, Mapping[str, CampaignState]]] = {
    CampaignAction.START: {
        _S.DRAFT: _S.RUNNING,
        _S.SCHEDULED: _S.RUNNING,
        _S.AWAITING_APPROVAL: _S.RUNNING,
    },
    CampaignAction.PAUSE: {_S.RUNNING: _S.PAUSED},
    CampaignAction.RESUME: {_S.PAUSED: _S.RUNNING},
    CampaignAction.ABORT: {s: _S.ABORTED for s in (_S.DRAFT, *ACTIVE)},
    CampaignAction.GO: {_S.PAUSED: _S.RUNNING},
}
"""Which actions apply in which state, and where they lead (keyed by the stored strings).
``start`` with a future time leads to ``scheduled`` instead: the shell decides that."""


class CampaignErrorKind(enum.StrEnum):
    """Why a campaign request is refused, for the edge to map (the API: 422, 409)."""

    INVALID = "invalid"  # the request breaks a rule (a pilot charger that is not eligible)
    CONFLICT = "conflict"  # the campaign's state does not allow the action


class CampaignError(Exception):
    """A campaign request that is refused: ``kind`` says why, ``field`` names the input at
    fault, the message is one sentence for the operator. No transport status: the API maps
    the kind."""

    def __init__(self, kind: CampaignErrorKind, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.field = field


def transition(state: str, action: str) -> CampaignState | None:
    """The state ``action`` leads to from ``state``, or None when it does not apply."""
    return TRANSITIONS.get(action, {}).get(state)


def refusal(state: str, action: str) -> str | None:
    """Why ``action`` does not apply in ``state`` (one sentence for the operator), or None."""
    if transition(state, action) is not None:
        return None
    if action == CampaignAction.GO:
        return f"campaign is {state}, not paused"
    return f"cannot {action} a campaign that is {state}"


EXECUTED: Final = frozenset({JobState.SUCCEEDED, JobState.FAILED})
"""Job states that are an outcome of the update (cancelled is not): what auto-stop and the
gate count as executed."""


@dataclass(frozen=True, slots=True)
class JobView:
    """One job of the campaign, as the engine and the gate read it."""

    charger_id: str
    job_id: int
    kind: str  # "update" | "rollback"
    state: str  # a JobState value
    failure: str | None
    previous_version: str | None
    target_version: str
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class CampaignView:
    """The campaign as the engine reads it."""

    id: str
    state: CampaignState
    waves: tuple[tuple[str, ...], ...]
    current_wave: int
    policy: Policy
    target_version: str
    wave_started_at: datetime | None
    wave_done_at: datetime | None
    gate_go: bool = False
    rollback: bool = False
    # Auto-stop counts only update jobs created at or after this instant; set it when an
    # operator resumes a campaign that auto-stop paused, or the same numbers stop it again.
    stop_counting_from: datetime | None = None
    # Groups (models or sites, ``policy.group_by``) a gate held: no more updates for them.
    held: Mapping[str, str] = field(default_factory=FrozenMap)
