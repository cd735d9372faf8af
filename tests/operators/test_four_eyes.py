"""The approval state vocabulary: one enum, one transition table, pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from evota.operators import four_eyes
from evota.operators.four_eyes import TERMINAL, TRANSITIONS, ApprovalState, transition

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_pending_request_is_decided_once_and_an_approved_one_runs_once() -> None:
    assert transition(ApprovalState.PENDING, "approve") is ApprovalState.APPROVED
    assert transition(ApprovalState.PENDING, "reject") is ApprovalState.REJECTED
    assert transition(ApprovalState.PENDING, "expire") is ApprovalState.EXPIRED
    assert transition(ApprovalState.PENDING, "withdraw") is ApprovalState.WITHDRAWN
    assert transition(ApprovalState.APPROVED, "executed") is ApprovalState.EXECUTED
    assert transition(ApprovalState.APPROVED, "failed") is ApprovalState.FAILED
    assert {
        ApprovalState.EXECUTED,
        ApprovalState.FAILED,
        ApprovalState.REJECTED,
        ApprovalState.EXPIRED,
        ApprovalState.WITHDRAWN,
    } == TERMINAL


@pytest.mark.parametrize("state", sorted(TERMINAL))
@pytest.mark.parametrize("event", sorted({e for _, e in TRANSITIONS}))
def test_nothing_leaves_a_final_state(state: ApprovalState, event: str) -> None:
    with pytest.raises(ValueError, match=f"is {state}"):
        transition(state, event)


def test_an_approved_request_cannot_be_decided_again() -> None:
    for event in ("approve", "reject", "expire", "withdraw"):
        with pytest.raises(ValueError):
            transition(ApprovalState.APPROVED, event)


def test_decisions_read_the_state_as_of_now() -> None:
    pending = four_eyes.Pending("a", "campaign.start", "alice", ApprovalState.PENDING, NOW)
    assert four_eyes.state_at(pending, NOW - timedelta(seconds=1)) is ApprovalState.PENDING
    assert four_eyes.state_at(pending, NOW) is ApprovalState.EXPIRED
    assert four_eyes.decision_problem(pending, "bob", NOW) == "expired"
    assert four_eyes.decision_problem(pending, "alice", NOW - timedelta(1)) == "self_approval"
    assert four_eyes.decision_problem(pending, "bob", NOW - timedelta(1)) is None
