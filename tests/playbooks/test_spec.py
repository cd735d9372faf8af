"""A playbook document: parsed strictly, every refusal naming its field, and round-tripped."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evota.control import catalog
from evota.playbooks import spec
from evota.playbooks.spec import SpecError, TriggerKind

STUCK = """
name: stuck-connector
description: unlock, then soft reset
trigger:
  kind: connector_faulted
  error_codes: [ConnectorLockFailure, OtherError]
  for_minutes: 10
target: {sites: [berlin-1]}
steps:
  - command: unlock-connector
    params: {connector_id: "{connector}"}
    wait: {until: connector_available, minutes: 5}
  - command: reset
    params: {type: Soft}
    wait: {until: connector_available, minutes: 10}
  - escalate: {message: "still faulted", webhook_url: "https://tickets.example/hook"}
guards: {max_runs_per_charger_per_day: 2, approval: refuse}
"""


def base(**changes: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": "p",
        "trigger": {"kind": "connector_faulted", "for_minutes": 10},
        "steps": [{"command": "reset", "params": {"type": "Soft"}}],
    }
    d.update(changes)
    return d


def refused(data: object, **kw: Any) -> SpecError:
    with pytest.raises(SpecError) as info:
        spec.parse(data, **kw)
    return info.value


def test_yaml_document_parses_and_round_trips():
    p = spec.parse_text(STUCK)
    assert p.name == "stuck-connector" and p.version == 1 and not p.enabled
    assert p.trigger.error_codes == frozenset({"ConnectorLockFailure", "OtherError"})
    assert p.steps[0].params == {"connector_id": "{connector}"}
    assert p.steps[2].escalate is not None and p.steps[2].escalate.alert
    assert p.guards.approval is spec.Approval.REFUSE and p.target.sites == ("berlin-1",)
    assert spec.parse(spec.to_dict(p)) == p
    # JSON is accepted as it is (it is YAML), and the hash covers the definition only
    again = spec.parse_text(json.dumps(spec.to_dict(p)))
    assert again == p
    assert spec.spec_hash(p) == spec.spec_hash(spec.parse({**spec.to_dict(p), "enabled": True}))
    assert spec.spec_hash(p) != spec.spec_hash(spec.parse({**spec.to_dict(p), "description": ""}))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"name": "Has Spaces"}, "name"),
        ({"name": "kill-switch"}, "name"),
        ({"trigger": {"kind": "meteor"}}, "trigger.kind"),
        ({"trigger": {"kind": "connector_faulted"}}, "trigger.for_minutes"),
        ({"trigger": {"kind": "connector_faulted", "for_minutes": 0}}, "trigger.for_minutes"),
        ({"trigger": {"kind": "job_stuck", "for_minutes": 10081}}, "trigger.for_minutes"),
        ({"trigger": {"kind": "job_stuck", "for_minutes": 5, "count": 2}}, "trigger.count"),
        ({"trigger": {"kind": "repeated_boots", "count": 0, "within_minutes": 5}}, "trigger.count"),
        (
            {"trigger": {"kind": "kpi_threshold", "kpi": "availability", "below": 1.5}},
            "trigger.below",
        ),
        ({"trigger": {"kind": "kpi_threshold", "kpi": "happiness", "below": 0.5}}, "trigger.kpi"),
        ({"trigger": {"kind": "security_event", "event_types": "x"}}, "trigger.event_types"),
        ({"steps": []}, "steps"),
        ({"steps": [{"command": "reset"}] * 11}, "steps"),
        ({"steps": [{"command": "remote-start", "params": {}}]}, "steps[0].command"),
        ({"steps": [{"command": "reset", "params": {"type": "Sideways"}}]}, "steps[0].params.type"),
        ({"steps": [{"command": "reset", "params": {"kind": "Soft"}}]}, "steps[0].params.kind"),
        (
            {"steps": [{"command": "unlock-connector", "params": {"connector_id": 0}}]},
            "steps[0].params.connector_id",
        ),
        (
            {"steps": [{"command": "reset", "wait": {"until": "connector_available"}}]},
            "steps[0].wait.minutes",
        ),
        (
            {"steps": [{"command": "reset", "wait": {"until": "sunrise", "minutes": 1}}]},
            "steps[0].wait.until",
        ),
        ({"steps": [{"command": "reset", "escalate": {}}]}, "steps[0]"),
        ({"steps": [{"escalate": {"alert": False}}]}, "steps[0].escalate"),
        (
            {"steps": [{"escalate": {"webhook_url": "http://tickets.example/x"}}]},
            "steps[0].escalate.webhook_url",
        ),
        (
            {"steps": [{"escalate": {"webhook_url": "https://u:pw@tickets.example/x"}}]},
            "steps[0].escalate.webhook_url",
        ),
        (
            {"steps": [{"escalate": {"webhook_url": "file:///etc/passwd"}}]},
            "steps[0].escalate.webhook_url",
        ),
        (
            {
                "steps": [
                    {
                        "command": "change-configuration",
                        "params": {"key": "AuthorizationKey", "value": "x"},
                    }
                ]
            },
            "steps[0].params.key",
        ),
        (
            {
                "steps": [
                    {"command": "data-transfer", "params": {"vendor_id": "v", "data": float("nan")}}
                ]
            },
            "steps[0].params.data",
        ),
        ({"guards": {"max_concurrent_per_site": 0}}, "guards.max_concurrent_per_site"),
        ({"guards": {"breaker_failure_rate": 1.5}}, "guards.breaker_failure_rate"),
        ({"guards": {"approval": "maybe"}}, "guards.approval"),
        ({"guards": {"cooldown": 5}}, "guards.cooldown"),
        ({"target": {"planets": ["mars"]}}, "target.planets"),
        ({"target": {"sites": "berlin-1"}}, "target.sites"),
        ({"enabled": "yes"}, "enabled"),
        # NUL never reaches the database or the audit log (the JSON API refuses it too)
        ({"description": "a\x00b"}, "description"),
        (
            {"trigger": {"kind": "security_event", "event_types": ["x\x00"]}},
            "trigger.event_types[0]",
        ),
        (
            {"steps": [{"command": "data-transfer", "params": {"vendor_id": "v", "data": "\x00"}}]},
            "steps[0].params.data",
        ),
        ({"steps": [{"escalate": {"message": "\x00"}}]}, "steps[0].escalate.message"),
    ],
)
def test_refusals_name_the_field(changes, field):
    assert refused(base(**changes)).field == field


def test_connector_placeholder_needs_a_trigger_with_a_connector():
    step = {"command": "unlock-connector", "params": {"connector_id": "{connector}"}}
    error = refused(base(trigger={"kind": "offline_then_back", "offline_minutes": 5}, steps=[step]))
    assert error.field == "steps[0].params.connector_id"
    assert spec.parse(base(steps=[step])).steps[0].params == {"connector_id": "{connector}"}


def test_http_webhook_only_when_allowed():
    steps = [{"escalate": {"webhook_url": "http://tickets.internal/hook"}}]
    p = spec.parse(base(steps=steps), allow_http_webhooks=True)
    assert p.steps[0].escalate is not None
    assert p.steps[0].escalate.webhook_url == "http://tickets.internal/hook"


def test_every_allowed_command_is_in_the_catalog():
    assert set(catalog.COMMANDS) >= spec.COMMANDS


@pytest.mark.parametrize(
    "text",
    [
        "a: &x [1, 2]\nb: *x",  # aliases: a small document must not expand
        "x" * (spec.MAX_TEXT_BYTES + 1),
        "[1",
        "name: p\n  bad: indent",
        b"\xff\xfe",
        "[" * 5000 + "]" * 5000,
        "- " * 30000,  # libyaml's loader recursed in C and crashed the process on this
        "a: " + "[" * 20000 + "]" * 20000,
        "when: 2024-01-01",
        "",
    ],
)
def test_bad_documents_are_refused_as_spec_errors(text):
    with pytest.raises(SpecError):
        spec.parse_text(text)


def test_yaml_dates_in_params_are_refused():
    text = (
        "name: p\ntrigger: {kind: job_stuck, for_minutes: 5}\n"
        "steps: [{command: data-transfer, params: {vendor_id: v, data: 2024-01-01}}]"
    )
    with pytest.raises(SpecError) as info:
        spec.parse_text(text)
    assert info.value.field == "steps[0].params.data"


def test_every_trigger_kind_round_trips():
    triggers = {
        TriggerKind.CONNECTOR_FAULTED: {"error_codes": ["GroundFailure"], "for_minutes": 10},
        TriggerKind.OFFLINE_THEN_BACK: {"offline_minutes": 30},
        TriggerKind.JOB_STUCK: {"for_minutes": 60},
        TriggerKind.FIRMWARE_STATUS: {"statuses": ["InstallationFailed"]},
        TriggerKind.SECURITY_EVENT: {"event_types": ["TamperDetectionActivated"]},
        TriggerKind.REPEATED_BOOTS: {"count": 3, "within_minutes": 60},
        TriggerKind.KPI_THRESHOLD: {"kpi": "availability", "below": 0.9},
    }
    assert set(triggers) == set(TriggerKind)
    for kind, fields in triggers.items():
        p = spec.parse(base(trigger={"kind": kind.value, **fields}))
        assert spec.parse(spec.to_dict(p)) == p


# -- properties ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
# Arbitrary documents near the real shape reach the deeper checks, not just the first key.
near = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["p", "Bad", ""]) | json_values,
        "trigger": st.fixed_dictionaries(
            {"kind": st.sampled_from([k.value for k in TriggerKind])},
            optional={
                k: json_values | st.floats(0, 20000) | st.integers(-1, 2000)
                for k in ("for_minutes", "count", "within_minutes", "kpi", "below", "error_codes")
            },
        )
        | json_values,
        "steps": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "command": st.sampled_from(sorted(spec.COMMANDS)) | json_values,
                    "params": json_values,
                    "wait": json_values,
                    "escalate": json_values,
                },
            ),
            max_size=3,
        )
        | json_values,
        "guards": st.dictionaries(
            st.sampled_from(["max_concurrent", "approval", "x"]), json_values
        ),
        "target": json_values,
    },
)


@given(st.one_of(json_values, near))
def test_parse_raises_nothing_but_spec_error(data):
    try:
        p = spec.parse(data)
    except SpecError:
        return
    assert spec.parse(spec.to_dict(p)) == p


@given(st.text(max_size=300))
def test_parse_text_raises_nothing_but_spec_error(text):
    with contextlib.suppress(SpecError):
        spec.parse_text(text)


minutes = st.floats(min_value=0.01, max_value=spec.MAX_MINUTES)
valid = st.builds(
    lambda name, for_minutes, codes, wait, rate, runs, dry, sites: {
        "name": name,
        "dry_run": dry,
        "trigger": {"kind": "connector_faulted", "for_minutes": for_minutes, "error_codes": codes},
        "target": {"sites": sites},
        "steps": [
            {
                "command": "unlock-connector",
                "params": {"connector_id": "{connector}"},
                **({"wait": {"until": "no_fault", "minutes": wait}} if wait else {}),
            },
            {"command": "reset", "params": {"type": "Hard"}},
            {"escalate": {"alert": True}},
        ],
        "guards": {"breaker_failure_rate": rate, "max_runs_per_charger_per_day": runs},
    },
    st.from_regex(spec.NAME, fullmatch=True),
    minutes,
    st.lists(
        st.text(min_size=1, max_size=20).filter(lambda t: t.strip() and t.isprintable()), max_size=5
    ),
    st.none() | minutes,
    st.floats(min_value=0.001, max_value=1),
    st.integers(1, 100),
    st.booleans(),
    st.lists(
        st.text(min_size=1, max_size=10).filter(lambda t: t.strip() and t.isprintable()), max_size=3
    ),
)


@given(valid)
def test_round_trip(data):
    p = spec.parse(data)
    assert spec.parse(spec.to_dict(p)) == p
    assert spec.parse_text(json.dumps(spec.to_dict(p))) == p
