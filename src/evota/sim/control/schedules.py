"""Charging profiles of a simulated charger and the power limit they set (pure).

Amperes count as 230 V per phase; the highest stack level that sets a limit wins within a
purpose (:func:`prevailing_kw`); :meth:`~evota.sim.control.state.ControlState.power_kw`
combines the purposes for one session.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_PERIODS = {"Daily": 86400.0, "Weekly": 7 * 86400.0}
VOLTS = 230.0


@dataclass(frozen=True, slots=True)
class StoredProfile:
    connector_id: int
    profile: Mapping[str, Any]  # the 1.6 csChargingProfiles object
    installed_at: dt.datetime  # what Relative (and Absolute without start) schedules count from

    @property
    def id(self) -> int:
        return int(self.profile["chargingProfileId"])

    @property
    def purpose(self) -> str:
        return str(self.profile["chargingProfilePurpose"])

    @property
    def stack_level(self) -> int:
        return int(self.profile["stackLevel"])


def _time(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def limit_kw(profile: Mapping[str, Any], now: dt.datetime, anchor: dt.datetime) -> float | None:
    """The limit (kW) ``profile`` sets at ``now``, or None where it sets none (not valid yet or
    any more, before its start, past its duration). Amperes count as 230 V per phase, three
    phases unless the period says otherwise."""
    valid_from, valid_to = _time(profile.get("validFrom")), _time(profile.get("validTo"))
    if (valid_from and now < valid_from) or (valid_to and now >= valid_to):
        return None
    schedule = profile["chargingSchedule"]
    kind = profile["chargingProfileKind"]
    start = anchor if kind == "Relative" else (_time(schedule.get("startSchedule")) or anchor)
    offset = (now - start).total_seconds()
    if offset < 0:
        return None
    if kind == "Recurring":
        offset %= _PERIODS[profile.get("recurrencyKind", "Daily")]
    duration = schedule.get("duration")
    if duration is not None and offset >= duration:
        return None
    active = None
    for period in schedule["chargingSchedulePeriod"]:
        if period["startPeriod"] <= offset:
            active = period
    if active is None:
        return None
    limit = float(active["limit"])
    if schedule["chargingRateUnit"] == "W":
        return limit / 1000.0
    return limit * VOLTS * int(active.get("numberPhases", 3)) / 1000.0


def prevailing_kw(profiles: list[StoredProfile], now: dt.datetime) -> float | None:
    """Of profiles of one purpose, the highest stack level that sets a limit now wins."""
    for stored in sorted(profiles, key=lambda s: s.stack_level, reverse=True):
        limit = limit_kw(stored.profile, now, stored.installed_at)
        if limit is not None:
            return limit
    return None
