"""Four-eyes rules, pure: which actions wait for a second operator, and whether a decision
on a pending request is allowed now.

The requester can never decide their own request (neither approve nor reject: a reject by
the requester is a withdrawal, which is ``cancel``). A request that passed its expiry is
expired whatever anyone says, so an approval cannot revive a stale change.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

# Actions that always need approval when enabled, and those that need it above a size.
COUNTED = frozenset({"operation.start"})

# What an approver must hold besides ``approval.decide``: the right to do the action.
PERMISSION_FOR = {
    "campaign.start": "campaign.write",
    "firmware.revoke": "firmware.write",
    "operation.start": "operation.write",
    "charger.disable": "charger.write",
    "charger.credentials": "charger.credentials",
}
ACTIONS = tuple(PERMISSION_FOR)


@dataclass(frozen=True, slots=True)
class Policy:
    actions: frozenset[str]
    charger_threshold: int

    @classmethod
    def of(cls, actions: Iterable[str], threshold: int) -> Policy:
        return cls(frozenset(actions), threshold)


@dataclass(frozen=True, slots=True)
class Pending:
    id: str
    action: str
    requested_by: str
    state: str  # pending | approved | rejected | expired | executed | failed | withdrawn
    expires_at: datetime


def required(policy: Policy, action: str, charger_count: int = 0) -> bool:
    if action not in policy.actions:
        return False
    if action in COUNTED:
        return charger_count > policy.charger_threshold
    return True


def state_at(request: Pending, now: datetime) -> str:
    if request.state == "pending" and now >= request.expires_at:
        return "expired"
    return request.state


def decision_problem(request: Pending, decider: str, now: datetime) -> str | None:
    """Why ``decider`` may not approve or reject ``request`` now (None: they may)."""
    state = state_at(request, now)
    if state != "pending":
        return state  # expired, or already decided
    if decider == request.requested_by:
        return "self_approval"
    return None
