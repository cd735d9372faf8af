"""Four-eyes rules, pure: which actions wait for a second operator, and whether a decision
on a pending request is allowed now.

The requester can never decide their own request (neither approve nor reject: a reject by
the requester is a withdrawal, which is ``cancel``). A request that passed its expiry is
expired whatever anyone says, so an approval cannot revive a stale change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from evota.operators import permissions as perms


class ApprovalState(StrEnum):
    """Where a four-eyes request is (the ``approvals.state`` column)."""

    PENDING = "pending"  # waiting for a second operator
    APPROVED = "approved"  # decided yes; its executor is running
    EXECUTED = "executed"  # the approved action ran
    FAILED = "failed"  # the approved action raised (the decision stands)
    REJECTED = "rejected"  # decided no
    EXPIRED = "expired"  # nobody decided in time
    WITHDRAWN = "withdrawn"  # the change it was for went away


# Every move a request can make, by event; anything else is refused.
TRANSITIONS: Mapping[tuple[ApprovalState, str], ApprovalState] = {
    (ApprovalState.PENDING, "approve"): ApprovalState.APPROVED,
    (ApprovalState.PENDING, "reject"): ApprovalState.REJECTED,
    (ApprovalState.PENDING, "expire"): ApprovalState.EXPIRED,
    (ApprovalState.PENDING, "withdraw"): ApprovalState.WITHDRAWN,
    (ApprovalState.APPROVED, "executed"): ApprovalState.EXECUTED,
    (ApprovalState.APPROVED, "failed"): ApprovalState.FAILED,
}
TERMINAL = frozenset(ApprovalState) - {s for s, _ in TRANSITIONS}


def transition(state: ApprovalState, event: str) -> ApprovalState:
    """The state after ``event``; ValueError if the event is not allowed in ``state``."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise ValueError(f"approval request is {state}: cannot {event}") from None


# Actions that always need approval when enabled, and those that need it above a size.
COUNTED = frozenset({"operation.start"})

# What an approver must hold besides ``approval.decide``: the right to do the action.
PERMISSION_FOR = {
    "campaign.start": "campaign.write",
    "firmware.revoke": "firmware.write",
    "operation.start": "operation.write",
    "charger.disable": "charger.write",
    "charger.credentials": "charger.credentials",
    "user.grant": "user.admin",
    "user.credentials": "user.admin",
    # a playbook's critical step (hard reset, availability ...) on one charger (evota.playbooks)
    "playbook.step": "command.send",
    # a CSMS root rotation's start (evota.control.rotation): fleet-wide, the trusted roots
    "certificate.rotate-root": "firmware.trust",
}
ACTIONS = tuple(PERMISSION_FOR)
# Actions about one user, who may not decide them either (``Pending.subject``).
ABOUT_A_USER = frozenset({"user.grant", "user.credentials"})

# What a viewer must hold to see that a request exists (on its target chargers, for the
# charger-level ones); the payload and result also need PERMISSION_FOR.
READ_FOR = {
    "campaign.start": "campaign.read",
    "firmware.revoke": "firmware.read",
    "operation.start": "fleet.read",
    "charger.disable": "fleet.read",
    "charger.credentials": "fleet.read",
    "user.grant": "user.admin",
    "user.credentials": "user.admin",
    "playbook.step": "fleet.read",
    "certificate.rotate-root": "firmware.trust",
}

# A charger takes part in charging only while its registration is Accepted: any other value
# (Pending, Rejected) answers its boots with that status and refuses its sessions.
IN_SERVICE = "Accepted"


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
    state: ApprovalState
    expires_at: datetime
    subject: str | None = None  # the user a user.grant / user.credentials request is about


def required(policy: Policy, action: str, charger_count: int = 0) -> bool:
    if action not in policy.actions:
        return False
    if action in COUNTED:
        return charger_count > policy.charger_threshold
    return True


def state_at(request: Pending, now: datetime) -> ApprovalState:
    """The state as of ``now``: a pending request past its expiry is expired, stored or not."""
    if request.state is ApprovalState.PENDING and now >= request.expires_at:
        return ApprovalState.EXPIRED
    return request.state


def decision_problem(request: Pending, decider: str, now: datetime) -> str | None:
    """Why ``decider`` may not approve or reject ``request`` now (None: they may)."""
    state = state_at(request, now)
    if state is not ApprovalState.PENDING:
        return str(state)  # expired, or already decided
    if decider in (request.requested_by, request.subject):
        return "self_approval"
    return None


def charger_change_actions(changes: Mapping[str, object]) -> list[str]:
    """The four-eyes actions a charger change amounts to: taking it out of service (any
    registration but Accepted) is ``charger.disable``, a new key ``charger.credentials``."""
    actions = []
    if "registration" in changes and changes["registration"] != IN_SERVICE:
        actions.append("charger.disable")
    if "auth_key" in changes or "auth_hash" in changes:
        actions.append("charger.credentials")
    return actions


def approval_power(grants: Iterable[perms.RoleGrant]) -> list[perms.RoleGrant]:
    """The grants that let their holder decide other operators' requests."""
    return [g for g in grants if "approval.decide" in g.permissions]


def _within(inner: perms.Scope, outer: perms.Scope) -> bool:
    if outer.unlimited:
        return True
    if inner.unlimited:
        return False
    return (
        inner.sites <= outer.sites and inner.regions <= outer.regions and inner.tags <= outer.tags
    )


def grants_approval_power(
    before: Iterable[perms.RoleGrant], after: Iterable[perms.RoleGrant]
) -> bool:
    """Whether going from ``before`` to ``after`` gives a user approval power they did not
    have: a role with ``approval.decide`` they did not hold, or such a role on a wider scope.
    Such a change is ``user.grant`` and needs a second user admin."""
    held = approval_power(before)
    return any(
        not any(h.role == g.role and _within(g.scope, h.scope) for h in held)
        for g in approval_power(after)
    )


@dataclass(frozen=True, slots=True)
class Visibility:
    """What a viewer may see of a request: that it exists (action, summary, who, state),
    and its payload and result (the details of the change)."""

    listed: bool
    details: bool


def visibility(
    viewer: Sequence[perms.RoleGrant],
    action: str,
    targets: Sequence[perms.ChargerPlace] | None,
    site_limit: frozenset[str] = frozenset(),
) -> Visibility:
    """A request is listed if the viewer could see its target (every charger it acts on, or
    the fleet-wide object); its details only if the viewer holds the action's permission
    there too. ``targets`` None: a fleet-wide target (or its chargers are gone)."""

    def holds(permission: str | None) -> bool:
        if permission is None:
            return False
        if not targets:
            return perms.allowed(viewer, permission, None, site_limit)
        return all(perms.allowed(viewer, permission, t, site_limit) for t in targets)

    listed = holds(READ_FOR.get(action))
    return Visibility(listed, listed and holds(PERMISSION_FOR.get(action)))
