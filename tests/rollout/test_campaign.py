"""A campaign's states and operator actions: the pure table the shell, the API and the CLI share."""

from __future__ import annotations

from evota.api import campaigns as api
from evota.rollout import campaign as cp
from evota.rollout import cli
from evota.rollout.campaign import CampaignAction, CampaignState

S = CampaignState


def test_transition_table() -> None:
    allowed = {
        ("start", "draft"): "running",
        ("start", "scheduled"): "running",
        ("start", "awaiting_approval"): "running",
        ("pause", "running"): "paused",
        ("resume", "paused"): "running",
        ("go", "paused"): "running",
        **{("abort", s): "aborted" for s in cp.ACTIVE},
        ("abort", "draft"): "aborted",
    }
    for action in CampaignAction:
        for state in CampaignState:
            # Rows hold plain strings: the table answers for them as for the enum.
            assert cp.transition(str(state), str(action)) == allowed.get((action, state))
            assert (cp.refusal(state, action) is None) == ((action, state) in allowed)
    for state in cp.TERMINAL:
        assert all(cp.transition(state, a) is None for a in CampaignAction)
    assert cp.transition("draft", "launch") is None  # an unknown action applies nowhere


def test_refusals_name_the_state() -> None:
    assert cp.refusal("running", "go") == "campaign is running, not paused"
    assert cp.refusal("completed", "pause") == "cannot pause a campaign that is completed"
    assert cp.refusal("draft", "resume") == "cannot resume a campaign that is draft"


def test_one_vocabulary() -> None:
    """ACTIVE and TERMINAL split the states with draft; the API and the CLI use the enum's."""
    assert set(cp.ACTIVE) | set(cp.TERMINAL) | {S.DRAFT} == set(CampaignState)
    assert not set(cp.ACTIVE) & set(cp.TERMINAL)
    assert tuple(CampaignState) == api.STATES
    assert cli.TERMINAL is cp.TERMINAL


def test_errors_carry_a_kind_the_api_maps() -> None:
    """No HTTP status in the domain error; every kind has a problem at the edge."""
    error = cp.CampaignError(cp.CampaignErrorKind.CONFLICT, "cannot pause", "state")
    assert (error.kind, error.detail, error.field, str(error)) == (
        "conflict",
        "cannot pause",
        "state",
        "cannot pause",
    )
    for kind in cp.CampaignErrorKind:
        problem = api._refused(cp.CampaignError(kind, "why", "field"))
        assert problem.status in (409, 422) and problem.detail == "why"
    assert api._refused(cp.CampaignError(cp.CampaignErrorKind.INVALID, "x", "pilot")).status == 422
