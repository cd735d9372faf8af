"""Smart charging: SetChargingProfile and ClearChargingProfile. Installed profiles cap the
power sessions draw (:meth:`~evota.sim.control.state.ControlState.power_kw`); the limits a
profile sets are computed in :mod:`evota.sim.control.schedules`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evota.ocpp import rpc
from evota.sim.charger import Reply, SimulatedCharger
from evota.sim.control.schedules import StoredProfile
from evota.sim.control.state import connectors, state


def _profile_refusal(charger: SimulatedCharger, connector: int, profile: dict[str, Any]) -> bool:
    st = state(charger)
    purpose = profile["chargingProfilePurpose"]
    if connector != 0 and connector not in connectors(charger):
        return True
    if purpose == "ChargePointMaxProfile" and connector != 0:
        return True
    if purpose == "TxProfile":
        txn = charger.transactions.get(connector)
        if txn is None:
            return True  # a TxProfile needs a transaction on its connector
        wanted = profile.get("transactionId")
        if wanted is not None and wanted != txn.transaction_id:
            return True
    schedule = profile["chargingSchedule"]
    allowed = st.setting("ChargingScheduleAllowedChargingRateUnit").split(",")
    unit = {"A": "Current", "W": "Power"}[schedule["chargingRateUnit"]]
    return (
        profile["stackLevel"] > st.number("ChargeProfileMaxStackLevel", 10)
        or len(schedule["chargingSchedulePeriod"]) > st.number("ChargingScheduleMaxPeriods", 24)
        or unit not in allowed
    )


async def on_set_charging_profile(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    connector, profile = call.payload["connectorId"], call.payload["csChargingProfiles"]
    return Reply({"status": install_profile(charger, connector, profile)})


def install_profile(charger: SimulatedCharger, connector: int, profile: dict[str, Any]) -> str:
    """Install a (1.6-shaped) charging profile; ``Accepted`` or ``Rejected``. It replaces a
    profile with its id, or with its connector, purpose and stack level."""
    st = state(charger)
    if _profile_refusal(charger, connector, profile):
        return "Rejected"
    stored = StoredProfile(connector, profile, charger.clock.now())
    kept = {
        pid: s
        for pid, s in st.profiles.items()
        if pid != stored.id
        and (s.connector_id, s.purpose, s.stack_level)
        != (connector, stored.purpose, stored.stack_level)
    }
    if len(kept) >= st.number("MaxChargingProfilesInstalled", 10):
        return "Rejected"
    kept[stored.id] = stored
    st.profiles = kept
    return "Accepted"


async def on_clear_charging_profile(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    return Reply({"status": clear_profiles(charger, call.payload)})


def clear_profiles(charger: SimulatedCharger, p: Mapping[str, Any]) -> str:
    """Remove the profiles matching the (1.6-shaped) criteria: ``id``, or ``connectorId``,
    ``chargingProfilePurpose`` and ``stackLevel`` where given; ``Accepted`` or ``Unknown``."""
    st = state(charger)

    def matches(s: StoredProfile) -> bool:
        if "id" in p:
            return s.id == p["id"]
        return (
            p.get("connectorId", s.connector_id) == s.connector_id
            and p.get("chargingProfilePurpose", s.purpose) == s.purpose
            and p.get("stackLevel", s.stack_level) == s.stack_level
        )

    cleared = [pid for pid, s in st.profiles.items() if matches(s)]
    for pid in cleared:
        del st.profiles[pid]
    return "Accepted" if cleared else "Unknown"
