"""2.0.1 network connection profiles (A05, B09/B10): SetNetworkProfile stores a profile in a
slot, ``OCPPCommCtrlr.NetworkConfigurationPriority`` orders the slots, and a reboot connects
with the first slot, falling back to the next one when it cannot connect (so a wrong new
profile does not lock the station out). The ``no_reconnect_after_profile_switch`` fault makes
the first connection on a new profile fail, so the station falls back to its old slot."""

from __future__ import annotations

from typing import Any, Final

from evota.ocpp import rpc
from evota.sim.charger import Reply, SimulatedCharger, charger_url
from evota.sim.control.state import state
from evota.sim.devicemodel import native_key
from evota.sim.tls import profile_change_answer

PRIORITY_KEY: Final = native_key("OCPPCommCtrlr", "NetworkConfigurationPriority")
#: Slots 0..SLOTS-1 exist on this station.
SLOTS: Final = 8


def priority(charger: SimulatedCharger) -> list[int]:
    """The configured slot order (the first is the one in use since the last boot)."""
    value = state(charger).configuration[PRIORITY_KEY].value or "0"
    return [int(part) for part in value.split(",")]


def _known(charger: SimulatedCharger) -> dict[int, tuple[str, int]]:
    """Every slot's (full URL, security profile); the slot in use now is what the station
    was installed with until SetNetworkProfile replaces it."""
    slots = charger.network_slots
    active = priority(charger)[0]
    slots.setdefault(active, (charger.connect_url, charger.security_profile))
    return slots


def profile_answer(charger: SimulatedCharger, slot: int, data: dict[str, Any]) -> str:
    """SetNetworkProfile's status: a real slot other than the one in use (B09.FR.01), OCPP
    2.0 over JSON, a URL matching the profile, a profile the station can use (never lower)."""
    url = str(data["ocppCsmsUrl"])
    wanted = int(data["securityProfile"])
    if not 0 <= slot < SLOTS or slot == priority(charger)[0]:
        return "Rejected"
    if data["ocppVersion"] != "OCPP20" or data["ocppTransport"] != "JSON":
        return "Rejected"
    if url.startswith("wss://") != (wanted >= 2) or not url.startswith(("ws://", "wss://")):
        return "Rejected"
    return profile_change_answer(
        charger.security_profile,
        wanted,
        has_root=bool(charger.csms_roots()),
        has_certificate=charger.tls.cert is not None or charger.spec.client_ca is not None,
        can_tls=True,
    )


async def on_set_network_profile(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    slot, data = call.payload["configurationSlot"], call.payload["connectionData"]
    _known(charger)
    status = profile_answer(charger, slot, data)
    if status == "Accepted":
        full = charger_url(str(data["ocppCsmsUrl"]), charger.identity)
        charger.network_slots[slot] = (full, int(data["securityProfile"]))
    return Reply({"status": status})


def priority_answer(charger: SimulatedCharger, value: str) -> str | None:
    """Rejected when the list names a slot without a profile; None: the store decides."""
    known = _known(charger)
    try:
        slots = [int(part) for part in value.split(",")]
    except ValueError:
        return "Rejected"
    if not slots or len(set(slots)) != len(slots) or any(s not in known for s in slots):
        return "Rejected"
    return None


def choose(charger: SimulatedCharger) -> None:
    """At a reboot: connect with the first slot of the priority list, the rest as fallbacks;
    a new profile drawn for the fault fails its first connection."""
    known = _known(charger)
    order = [known[s] for s in priority(charger) if s in known]
    if not order:
        return
    before = charger.security_profile
    charger.use_network(*order[0])
    charger.network_fallbacks = order[1:]
    if charger.security_profile != before and charger.draw(
        charger.spec.faults.no_reconnect_after_profile_switch
    ):
        charger.fail_next_connect = True
