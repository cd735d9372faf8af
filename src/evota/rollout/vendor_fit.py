"""How a charger's vendor profile (evota.fleet.vendors) shapes its firmware jobs.

Pure: the job runner and the campaign runner ask here with the effective profile.
"""

from __future__ import annotations

from dataclasses import replace

from evota.fleet.vendors import VendorProfile
from evota.rollout import job as jm

__all__ = ["MARGIN", "fit_timeouts", "method_for"]

#: A phase may last at least this many times the profile's typical duration before it times
#: out: a typical charger is never failed for being typical.
MARGIN = 2.0


def fit_timeouts(base: jm.Timeouts, profile: VendorProfile, margin: float = MARGIN) -> jm.Timeouts:
    """``base`` with download, install and reboot raised to ``margin`` x the profile's typical
    durations where those are longer; a profile never shortens a configured timeout."""

    def fit(configured: float, typical: float | None) -> float:
        return configured if typical is None else max(configured, typical * margin)

    return replace(
        base,
        download=fit(base.download, profile.download_seconds),
        install=fit(base.install, profile.install_seconds),
        reboot=fit(base.reboot, profile.reboot_seconds),
    )


def method_for(
    profile: VendorProfile,
    *,
    signed_image: bool,
    learned_plain: bool,
    fallback: bool,
) -> tuple[jm.Method | None, bool]:
    """The job's fixed method (None: decide when sending) and whether signed may be tried.

    A profile that says "no signed updates" sends plain and never tries signed; one that says
    "yes" sends signed whenever the image has a signature, even if an earlier answer taught
    evota plain; an unknown profile decides as before: plain without a signature or after the
    charger showed it takes only plain (1.6 fallback).
    """
    if profile.signed_updates is False:
        return jm.Method.PLAIN, False
    if not signed_image:
        return jm.Method.PLAIN, False
    if profile.signed_updates is True:
        return jm.Method.SIGNED, True
    if fallback and learned_plain:
        return jm.Method.PLAIN, True
    return None, True
