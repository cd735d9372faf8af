"""The firmware lifecycle table and the compatibility check (pure)."""

from __future__ import annotations

import datetime as dt
import typing

from evota.api import firmware_schemas
from evota.firmware import lifecycle
from evota.firmware import repository as repo
from evota.firmware.lifecycle import FirmwareState
from evota.firmware.updates import ImageFacts

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def test_lifecycle_table():
    allowed = {
        ("draft", "pilot"),
        ("draft", "released"),
        ("draft", "revoked"),
        ("pilot", "released"),
        ("pilot", "draft"),
        ("pilot", "revoked"),
        ("released", "deprecated"),
        ("released", "revoked"),
        ("deprecated", "released"),
        ("deprecated", "revoked"),
    }
    for current in lifecycle.STATES:
        for target in lifecycle.STATES:
            problem = lifecycle.transition_problem(current, target)
            assert (problem is None) == ((current, target) in allowed), (current, target)
    # Rows hold plain strings: the table answers for them exactly as for the enum.
    assert lifecycle.transition_problem("draft", "pilot") is None
    assert "no further transitions" in (lifecycle.transition_problem("revoked", "released") or "")
    assert "unknown state" in (lifecycle.transition_problem("draft", "shipped") or "")
    assert lifecycle.transition_problem("released", "draft") == (
        "cannot go from released to draft (allowed from released: deprecated, revoked)"
    )


def test_one_vocabulary():
    """The API's literals and the upload states are the enum's, in the same order."""
    assert typing.get_args(firmware_schemas.State) == lifecycle.STATES
    assert typing.get_args(firmware_schemas.UploadState) == lifecycle.UPLOAD_STATES
    assert set(lifecycle.LIFECYCLE) == set(FirmwareState)
    assert all(t in lifecycle.LIFECYCLE for moves in lifecycle.LIFECYCLE.values() for t in moves)


def _record(**overrides: object) -> repo.FirmwareRecord:
    values: dict[str, object] = {
        "id": "f1",
        "vendor": "Acme",
        "version": "2.0",
        "models": ("M1", "M2"),
        "hardware_revisions": (),
        "sha256": "0" * 64,
        "size": 1,
        "filename": None,
        "state": "released",
        "state_reason": None,
        "signature": None,
        "signing_certificate": None,
        "release_notes": "",
        "min_current_version": None,
        "supersedes": (),
        "created_at": NOW,
        "updated_at": NOW,
    }
    values.update(overrides)
    return repo.FirmwareRecord(**values)  # type: ignore[arg-type]


def test_compatibility_problem():
    fw = _record()
    assert lifecycle.compatibility_problem(fw, "ACME", "M2", None) is None
    assert "vendor Acme" in (lifecycle.compatibility_problem(fw, "Volt", "M1", None) or "")
    assert "charger reports none" in (lifecycle.compatibility_problem(fw, None, "M1", None) or "")
    assert "model M3" in (lifecycle.compatibility_problem(fw, "Acme", "M3", None) or "")
    assert "model unknown" in (lifecycle.compatibility_problem(fw, "Acme", None, None) or "")
    any_model = _record(models=(), hardware_revisions=("r2",))
    assert lifecycle.compatibility_problem(any_model, "acme", None, "r2") is None
    assert "hardware revision r1" in (
        lifecycle.compatibility_problem(any_model, "acme", "X", "r1") or ""
    )
    # The update path's facts work too.
    facts = ImageFacts(id="f", vendor="Acme", version="1", state="draft", models=["M1"])
    assert lifecycle.compatibility_problem(facts, "acme", "M1", "any") is None
