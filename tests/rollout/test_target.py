"""Target queries and eligibility: every matching charger is eligible or has a reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from evota.firmware.updates import ImageFacts
from evota.rollout.policy import Target
from evota.rollout.target import nothing_to_update, plan_eligibility
from evota.selection import ChargerSnapshot, matches

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
IMAGE = ImageFacts(
    id="fw",
    vendor="Acme",
    version="2.0.0",
    state="released",
    models=("AC22", "AC11"),
    min_current_version="1.0.0",
)


def charger(cid: str, **kw: object) -> ChargerSnapshot:
    base: dict[str, object] = {
        "vendor": "Acme",
        "model": "AC22",
        "hardware_revision": "r1",
        "firmware_version": "1.5.0",
        "site_id": "berlin",
        "region": "DE",
        "tags": frozenset({"pilot"}),
        "connected": True,
        "last_seen": NOW,
    }
    base.update(kw)
    return ChargerSnapshot(id=cid, **base)  # type: ignore[arg-type]


def test_query_filters_combine_with_and() -> None:
    c = charger("A")
    assert matches(Target(), c)
    assert matches(Target(vendors=("ACME",)), c)  # case-insensitive
    assert not matches(Target(vendors=("Other",)), c)
    assert matches(Target(tags=("pilot", "other")), c)  # any of the tags
    assert not matches(Target(tags=("other",)), c)
    assert not matches(Target(models=("AC11",)), c)
    assert not matches(Target(sites=("paris",)), c)
    assert not matches(Target(regions=("FR",)), c)
    assert not matches(Target(hardware_revisions=("r2",)), c)
    assert matches(Target(charger_ids=("A", "B")), c)
    assert not matches(Target(charger_ids=("B",)), c)
    assert not matches(Target(exclude_ids=("A",)), c)
    assert not matches(Target(charger_ids=("A",), models=("AC11",)), c)


def test_every_exclusion_reason() -> None:
    fleet = [
        charger("ok"),
        charger("other-vendor", vendor="Zap"),  # not matched by the query at all
        charger("incompatible", model="DC50"),
        charger("on-target", firmware_version="2.0.0"),
        charger("newer", firmware_version="3.0.0"),
        charger("too-old", firmware_version="0.9"),
        charger("offline", connected=False, last_seen=NOW - timedelta(days=8)),
        charger("recent-offline", connected=False, last_seen=NOW - timedelta(days=2)),
        charger("never-seen", connected=False, last_seen=None),
        charger("busy", other_campaign="c-1"),
        charger("filtered", firmware_version="1.1.0"),
    ]
    target = Target(vendors=("acme",), version_min="1.2")
    result = plan_eligibility(target, IMAGE, fleet, NOW)
    assert result.eligible == ("ok", "recent-offline")
    reasons = {e.charger_id: e.reason for e in result.excluded}
    assert reasons == {
        "incompatible": "incompatible",
        "on-target": "already_on_target",
        "newer": "would_downgrade",
        "too-old": "needs_intermediate",
        "offline": "offline_too_long",
        "never-seen": "offline_too_long",
        "busy": "in_other_campaign",
        "filtered": "version_not_targeted",
    }
    assert all(e.detail for e in result.excluded)
    downgrade = plan_eligibility(target, IMAGE, fleet, NOW, allow_downgrade=True)
    assert "newer" in downgrade.eligible


def test_version_filters() -> None:
    fleet = [charger(f"v{v}", firmware_version=v) for v in ("1.0.0", "1.5.0", "1.9", "2.0.0")]
    fleet.append(charger("unknown", firmware_version=None))

    def eligible(t: Target) -> tuple[str, ...]:
        return plan_eligibility(t, IMAGE, fleet, NOW).eligible

    assert eligible(Target()) == ("v1.0.0", "v1.5.0", "v1.9", "unknown")
    assert eligible(Target(firmware_versions=("1.5", "1.9.0"))) == ("v1.5.0", "v1.9")
    assert eligible(Target(version_min="1.5.0", version_max="1.9")) == ("v1.5.0", "v1.9")
    assert eligible(Target(older_than_target=True)) == ("v1.0.0", "v1.5.0", "v1.9")
    assert eligible(Target(max_offline_days=None)) == eligible(Target())


def test_revoked_image_excludes_everyone() -> None:
    revoked = ImageFacts(id="fw", vendor="Acme", version="2.0.0", state="revoked")
    result = plan_eligibility(Target(), revoked, [charger("A")], NOW)
    assert result.eligible == () and result.excluded[0].reason == "revoked"


def test_nothing_to_update_names_the_exclusions_most_frequent_first():
    assert nothing_to_update(1, []) is None
    assert nothing_to_update(0, []) == "no charger matches the campaign's target"
    excluded = [{"reason": "offline"}, {"reason": "already_on_target"}, {"reason": "offline"}]
    assert nothing_to_update(0, excluded) == (
        "no eligible charger: 3 excluded (2 offline, 1 already_on_target)"
    )
