"""Vendor profiles, pure: resolution (most specific wins), validation, and what each field
changes in jobs and commands (timeouts, method, triggers, configuration keys)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evota.control import commands
from evota.control.dispatch import vendor_refusal
from evota.fleet import vendors
from evota.fleet.vendors import DEFAULT, ProfileError, VendorProfile, resolve, validate
from evota.rollout import job as jm
from evota.rollout.vendor_fit import fit_timeouts, method_for

VENDOR = VendorProfile(vendor="ACME", max_per_site=4)
MODEL = VendorProfile(vendor="acme", model="AC22", max_per_site=3)
RANGED_MODEL = VendorProfile(vendor="ACME", model="ac22", firmware_min="2.0", max_per_site=2)
RANGED_VENDOR = VendorProfile(vendor="Acme", firmware_max="1.9", max_per_site=5)
ALL = (VENDOR, MODEL, RANGED_MODEL, RANGED_VENDOR)


def test_most_specific_match_wins() -> None:
    assert resolve(ALL, "ACME", "AC22", "2.1") is RANGED_MODEL  # vendor + model + range
    assert resolve(ALL, "ACME", "AC22", "1.5") is MODEL  # range does not cover 1.5
    assert resolve(ALL, "ACME", "AC22", None) is MODEL  # no version: no ranged match
    assert resolve(ALL, "ACME", "DC50", "1.5") is RANGED_VENDOR  # vendor + range
    assert resolve(ALL, "ACME", "DC50", "3.0") is VENDOR
    assert resolve(ALL, "aCmE", "ac22", "v2.0.0") is RANGED_MODEL  # case, version spelling


def test_unknown_vendor_gets_the_documented_defaults() -> None:
    effective = resolve(ALL, "Other", "AC22", "2.0")
    assert effective is DEFAULT
    assert effective.download_protocol == "http"
    assert effective.signed_updates is None and effective.trigger_messages is None
    assert effective.max_image_bytes is None and effective.max_per_site is None
    assert dict(effective.config_keys) == {}
    assert resolve(ALL, None, None, None) is DEFAULT


profiles = st.builds(
    VendorProfile,
    vendor=st.sampled_from(["ACME", "acme", "Volt"]),
    model=st.sampled_from([None, "AC22", "ac22", "DC50"]),
    firmware_min=st.sampled_from([None, "1.0", "2.0", "2.0.0"]),
    firmware_max=st.sampled_from([None, "2.5", "3"]),
    max_per_site=st.integers(1, 9),
)


@given(
    st.lists(profiles, max_size=8),
    st.sampled_from(["ACME", "Volt", "Other"]),
    st.sampled_from([None, "AC22", "DC50"]),
    st.sampled_from([None, "0.9", "2.0", "2.7", "3"]),
    st.randoms(),
)
def test_resolve_is_deterministic_and_most_specific(ps, vendor, model, version, rnd) -> None:
    chosen = resolve(ps, vendor, model, version)
    shuffled = list(ps)
    rnd.shuffle(shuffled)
    assert resolve(shuffled, vendor, model, version) == chosen  # order does not matter
    matching = [p for p in ps if vendors.matches(p, vendor, model, version)]
    if not matching:
        assert chosen is DEFAULT
    else:
        assert chosen in matching
        assert vendors.specificity(chosen) == max(map(vendors.specificity, matching))


def test_validate_names_the_field() -> None:
    cases = {
        "vendor": {},
        "model": {"vendor": "A", "model": 3},
        "reboot_seconds": {"vendor": "A", "reboot_seconds": -1},
        "download_seconds": {"vendor": "A", "download_seconds": float("nan")},
        "install_seconds": {"vendor": "A", "install_seconds": True},
        "download_protocol": {"vendor": "A", "download_protocol": "sftp"},
        "max_image_bytes": {"vendor": "A", "max_image_bytes": 0},
        "max_per_site": {"vendor": "A", "max_per_site": "3"},
        "trigger_messages": {"vendor": "A", "trigger_messages": ["Reboot"]},
        "config_keys.HeartbeatInterval": {"vendor": "A", "config_keys": {"HeartbeatInterval": ""}},
        "firmware_max": {"vendor": "A", "firmware_min": "2.0", "firmware_max": "1.9"},
        "signed_updates": {"vendor": "A", "signed_updates": "yes"},
        "colour": {"vendor": "A", "colour": "red"},
        "notes": {"vendor": "A", "notes": "x" * 5000},
    }
    for field, data in cases.items():
        with pytest.raises(ProfileError) as info:
            validate(data)
        assert info.value.field == field, data
    with pytest.raises(ProfileError) as info:
        validate({"vendor": "A" * 51})
    assert info.value.field == "vendor"


def test_validate_round_trips() -> None:
    data = {
        "vendor": " ACME ",
        "model": "AC22",
        "firmware_min": "1.0",
        "signed_updates": False,
        "installed_before_reboot": True,
        "reboot_seconds": 120,
        "download_protocol": "ftps",
        "max_image_bytes": 8_000_000,
        "config_keys": {"HeartbeatInterval": "HeartBeatIntervalSec"},
        "trigger_messages": ["StatusNotification", "BootNotification"],
        "max_per_site": 2,
        "notes": "slow modem",
    }
    p = validate(data)
    assert p.vendor == "ACME" and p.reboot_seconds == 120.0
    assert p.trigger_messages == frozenset({"StatusNotification", "BootNotification"})
    assert validate(vendors.to_dict(p)) == p
    assert hash(p) == hash(validate(vendors.to_dict(p)))


def test_timeouts_fit_the_profile() -> None:
    base = jm.Timeouts(download=1800, install=1800, reboot=900)
    slow = VendorProfile(vendor="A", reboot_seconds=600, install_seconds=100)
    fitted = fit_timeouts(base, slow)
    assert fitted.reboot == 1200  # 2 x 600 > the configured 900
    assert fitted.install == 1800  # a profile never shortens a configured timeout
    assert fitted.download == 1800 and fitted.queue == base.queue
    assert fit_timeouts(base, DEFAULT) == base


def test_method_follows_signed_update_support() -> None:
    no = VendorProfile(vendor="A", signed_updates=False)
    yes = VendorProfile(vendor="A", signed_updates=True)
    kw = {"fallback": True}
    # says no: plain, and signed is never tried (not even as the 1.6 fallback)
    assert method_for(no, signed_image=True, learned_plain=False, **kw) == (jm.Method.PLAIN, False)
    # says yes: signed whenever the image is signed, even after learning plain
    assert method_for(yes, signed_image=True, learned_plain=True, **kw) == (jm.Method.SIGNED, True)
    assert method_for(yes, signed_image=False, learned_plain=False, **kw) == (
        jm.Method.PLAIN,
        False,
    )
    # unknown: as before
    assert method_for(DEFAULT, signed_image=True, learned_plain=False, **kw) == (None, True)
    assert method_for(DEFAULT, signed_image=True, learned_plain=True, **kw) == (
        jm.Method.PLAIN,
        True,
    )


def test_unsupported_trigger_is_refused_with_the_field() -> None:
    p = VendorProfile(vendor="ACME", model="AC22", trigger_messages=frozenset({"Heartbeat"}))
    refused = vendor_refusal(p, "CP1", commands.TriggerMessage("MeterValues"))
    assert isinstance(refused, commands.UnsupportedByModel)
    assert refused.field == "message" and "ACME AC22" in refused.message
    assert vendor_refusal(p, "CP1", commands.TriggerMessage("Heartbeat")) is None
    assert vendor_refusal(DEFAULT, "CP1", commands.TriggerMessage("MeterValues")) is None


def test_configuration_keys_map_both_ways() -> None:
    p = VendorProfile(vendor="A", config_keys={"HeartbeatInterval": "HBInterval"})
    assert vendors.config_key(p, "HeartbeatInterval") == "HBInterval"
    assert vendors.config_key(p, "MeterValueSampleInterval") == "MeterValueSampleInterval"
    reported = {"HBInterval": "60", "Other": "1"}
    assert vendors.standard_keys(p, reported) == {"HeartbeatInterval": "60", "Other": "1"}
    assert vendors.standard_keys(DEFAULT, reported) == reported


# -- learning -----------------------------------------------------------------------------------


def _job(job_id: int, model: str, start: float, steps: list[tuple[float, str, str, str | None]]):
    from datetime import UTC, datetime, timedelta

    from evota.fleet.vendor_learning import EventFact

    t0 = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=start)
    return [
        EventFact(job_id, "ACME", model, t0 + timedelta(seconds=at), event, state, status)
        for at, event, state, status in steps
    ]


def _detailed(job_id: int, download: float, install: float, reboot: float, model: str = "AC22"):
    """A 2.0.1-style history: Downloading .. InstallRebooting, boot, then Installed."""
    d, i = download, download + install
    return _job(
        job_id,
        model,
        job_id * 1000,
        [
            (0, "created", "queued", None),
            (1, "firmware_status", "downloading", "Downloading"),
            (1 + d, "firmware_status", "downloaded", "Downloaded"),
            (1 + d, "firmware_status", "installing", "Installing"),
            (1 + i, "firmware_status", "rebooting", "InstallRebooting"),
            (1 + i + reboot, "boot", "verifying", None),
            (2 + i + reboot, "firmware_status", "verifying", "Installed"),
        ],
    )


def test_learning_durations_behaviour_and_suggestions() -> None:
    from evota.fleet.vendor_learning import MIN_SAMPLES, learn, nice_seconds

    events = [e for n in range(1, 11) for e in _detailed(n, 10 * n, 60, 100 + n)]
    # a 1.6 plain charger: Installing, then it reboots without saying so, then Installed
    events += _job(
        99,
        "DC50",
        0,
        [
            (0, "firmware_status", "downloading", "Downloading"),
            (5, "firmware_status", "downloaded", "Downloaded"),
            (6, "firmware_status", "installing", "Installing"),
            (50, "boot", "verifying", None),
            (51, "firmware_status", "verifying", "Installed"),
        ],
    )
    ac22, dc50 = learn(events)
    assert (ac22.model, ac22.jobs, dc50.model, dc50.jobs) == ("AC22", 10, "DC50", 1)
    assert (ac22.download.n, ac22.download.median, ac22.download.p90) == (10, 50.0, 90.0)
    assert (ac22.install.median, ac22.reboot.p90) == (60.0, 109.0)
    assert (ac22.installed_before_reboot, ac22.installed_after_reboot) == (0, 10)
    assert ac22.suggested == {
        "download_seconds": nice_seconds(90 * 1.5),
        "install_seconds": 90.0,
        "reboot_seconds": nice_seconds(109 * 1.5),
        "installed_before_reboot": False,
    }
    assert dc50.install.median == 44.0 and dc50.reboot.n == 0  # the reboot counts as install
    assert dc50.suggested == {}  # fewer than MIN_SAMPLES observations
    assert MIN_SAMPLES > 1 and nice_seconds(601) == 660.0 and nice_seconds(1) == 10.0


def test_learning_a_hundred_thousand_jobs_streams() -> None:
    import time

    from evota.fleet.vendor_learning import Learner

    learner = Learner()
    started = time.perf_counter()
    for n in range(100_000):
        for e in _detailed(n, 30 + n % 50, 60 + n % 7, 90, model=f"M{n % 4}"):
            learner.add(e)
    observed = learner.observations()
    elapsed = time.perf_counter() - started
    assert [o.jobs for o in observed] == [25_000] * 4
    assert elapsed < 60  # measured: see docs/performance.md


def test_an_image_over_the_profiles_maximum_is_refused() -> None:
    from evota.firmware.updates import ChargerFacts, ImageFacts, update_refusal

    image = ImageFacts("fw", "ACME", "2.0", "released", size=2000)
    charger = ChargerFacts("CP1", "ACME", None, None, "1.0", max_image_bytes=1000)
    refusal = update_refusal(image, charger)
    assert refusal is not None and refusal.reason == "image_too_large"
    assert "2000 bytes" in refusal.detail and "at most 1000" in refusal.detail
    assert update_refusal(image, replace(charger, max_image_bytes=2000)) is None
    assert update_refusal(image, replace(charger, max_image_bytes=None)) is None


def test_campaign_eligibility_excludes_images_over_the_models_maximum() -> None:
    from datetime import UTC, datetime

    from evota.firmware.updates import ImageFacts
    from evota.rollout.policy import Target
    from evota.rollout.target import plan_eligibility
    from evota.selection import ChargerSnapshot

    image = ImageFacts("fw", "ACME", "2.0", "released", size=5000)
    unknown = ChargerSnapshot("U", "ACME", "AC22", firmware_version="1.0", connected=True)
    small = replace(unknown, id="S", max_image_bytes=4000)
    large = replace(unknown, id="L", max_image_bytes=8000)
    plan = plan_eligibility(
        Target(vendors=("ACME",)), image, [small, large, unknown], datetime.now(UTC)
    )
    assert plan.eligible == ("L", "U")
    [excluded] = plan.excluded
    assert (excluded.charger_id, excluded.reason) == ("S", "image_too_large")
